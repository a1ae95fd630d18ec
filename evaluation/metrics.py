"""Metrics: FID in judge features, prompt and attribute accuracy, PSNR and MSE.

An FID depends strongly on the sample count, so `fid_report` always returns it beside the
real-vs-real FID at the same count (two disjoint sets of real images): that is the floor a
perfect generator would reach.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.linalg
import torch

from latentzoo.data import measure_attributes, parse_attributes, parse_digit

from .judge import Judge


def _as_float64(features, name: str) -> np.ndarray:
    if isinstance(features, torch.Tensor):
        features = features.detach().cpu().numpy()
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"`{name}` must be (N, D) features with N >= 2, got shape {features.shape}.")
    return features


def frechet_distance(feats_a, feats_b) -> float:
    """Fréchet distance between Gaussians fitted to two sets of features (the "F" of FID).

    `||mu_a - mu_b||² + Tr(S_a + S_b - 2 (S_a S_b)^½)` (Heusel et al., arXiv:1706.08500, eq. 6).

    Args:
        feats_a: (N, D) tensor or array.
        feats_b: (M, D) tensor or array.
    """
    a, b = _as_float64(feats_a, "feats_a"), _as_float64(feats_b, "feats_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"`feats_a` and `feats_b` must have the same width, got {a.shape[1]} and {b.shape[1]}."
        )
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)  # (D, D)
    covmean = scipy.linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(covmean).all():
        # Singular product (e.g. fewer samples than dimensions): regularise as pytorch-fid does.
        offset = np.eye(len(cov_a)) * 1e-6
        covmean = scipy.linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
    # Rounding can give (S_a S_b)^½ small imaginary parts; the true value is real.
    covmean = np.real(covmean)
    diff = mu_a - mu_b
    return float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(covmean))


def judge_fid(judge: Judge, images, reference_images) -> float:
    """FID between `images` and `reference_images` (both (N, 1, 32, 32) in [-1, 1]) in judge features."""
    return frechet_distance(judge.features(images), judge.features(reference_images))


def fid_report(judge: Judge, images, reference_images, seed: int = 0) -> dict:
    """FID of `images` beside the real-vs-real FID at the same sample count.

    With n = min(len(images), len(reference_images) // 2), the reference is split at random
    (seeded) into two disjoint sets A and B of n images and n of `images` are drawn at random;
    returns `{"fid": FID(those images, A), "real_vs_real_fid": FID(B, A), "num_samples": n}`.
    """
    n = min(len(images), len(reference_images) // 2)
    if n < 2:
        raise ValueError(
            f"`fid_report` needs >= 2 images and >= 4 reference images, got {len(images)} and {len(reference_images)}."
        )
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(reference_images), generator=generator)
    reference_a, reference_b = reference_images[order[:n]], reference_images[order[n : 2 * n]]
    # A random subset of the images too: generated images often come sorted (e.g. by requested digit).
    images = images[torch.randperm(len(images), generator=generator)[:n]]
    feats_a = judge.features(reference_a)
    return {
        "fid": frechet_distance(judge.features(images), feats_a),
        "real_vs_real_fid": frechet_distance(judge.features(reference_b), feats_a),
        "num_samples": n,
    }


def class_coverage(predicted, num_classes: int = 10, min_share: float = 0.01) -> dict:
    """How evenly generated images spread over the classes the judge reads in them: mode collapse in numbers.

    Args:
        predicted: (N,) int class indices (the judge's readings of N samples).
    Returns:
        `histogram` (share per class), `classes_covered` (classes holding at least `min_share` of the samples),
        `entropy` (of the histogram, over log(num_classes): 1 uniform, 0 one class) and `largest_share`.
    """
    predicted = torch.as_tensor(predicted)
    if predicted.ndim != 1 or predicted.numel() == 0 or predicted.is_floating_point():
        raise ValueError(
            f"`predicted` must be a non-empty 1-D tensor of class indices, got {tuple(predicted.shape)}."
        )
    share = torch.bincount(predicted.long().cpu(), minlength=num_classes).double() / predicted.numel()
    nonzero = share[share > 0]
    return {
        "histogram": [round(value, 4) for value in share.tolist()],
        "classes_covered": int((share >= min_share).sum()),
        "entropy": float(-(nonzero * nonzero.log()).sum() / np.log(num_classes)) + 0.0,  # + 0.0: never "-0.0"
        "largest_share": float(share.max()),
    }


def _check_prompts(prompts, num_images: int) -> list[str]:
    if isinstance(prompts, str):
        prompts = [prompts] * num_images
    prompts = list(prompts)
    if len(prompts) != num_images:
        raise ValueError(
            f"`prompts` must have one prompt per image: {len(prompts)} prompts for {num_images} images."
        )
    return prompts


def prompt_accuracy(judge: Judge, images, prompts: str | Sequence[str]) -> float:
    """Share of images whose digit, as the judge sees it, is the one their prompt asks for.

    Args:
        images: (N, 1, 32, 32) in [-1, 1].
        prompts: one prompt per image (or one for all). Prompts naming no single digit are skipped.
    """
    prompts = _check_prompts(prompts, len(images))
    wanted = [parse_digit(p) for p in prompts]
    keep = [i for i, digit in enumerate(wanted) if digit is not None]
    if not keep:
        raise ValueError(
            "None of `prompts` names a digit (e.g. 'seven' or '7'); cannot score prompt accuracy."
        )
    predicted = judge.predict(images[keep])
    return (predicted == torch.tensor([wanted[i] for i in keep])).float().mean().item()


def attribute_accuracy(images, prompts: str | Sequence[str]) -> dict[str, float | None]:
    """Share of images whose measured stroke weight / slant is the one their prompt asks for.

    Each attribute is scored only over the prompts that name it; None when no prompt does.

    Args:
        images: (N, 1, H, W) or (N, H, W) in [-1, 1].
        prompts: one prompt per image (or one for all).
    """
    prompts = _check_prompts(prompts, len(images))
    measured = measure_attributes(images)
    accuracy = {}
    for name in ("weight", "slant"):
        pairs = [(parse_attributes(p)[name], m) for p, m in zip(prompts, measured[name], strict=True)]
        pairs = [(wanted, got) for wanted, got in pairs if wanted is not None]
        accuracy[name] = float(np.mean([wanted == got for wanted, got in pairs])) if pairs else None
    return accuracy


def _check_pair(x, y) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(y, dtype=torch.float64)
    if x.shape != y.shape:
        raise ValueError(f"`x` and `y` must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}.")
    if x.ndim < 2:
        raise ValueError(f"`x` and `y` must be batches (N, ...), got shape {tuple(x.shape)}.")
    return x, y


def mse(x, y, reduction: str = "mean"):
    """Mean squared error per image (N, ...) → float (mean over images) or (N,) with reduction="none"."""
    x, y = _check_pair(x, y)
    per_image = (x - y).pow(2).flatten(1).mean(1)
    if reduction == "none":
        return per_image.float()
    if reduction != "mean":
        raise ValueError(f'`reduction` must be "mean" or "none", got {reduction!r}.')
    return per_image.mean().item()


def psnr(x, y, data_range: float = 2.0, reduction: str = "mean"):
    """Peak signal-to-noise ratio in dB, `10 log10(data_range² / MSE)`, per image then averaged.

    `data_range` is 2.0 for images in [-1, 1]. Identical images give `inf`.
    """
    per_image = mse(x, y, reduction="none").double()
    values = 10 * torch.log10(data_range**2 / per_image)  # inf where mse == 0
    if reduction == "none":
        return values.float()
    if reduction != "mean":
        raise ValueError(f'`reduction` must be "mean" or "none", got {reduction!r}.')
    return values.mean().item()
