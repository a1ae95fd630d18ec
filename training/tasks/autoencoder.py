"""Autoencoders with a flat latent vector, and mixture-density priors over their latents.

- ``autoencoder``: a deterministic `Autoencoder` (reconstruction loss only). At save time a full-covariance
  `GaussianPrior` is fitted to the training latents, so the saved pipeline can sample.
- ``vae``: a `VariationalAutoencoder` (reconstruction + beta * KL); it samples from N(0, I).
- ``mdn_prior``: a `MixtureDensityNetwork` over a trained autoencoder's latents, conditioned on the class label by
  default: class → latent → decoder. Its prerequisite stage trains the autoencoder when the folder is empty.
- ``two_stage_vae``: the second stage of a two-stage VAE (Dai & Wipf, arXiv:1903.05789), a `TwoStageVAEPrior` over a
  trained VAE's latents: u ~ N(0, I) → latent → decoder. Its prerequisite stage trains the VAE.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from ...models.autoencoder import Autoencoder, GaussianPrior, TwoStageVAEPrior, VariationalAutoencoder
from ...models.checks import cycle_class_labels
from ...models.mdn import MixtureDensityNetwork, target_statistics
from ...pipelines.autoencoder import AutoencoderPipeline
from ..config import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, Widths
from .base import Stage, TaskConfig, TrainingTask, load_built_on


@dataclass
class AutoencoderConfig(TaskConfig):
    # 16 reconstructs digits well; 2 gives a latent space you can plot (configs/*-2d.yaml).
    latent_dim: PositiveInt = 16
    # Each block halves the resolution: 32x32 → 8x8 with two blocks, then one linear layer to the latent.
    block_out_channels: Widths = (32, 64)
    # "bce" treats pixels as Bernoulli probabilities, the classic choice for MNIST: sharper than "mse".
    reconstruction_loss: Literal["mse", "bce"] = "bce"
    # Prior saved with the pipeline: "gaussian" fits N(mean, cov) to the training latents at save time; "none"
    # leaves N(0, I), which a plain autoencoder was never trained towards (the contrast the VAE fixes).
    prior: Literal["gaussian", "none"] = "gaussian"


@dataclass
class VariationalAutoencoderConfig(TaskConfig):
    latent_dim: PositiveInt = 16
    block_out_channels: Widths = (32, 64)
    # "bce": Bernoulli pixels (the classic MNIST VAE). "gaussian": a Gaussian likelihood whose one shared variance
    # is learned (set to its optimum, the σ-VAE): it sharpens as reconstructions improve, so beta needs no tuning
    # for it. "mse": a Gaussian of fixed variance 1/2 (lower beta by hand, e.g. 0.01).
    reconstruction_loss: Literal["mse", "bce", "gaussian"] = "bce"
    # Weight of KL(q(z|x) || N(0, I)); 1 with "bce" or "gaussian" is the ELBO. Larger trades reconstructions for a
    # smoother, more normal latent space (beta-VAE); with "mse" use far less (e.g. 0.01).
    beta: NonNegativeFloat = 1.0
    # Steps over which the KL weight rises linearly from 0 to beta (KL annealing, Bowman et al.
    # arXiv:1511.06349); 0: beta from the first step.
    kl_warmup_steps: NonNegativeInt = 0
    # Floor, in nats, under each latent dimension's batch-mean KL (arXiv:1606.04934): keeps dimensions in use. 0: none.
    free_bits: NonNegativeFloat = 0.0


@dataclass
class MixtureDensityPriorConfig(TaskConfig):
    # A trained AutoencoderPipeline folder (an `autoencoder` or `vae` run). When it holds no model yet and
    # `autoencoder_config` is set, `latentzoo train` first trains it from that config into this folder.
    autoencoder: str = "outputs/autoencoder-mnist"
    autoencoder_config: str | None = "autoencoder-mnist"
    # Condition on the class label (a conditional generator); false fits an unconditional mixture.
    class_conditional: bool = True
    # Ten digits, each with several styles: a handful of components per class is plenty.
    num_components: PositiveInt = 10
    hidden_dims: Widths = (256, 256)
    class_embed_dim: PositiveInt = 32
    # Floor of each component's standard deviation, in standardized latent units when `standardize_latents`.
    min_std: PositiveFloat = 1e-3
    # Model the latents standardized per dimension (their mean and std over the training set, saved in the MDN's
    # config): a plain autoencoder's latents have standard deviations ~10, which an MDN initialised at unit scale
    # fits badly (measured on mnist: label accuracy 74% → 90% at temperature 1, benchmarks/results/vae_recipe.md).
    standardize_latents: bool = True
    # The temperature the saved prior samples with (`MixtureDensityNetwork.default_temperature`): the spread of each
    # component scaled by it. 1 samples the fitted distribution; below 1 draws more typical latents, which the
    # decoder renders more legibly, at some cost in diversity.
    sampling_temperature: NonNegativeFloat = 1.0


@dataclass
class TwoStageVAEConfig(TaskConfig):
    # The first stage: a trained `vae` run (an AutoencoderPipeline folder). When it holds no model yet and
    # `vae_config` is set, `latentzoo train` first trains it from that config into this folder.
    vae: str = "outputs/vae-mnist/stages/vae"
    vae_config: str | None = "vae-mnist-first-stage"
    # Widths of the second stage's encoder and decoder MLPs (its latent has the first stage's size).
    hidden_dims: Widths = (256, 256)


@torch.no_grad()
def encode_dataset(
    autoencoder: Autoencoder | VariationalAutoencoder, pixel_values: torch.Tensor, batch_size: int = 500
) -> torch.Tensor:
    """(N, C, H, W) images → (N, latent_dim) latents on the CPU (the posterior mean for a VAE)."""
    latents = []
    for chunk in pixel_values.split(batch_size):
        chunk = chunk.to(autoencoder.device, autoencoder.dtype)
        encoded = autoencoder.encode(chunk)
        latents.append(
            (encoded.mean if isinstance(autoencoder, VariationalAutoencoder) else encoded).float().cpu()
        )
    return torch.cat(latents)


def _all_pixel_values(dataset) -> torch.Tensor:
    pixel_values = getattr(dataset, "pixel_values", None)
    if pixel_values is None:
        pixel_values = torch.stack([dataset[i]["pixel_values"] for i in range(len(dataset))])
    return pixel_values


class _AutoencoderTaskBase(TrainingTask):
    model_class: type[Autoencoder] | type[VariationalAutoencoder]
    module_name = "autoencoder"

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        example = dataset[0]["pixel_values"]
        self.model = self.model_class(
            in_channels=example.shape[0],
            sample_size=example.shape[-1],
            latent_dim=config.latent_dim,
            block_out_channels=tuple(config.block_out_channels),
            reconstruction_loss=config.reconstruction_loss,
            **self.extra_model_kwargs(config),
        )
        self.validation_pixels = torch.stack(
            [dataset[i]["pixel_values"] for i in range(min(8, len(dataset)))]
        )

    @staticmethod
    def extra_model_kwargs(config) -> dict:
        return {}

    def trainable_modules(self):
        return {self.module_name: self.model}

    def training_step(self, batch, modules, step):
        # One call does encode, (sample,) decode and loss: under DDP only `forward` synchronises gradients.
        return {"loss": modules[self.module_name](batch["pixel_values"]).loss}

    @torch.no_grad()
    def validation_images(self, pipeline, num_images, generator):
        """(original, reconstruction) pairs in the first half of the grid, prior samples in the second; [0, 1]."""
        num_pairs = min(len(self.validation_pixels), max(1, num_images // 4))
        originals = self.validation_pixels[:num_pairs].to(pipeline.device)
        reconstructions = pipeline.reconstruct(originals, output_type="pt").images
        pairs = torch.stack([(originals.float() + 1) / 2, reconstructions.float()], dim=1).flatten(0, 1)
        if num_images <= 2 * num_pairs:
            return pairs.cpu()
        samples = pipeline(
            batch_size=num_images - 2 * num_pairs, generator=generator, output_type="pt"
        ).images
        return torch.cat([pairs.cpu(), samples.float().cpu()])


class AutoencoderTask(_AutoencoderTaskBase):
    name = "autoencoder"
    Config = AutoencoderConfig
    model_class = Autoencoder

    def make_pipeline(self, modules):
        autoencoder = modules[self.module_name]
        prior = None
        if self.config.prior == "gaussian":
            prior = GaussianPrior.from_latents(encode_dataset(autoencoder, _all_pixel_values(self.dataset)))
        return AutoencoderPipeline(autoencoder=autoencoder, prior=prior)


class VariationalAutoencoderTask(_AutoencoderTaskBase):
    name = "vae"
    Config = VariationalAutoencoderConfig
    model_class = VariationalAutoencoder
    module_name = "vae"

    @staticmethod
    def extra_model_kwargs(config) -> dict:
        return {"beta": config.beta, "free_bits": config.free_bits}

    def kl_weight(self, step: int) -> float:
        """beta, ramped linearly from beta / kl_warmup_steps at step 0 up to beta at step kl_warmup_steps - 1."""
        warmup = self.config.kl_warmup_steps
        return self.config.beta * (min(1.0, (step + 1) / warmup) if warmup else 1.0)

    def training_step(self, batch, modules, step):
        return {"loss": modules[self.module_name](batch["pixel_values"], beta=self.kl_weight(step)).loss}

    def make_pipeline(self, modules):
        return AutoencoderPipeline(autoencoder=modules[self.module_name])


@torch.no_grad()
def posterior_stds(
    vae: VariationalAutoencoder, pixel_values: torch.Tensor, batch_size: int = 500
) -> torch.Tensor:
    """(N, C, H, W) images → (N, latent_dim) standard deviations of the VAE's posteriors q(z|x), on the CPU."""
    stds = []
    for chunk in pixel_values.split(batch_size):
        stds.append(vae.encode(chunk.to(vae.device, vae.dtype)).std.float().cpu())
    return torch.cat(stds)


class LatentCodeDataset(torch.utils.data.Dataset):
    """A dataset's latents under a frozen autoencoder, computed once: items ``{"latents": (D,), "class_labels"}``
    (the posterior mean for a VAE; with `with_stds`, also its standard deviations as ``"latent_stds"``)."""

    def __init__(self, dataset, autoencoder, with_stds: bool = False):
        self.latents = encode_dataset(autoencoder, _all_pixel_values(dataset))
        self.latent_stds = posterior_stds(autoencoder, _all_pixel_values(dataset)) if with_stds else None
        labels = getattr(dataset, "class_labels", None)
        if labels is None and "class_labels" in dataset[0]:
            labels = torch.stack([torch.as_tensor(dataset[i]["class_labels"]) for i in range(len(dataset))])
        self.class_labels = labels

    def __len__(self):
        return len(self.latents)

    def __getitem__(self, index):
        item = {"latents": self.latents[index]}
        if self.latent_stds is not None:
            item["latent_stds"] = self.latent_stds[index]
        if self.class_labels is not None:
            item["class_labels"] = self.class_labels[index]
        return item


class MixtureDensityPriorTask(TrainingTask):
    name = "mdn_prior"
    Config = MixtureDensityPriorConfig

    @classmethod
    def stages(cls, config: MixtureDensityPriorConfig) -> list[Stage]:
        """The autoencoder's stage (`autoencoder_config` into `autoencoder`) when its config is set."""
        if config.autoencoder_config is None:
            return []
        return [Stage("autoencoder", config.autoencoder_config, config.autoencoder)]

    def __init__(self, config: MixtureDensityPriorConfig, dataset):
        super().__init__(config, dataset)
        self.autoencoder = load_built_on(
            AutoencoderPipeline,
            config.autoencoder,
            "autoencoder",
            "AutoencoderPipeline",
            f"Train it first (`latentzoo train {config.autoencoder_config or 'autoencoder-mnist'} "
            f"output_dir={config.autoencoder}`) or point it at a trained one.",
        ).autoencoder
        self.autoencoder.requires_grad_(False).eval()
        num_classes = None
        if config.class_conditional:
            num_classes = getattr(dataset, "num_classes", None)
            if num_classes is None:
                raise ValueError(
                    "`model.class_conditional` needs a dataset with class labels (e.g. mnist or digits); "
                    "set model.class_conditional=false for an unconditional prior."
                )
        # The latents, computed once: their statistics set the MDN's scale, and they are its training data.
        self.codes = LatentCodeDataset(dataset, self.autoencoder)
        self.prior = MixtureDensityNetwork(
            output_dim=self.autoencoder.config.latent_dim,
            num_components=config.num_components,
            num_classes=num_classes,
            class_embed_dim=config.class_embed_dim,
            hidden_dims=tuple(config.hidden_dims),
            min_std=config.min_std,
            default_temperature=config.sampling_temperature,
            **(target_statistics(self.codes.latents) if config.standardize_latents else {}),
        )

    def to(self, device):
        self.autoencoder.to(device)

    def train_dataset(self):
        return self.codes

    def trainable_modules(self):
        return {"prior": self.prior}

    def training_step(self, batch, modules, step):
        class_labels = batch["class_labels"] if self.config.class_conditional else None
        return {"loss": modules["prior"](class_labels=class_labels, target=batch["latents"]).loss}

    def make_pipeline(self, modules):
        return AutoencoderPipeline(autoencoder=self.autoencoder, prior=modules["prior"])

    @torch.no_grad()
    def validation_images(self, pipeline, num_images, generator):
        if not self.config.class_conditional:
            return pipeline(batch_size=num_images, generator=generator, output_type="pt").images
        labels = cycle_class_labels(num_images, self.prior.config.num_classes)
        return pipeline(class_labels=labels, generator=generator, output_type="pt").images


class TwoStageVAETask(TrainingTask):
    """The second stage of a two-stage VAE (Dai & Wipf, arXiv:1903.05789) over a frozen, trained VAE.

    It is trained on samples of the first stage's posteriors q(z|x) (a fresh eps at every step), i.e. on the
    aggregate posterior q(z) that decoding should draw from; the saved pipeline samples u ~ N(0, I), maps it to a
    latent with the second stage's decoder, and decodes that with the first stage's.
    """

    name = "two_stage_vae"
    Config = TwoStageVAEConfig

    @classmethod
    def stages(cls, config: TwoStageVAEConfig) -> list[Stage]:
        """The first stage (`vae_config` into `vae`) when its config is set."""
        if config.vae_config is None:
            return []
        return [Stage("vae", config.vae_config, config.vae)]

    def __init__(self, config: TwoStageVAEConfig, dataset):
        super().__init__(config, dataset)
        self.vae = load_built_on(
            AutoencoderPipeline,
            config.vae,
            "vae",
            "AutoencoderPipeline",
            f"Train it first (`latentzoo train {config.vae_config or 'vae-mnist-first-stage'} "
            f"output_dir={config.vae}`) or point it at a trained one.",
        ).autoencoder
        if not isinstance(self.vae, VariationalAutoencoder):
            raise ValueError(
                f"`model.vae`={config.vae!r} holds a {type(self.vae).__name__}, not a VariationalAutoencoder; the "
                "second stage models a VAE's posteriors: train a `vae` run (e.g. vae-mnist-first-stage), or fit an "
                "`mdn_prior` to an autoencoder."
            )
        self.vae.requires_grad_(False).eval()
        self.prior = TwoStageVAEPrior(
            latent_dim=self.vae.config.latent_dim, hidden_dims=tuple(config.hidden_dims)
        )

    def to(self, device):
        self.vae.to(device)

    def train_dataset(self):
        return LatentCodeDataset(self.dataset, self.vae, with_stds=True)

    def trainable_modules(self):
        return {"prior": self.prior}

    def training_step(self, batch, modules, step):
        # A sample of q(z|x) = N(mean, std²): eps from torch's global generator, which the Trainer seeds per process.
        means, stds = batch["latents"], batch["latent_stds"]
        latents = means + stds * torch.randn_like(stds)
        return {"loss": modules["prior"](latents)}

    def make_pipeline(self, modules):
        return AutoencoderPipeline(autoencoder=self.vae, prior=modules["prior"])
