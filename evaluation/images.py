"""Image tensors to pictures: the one grid of latentzoo (validation samples, benchmark pictures, projector sprites).

    grid = make_image_grid(images, nrow=10)              # (N, C, H, W) in [0, 1] → PIL, 10 images per row
    sprite = make_image_grid(images, nrow=5, rows=5)     # a fixed 5 x 5 square, blank cells at the end

diffusers' `diffusers.utils.make_image_grid` takes PIL images and always returns RGB; this one takes the tensors the
pipelines return with `output_type="pt"` and keeps their channels (one-channel digits give a grayscale "L" image).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image

__all__ = ["make_image_grid"]


def make_image_grid(images: torch.Tensor, nrow: int | None = None, rows: int | None = None) -> Image.Image:
    """(N, C, H, W) float in [0, 1] → one PIL image, the images row by row with `nrow` per row.

    Args:
        images (`torch.Tensor`): (N, C, H, W); values are clamped to [0, 1] and rounded to 8 bits.
        nrow (`int`, *optional*): images per row (default ceil(sqrt(N)): square-ish).
        rows (`int`, *optional*): rows of the grid (default as many as the images fill, ceil(N / nrow)); more leave
            blank (black) rows at the bottom, e.g. for a square sprite.

    Returns:
        `PIL.Image.Image`: (rows * H, nrow * W); mode "L" for one channel, "RGB" for three (as `Image.fromarray`).
    """
    n, c, h, w = images.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    rows = rows or math.ceil(n / nrow)
    if rows * nrow < n:
        raise ValueError(
            f"A grid of {rows} rows of {nrow} holds {rows * nrow} images, fewer than the {n} given."
        )
    grid = torch.zeros(c, rows * h, nrow * w)
    for i, image in enumerate(images.detach().float().clamp(0, 1).cpu()):
        row, col = divmod(i, nrow)
        grid[:, row * h : (row + 1) * h, col * w : (col + 1) * w] = image
    array = (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    return Image.fromarray(array[..., 0] if c == 1 else array)
