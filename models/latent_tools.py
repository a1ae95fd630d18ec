"""Computing with latents: interpolation (lerp, slerp) and attribute arithmetic.

One implementation for every latent space in latentzoo: the autoencoders' (B, D) vectors, a GAN's noise and a
diffusion model's (B, C, h, w) latents alike. Latents are batches with the batch dimension first; everything
after it is one point. A single 1-D vector (D,) is treated as one point too.

    strip = interpolate(z_start, z_end, num_steps=8, method="slerp")        # (B * 8, ...)
    bold = attribute_vector(encode(bold_digits), encode(thin_digits))       # (...) mean with − mean without
    bolder = apply_attribute(z, bold, strength=1.5)                         # z + 1.5 · bold
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .checks import check_number

__all__ = ["apply_attribute", "attribute_strip", "attribute_vector", "interpolate", "lerp", "slerp"]

INTERPOLATION_METHODS = ("lerp", "slerp")


def _check_pair(start: torch.Tensor, end: torch.Tensor) -> None:
    for name, value in (("start", start), ("end", end)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"`{name}` must be a torch.Tensor of latents, got {type(value).__name__}.")
    if start.shape != end.shape:
        raise ValueError(
            f"`start` and `end` must have the same shape, got {tuple(start.shape)} and {tuple(end.shape)}."
        )


def _check_t(t: float) -> float:
    """A finite number; outside [0, 1] extrapolates, which is allowed."""
    if isinstance(t, torch.Tensor) and t.numel() != 1:
        raise ValueError(
            f"`t` must be a single number, got a tensor of shape {tuple(t.shape)}; use `interpolate`."
        )
    return check_number(t, "t", example=0.5)


def lerp(start: torch.Tensor, end: torch.Tensor, t: float) -> torch.Tensor:
    """Linear interpolation `(1 − t) · start + t · end`; exactly `start` at t = 0 and exactly `end` at t = 1.

    Between two standard-normal draws the midpoint has only ~0.71 of their norm, so decoders trained on
    N(0, I) see atypically short latents there; `slerp` keeps the norm.
    """
    _check_pair(start, end)
    t = _check_t(t)
    return (1.0 - t) * start + t * end


def slerp(start: torch.Tensor, end: torch.Tensor, t: float, dot_threshold: float = 0.9995) -> torch.Tensor:
    """Spherical linear interpolation (Shoemake 1985), per point of the batch; exactly the endpoints at 0 and 1.

    `sin((1 − t) θ) / sin θ · start + sin(t θ) / sin θ · end`, θ the angle between the two points (all dimensions
    after the batch dimension). Where they are nearly parallel (|cos θ| > `dot_threshold`) it falls back to `lerp`.
    Recommended for Gaussian latents (White, "Sampling Generative Networks", arXiv:1609.04468).
    """
    _check_pair(start, end)
    t = _check_t(t)
    squeeze = start.ndim == 1
    a, b = (start[None], end[None]) if squeeze else (start, end)
    flat_a, flat_b = a.flatten(1).double(), b.flatten(1).double()  # (B, N)
    cos = (flat_a * flat_b).sum(1) / (flat_a.norm(dim=1) * flat_b.norm(dim=1)).clamp_min(1e-12)  # (B,)
    theta = torch.arccos(cos.clamp(-1.0, 1.0))
    sin_theta = torch.sin(theta)
    # t = 0 gives sin(θ) / sin(θ) = 1 and sin(0) = 0 exactly (and symmetrically at t = 1), so the endpoints are exact.
    weight_a = torch.where(cos.abs() > dot_threshold, 1.0 - t, torch.sin((1.0 - t) * theta) / sin_theta)
    weight_b = torch.where(cos.abs() > dot_threshold, t, torch.sin(t * theta) / sin_theta)
    shape = (-1,) + (1,) * (a.ndim - 1)
    result = weight_a.view(shape).to(a.dtype) * a + weight_b.view(shape).to(a.dtype) * b
    return result[0] if squeeze else result


def interpolate(
    start: torch.Tensor, end: torch.Tensor, num_steps: int = 8, method: str = "slerp"
) -> torch.Tensor:
    """Strips from each `start` latent to its `end` latent: (B, ...) → (B * num_steps, ...), each strip consecutive.

    Step i of a strip is at t = i / (num_steps − 1), so a strip begins exactly at `start` and ends exactly at `end`.
    A pair of 1-D latents (D,) gives (num_steps, D). Decode the result and lay it out with `num_steps` per row.
    """
    _check_pair(start, end)
    if method not in INTERPOLATION_METHODS:
        raise ValueError(f"`method` must be one of {INTERPOLATION_METHODS}, got {method!r}.")
    check_number(num_steps, "num_steps", low=2, integer=True, hint="the two endpoints are included")
    function = lerp if method == "lerp" else slerp
    steps = [function(start, end, i / (num_steps - 1)) for i in range(num_steps)]
    if start.ndim == 1:
        return torch.stack(steps)  # (num_steps, D)
    return torch.stack(steps, dim=1).flatten(0, 1)  # (B, num_steps, ...) → (B * num_steps, ...)


def attribute_vector(latents_with: torch.Tensor, latents_without: torch.Tensor) -> torch.Tensor:
    """The direction of an attribute: mean latent of examples with it minus mean latent of examples without.

    Args:
        latents_with: (N, ...) latents of examples that have the attribute (e.g. bold digits).
        latents_without: (M, ...) latents of examples that do not (e.g. thin digits).

    Returns:
        `torch.Tensor`: (...) one latent-shaped vector; add it with `apply_attribute`.
    """
    for name, value in (("latents_with", latents_with), ("latents_without", latents_without)):
        if not isinstance(value, torch.Tensor) or value.ndim < 2 or len(value) == 0:
            raise ValueError(
                f"`{name}` must be a non-empty (N, ...) batch of latents, got {getattr(value, 'shape', value)}."
            )
    if latents_with.shape[1:] != latents_without.shape[1:]:
        raise ValueError(
            f"`latents_with` and `latents_without` must hold latents of the same shape, got "
            f"{tuple(latents_with.shape[1:])} and {tuple(latents_without.shape[1:])}."
        )
    return latents_with.mean(0) - latents_without.mean(0)


def apply_attribute(latents: torch.Tensor, vector: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
    """`latents + strength · vector` for every latent of the batch: (B, ...) → (B, ...). Negative removes it."""
    strength = check_number(strength, "strength", example=1.0)
    if latents.shape[1:] != vector.shape and latents.shape != vector.shape:
        raise ValueError(
            f"`vector` must have the shape of one latent, {tuple(latents.shape[1:])}, got {tuple(vector.shape)}."
        )
    return latents + strength * vector.to(latents)


def attribute_strip(latents: torch.Tensor, vector: torch.Tensor, strengths: Sequence[float]) -> torch.Tensor:
    """Each latent with the attribute added at each of `strengths`: (B, ...) → (B * S, ...), each strip consecutive."""
    strengths = list(strengths)
    if not strengths:
        raise ValueError("`strengths` must name at least one strength, e.g. [-2, -1, 0, 1, 2].")
    steps = [apply_attribute(latents, vector, s) for s in strengths]
    return torch.stack(steps, dim=1).flatten(0, 1)
