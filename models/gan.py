"""DCGAN-style generator and discriminator (Radford et al., arXiv:1511.06434), optionally class-conditional.

    Generator:     z (B, D) [⊕ class embedding] → linear → (B, c_0, s, s) → [transposed conv 4x4 stride 2, BN, ReLU]
                   per further block → transposed conv 4x4 stride 2 → tanh → (B, C, H, W) in [-1, 1]
                   (s = H / 2^len(block_out_channels): every block doubles the resolution)
    Discriminator: (B, C, H, W) → [conv 4x4 stride 2, LeakyReLU(0.2)] per block → flatten → h (B, F)
                   → linear → one realness score (logit) per image, (B,)

Class conditioning: the generator concatenates a learned class embedding to z (`class_conditioning="concat"`) or
gives every batch norm class-conditional gains and biases (`"batch_norm"`, conditional batch norm as in SNGAN /
BigGAN, arXiv:1802.05637 sec. 5); the discriminator is a projection discriminator (Miyato & Koyama,
arXiv:1802.05637), `score = linear(h) + <embed(y), φ>`, with φ the flattened features h (`projection="flatten"`) or,
as in that paper, the last features summed over positions (`projection="pooled"`), which asks "is this a y?"
without fixing where its strokes lie. `auxiliary_classifier=True` adds a class head on the same features (AC-GAN,
Odena et al., arXiv:1610.09585), which the training task trains on real images and the generator is asked to
satisfy. Spectral normalisation
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

CLASS_CONDITIONINGS = ("concat", "batch_norm")
PROJECTIONS = ("flatten", "pooled")


def _check_choice(name: str, value, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {choices}, got {value!r}.")


class ConditionalBatchNorm2d(nn.Module):
    """Batch norm whose gain and bias depend on the class: `BN(x) · (1 + γ[y]) + β[y]` (arXiv:1707.00683);
    γ and β start at zero, so the layer starts as a plain batch norm."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(channels, affine=False)
        self.gain = nn.Embedding(num_classes, channels)
        self.bias = nn.Embedding(num_classes, channels)
        nn.init.zeros_(self.gain.weight)
        nn.init.zeros_(self.bias.weight)

    def forward(self, hidden_states: torch.Tensor, class_labels: torch.Tensor) -> torch.Tensor:
        gain = self.gain(class_labels)[:, :, None, None].to(hidden_states.dtype)
        bias = self.bias(class_labels)[:, :, None, None].to(hidden_states.dtype)
        return self.norm(hidden_states) * (1 + gain) + bias


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
        class_embed_dim (`int`, defaults to 32): size of the class embedding concatenated to z (`"concat"`).
        class_conditioning (`str`, defaults to `"concat"`): how the class enters: `"concat"` (an embedding
            concatenated to z) or `"batch_norm"` (class-conditional gains and biases in every batch norm).
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
        class_conditioning: str = "concat",
    ):
        super().__init__()
        _check_architecture(sample_size, out_channels, block_out_channels, num_classes)
        _check_choice("class_conditioning", class_conditioning, CLASS_CONDITIONINGS)
        if latent_dim < 1:
            raise ValueError(f"`latent_dim` must be a positive int, got {latent_dim}.")
        self.base_size = sample_size // 2 ** len(block_out_channels)
        concat = num_classes is not None and class_conditioning == "concat"
        self.class_embedding = nn.Embedding(num_classes, class_embed_dim) if concat else None

        def norm(channels: int) -> nn.Module:
            if num_classes is not None and class_conditioning == "batch_norm":
                return ConditionalBatchNorm2d(channels, num_classes)
            return nn.BatchNorm2d(channels)

        in_features = latent_dim + (class_embed_dim if concat else 0)
        channels = block_out_channels[0]
        self.project = nn.Sequential(
            nn.Linear(in_features, channels * self.base_size**2, bias=False),
            nn.Unflatten(1, (channels, self.base_size, self.base_size)),
            norm(channels),
            nn.ReLU(),
        )
        layers = []
        for out in block_out_channels[1:]:
            layers += [
                nn.ConvTranspose2d(channels, out, 4, stride=2, padding=1, bias=False),
                norm(out),
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
            class_labels = class_labels.to(latents.device)
        if self.class_embedding is not None:
            embedding = self.class_embedding(class_labels).to(latents.dtype)
            latents = torch.cat([latents, embedding], dim=1)  # (B, D + E)
        hidden_states = latents
        for layer in (*self.project, *self.blocks):  # (B, c_0, s, s) → ... → (B, C, H, W)
            if isinstance(layer, ConditionalBatchNorm2d):
                hidden_states = layer(hidden_states, class_labels)
            else:
                hidden_states = layer(hidden_states)
        return hidden_states


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
        projection (`str`, defaults to `"flatten"`): the features the class embedding is projected on: `"flatten"`
            (all of them, position by position) or `"pooled"` (the last block's channels summed over positions).
        auxiliary_classifier (`bool`, defaults to False): also predict the class (`forward(...,
            return_class_logits=True)`); class-conditional discriminators only.
    """

    @register_to_config
    def __init__(
        self,
        sample_size: int = 32,
        in_channels: int = 1,
        block_out_channels: tuple[int, ...] = (32, 64, 128),
        num_classes: int | None = None,
        spectral_norm: bool = True,
        projection: str = "flatten",
        auxiliary_classifier: bool = False,
    ):
        super().__init__()
        _check_architecture(sample_size, in_channels, block_out_channels, num_classes)
        _check_choice("projection", projection, PROJECTIONS)
        if auxiliary_classifier and num_classes is None:
            raise ValueError(
                "`auxiliary_classifier=True` needs classes to predict: give `num_classes`, or leave the classifier out."
            )

        def norm(layer: nn.Module) -> nn.Module:
            return _spectral_norm(layer) if spectral_norm else layer

        layers, channels = [], in_channels
        for out in block_out_channels:
            layers += [norm(nn.Conv2d(channels, out, 4, stride=2, padding=1)), nn.LeakyReLU(0.2)]
            channels = out
        self.blocks = nn.Sequential(*layers, nn.Flatten())
        features = channels * (sample_size // 2 ** len(block_out_channels)) ** 2
        self.score = norm(nn.Linear(features, 1))
        projected = channels if projection == "pooled" else features
        self.class_embedding = norm(nn.Embedding(num_classes, projected)) if num_classes is not None else None
        self.classifier = norm(nn.Linear(features, num_classes)) if auxiliary_classifier else None

    def check_pixel_values(self, pixel_values) -> None:
        expected = (self.config.in_channels, self.config.sample_size, self.config.sample_size)
        if not isinstance(pixel_values, torch.Tensor):
            raise TypeError(f"`pixel_values` must be a torch.Tensor, got {type(pixel_values).__name__}.")
        if pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != expected:
            raise ValueError(
                f"`pixel_values` must have shape (B, {', '.join(map(str, expected))}) for this discriminator, got "
                f"{tuple(pixel_values.shape)}."
            )

    def forward(
        self,
        pixel_values: torch.Tensor,
        class_labels: torch.Tensor | None = None,
        return_class_logits: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """(B, C, H, W) in [-1, 1] [, (B,) labels] → (B,) scores: > 0 means "real" (a logit of P(real)); with
        `return_class_logits`, also the auxiliary classifier's (B, num_classes) logits."""
        if return_class_logits and self.classifier is None:
            raise ValueError(
                "This discriminator has no auxiliary classifier: build it with `auxiliary_classifier=True`."
            )
        self.check_pixel_values(pixel_values)
        class_labels = _check_class_labels(
            class_labels, self.config.num_classes, len(pixel_values), "discriminator", "len(pixel_values)"
        )
        features = self.blocks(pixel_values)  # (B, F), F = c · s · s
        score = self.score(features).squeeze(1)  # (B,)
        if class_labels is not None:
            # Projection discriminator, eq. (3) of arXiv:1802.05637: + <embed(y), φ(x)>.
            projected = features
            if self.config.projection == "pooled":
                projected = features.unflatten(1, (self.config.block_out_channels[-1], -1)).sum(2)  # (B, c)
            score = score + (self.class_embedding(class_labels.to(features.device)) * projected).sum(1)
        if return_class_logits:
            return score, self.classifier(features)  # (B,), (B, num_classes)
        return score
