"""DCGAN-style generator and discriminator (Radford et al., arXiv:1511.06434), optionally class-conditional.

    Generator:     z (B, D) [⊕ class embedding] → linear → (B, c_0, s, s) → [transposed conv 4x4 stride 2, BN, ReLU]
                   per further block → transposed conv 4x4 stride 2 → tanh → (B, C, H, W) in [-1, 1]
                   (s = H / 2^len(block_out_channels): every block doubles the resolution)
    Discriminator: (B, C, H, W) → [conv 4x4 stride 2, LeakyReLU(0.2)] per block → flatten → h (B, F)
                   → linear → one realness score (logit) per image, (B,)

Class conditioning: the generator concatenates a learned class embedding to z; the discriminator is a projection
discriminator (Miyato & Koyama, arXiv:1802.05637), `score = linear(h) + <embed(y), h>`. Spectral normalisation
(Miyato et al., arXiv:1802.05957) of every discriminator layer bounds its Lipschitz constant, the usual way to keep
GAN training stable without batch norm in the discriminator. Neither model draws random numbers: the latents z come
from the caller (the pipeline draws them with a `torch.Generator`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from diffusers import ConfigMixin, ModelMixin  # imported by name: diffusers' loader looks them up here
from diffusers.configuration_utils import register_to_config
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from .autoencoder import check_resolution_blocks
from .checks import check_class_labels

__all__ = ["ConfigMixin", "Discriminator", "Generator", "ModelMixin"]


def _check_architecture(
    sample_size: int, channels: int, block_out_channels: Sequence[int], num_classes
) -> None:
    check_resolution_blocks(sample_size, block_out_channels, example=(128, 64, 32))
    if channels < 1:
        raise ValueError(f"The number of image channels must be a positive int, got {channels}.")
    if num_classes is not None and (isinstance(num_classes, bool) or num_classes < 1):
        raise ValueError(
            f"`num_classes` must be a positive int or None (unconditional), got {num_classes!r}."
        )


def _check_class_labels(
    class_labels, num_classes: int | None, batch_size: int, model: str, batch_name: str
) -> torch.Tensor | None:
    """None for an unconditional model; a (B,) int64 tensor of labels in [0, num_classes) otherwise."""
    if num_classes is None:
        if class_labels is not None:
            raise ValueError(
                f"This {model} is unconditional (num_classes=None): leave `class_labels` out, or build it with "
                "`num_classes` to condition on classes."
            )
        return None
    if class_labels is None:
        raise ValueError(
            f"This {model} is class-conditional (num_classes={num_classes}): pass `class_labels`, a (B,) tensor "
            f"of ints in [0, {num_classes - 1}]."
        )
    return check_class_labels(class_labels, num_classes, batch_size, batch_name=batch_name)


class Generator(ModelMixin, ConfigMixin):
    r"""
    DCGAN generator: (B, latent_dim) latents z ~ N(0, I) [and (B,) class labels] → (B, C, H, W) images in [-1, 1].

    Args:
        latent_dim (`int`, defaults to 64): size D of z.
        sample_size (`int`, defaults to 32): image height and width; divisible by 2 ** len(block_out_channels).
        out_channels (`int`, defaults to 1): image channels.
        block_out_channels (`tuple[int]`, defaults to (128, 64, 32)): channels per block, coarse to fine; each
            block doubles the resolution (4x4 → 32x32 for three blocks at sample_size 32).
        num_classes (`int`, *optional*): number of classes to condition on; None for an unconditional generator.
        class_embed_dim (`int`, defaults to 32): size of the class embedding concatenated to z.
    """

    @register_to_config
    def __init__(
        self,
        latent_dim: int = 64,
        sample_size: int = 32,
        out_channels: int = 1,
        block_out_channels: tuple[int, ...] = (128, 64, 32),
        num_classes: int | None = None,
        class_embed_dim: int = 32,
    ):
        super().__init__()
        _check_architecture(sample_size, out_channels, block_out_channels, num_classes)
        if latent_dim < 1:
            raise ValueError(f"`latent_dim` must be a positive int, got {latent_dim}.")
        self.base_size = sample_size // 2 ** len(block_out_channels)
        self.class_embedding = nn.Embedding(num_classes, class_embed_dim) if num_classes is not None else None
        in_features = latent_dim + (class_embed_dim if num_classes is not None else 0)
        channels = block_out_channels[0]
        self.project = nn.Sequential(
            nn.Linear(in_features, channels * self.base_size**2, bias=False),
            nn.Unflatten(1, (channels, self.base_size, self.base_size)),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
        )
        layers = []
        for out in block_out_channels[1:]:
            layers += [
                nn.ConvTranspose2d(channels, out, 4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(out),
                nn.ReLU(),
            ]
            channels = out
        layers += [nn.ConvTranspose2d(channels, out_channels, 4, stride=2, padding=1), nn.Tanh()]
        self.blocks = nn.Sequential(*layers)

    def check_latents(self, latents) -> None:
        """Raise a clear TypeError/ValueError unless `latents` is a (B, latent_dim) tensor."""
        latent_dim = self.config.latent_dim
        if not isinstance(latents, torch.Tensor):
            raise TypeError(
                f"`latents` must be a torch.Tensor of shape (B, {latent_dim}), got {type(latents).__name__}."
            )
        if latents.ndim != 2 or latents.shape[1] != latent_dim:
            hint = "; for one latent use latents[None]" if latents.ndim == 1 else ""
            raise ValueError(
                f"`latents` must have shape (B, latent_dim={latent_dim}), got {tuple(latents.shape)}{hint}. "
                "Draw them with `torch.randn(batch_size, generator.config.latent_dim)`."
            )

    def forward(self, latents: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        """(B, latent_dim) latents [, (B,) labels in [0, num_classes)] → (B, out_channels, H, W) in [-1, 1]."""
        self.check_latents(latents)
        class_labels = _check_class_labels(
            class_labels, self.config.num_classes, len(latents), "generator", "len(latents)"
        )
        if class_labels is not None:
            embedding = self.class_embedding(class_labels.to(latents.device)).to(latents.dtype)
            latents = torch.cat([latents, embedding], dim=1)  # (B, D + E)
        return self.blocks(self.project(latents))  # (B, c_0, s, s) → (B, C, H, W)


class Discriminator(ModelMixin, ConfigMixin):
    r"""
    DCGAN discriminator: (B, C, H, W) images in [-1, 1] [and (B,) class labels] → (B,) realness scores (logits).

    Args:
        sample_size (`int`, defaults to 32): image height and width; divisible by 2 ** len(block_out_channels).
        in_channels (`int`, defaults to 1): image channels.
        block_out_channels (`tuple[int]`, defaults to (32, 64, 128)): channels per block, fine to coarse; each block
            halves the resolution.
        num_classes (`int`, *optional*): classes for the projection term; None for an unconditional discriminator.
        spectral_norm (`bool`, defaults to True): spectrally normalise every layer (arXiv:1802.05957).
    """

    @register_to_config
    def __init__(
        self,
        sample_size: int = 32,
        in_channels: int = 1,
        block_out_channels: tuple[int, ...] = (32, 64, 128),
        num_classes: int | None = None,
        spectral_norm: bool = True,
    ):
        super().__init__()
        _check_architecture(sample_size, in_channels, block_out_channels, num_classes)

        def norm(layer: nn.Module) -> nn.Module:
            return _spectral_norm(layer) if spectral_norm else layer

        layers, channels = [], in_channels
        for out in block_out_channels:
            layers += [norm(nn.Conv2d(channels, out, 4, stride=2, padding=1)), nn.LeakyReLU(0.2)]
            channels = out
        self.blocks = nn.Sequential(*layers, nn.Flatten())
        features = channels * (sample_size // 2 ** len(block_out_channels)) ** 2
        self.score = norm(nn.Linear(features, 1))
        self.class_embedding = norm(nn.Embedding(num_classes, features)) if num_classes is not None else None

    def check_pixel_values(self, pixel_values) -> None:
        expected = (self.config.in_channels, self.config.sample_size, self.config.sample_size)
        if not isinstance(pixel_values, torch.Tensor):
            raise TypeError(f"`pixel_values` must be a torch.Tensor, got {type(pixel_values).__name__}.")
        if pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != expected:
            raise ValueError(
                f"`pixel_values` must have shape (B, {', '.join(map(str, expected))}) for this discriminator, got "
                f"{tuple(pixel_values.shape)}."
            )

    def forward(self, pixel_values: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, H, W) in [-1, 1] [, (B,) labels] → (B,) scores: > 0 means "real" (a logit of P(real))."""
        self.check_pixel_values(pixel_values)
        class_labels = _check_class_labels(
            class_labels, self.config.num_classes, len(pixel_values), "discriminator", "len(pixel_values)"
        )
        features = self.blocks(pixel_values)  # (B, F)
        score = self.score(features).squeeze(1)  # (B,)
        if class_labels is not None:
            # Projection discriminator, eq. (3) of arXiv:1802.05637: + <embed(y), φ(x)>.
            score = score + (self.class_embedding(class_labels.to(features.device)) * features).sum(1)
        return score
