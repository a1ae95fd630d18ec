"""The forward process q(x_t | x_0), made visible: a strip x_0 → x_t at chosen t per noise schedule, and the
plot of ᾱ_t and of the signal kept, sqrt(ᾱ_t), for each schedule.

x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε (eq. (4) of arXiv:2006.11239). The linear schedule of DDPM destroys most of
the signal in its first few hundred steps; the cosine schedule (Nichol & Dhariwal, arXiv:2102.09672, fig. 3-5)
keeps sqrt(ᾱ_t) close to a straight line from 1 to 0, so the middle of the chain still holds a recognisable image.

The functions take diffusers schedulers (anything with ``alphas_cumprod`` and ``add_noise``), e.g. those of
``latentzoo.training.tasks.diffusion.make_noise_scheduler``; figures are drawn with matplotlib's Agg backend.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

DEFAULT_TIMESTEPS = (0, 50, 100, 250, 500, 750, 999)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def noise_images(
    scheduler, images: torch.Tensor, timesteps: Sequence[int], generator: torch.Generator | None = None
) -> torch.Tensor:
    """x_t of each image at each t, with one ε per image shared across t (and across schedulers, given the same
    generator seed), so only sqrt(ᾱ_t) and sqrt(1 - ᾱ_t) change along a row.

    Args:
        images: (N, C, H, W) x_0 in [-1, 1].
        timesteps: T values t, each in [0, num_train_timesteps - 1].

    Returns:
        (N, T, C, H, W) x_t.
    """
    num_train_timesteps = len(scheduler.alphas_cumprod)
    bad = [t for t in timesteps if not 0 <= int(t) < num_train_timesteps]
    if bad:
        raise ValueError(f"`timesteps` must lie in [0, {num_train_timesteps - 1}], got {bad}.")
    noise = torch.randn(images.shape, generator=generator, dtype=images.dtype)  # ε: (N, C, H, W)
    n, steps = len(images), len(timesteps)
    t = torch.as_tensor(list(timesteps), dtype=torch.long).repeat(n)  # (N * T,)
    x0 = images.repeat_interleave(steps, dim=0)  # (N * T, C, H, W)
    eps = noise.repeat_interleave(steps, dim=0)
    return scheduler.add_noise(x0, eps, t).reshape(n, steps, *images.shape[1:])


def forward_process_strip(
    schedulers: Mapping[str, object],
    images: torch.Tensor,
    timesteps: Sequence[int] = DEFAULT_TIMESTEPS,
    path: str | Path = "forward_process.png",
    seed: int = 0,
) -> Path:
    """Save a grid, one row per (schedule, image) and one column per t, of x_t for every scheduler.

    Args:
        schedulers: schedule name → scheduler, e.g. {"linear": ..., "cosine": ...}.
        images: (N, C, H, W) x_0 in [-1, 1]; every schedule noises them with the same ε (seeded by `seed`).
    """
    plt = _pyplot()
    rows = []  # (label, (T, C, H, W))
    for name, scheduler in schedulers.items():
        noised = noise_images(scheduler, images, timesteps, torch.Generator().manual_seed(seed))
        rows += [(name, strip) for strip in noised]
    figure, axes = plt.subplots(
        len(rows), len(timesteps), figsize=(1.1 * len(timesteps) + 0.6, 1.1 * len(rows) + 0.3), squeeze=False
    )
    for row, (name, strip) in enumerate(rows):
        for col, x in enumerate(strip):
            axis = axes[row, col]
            # (C, H, W) in about [-1, 1] (x_t is not bounded) → [0, 1] for display
            picture = (x.permute(1, 2, 0).float().clamp(-1, 1) + 1) / 2
            axis.imshow(
                picture.squeeze(-1).numpy(), cmap="gray" if picture.shape[-1] == 1 else None, vmin=0, vmax=1
            )
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(f"t={timesteps[col]}", fontsize=9)
            if col == 0:
                axis.set_ylabel(name, fontsize=9)
    figure.suptitle(
        "x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε; every schedule noises the same x_0 with the same ε",
        fontsize=9,
    )
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def plot_noise_schedules(schedulers: Mapping[str, object], path: str | Path = "noise_schedules.png") -> Path:
    """Save the plot of ᾱ_t (left) and sqrt(ᾱ_t), the share of x_0 kept in x_t (right), against t per schedule."""
    plt = _pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    for name, scheduler in schedulers.items():
        alphas_cumprod = scheduler.alphas_cumprod.double()  # (T,)
        t = torch.arange(len(alphas_cumprod))
        left.plot(t.numpy(), alphas_cumprod.numpy(), label=name)
        right.plot(t.numpy(), alphas_cumprod.sqrt().numpy(), label=name)
    left.set_title("ᾱ_t")
    right.set_title("signal kept, sqrt(ᾱ_t)")
    for axis in (left, right):
        axis.set_xlabel("t")
        axis.set_ylim(0, 1.02)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
