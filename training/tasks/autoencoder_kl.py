"""Stage 1 of latent diffusion: a small diffusers ``AutoencoderKL`` trained from scratch on the data.

Loss: reconstruction (L1 or MSE on pixels in [-1, 1]) + ``kl_weight`` * KL(q(z|x) || N(0, I)), the KL-regularised
autoencoder of Rombach et al. (arXiv:2112.10752, sec. 3) without the adversarial and perceptual terms, which a
32x32 digit does not need. At the end ``scaling_factor`` is measured on the data so that scaled latents have unit
variance, as Stable Diffusion's 0.18215 was.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL

from ...models.autoencoder import kl_divergence
from ..config import NonNegativeFloat, PositiveInt, Widths
from .base import TaskConfig, TrainingTask


@dataclass
class AutoencoderKLConfig(TaskConfig):
    # Three blocks downsample twice: 32x32 pixels -> 8x8 latents.
    block_out_channels: Widths = (32, 64, 64)
    layers_per_block: PositiveInt = 1
    latent_channels: PositiveInt = 4
    norm_num_groups: PositiveInt = 16
    # Small, as in Stable Diffusion's VAE (1e-6): enough to keep the latent space smooth and bounded, small
    # enough that reconstructions stay sharp.
    kl_weight: NonNegativeFloat = 1e-6
    reconstruction_loss: Literal["l1", "mse"] = "l1"
    # Images used to measure the latents' standard deviation for `scaling_factor`.
    scaling_samples: PositiveInt = 1024


def build_autoencoder_kl(config: AutoencoderKLConfig, in_channels: int, sample_size: int) -> AutoencoderKL:
    blocks = len(config.block_out_channels)
    return AutoencoderKL(
        in_channels=in_channels,
        out_channels=in_channels,
        down_block_types=("DownEncoderBlock2D",) * blocks,
        up_block_types=("UpDecoderBlock2D",) * blocks,
        block_out_channels=tuple(config.block_out_channels),
        layers_per_block=config.layers_per_block,
        latent_channels=config.latent_channels,
        norm_num_groups=config.norm_num_groups,
        sample_size=sample_size,
    )


@torch.no_grad()
def measure_scaling_factor(vae: AutoencoderKL, pixel_values: torch.Tensor, batch_size: int = 256) -> float:
    """1 / std of the posterior samples' means over `pixel_values` (N, C, H, W), so scaled latents have unit variance."""
    latents = torch.cat(
        [vae.encode(chunk.to(vae.device)).latent_dist.mean for chunk in pixel_values.split(batch_size)]
    )
    return float(1.0 / latents.float().std())


class _AutoencoderKLWithPosterior(torch.nn.Module):
    """Encode, sample and decode in one ``forward``: under DDP only a call through the wrapper syncs gradients."""

    def __init__(self, vae: AutoencoderKL):
        super().__init__()
        self.vae = vae

    def forward(self, pixel_values: torch.Tensor):
        posterior = self.vae.encode(pixel_values).latent_dist
        # Reparameterised sample z = mean + std * eps (eps from the global generator, seeded per process).
        reconstruction = self.vae.decode(posterior.sample()).sample
        return reconstruction, posterior.mean, posterior.logvar


class AutoencoderKLTask(TrainingTask):
    name = "autoencoder_kl"
    Config = AutoencoderKLConfig

    def __init__(self, config: AutoencoderKLConfig, dataset):
        super().__init__(config, dataset)
        example = dataset[0]["pixel_values"]
        vae = build_autoencoder_kl(config, in_channels=example.shape[0], sample_size=example.shape[-1])
        self.model = _AutoencoderKLWithPosterior(vae)
        # A fixed batch (up to 8) shown as (original | reconstruction) pairs in the validation grid.
        self.validation_pixels = torch.stack(
            [dataset[i]["pixel_values"] for i in range(min(8, len(dataset)))]
        )

    def trainable_modules(self):
        return {"vae": self.model}

    def training_step(self, batch, modules, step):
        pixel_values = batch["pixel_values"]
        reconstruction, mean, logvar = modules["vae"](pixel_values)
        if self.config.reconstruction_loss == "l1":
            reconstruction_loss = F.l1_loss(reconstruction.float(), pixel_values.float())
        else:
            reconstruction_loss = F.mse_loss(reconstruction.float(), pixel_values.float())
        # KL per latent element, so kl_weight does not depend on the latent shape.
        kl = kl_divergence(mean.float(), logvar.float()).mean() / mean[0].numel()
        return {"loss": reconstruction_loss + self.config.kl_weight * kl}

    def make_pipeline(self, modules):
        vae = modules["vae"].vae
        pixel_values = getattr(self.dataset, "pixel_values", None)
        if pixel_values is None:
            pixel_values = torch.stack(
                [self.dataset[i]["pixel_values"] for i in range(min(len(self.dataset), 1024))]
            )
        generator = torch.Generator().manual_seed(0)
        subset = torch.randperm(len(pixel_values), generator=generator)[: self.config.scaling_samples]
        vae.register_to_config(scaling_factor=measure_scaling_factor(vae, pixel_values[subset]))
        return vae

    @torch.no_grad()
    def validation_images(self, pipeline, num_images, generator):
        vae = pipeline
        pixels = self.validation_pixels.to(vae.device)
        reconstruction = vae.decode(vae.encode(pixels).latent_dist.mean).sample
        # Interleave original and reconstruction: (2 * 8, C, H, W) in [0, 1].
        pairs = torch.stack([pixels, reconstruction.float()], dim=1).flatten(0, 1)
        return (pairs / 2 + 0.5).clamp(0, 1).cpu()
