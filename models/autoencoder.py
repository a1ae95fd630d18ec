"""Convolutional autoencoders with a flat latent vector: a deterministic `Autoencoder` and a
`VariationalAutoencoder` (Kingma & Welling, arXiv:1312.6114), plus `GaussianPrior`, a Gaussian fitted to an
autoencoder's latents so that a plain autoencoder can be sampled from.

Both autoencoders share one architecture:

    encoder: (B, C, H, W) → conv 3x3 → [conv 4x4 stride 2, SiLU] per block → flatten → linear → (B, D)   (D = latent_dim,
             2·D for the VAE: mean and log-variance)
    decoder: (B, D) → linear → unflatten → [transposed conv 4x4 stride 2, SiLU] per block → conv 3x3 → (B, C, H, W)

The decoder's raw output `h` is turned into pixels by `tanh(h)` ∈ [-1, 1]. Because `tanh(h) = 2·sigmoid(2h) - 1`,
the same output is also the logit `2h` of a Bernoulli likelihood on pixels rescaled to [0, 1], so
`reconstruction_loss="bce"` (the classic MNIST VAE) and `"mse"` train the same network.

Losses are per pixel: `loss = reconstruction + beta * KL / (C·H·W)`, which has the same minimiser as the
per-image negative ELBO `Σ_pixels reconstruction + beta · KL` (beta = 1) while keeping gradients O(1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin  # imported by name: diffusers' loader looks them up here
from diffusers.configuration_utils import register_to_config
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor
from torch import nn

__all__ = [
    "Autoencoder",
    "AutoencoderOutput",
    "ConfigMixin",
    "GaussianPosterior",
    "GaussianPrior",
    "ModelMixin",
    "TwoStageVAEPrior",
    "VariationalAutoencoder",
    "kl_divergence",
    "reconstruction_loss",
]

ReconstructionLoss = Literal["mse", "bce", "gaussian"]
RECONSTRUCTION_LOSSES = ("mse", "bce", "gaussian")


@dataclass
class AutoencoderOutput(BaseOutput):
    """What an autoencoder's `forward` returns.

    Args:
        sample (`torch.Tensor`): (B, C, H, W) reconstruction in [-1, 1].
        latents (`torch.Tensor`): (B, D) the latents that were decoded (a posterior sample for the VAE).
        loss (`torch.Tensor`): scalar training loss, `reconstruction_loss + beta * kl / (C·H·W)`.
        reconstruction_loss (`torch.Tensor`): scalar, mean over pixels and batch.
        kl (`torch.Tensor`, *optional*): scalar KL(q(z|x) || N(0, I)) in nats per image (VAE only).
        latent_mean, latent_logvar (`torch.Tensor`, *optional*): (B, D) the posterior's parameters (VAE only).
    """

    # Defaults only so that the output can be rebuilt from a dict, as Accelerate's mixed-precision wrapper does with
    # `type(output)({...})` (diffusers' BaseOutput takes a lone mapping as every field); `forward` sets all four.
    sample: torch.Tensor
    latents: torch.Tensor = None
    loss: torch.Tensor = None
    reconstruction_loss: torch.Tensor = None
    kl: torch.Tensor | None = None
    latent_mean: torch.Tensor | None = None
    latent_logvar: torch.Tensor | None = None


def kl_divergence(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)) per sample, summed over all but the first dimension: (B, ...) → (B,).

    `0.5 · Σ (mean² + exp(logvar) − 1 − logvar)` (arXiv:1312.6114, appendix B). Exactly zero where mean = 0 and
    logvar = 0, positive everywhere else.
    """
    return 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).flatten(1).sum(1)


def reconstruction_loss(
    decoder_output: torch.Tensor, pixel_values: torch.Tensor, kind: ReconstructionLoss = "bce"
) -> torch.Tensor:
    """Mean per-pixel reconstruction loss of the decoder's raw output `h` against `pixel_values` in [-1, 1].

    "mse": `(tanh(h) − x)²`; "bce": binary cross-entropy of the logit `2h` against `(x + 1) / 2` (pixels as
    Bernoulli probabilities; `sigmoid(2h) = (tanh(h) + 1) / 2`, so the two views decode to the same image);
    "gaussian": the negative log-likelihood of N(x; tanh(h), σ²) per pixel with one variance σ² shared by all
    pixels, set to its maximum-likelihood value, the batch's mean squared error (the σ-VAE of Rybkin et al.,
    arXiv:2006.13202): `0.5 · log(mse) + 0.5 · (1 + log 2π)`. The likelihood sharpens as reconstructions
    improve, so the KL term's weight relative to the squared error adapts instead of being tuned by hand.
    """
    if kind == "mse":
        return F.mse_loss(torch.tanh(decoder_output), pixel_values)
    if kind == "gaussian":
        mse = F.mse_loss(torch.tanh(decoder_output), pixel_values)
        return 0.5 * torch.log(mse.clamp_min(1e-8)) + 0.5 * (1.0 + math.log(2 * math.pi))
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(2 * decoder_output, (pixel_values + 1) / 2)
    raise ValueError(f"`reconstruction_loss` must be one of {RECONSTRUCTION_LOSSES}, got {kind!r}.")


class GaussianPosterior:
    """The VAE encoder's diagonal Gaussian q(z|x) = N(mean, exp(logvar)) over (B, D) latents."""

    def __init__(self, mean: torch.Tensor, logvar: torch.Tensor):
        self.mean = mean
        # Clamped as in diffusers' DiagonalGaussianDistribution, so exp() neither under- nor overflows.
        self.logvar = logvar.clamp(-30.0, 20.0)
        self.std = torch.exp(0.5 * self.logvar)

    def sample(self, generator: torch.Generator | list[torch.Generator] | None = None) -> torch.Tensor:
        """Reparameterised sample `mean + std * eps`, eps ~ N(0, I) drawn with `generator` (one, or one per row).

        With `generator=None` eps comes from torch's global generator, which the Trainer seeds per process.
        """
        eps = randn_tensor(
            self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype
        )
        return self.mean + self.std * eps

    def mode(self) -> torch.Tensor:
        return self.mean

    def kl(self) -> torch.Tensor:
        """(B,) KL(q(z|x) || N(0, I)) in nats."""
        return kl_divergence(self.mean, self.logvar)


def _check_pixel_values(pixel_values, in_channels: int, sample_size: int) -> None:
    """Raise a clear TypeError/ValueError unless `pixel_values` is a (B, in_channels, sample_size, sample_size) tensor."""
    if not isinstance(pixel_values, torch.Tensor):
        raise TypeError(
            f"`pixel_values` must be a torch.Tensor of shape (B, {in_channels}, {sample_size}, {sample_size}) "
            f"in [-1, 1], got {type(pixel_values).__name__}."
        )
    expected = (in_channels, sample_size, sample_size)
    if pixel_values.ndim != 4:
        hint = " (add the batch dimension: pixel_values[None])" if pixel_values.ndim == 3 else ""
        raise ValueError(
            f"`pixel_values` must have shape (B, {', '.join(map(str, expected))}), got "
            f"{tuple(pixel_values.shape)}{hint}."
        )
    if pixel_values.shape[1] != in_channels:
        fix = (
            "convert to grayscale, e.g. pixel_values.mean(1, keepdim=True)"
            if in_channels == 1
            else f"give images with {in_channels} channels"
        )
        raise ValueError(
            f"`pixel_values` has {pixel_values.shape[1]} channels but the model was built with "
            f"in_channels={in_channels}: {fix}."
        )
    if tuple(pixel_values.shape[2:]) != (sample_size, sample_size):
        raise ValueError(
            f"`pixel_values` is {pixel_values.shape[2]}x{pixel_values.shape[3]} but the model was built for "
            f"{sample_size}x{sample_size} images (sample_size={sample_size}): resize them, e.g. "
            f"`load_dataset(name, image_size={sample_size})` or F.interpolate(pixel_values, size={sample_size})."
        )


def _check_latents(latents, latent_dim: int) -> None:
    if not isinstance(latents, torch.Tensor):
        raise TypeError(
            f"`latents` must be a torch.Tensor of shape (B, {latent_dim}), got {type(latents).__name__}."
        )
    if latents.ndim != 2 or latents.shape[1] != latent_dim:
        raise ValueError(
            f"`latents` must have shape (B, latent_dim={latent_dim}), got {tuple(latents.shape)}"
            + ("; for one latent use latents[None]." if latents.ndim == 1 else ".")
        )


def check_resolution_blocks(sample_size: int, block_out_channels, example: tuple[int, ...]) -> None:
    """Each block halves (encoder, discriminator) or doubles (decoder, generator) the resolution: `sample_size` must
    survive len(block_out_channels) halvings. `example` is a valid `block_out_channels` to name in the error."""
    if not block_out_channels:
        raise ValueError(f"`block_out_channels` must name at least one block, e.g. {tuple(example)}.")
    factor = 2 ** len(block_out_channels)
    if sample_size % factor != 0:
        raise ValueError(
            f"`sample_size`={sample_size} must be divisible by 2 ** len(block_out_channels) = {factor} (each block "
            f"halves or doubles the resolution): use fewer blocks or a sample_size that is a multiple of {factor}."
        )


def _check_kl_weight(value, name: str, zero_means: str) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
        raise ValueError(f"`{name}` must be a finite number >= 0 ({zero_means}), got {value!r}.")


def _check_architecture(in_channels, sample_size, latent_dim, block_out_channels, reconstruction_loss_kind):
    if latent_dim < 1:
        raise ValueError(
            f"`latent_dim` must be a positive int (2 for a plottable latent space), got {latent_dim}."
        )
    check_resolution_blocks(sample_size, block_out_channels, example=(32, 64))
    if in_channels < 1:
        raise ValueError(f"`in_channels` must be a positive int, got {in_channels}.")
    if reconstruction_loss_kind not in RECONSTRUCTION_LOSSES:
        raise ValueError(
            f"`reconstruction_loss` must be one of {RECONSTRUCTION_LOSSES}, got {reconstruction_loss_kind!r}."
        )


class _Encoder(nn.Module):
    """(B, C, H, W) → (B, out_features): a conv stem, one stride-2 conv per block, a linear head."""

    def __init__(self, in_channels, sample_size, block_out_channels, out_features):
        super().__init__()
        layers = [nn.Conv2d(in_channels, block_out_channels[0], 3, padding=1), nn.SiLU()]
        channels = block_out_channels[0]
        for out_channels in block_out_channels:
            layers += [nn.Conv2d(channels, out_channels, 4, stride=2, padding=1), nn.SiLU()]
            channels = out_channels
        self.conv = nn.Sequential(*layers)
        size = sample_size // 2 ** len(block_out_channels)
        self.head = nn.Linear(channels * size * size, out_features)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(pixel_values).flatten(1))


class _Decoder(nn.Module):
    """(B, latent_dim) → (B, C, H, W) raw output `h` (pixels are tanh(h)): the encoder mirrored."""

    def __init__(self, out_channels, sample_size, block_out_channels, latent_dim):
        super().__init__()
        self.size = sample_size // 2 ** len(block_out_channels)
        self.channels = block_out_channels[-1]
        self.linear = nn.Linear(latent_dim, self.channels * self.size * self.size)
        layers = [nn.SiLU()]
        channels = self.channels
        for next_channels in reversed(block_out_channels):
            layers += [nn.ConvTranspose2d(channels, next_channels, 4, stride=2, padding=1), nn.SiLU()]
            channels = next_channels
        layers.append(nn.Conv2d(channels, out_channels, 3, padding=1))
        self.conv = nn.Sequential(*layers)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        hidden = self.linear(latents).view(-1, self.channels, self.size, self.size)  # (B, C_last, s, s)
        return self.conv(hidden)


class Autoencoder(ModelMixin, ConfigMixin):
    r"""
    A deterministic convolutional autoencoder: images → a (B, latent_dim) vector → images.

    Its latent space is whatever the reconstruction loss made it: nothing places the codes where N(0, I) puts
    its mass, so decoding standard-normal draws gives poor images. Fit a [`GaussianPrior`] or a
    [`~latentzoo.models.MixtureDensityNetwork`] to its latents to sample from it (see `AutoencoderPipeline`).

    Args:
        in_channels (`int`, defaults to 1): image channels.
        sample_size (`int`, defaults to 32): image height and width; a multiple of `2 ** len(block_out_channels)`.
        latent_dim (`int`, defaults to 16): size of the latent vector, down to 2 for a plottable latent space.
        block_out_channels (`tuple[int, ...]`, defaults to `(32, 64)`): channels of each stride-2 block.
        reconstruction_loss (`str`, defaults to `"bce"`): `"bce"` (pixels as Bernoulli probabilities) or `"mse"`.

    Example:
        >>> model = Autoencoder(latent_dim=2)
        >>> latents = model.encode(pixel_values)  # (B, 1, 32, 32) in [-1, 1] → (B, 2)
        >>> images = model.decode(latents)  # (B, 1, 32, 32) in [-1, 1]
    """

    @register_to_config
    def __init__(
        self,
        in_channels: int = 1,
        sample_size: int = 32,
        latent_dim: int = 16,
        block_out_channels: tuple[int, ...] = (32, 64),
        reconstruction_loss: ReconstructionLoss = "bce",
    ):
        super().__init__()
        block_out_channels = tuple(block_out_channels)
        _check_architecture(in_channels, sample_size, latent_dim, block_out_channels, reconstruction_loss)
        self.encoder = _Encoder(in_channels, sample_size, block_out_channels, latent_dim)
        self.decoder = _Decoder(in_channels, sample_size, block_out_channels, latent_dim)

    @property
    def num_pixels(self) -> int:
        """C·H·W, the number of values the reconstruction loss averages over per image."""
        return self.config.in_channels * self.config.sample_size**2

    def check_pixel_values(self, pixel_values: torch.Tensor) -> None:
        """Raise a TypeError/ValueError naming the fix unless `pixel_values` fits this model."""
        _check_pixel_values(pixel_values, self.config.in_channels, self.config.sample_size)

    def encode(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) images in [-1, 1] → (B, latent_dim) latents."""
        self.check_pixel_values(pixel_values)
        return self.encoder(pixel_values)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, latent_dim) latents → (B, C, H, W) images in [-1, 1]."""
        _check_latents(latents, self.config.latent_dim)
        return torch.tanh(self.decoder(latents))

    def forward(self, pixel_values: torch.Tensor, return_dict: bool = True) -> AutoencoderOutput | tuple:
        """Encode, decode and compute the loss in one call (under DDP only `forward` synchronises gradients)."""
        latents = self.encode(pixel_values)
        decoder_output = self.decoder(latents)
        rec_loss = reconstruction_loss(decoder_output, pixel_values, self.config.reconstruction_loss)
        output = AutoencoderOutput(
            sample=torch.tanh(decoder_output), latents=latents, loss=rec_loss, reconstruction_loss=rec_loss
        )
        return output if return_dict else output.to_tuple()


class VariationalAutoencoder(ModelMixin, ConfigMixin):
    r"""
    A convolutional variational autoencoder (Kingma & Welling, arXiv:1312.6114) with a (B, latent_dim) latent.

    The encoder gives the mean and log-variance of q(z|x); training decodes a reparameterised sample
    z = mean + std · eps and minimises `reconstruction + beta · KL(q(z|x) || N(0, I)) / (C·H·W)`, so the codes
    fill the standard normal and decoding z ~ N(0, I) gives digits (beta > 1 is the beta-VAE of Higgins et al.).

    Args:
        in_channels (`int`, defaults to 1): image channels.
        sample_size (`int`, defaults to 32): image height and width; a multiple of `2 ** len(block_out_channels)`.
        latent_dim (`int`, defaults to 16): size of the latent vector, down to 2 for a plottable latent space.
        block_out_channels (`tuple[int, ...]`, defaults to `(32, 64)`): channels of each stride-2 block.
        reconstruction_loss (`str`, defaults to `"bce"`): `"bce"` (Bernoulli pixels: the ELBO at beta = 1) or
            `"mse"` (then lower `beta`: with pixels in [-1, 1], squared error is a Gaussian likelihood of
            variance 1/2, far blurrier than the data).
            `"gaussian"` learns that variance: one σ² shared by all pixels, at its optimum (the σ-VAE).
        beta (`float`, defaults to 1.0): weight of the KL term.
        free_bits (`float`, defaults to 0.0): a floor, in nats, under each latent dimension's KL averaged over the
            batch (Kingma et al., arXiv:1606.04934, eq. 15): a dimension whose KL is below it gets no gradient from
            the KL term, so the encoder is free to use it. 0 is the plain ELBO.

    Example:
        >>> vae = VariationalAutoencoder(latent_dim=2)
        >>> posterior = vae.encode(pixel_values)  # posterior.mean, posterior.logvar: (B, 2)
        >>> z = posterior.sample(generator=torch.Generator().manual_seed(0))
        >>> images = vae.decode(z)  # (B, 1, 32, 32) in [-1, 1]
    """

    @register_to_config
    def __init__(
        self,
        in_channels: int = 1,
        sample_size: int = 32,
        latent_dim: int = 16,
        block_out_channels: tuple[int, ...] = (32, 64),
        reconstruction_loss: ReconstructionLoss = "bce",
        beta: float = 1.0,
        free_bits: float = 0.0,
    ):
        super().__init__()
        block_out_channels = tuple(block_out_channels)
        _check_architecture(in_channels, sample_size, latent_dim, block_out_channels, reconstruction_loss)
        _check_kl_weight(beta, "beta", "0 turns the VAE into a noisy autoencoder")
        if not (isinstance(free_bits, int | float) and math.isfinite(free_bits) and free_bits >= 0):
            raise ValueError(
                f"`free_bits` must be a finite number of nats >= 0 per latent dimension (0: none; 0.1-0.5 are "
                f"usual), got {free_bits!r}."
            )
        # The head gives mean and log-variance: (B, 2 * latent_dim).
        self.encoder = _Encoder(in_channels, sample_size, block_out_channels, 2 * latent_dim)
        self.decoder = _Decoder(in_channels, sample_size, block_out_channels, latent_dim)

    num_pixels = Autoencoder.num_pixels
    check_pixel_values = Autoencoder.check_pixel_values

    def encode(self, pixel_values: torch.Tensor) -> GaussianPosterior:
        """(B, C, H, W) images in [-1, 1] → the posterior q(z|x), with `.mean`, `.logvar` (B, latent_dim) and `.sample()`."""
        self.check_pixel_values(pixel_values)
        mean, logvar = self.encoder(pixel_values).chunk(2, dim=1)
        return GaussianPosterior(mean, logvar)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, latent_dim) latents → (B, C, H, W) images in [-1, 1]."""
        _check_latents(latents, self.config.latent_dim)
        return torch.tanh(self.decoder(latents))

    def forward(
        self,
        pixel_values: torch.Tensor,
        generator: torch.Generator | list[torch.Generator] | None = None,
        sample_posterior: bool = True,
        beta: float | None = None,
        return_dict: bool = True,
    ) -> AutoencoderOutput | tuple:
        """Encode, sample z ~ q(z|x) with `generator`, decode, and compute the loss in one call.

        Args:
            pixel_values (`torch.Tensor`): (B, C, H, W) in [-1, 1].
            generator (`torch.Generator` or list, *optional*): for eps; None uses torch's global generator (the
                Trainer seeds it per process and checkpoints it).
            sample_posterior (`bool`, defaults to `True`): decode a sample; False decodes the posterior mean.
            beta (`float`, *optional*): the KL weight of this call (a warm-up's current value); None: `config.beta`.
        """
        if beta is None:
            beta = self.config.beta
        else:
            _check_kl_weight(beta, "beta", "0 turns the KL term off")
        posterior = self.encode(pixel_values)
        latents = posterior.sample(generator) if sample_posterior else posterior.mode()
        decoder_output = self.decoder(latents)
        rec_loss = reconstruction_loss(decoder_output, pixel_values, self.config.reconstruction_loss)
        kl = posterior.kl().mean()  # nats per image
        kl_term = kl
        if self.config.free_bits > 0:
            # KL per dimension, averaged over the batch, floored at `free_bits` (arXiv:1606.04934, eq. 15).
            mean, logvar = posterior.mean, posterior.logvar
            kl_per_dim = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).mean(0)  # (D,)
            kl_term = kl_per_dim.clamp_min(self.config.free_bits).sum()
        loss = rec_loss + beta * kl_term / self.num_pixels
        output = AutoencoderOutput(
            sample=torch.tanh(decoder_output),
            latents=latents,
            loss=loss,
            reconstruction_loss=rec_loss,
            kl=kl,
            latent_mean=posterior.mean,
            latent_logvar=posterior.logvar,
        )
        return output if return_dict else output.to_tuple()


def _check_unconditional_sample(prior: str, num_samples, class_labels, condition) -> None:
    """The arguments of an unconditional prior's `sample`: a positive `num_samples`, no labels or condition."""
    if class_labels is not None or condition is not None:
        raise ValueError(
            f"A {prior} is unconditional: pass no `class_labels` / `condition`, or use a "
            "MixtureDensityNetwork prior trained with `num_classes` (task `mdn_prior`)."
        )
    if num_samples is None or num_samples < 1:
        raise ValueError(f"`num_samples` must be a positive int, got {num_samples!r}.")


class GaussianPrior(ModelMixin, ConfigMixin):
    r"""
    A full-covariance Gaussian N(mean, L Lᵀ) over (B, latent_dim) latents, fitted to a plain autoencoder's codes.

    It is the simplest prior that makes a deterministic autoencoder a generator: sample z = mean + L · eps, decode.
    Fit it with [`GaussianPrior.from_latents`]; it saves and loads like any diffusers model.

    Args:
        latent_dim (`int`): size of the latent vector.
    """

    @register_to_config
    def __init__(self, latent_dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(latent_dim))
        self.register_buffer("scale_tril", torch.eye(latent_dim))  # Cholesky factor L of the covariance

    @classmethod
    def from_latents(cls, latents: torch.Tensor, eps: float = 1e-5) -> GaussianPrior:
        """Maximum-likelihood fit to (N, latent_dim) latents (covariance + `eps`·I for a stable Cholesky)."""
        if latents.ndim != 2 or len(latents) < 2:
            raise ValueError(f"`latents` must be (N >= 2, latent_dim), got {tuple(latents.shape)}.")
        latents = latents.detach().double()
        prior = cls(latent_dim=latents.shape[1])
        covariance = torch.cov(latents.T).reshape(latents.shape[1], latents.shape[1])
        covariance = covariance + eps * torch.eye(latents.shape[1], dtype=torch.float64)
        prior.mean.copy_(latents.mean(0))
        prior.scale_tril.copy_(torch.linalg.cholesky(covariance))
        return prior.to(latents.device)

    def sample(
        self,
        num_samples: int | None = None,
        class_labels: torch.Tensor | None = None,
        condition: torch.Tensor | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
    ) -> torch.Tensor:
        """`num_samples` draws (num_samples, latent_dim). The prior is unconditional: labels/conditions are errors."""
        _check_unconditional_sample("GaussianPrior", num_samples, class_labels, condition)
        eps = randn_tensor(
            (num_samples, self.config.latent_dim),
            generator=generator,
            device=self.mean.device,
            dtype=self.mean.dtype,
        )
        return self.mean + eps @ self.scale_tril.T

    def log_prob(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, latent_dim) → (B,) log density."""
        diff = (latents - self.mean).T  # (D, B)
        solved = torch.linalg.solve_triangular(self.scale_tril, diff, upper=False)  # L⁻¹ (z − mean)
        log_det = self.scale_tril.diagonal().log().sum()
        return -0.5 * solved.pow(2).sum(0) - log_det - 0.5 * self.config.latent_dim * math.log(2 * math.pi)


class TwoStageVAEPrior(ModelMixin, ConfigMixin):
    r"""
    The second stage of a two-stage VAE (Dai & Wipf, arXiv:1903.05789): a small VAE over a first VAE's latents.

    A VAE's aggregate posterior q(z) = E_x q(z|x) rarely fills N(0, I) evenly: decoding z ~ N(0, I) lands partly in
    regions no digit was encoded to. This second VAE learns q(z) itself, with its own latent u ~ N(0, I):
    sampling draws u ~ N(0, I), maps it to z = decoder(u), and the first VAE decodes z. It is trained on samples
    of q(z|x) with a Gaussian likelihood N(z; decoder(u), γI) whose one variance γ is learned (the paper's γ,
    which falls as the fit improves), plus KL(q(u|z) || N(0, I)).

        encoder: (B, D) → MLP → (B, 2·D) mean and log-variance of q(u|z);  decoder: (B, D) → MLP → (B, D)

    Args:
        latent_dim (`int`): D, the first VAE's latent size (u has the same size).
        hidden_dims (`tuple[int, ...]`, defaults to `(256, 256)`): widths of each MLP's hidden layers.
    """

    @register_to_config
    def __init__(self, latent_dim: int, hidden_dims: tuple[int, ...] = (256, 256)):
        super().__init__()
        if latent_dim < 1:
            raise ValueError(f"`latent_dim` must be a positive int, got {latent_dim}.")
        if not hidden_dims or any(width < 1 for width in hidden_dims):
            raise ValueError(
                f"`hidden_dims` must name at least one positive width, e.g. (256, 256), got {hidden_dims}."
            )

        def mlp(out_features):
            layers, width = [], latent_dim
            for hidden in hidden_dims:
                layers += [nn.Linear(width, hidden), nn.SiLU()]
                width = hidden
            return nn.Sequential(*layers, nn.Linear(width, out_features))

        self.encoder = mlp(2 * latent_dim)
        self.decoder = mlp(latent_dim)
        self.log_gamma = nn.Parameter(torch.zeros(()))  # log γ, the shared variance of N(z; decoder(u), γI)

    def forward(self, latents: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, D) first-stage latents → the scalar negative ELBO of the second stage, in nats per latent vector."""
        _check_latents(latents, self.config.latent_dim)
        posterior = GaussianPosterior(*self.encoder(latents).chunk(2, dim=1))
        reconstruction = self.decoder(posterior.sample(generator))
        # Gaussian NLL with variance γ: 0.5 · Σ_d [(z − ẑ)² / γ + log γ + log 2π].
        log_gamma = self.log_gamma.clamp(min=-12.0)
        nll = 0.5 * ((latents - reconstruction).pow(2) / log_gamma.exp() + log_gamma + math.log(2 * math.pi))
        return nll.sum(1).mean() + posterior.kl().mean()

    def sample(
        self,
        num_samples: int | None = None,
        class_labels: torch.Tensor | None = None,
        condition: torch.Tensor | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
    ) -> torch.Tensor:
        """`num_samples` first-stage latents (num_samples, D): u ~ N(0, I) drawn with `generator`, decoded."""
        _check_unconditional_sample("TwoStageVAEPrior", num_samples, class_labels, condition)
        dtype = self.log_gamma.dtype
        noise = randn_tensor(
            (num_samples, self.config.latent_dim), generator=generator, device=self.device, dtype=dtype
        )
        return self.decoder(noise)
