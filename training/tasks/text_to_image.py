"""Stage 2 of text-to-image latent diffusion, trained from scratch: a ``UNet2DConditionModel`` denoising the latents
of a trained ``AutoencoderKL``, conditioned on a ``CLIPTextModel`` trained with it (or a pretrained one).

The frozen VAE encodes the whole dataset once, so a step costs only the text encoder and the UNet. Captions are
dropped (replaced by "") with probability ``caption_dropout`` so the same network learns the unconditional model
that classifier-free guidance needs (Ho & Salimans, arXiv:2207.12598).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer

from ...data import load_clip_tokenizer
from ...models.conditioning import PromptProjection
from ...pipelines.text_to_image import LatentTextToImagePipeline
from ..config import NonNegativeFloat, PositiveInt, UnitInterval, Widths
from .base import Stage, TrainingTask
from .diffusion import DiffusionConfig, make_objective
from .text_tower import TextTowerConfig, token_ids


@dataclass
class TextToImageConfig(DiffusionConfig, TextTowerConfig):
    # A trained AutoencoderKL (folder or Hub id). When the folder holds no model yet and `vae_config` is set,
    # `latentzoo train` first trains it from that config (stage 1) into this folder.
    vae: str = "outputs/text2img-mnist/vae"
    vae_config: str | None = "autoencoder_kl-mnist"

    # Text encoder: null trains a small CLIPTextModel from scratch; a folder or Hub id loads a pretrained one
    # (its tokenizer too, when the folder has one; otherwise the bundled CLIP vocabulary, which it shares).
    text_encoder: str | None = "outputs/text2img-mnist/stages/text_encoder"
    # When set and the `text_encoder` folder holds no model yet, `latentzoo train` first trains it from this config
    # (the CLIP-style contrastive stage, task clip_text), as `vae_config` does for the VAE. Measured to teach what
    # joint training from scratch does not learn in the same budget (README: slant 89.6% vs 33.7%).
    text_encoder_config: str | None = "clip_text-mnist"
    train_text_encoder: bool = True

    # Denoiser on (B, latent_channels, h, w) latents.
    block_out_channels: Widths = (64, 128, 128)
    layers_per_block: PositiveInt = 1
    attention_head_dim: PositiveInt = 8
    norm_num_groups: PositiveInt = 32
    # "cross_attention": UNet attends to the text encoder's hidden states. "concatenation": the pooled prompt
    # embedding, projected to `concatenation_channels` maps, is concatenated to the latents (the UNet then has
    # no cross-attention blocks).
    conditioning: Literal["cross_attention", "concatenation"] = "cross_attention"
    concatenation_channels: PositiveInt = 8

    # The diffusion objective's fields come from DiffusionConfig. Captions replaced by "" with this probability, so
    # the same network learns the unconditional model that classifier-free guidance needs.
    caption_dropout: UnitInterval = 0.1

    # Validation grid (and the default sampler settings written into the model card). null: the first caption of
    # the first `num_validation_prompts` training items with distinct captions, written back into this config so
    # training_config.yaml and the model card show the prompts used.
    validation_prompts: tuple[str, ...] | None = None
    num_validation_prompts: PositiveInt = 10
    validation_guidance_scale: NonNegativeFloat = 3.0

    def __post_init__(self):
        super().__post_init__()
        if self.text_encoder_config is not None and self.text_encoder is None:
            raise ValueError(
                f"`model.text_encoder_config`={self.text_encoder_config!r} needs `model.text_encoder`: the folder "
                "that stage trains into and this run loads."
            )


def first_captions(dataset, count: int) -> list[str]:
    """The first phrasing of the first `count` items whose first phrasings differ: prompts the data describes."""
    captions: dict[str, None] = {}
    for index in range(len(dataset)):
        phrasings = dataset.captions(index) if hasattr(dataset, "captions") else [dataset[index]["text"]]
        captions.setdefault(phrasings[0], None)
        if len(captions) == count:
            break
    return list(captions)


class LatentDataset(torch.utils.data.Dataset):
    """A dataset whose items also carry the frozen VAE's posterior, computed once for the whole split.

    Adds ``latent_mean`` and ``latent_std`` (C, h, w) to every item; a step samples z = mean + std * eps. With the
    dataset's ``random_flip`` on, the mirrored images are encoded too, and an item carries the posterior of the
    image it shows in this epoch (``dataset.is_flipped``): a VAE's latents of a mirrored image are not exactly the
    mirrored latents.
    """

    def __init__(self, dataset, vae: AutoencoderKL, batch_size: int = 256):
        self.dataset = dataset
        pixel_values = getattr(dataset, "pixel_values", None)
        if pixel_values is None:
            pixel_values = torch.stack([dataset[i]["pixel_values"] for i in range(len(dataset))])
        self.flips = bool(getattr(dataset, "random_flip", False))
        self.latent_mean, self.latent_std = self._encode(vae, pixel_values, batch_size)
        if self.flips:
            self.flipped_mean, self.flipped_std = self._encode(vae, pixel_values.flip(-1), batch_size)

    @staticmethod
    @torch.no_grad()
    def _encode(vae, pixel_values, batch_size):
        means, stds = [], []
        for chunk in pixel_values.split(batch_size):
            posterior = vae.encode(chunk.to(vae.device, vae.dtype)).latent_dist
            means.append(posterior.mean.float().cpu())
            stds.append(posterior.std.float().cpu())
        return torch.cat(means), torch.cat(stds)

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        flipped = self.flips and self.dataset.is_flipped(index)
        mean, std = (self.flipped_mean, self.flipped_std) if flipped else (self.latent_mean, self.latent_std)
        return {**self.dataset[index], "latent_mean": mean[index], "latent_std": std[index]}

    def set_epoch(self, epoch: int):
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)


def build_unet(config: TextToImageConfig, latent_channels: int, sample_size: int, cross_attention_dim: int):
    blocks = len(config.block_out_channels)
    concatenation = config.conditioning == "concatenation"
    # Attention at every resolution but the first (8x8 latents → attention at 4x4 and 2x2 is cheap).
    down = ["DownBlock2D"] + ["DownBlock2D" if concatenation else "CrossAttnDownBlock2D"] * (blocks - 1)
    up = ["UpBlock2D" if concatenation else "CrossAttnUpBlock2D"] * (blocks - 1) + ["UpBlock2D"]
    extra = config.concatenation_channels if concatenation else 0
    return UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=latent_channels + extra,
        out_channels=latent_channels,
        down_block_types=tuple(down),
        up_block_types=tuple(up),
        mid_block_type=None if concatenation else "UNetMidBlock2DCrossAttn",
        block_out_channels=tuple(config.block_out_channels),
        layers_per_block=config.layers_per_block,
        attention_head_dim=config.attention_head_dim,
        norm_num_groups=config.norm_num_groups,
        cross_attention_dim=cross_attention_dim,
    )


class _TextConditionedDenoiser(torch.nn.Module):
    """Text encoder (+ prompt projection) + UNet in one ``forward``, so DDP synchronises all of them at once."""

    def __init__(self, text_encoder, unet, prompt_projection=None):
        super().__init__()
        self.text_encoder = text_encoder
        self.unet = unet
        self.prompt_projection = prompt_projection

    def forward(self, noisy_latents, timesteps, input_ids):
        text = self.text_encoder(input_ids)
        model_input = noisy_latents
        if self.prompt_projection is not None:
            h, w = noisy_latents.shape[-2:]
            model_input = torch.cat([noisy_latents, self.prompt_projection(text.pooler_output, h, w)], dim=1)
        return self.unet(model_input, timesteps, encoder_hidden_states=text.last_hidden_state).sample


class TextToImageTask(TrainingTask):
    name = "text2img"
    Config = TextToImageConfig

    @classmethod
    def stages(cls, config: TextToImageConfig) -> list[Stage]:
        """The VAE stage (`vae_config` into `vae`), then the contrastive text-encoder stage (`text_encoder_config`
        into `text_encoder`), each when its config is set."""
        stages = []
        if config.vae_config is not None:
            stages.append(Stage("vae", config.vae_config, config.vae))
        if config.text_encoder_config is not None:
            stages.append(Stage("text_encoder", config.text_encoder_config, config.text_encoder))
        return stages

    @classmethod
    def requires(cls, config: TextToImageConfig) -> tuple[str, ...]:
        return ("captions",)

    def __init__(self, config: TextToImageConfig, dataset):
        super().__init__(config, dataset)
        try:
            self.vae = AutoencoderKL.from_pretrained(config.vae)
        except OSError as error:
            raise ValueError(
                f"`model.vae`={config.vae!r} holds no AutoencoderKL ({error}). Train stage 1 first "
                f"(`latentzoo train {config.vae_config or 'autoencoder_kl-mnist'} output_dir={config.vae}`) "
                "or point it at a trained one."
            ) from None
        self.vae.requires_grad_(False).eval()

        if config.text_encoder is None:
            self.text_encoder = config.build_text_encoder()
            self.tokenizer = load_clip_tokenizer(config.max_prompt_length)
        else:
            self.text_encoder = CLIPTextModel.from_pretrained(config.text_encoder)
            try:
                self.tokenizer = CLIPTokenizer.from_pretrained(config.text_encoder)
            except OSError:
                self.tokenizer = load_clip_tokenizer(self.text_encoder.config.max_position_embeddings)
        self.text_encoder.requires_grad_(config.train_text_encoder)

        resolution = dataset[0]["pixel_values"].shape[-1]
        vae_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        unet_factor = 2 ** (len(config.block_out_channels) - 1)
        if (
            resolution % (vae_factor * unet_factor)
            or self.vae.config.in_channels != dataset[0]["pixel_values"].shape[0]
        ):
            raise ValueError(
                f"The data is {tuple(dataset[0]['pixel_values'].shape)} (C, H, W); the VAE at {config.vae} takes "
                f"{self.vae.config.in_channels} channel(s) and downsamples {vae_factor}x, the UNet "
                f"({len(config.block_out_channels)} levels) {unet_factor}x more, so `resolution` must be a multiple "
                f"of {vae_factor * unet_factor}. Choose such a resolution, fewer `model.block_out_channels` (or "
                "`stages.vae.model.block_out_channels`), or a VAE trained on this data."
            )
        sample_size = resolution // vae_factor
        self.unet = build_unet(
            config, self.vae.config.latent_channels, sample_size, self.text_encoder.config.hidden_size
        )
        self.prompt_projection = (
            PromptProjection(self.text_encoder.config.hidden_size, config.concatenation_channels)
            if config.conditioning == "concatenation"
            else None
        )
        self.denoiser = _TextConditionedDenoiser(self.text_encoder, self.unet, self.prompt_projection)
        # Latents have unit variance, not a [-1, 1] range: never clip the predicted x_0.
        self.objective = make_objective(config, clip_sample=False)

        if config.validation_prompts is None:
            config.validation_prompts = tuple(first_captions(dataset, config.num_validation_prompts))

    def train_dataset(self):
        return LatentDataset(self.dataset, self.vae)

    def to(self, device):
        self.vae.to(device)

    def trainable_modules(self):
        return {"denoiser": self.denoiser}

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        return token_ids(self.tokenizer, texts)

    def training_step(self, batch, modules, step):
        mean, std = batch["latent_mean"], batch["latent_std"]
        # z ~ q(z | x), scaled to unit variance as at inference: (B, C, h, w)
        latents = (mean + std * torch.randn_like(mean)) * self.vae.config.scaling_factor
        noised = self.objective.noise(latents)

        drop = torch.rand(latents.shape[0]) < self.config.caption_dropout
        texts = ["" if dropped else text for text, dropped in zip(batch["text"], drop.tolist(), strict=True)]
        input_ids = self.tokenize(texts).to(latents.device)

        prediction = modules["denoiser"](noised.sample, noised.timesteps, input_ids)
        return {"loss": self.objective.loss(prediction, noised)}

    def make_pipeline(self, modules):
        denoiser = modules["denoiser"]
        return LatentTextToImagePipeline(
            vae=self.vae,
            text_encoder=denoiser.text_encoder,
            tokenizer=self.tokenizer,
            unet=denoiser.unet,
            scheduler=self.objective.sampler(),
            prompt_projection=denoiser.prompt_projection,
            # A call without guidance or steps samples as validation did (saved in model_index.json).
            default_guidance_scale=self.config.validation_guidance_scale,
            default_num_inference_steps=self.config.validation_num_inference_steps,
        )

    def validation_images(self, pipeline, num_images, generator):
        prompts = list(self.config.validation_prompts)
        per_prompt = max(1, num_images // len(prompts))
        output = pipeline(
            prompts,
            num_images_per_prompt=per_prompt,
            num_inference_steps=self.config.validation_num_inference_steps,
            guidance_scale=self.config.validation_guidance_scale,
            generator=generator,
            output_type="pt",
        )
        return output.images
