"""Style attributes measured on digit images: stroke weight and slant.

One measurement serves the captions of the `mnist` dataset and the attribute accuracy of
`latentzoo.evaluation`, so a caption such as "a bold seven slanted to the right" can be checked on
any image, real or generated.

- **weight**: mean stroke width in pixels of a 32×32 image, estimated as `2 · area / perimeter`
  of the ink (a stroke of length L and width w has area L·w and perimeter ≈ 2L). Area is the ink
  mass, perimeter the total gradient magnitude of the ink, so both are soft (no binarisation).
  Images of another size are rescaled to the 32×32 reference, so an 8×8 digit measures like the
  same digit at 32×32.
- **slant**: horizontal shear `-mu11 / mu02` of the ink's second-order central moments (rows grow
  downwards, so a positive value means the top of the digit leans to the right). 0 is upright;
  0.25 is a lean of about 14°.

The class boundaries are fixed constants. Stroke weight uses the tertiles of the values measured
on the `mnist` training split (4,500 digits), so each weight class holds about a third of the
training digits. Slant uses boundaries symmetric about 0 (a shear of ±0.15, about ±8.5°), so the
words keep their meaning: "left" leans left, "upright" stands straight. MNIST's handwriting leans
right on average, so the slant classes are unbalanced (about 14% left, 38% upright, 48% right on
the training split; `python -m latentzoo.data.attribute_thresholds` prints them).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

# Classes, in increasing order of the measured value.
WEIGHT_CLASSES = ("thin", "regular", "bold")
SLANT_CLASSES = ("left", "upright", "right")

# Value < first threshold → first class, value >= second threshold → last class (see module docstring).
WEIGHT_THRESHOLDS = (2.14, 2.59)  # stroke width in pixels at 32×32: tertiles of the mnist training split
SLANT_THRESHOLDS = (
    -0.15,
    0.15,
)  # horizontal shear, positive leans right: symmetric, so words mean what they say

# The resolution the stroke width is expressed in.
REFERENCE_SIZE = 32

ATTRIBUTE_CLASSES = {"weight": WEIGHT_CLASSES, "slant": SLANT_CLASSES}
ATTRIBUTE_THRESHOLDS = {"weight": WEIGHT_THRESHOLDS, "slant": SLANT_THRESHOLDS}


def _to_ink(images) -> torch.Tensor:
    """Images in [-1, 1], (N, 1, H, W) or (N, H, W) → ink in [0, 1], (N, H, W) float32."""
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    if not isinstance(images, torch.Tensor):
        raise TypeError(
            f"`images` must be a torch.Tensor or numpy array of shape (N, 1, H, W) or (N, H, W), "
            f"got {type(images).__name__}."
        )
    images = images.detach().to("cpu", torch.float32)
    if images.ndim == 4:
        if images.shape[1] != 1:
            raise ValueError(
                f"`images` must have one channel, got shape {tuple(images.shape)}; "
                "convert to grayscale first (e.g. images.mean(1, keepdim=True))."
            )
        images = images[:, 0]
    elif images.ndim != 3:
        raise ValueError(
            f"`images` must have shape (N, 1, H, W) or (N, H, W), got {tuple(images.shape)}; "
            "for a single image use images[None]."
        )
    return ((images + 1) / 2).clamp(0, 1)


def measure_attribute_values(images) -> dict[str, torch.Tensor]:
    """Continuous style values of digit images.

    Args:
        images: float tensor or array, (N, 1, H, W) or (N, H, W), white ink on black in [-1, 1].

    Returns:
        `{"weight": (N,) stroke width in pixels at 32×32, "slant": (N,) shear, > 0 leans right}`.
        An empty image measures weight 0 and slant 0.
    """
    ink = _to_ink(images)  # (N, H, W)
    _, height, width = ink.shape
    eps = 1e-6

    # Stroke width = 2 · area / perimeter, perimeter = total gradient magnitude.
    dx = ink[:, :-1, 1:] - ink[:, :-1, :-1]  # (N, H-1, W-1)
    dy = ink[:, 1:, :-1] - ink[:, :-1, :-1]  # (N, H-1, W-1)
    perimeter = torch.sqrt(dx**2 + dy**2).sum((1, 2))
    area = ink.sum((1, 2))
    stroke_width = 2 * area / perimeter.clamp_min(eps) * (REFERENCE_SIZE / width)

    # Shear from second-order central moments (rows grow downwards).
    rows = torch.arange(height, dtype=torch.float32)[:, None]  # (H, 1)
    cols = torch.arange(width, dtype=torch.float32)[None, :]  # (1, W)
    mass = area.clamp_min(eps)
    row_mean = (ink * rows).sum((1, 2)) / mass  # (N,)
    col_mean = (ink * cols).sum((1, 2)) / mass
    d_row = rows - row_mean[:, None, None]  # (N, H, 1)
    d_col = cols - col_mean[:, None, None]  # (N, 1, W)
    mu11 = (ink * d_row * d_col).sum((1, 2)) / mass
    mu02 = (ink * d_row**2).sum((1, 2)) / mass
    slant = -mu11 / mu02.clamp_min(eps)

    empty = area < eps
    stroke_width[empty] = 0.0
    slant[empty] = 0.0
    return {"weight": stroke_width, "slant": slant}


def bin_attribute(name: str, values) -> list[str]:
    """Map continuous values of attribute `name` ("weight" or "slant") to its class names."""
    if name not in ATTRIBUTE_CLASSES:
        raise ValueError(f"`name` must be one of {sorted(ATTRIBUTE_CLASSES)}, got {name!r}.")
    values = torch.as_tensor(values, dtype=torch.float32)
    bins = torch.bucketize(values, torch.tensor(ATTRIBUTE_THRESHOLDS[name]), right=True)
    classes = ATTRIBUTE_CLASSES[name]
    return [classes[i] for i in bins.tolist()]


def measure_attributes(images) -> dict[str, list[str]]:
    """Stroke weight and slant classes of digit images.

    Args:
        images: float tensor or array, (N, 1, H, W) or (N, H, W), in [-1, 1].

    Returns:
        `{"weight": ["thin" | "regular" | "bold", ...], "slant": ["left" | "upright" | "right", ...]}`,
        each of length N.
    """
    values = measure_attribute_values(images)
    return {name: bin_attribute(name, values[name]) for name in ATTRIBUTE_CLASSES}


def tertile_thresholds(values: Sequence[float] | torch.Tensor) -> tuple[float, float]:
    """The two tertiles of `values`: how `WEIGHT_THRESHOLDS` and `SLANT_THRESHOLDS` were chosen."""
    quantiles = np.quantile(np.asarray(values, dtype=np.float64), [1 / 3, 2 / 3])
    return float(quantiles[0]), float(quantiles[1])
