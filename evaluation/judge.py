"""The judge: a small CNN digit classifier that scores generated MNIST-style images.

It is trained once on the `mnist` training split (4,500 digits, with random shifts of up to 2
pixels), checked on the held-out validation split (500 digits), and cached with `save_pretrained`
under `$LATENTZOO_CACHE/judge-v1` (default `~/.cache/latentzoo/judge-v1`) together with
`judge_metrics.json`, which records its validation accuracy. Its logits give prompt accuracy; its
penultimate features are the space in which `latentzoo.evaluation` computes FID.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

from latentzoo.data import load_dataset

from .cache import cache_root, save_to_cache

logger = logging.getLogger(__name__)

JUDGE_VERSION = "judge-v1"  # bump when the architecture or the training recipe changes
METRICS_FILE = "judge_metrics.json"
MIN_VALIDATION_ACCURACY = 0.96


class Judge(ModelMixin, ConfigMixin):
    """Conv classifier for (N, 1, 32, 32) digits in [-1, 1].

    Three `conv3×3 → BatchNorm → ReLU → maxpool` blocks (32 → 16 → 8 → 4 pixels), a linear
    `feature_dim` layer whose pre-activation outputs are the FID features (after a ReLU some units
    are never active, which makes the feature covariance singular), then ReLU, dropout and a
    linear classifier.
    """

    @register_to_config
    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 32,
        num_classes: int = 10,
        block_out_channels: tuple[int, ...] = (16, 32, 64),
        feature_dim: int = 128,
        dropout: float = 0.3,
    ):
        super().__init__()
        blocks, channels = [], in_channels
        for out_channels in block_out_channels:
            blocks += [
                nn.Conv2d(channels, out_channels, 3, padding=1),
                nn.BatchNorm2d(out_channels),
                nn.ReLU(),
                nn.MaxPool2d(2),
            ]
            channels = out_channels
        self.blocks = nn.Sequential(*blocks)
        reduced = image_size // 2 ** len(block_out_channels)
        self.to_features = nn.Sequential(nn.Flatten(), nn.Linear(channels * reduced**2, feature_dim))
        self.feature_dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(feature_dim, num_classes)
        # Set by `load_judge` / `train_judge`: accuracy on the mnist validation split.
        self.validation_accuracy: float | None = None

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(N, 1, 32, 32) in [-1, 1] → logits (N, num_classes)."""
        features = self.to_features(self.blocks(pixel_values))  # (N, feature_dim)
        return self.classifier(self.feature_dropout(F.relu(features)))

    def _check_images(self, images) -> torch.Tensor:
        if isinstance(images, np.ndarray):
            images = torch.from_numpy(images)
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"`images` must be a torch.Tensor or numpy array, got {type(images).__name__}.")
        expected = (self.config.in_channels, self.config.image_size, self.config.image_size)
        if images.ndim != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(
                f"The judge expects `images` of shape (N, {', '.join(map(str, expected))}) in [-1, 1], got "
                f"{tuple(images.shape)}. Pad 28×28 MNIST digits by 2 pixels of -1 on each side, or resize with "
                "`latentzoo.data.datasets.resize_pixel_values(images, 32)`."
            )
        images = images.to(self.device, torch.float32)
        if len(images) and (images.min() < -1.5 or images.max() > 1.5):
            raise ValueError(
                f"`images` must be in [-1, 1], got values in [{images.min().item():.3g}, {images.max().item():.3g}]; "
                "map [0, 1] images with `2 * x - 1` and [0, 255] images with `x / 127.5 - 1`."
            )
        return images

    @torch.no_grad()
    def _batched(self, images, fn, batch_size: int) -> torch.Tensor:
        images = self._check_images(images)
        was_training = self.training
        self.eval()
        try:
            return (
                torch.cat([fn(chunk) for chunk in images.split(batch_size)])
                if len(images)
                else images.new_empty(0)
            )
        finally:
            self.train(was_training)

    def predict(self, images, batch_size: int = 500) -> torch.LongTensor:
        """Predicted digits: (N, 1, 32, 32) in [-1, 1] → (N,) int64."""
        return self._batched(images, lambda x: self(x).argmax(1), batch_size).long().cpu()

    def features(self, images, batch_size: int = 500) -> torch.FloatTensor:
        """Penultimate-layer features for FID: (N, 1, 32, 32) in [-1, 1] → (N, feature_dim) float32."""
        return self._batched(images, lambda x: self.to_features(self.blocks(x)), batch_size).float().cpu()


def random_shift(images: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Shift each image by an integer offset in [-max_shift, max_shift]², filling with background -1.

    images: (N, C, H, W) → (N, C, H, W).
    """
    n, c, h, w = images.shape
    padded = F.pad(images, (max_shift,) * 4, value=-1.0)  # (N, C, H+2s, W+2s)
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(h))[:, None, :, None].expand(n, c, h, w + 2 * max_shift)
    cols = (dx[:, None] + torch.arange(w))[:, None, None, :].expand(n, c, h, w)
    return padded.gather(2, rows).gather(3, cols)


@torch.no_grad()
def judge_accuracy(judge: Judge, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of `images` (N, 1, 32, 32) whose predicted digit equals `labels` (N,)."""
    return (judge.predict(images) == labels.cpu()).float().mean().item()


def train_judge(
    seed: int = 0,
    num_epochs: int = 5,
    batch_size: int = 64,
    learning_rate: float = 3e-3,
    max_shift: int = 2,
) -> tuple[Judge, dict]:
    """Train a judge on the mnist training split; returns it with its metrics.

    Deterministic for a given `seed` on a given machine. The global RNG is left untouched: weight
    init and dropout run inside `torch.random.fork_rng`, batches and shifts draw from a generator.
    Takes about 10 s on 2 idle CPU cores and reaches about 99% on the validation split.
    """
    train = load_dataset("mnist", split="train")
    validation = load_dataset("mnist", split="validation")
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        judge = Judge()
        generator = torch.Generator().manual_seed(seed)
        steps_per_epoch = -(-len(train) // batch_size)
        optimizer = torch.optim.AdamW(judge.parameters(), lr=learning_rate, weight_decay=1e-4)
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=learning_rate, total_steps=num_epochs * steps_per_epoch
        )
        judge.train()
        for _ in range(num_epochs):
            order = torch.randperm(len(train), generator=generator)
            for batch in order.split(batch_size):
                pixel_values = random_shift(train.pixel_values[batch], max_shift, generator)  # (B, 1, 32, 32)
                loss = F.cross_entropy(judge(pixel_values), train.class_labels[batch], label_smoothing=0.05)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
    judge.eval()
    train_seconds = time.perf_counter() - start
    judge.validation_accuracy = judge_accuracy(judge, validation.pixel_values, validation.class_labels)
    metrics = {
        "validation_accuracy": judge.validation_accuracy,
        "validation_examples": len(validation),
        "train_examples": len(train),
        "train_seconds": round(train_seconds, 1),
        "num_epochs": num_epochs,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "max_shift": max_shift,
        "seed": seed,
        "torch_version": torch.__version__,
    }
    if judge.validation_accuracy < MIN_VALIDATION_ACCURACY:
        logger.warning(
            "The judge reached only %.1f%% on the mnist validation split (expected >= %.0f%%).",
            100 * judge.validation_accuracy,
            100 * MIN_VALIDATION_ACCURACY,
        )
    return judge, metrics


def default_cache_dir() -> Path:
    """`$LATENTZOO_CACHE/judge-v1`, by default `~/.cache/latentzoo/judge-v1`."""
    return cache_root() / JUDGE_VERSION


def load_judge(cache_dir: str | os.PathLike | None = None, retrain: bool = False, device="cpu") -> Judge:
    """The judge, trained on first use and cached.

    Args:
        cache_dir: folder of the cached judge; default `default_cache_dir()`.
        retrain: train again even when a cached judge exists (the cache is replaced).
        device: where the returned judge lives.

    Returns:
        The judge in eval mode, with `judge.validation_accuracy` (and `judge.metrics`) from the cache.
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    metrics_path = cache_dir / METRICS_FILE
    if retrain or not metrics_path.is_file():
        logger.info("Training the judge on the mnist training split (cached at %s).", cache_dir)
        judge, metrics = train_judge()
        save_to_cache(judge, metrics, cache_dir, METRICS_FILE, replace=retrain)
    judge = Judge.from_pretrained(cache_dir)
    judge.metrics = json.loads(metrics_path.read_text())
    judge.validation_accuracy = judge.metrics["validation_accuracy"]
    return judge.to(device).eval()
