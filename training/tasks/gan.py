"""GANs (Goodfellow et al., arXiv:1406.2661) on the shared Trainer: a DCGAN generator and discriminator, each with
its own AdamW optimizer, unconditional or class-conditional (projection discriminator).

One ``training_step`` computes both losses from one forward pass,

    fake = G(z, y)
    L_D  = ℓ_real(D(x, y)) + ℓ_fake(D(fake.detach(), y))
    L_G  = ℓ_G(D(fake, y))

with either the non-saturating loss (arXiv:1406.2661 sec. 3: ℓ_real = softplus(−s), ℓ_fake = softplus(s),
ℓ_G = softplus(−s)) or the hinge loss (Lim & Ye, arXiv:1705.02894; ℓ_real = relu(1 − s), ℓ_fake = relu(1 + s),
ℓ_G = −s), s the discriminator's score. The Trainer backpropagates L_D into D's parameters and L_G into G's only,
then steps both optimizers (a simultaneous update). Fake images take the real batch's labels, so the class
distribution of fakes matches the data's. With ``auxiliary_classifier_weight`` w > 0 (AC-GAN, arXiv:1610.09585),
D also classifies, L_D += w · CE(C(x), y) on real images only, and L_G += w · CE(C(G(z, y)), y). EMA (``use_ema``) averages the generator only; the discriminator is
trained, checkpointed, and not saved with the pipeline.

Each validation logs the judge's class histogram of ``judge_samples`` generated digits (mnist-shaped data only), its
number of covered classes and normalised entropy, so mode collapse shows while it happens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from ...models.checks import cycle_class_labels
from ...models.gan import Discriminator, Generator
from ...pipelines.gan import GANPipeline
from ..config import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, UnitInterval, Widths
from .base import TaskConfig, TrainingTask, conditioning_classes

GANLoss = Literal["non_saturating", "hinge"]


@dataclass
class GANConfig(TaskConfig):
    latent_dim: PositiveInt = 64
    # Coarse to fine for G (each block doubles the resolution), fine to coarse for D (each block halves it).
    generator_channels: Widths = (128, 64, 32)
    discriminator_channels: Widths = (32, 64, 128)
    # Class conditioning: G concatenates a class embedding to z, D is a projection discriminator. `num_classes`
    # null: taken from the dataset.
    class_conditional: bool = False
    num_classes: PositiveInt | None = None
    class_embed_dim: PositiveInt = 32
    # How G takes the class: "concat" (an embedding concatenated to z) or "batch_norm" (class-conditional batch norm
    # gains and biases); what D projects the class embedding on: "flatten" (all features) or "pooled" (summed over
    # positions).
    class_conditioning: Literal["concat", "batch_norm"] = "concat"
    projection: Literal["flatten", "pooled"] = "flatten"
    # AC-GAN (arXiv:1610.09585) weight, 0: off. D also learns to classify real images (cross-entropy, this weight);
    # G is asked for fakes that D's classifier reads as their label (the same weight). Class-conditional only.
    auxiliary_classifier_weight: NonNegativeFloat = 0.0
    # Spectral normalisation of every discriminator layer: stable training without batch norm in D.
    spectral_norm: bool = True
    loss: GANLoss = "non_saturating"
    # Per-optimizer learning rates (null: the config's `learning_rate`) and DCGAN's Adam betas (β1 = 0.5:
    # momentum 0.9 makes the two-player game oscillate, arXiv:1511.06434 sec. 4).
    generator_learning_rate: PositiveFloat | None = None
    discriminator_learning_rate: PositiveFloat | None = None
    adam_betas: tuple[UnitInterval, UnitInterval] = (0.5, 0.999)
    # Generated digits the judge classifies at each validation (0: no class histogram).
    judge_samples: NonNegativeInt = 500

    def __post_init__(self):
        super().__post_init__()
        if len(self.adam_betas) != 2:
            raise ValueError(f"`model.adam_betas` must be two numbers in [0, 1), got {self.adam_betas}.")
        if self.auxiliary_classifier_weight > 0 and not self.class_conditional:
            raise ValueError(
                "`model.auxiliary_classifier_weight` > 0 needs `model.class_conditional=true` (an unconditional GAN "
                "has no label to ask for); set it to 0 or make the GAN class-conditional."
            )


def discriminator_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor, loss: GANLoss) -> torch.Tensor:
    """Mean over the batch of ℓ_real(D(x)) + ℓ_fake(D(G(z))): (B,), (B,) scores → scalar."""
    if loss == "hinge":
        return F.relu(1 - real_scores).mean() + F.relu(1 + fake_scores).mean()
    return (
        F.softplus(-real_scores).mean() + F.softplus(fake_scores).mean()
    )  # −log σ(s_real) − log(1 − σ(s_fake))


def generator_loss(fake_scores: torch.Tensor, loss: GANLoss) -> torch.Tensor:
    """Non-saturating −log σ(D(G(z))) (strong gradients while D wins), or hinge −D(G(z)): (B,) → scalar."""
    if loss == "hinge":
        return -fake_scores.mean()
    return F.softplus(-fake_scores).mean()


class GANTask(TrainingTask):
    name = "gan"
    Config = GANConfig

    def __init__(self, config: GANConfig, dataset):
        super().__init__(config, dataset)
        example = dataset[0]
        self.num_classes = conditioning_classes(config, dataset)
        channels, height, width = example["pixel_values"].shape
        if height != width:
            raise ValueError(f"The GAN needs square images, got {height}x{width}.")
        self.generator = Generator(
            latent_dim=config.latent_dim,
            sample_size=height,
            out_channels=channels,
            block_out_channels=tuple(config.generator_channels),
            num_classes=self.num_classes,
            class_embed_dim=config.class_embed_dim,
            class_conditioning=config.class_conditioning,
        )
        self.discriminator = Discriminator(
            sample_size=height,
            in_channels=channels,
            block_out_channels=tuple(config.discriminator_channels),
            num_classes=self.num_classes,
            spectral_norm=config.spectral_norm,
            projection=config.projection,
            auxiliary_classifier=config.auxiliary_classifier_weight > 0,
        )
        # The judge reads (N, 1, 32, 32) digits; other shapes get no class histogram.
        self.judged = config.judge_samples > 0 and (channels, height) == (1, 32)
        self._judge = None

    def trainable_modules(self):
        return {"generator": self.generator, "discriminator": self.discriminator}

    def optimizer_modules(self):
        # Both backward passes run before either step (see TrainingTask), so the order here does not matter.
        return {"discriminator": ["discriminator"], "generator": ["generator"]}

    def optimizer_kwargs(self, name):
        lr = (
            self.config.generator_learning_rate
            if name == "generator"
            else self.config.discriminator_learning_rate
        )
        return {"betas": tuple(self.config.adam_betas), **({"lr": lr} if lr is not None else {})}

    def ema_modules(self):
        return ["generator"]

    def training_step(self, batch, modules, step):
        generator, discriminator = modules["generator"], modules["discriminator"]
        real = batch["pixel_values"]  # (B, C, H, W) in [-1, 1]
        class_labels = batch["class_labels"].to(real.device) if self.num_classes is not None else None
        latents = torch.randn(
            len(real), self.config.latent_dim, device=real.device, dtype=real.dtype
        )  # (B, D)
        fake = generator(latents, class_labels)  # (B, C, H, W)

        # D on real and detached fakes in one call (no batch norm in D, so batching them changes nothing): (2B,).
        labels = None if class_labels is None else torch.cat([class_labels, class_labels])
        scores, class_logits = self._discriminate(discriminator, torch.cat([real, fake.detach()]), labels)
        real_scores, fake_scores = scores.chunk(2)
        d_loss = discriminator_loss(real_scores, fake_scores, self.config.loss)
        # G's loss goes through D's graph; the Trainer sends its gradient to G's parameters only.
        generator_scores, generator_logits = self._discriminate(discriminator, fake, class_labels)
        g_loss = generator_loss(generator_scores, self.config.loss)
        metrics, weight = {}, self.config.auxiliary_classifier_weight
        if weight > 0:
            # AC-GAN with the classifier trained on real images only: it stays a classifier of the data, and G
            # is asked for fakes it reads as their label.
            real_class_loss = F.cross_entropy(class_logits[: len(real)], class_labels)
            fake_class_loss = F.cross_entropy(generator_logits, class_labels)
            d_loss = d_loss + weight * real_class_loss
            g_loss = g_loss + weight * fake_class_loss
            metrics = {
                "metrics/real_class_loss": real_class_loss.detach(),
                "metrics/fake_class_loss": fake_class_loss.detach(),
            }

        # D(x) as DCGAN reports it: the probability σ(s) for the non-saturating loss, the raw score for hinge.
        readout = torch.sigmoid if self.config.loss == "non_saturating" else torch.nn.Identity()
        return {
            "discriminator": d_loss,
            "generator": g_loss,
            "metrics/d_real": readout(real_scores.detach()).mean(),
            "metrics/d_fake": readout(fake_scores.detach()).mean(),
            **metrics,
        }

    def _discriminate(self, discriminator, images, class_labels):
        """D's (B,) scores and, with the auxiliary classifier, its (B, num_classes) logits (else None)."""
        if self.config.auxiliary_classifier_weight > 0:
            return discriminator(images, class_labels, return_class_logits=True)
        return discriminator(images, class_labels), None

    def make_pipeline(self, modules):
        return GANPipeline(generator=modules["generator"])

    def _class_labels(self, num_images: int) -> list[int] | None:
        return None if self.num_classes is None else cycle_class_labels(num_images, self.num_classes)

    @torch.no_grad()
    def validation_images(self, pipeline, num_images, generator):
        labels = self._class_labels(num_images)
        size = {"batch_size": num_images} if labels is None else {"class_labels": labels}
        return pipeline(**size, generator=generator, output_type="pt").images

    @torch.no_grad()
    def validation_metrics(self, pipeline, generator):
        """The judge's class histogram of `judge_samples` samples, classes covered (≥ 1 % of samples) and the
        histogram's entropy over log(10) (1: uniform; 0: one class); class-conditional: label accuracy too."""
        if not self.judged:
            return {}
        from ...evaluation import (  # the judge trains once (about a minute) when it is not cached
            class_coverage,
            load_judge,
        )

        if self._judge is None:
            self._judge = load_judge()
        n = self.config.judge_samples
        labels = self._class_labels(n)
        size = {"batch_size": n} if labels is None else {"class_labels": labels}
        images = pipeline(**size, generator=generator, output_type="pt").images * 2 - 1  # [-1, 1]
        predicted = self._judge.predict(images.cpu())  # (N,)
        coverage = class_coverage(predicted)
        metrics = {
            "judge/predicted_class": predicted.float(),
            "judge/classes_covered": float(coverage["classes_covered"]),
            "judge/class_entropy": coverage["entropy"],
        }
        if labels is not None:
            metrics["judge/label_accuracy"] = float((predicted == torch.tensor(labels)).float().mean())
        return metrics
