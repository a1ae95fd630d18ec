"""A feature space for any dataset, trained offline on its training split: the domain encoder.

The judge (``judge.py``) knows MNIST digits only. For any other dataset (``shapes``, a folder of images, a Hub
dataset) ``load_domain_encoder`` trains a small ``DomainEncoder`` on the dataset's training split, checks it on the
validation split and caches it. Its image features are the space in which ``latentzoo.evaluation.generic``
computes domain-FID; its text tower scores prompt alignment; its classifier head scores class-conditional models.

What it learns depends on what the dataset holds:

- captions: a conv image tower and a small ``CLIPTextModel`` learn a shared embedding space with CLIP's symmetric
  InfoNCE (arXiv:2103.00020) and "caption equality" targets (captions repeat; see
  ``latentzoo.models.contrastive.caption_targets``). Each step draws one of each item's caption phrasings.
- class labels: a linear classifier head on the image features, with cross-entropy (beside the CLIP loss when
  the dataset has captions too).
- neither: SimCLR's objective (arXiv:2002.05709): two augmented views of each image (random shift, flip, small
  noise) must find each other among the batch (InfoNCE between the views).

Training is bounded by steps (never by minutes), seeded, and leaves the global RNG alone, so the same dataset
gives the same encoder on a busy laptop and an idle server. The encoder is cached under
``$LATENTZOO_CACHE/domain-v1/<fingerprint>`` (default ``~/.cache/latentzoo``), where the fingerprint hashes the
dataset's name, its load options, its training pixels, labels and captions, and the training recipe; beside the
weights, ``domain_metrics.json`` records its held-out metrics (retrieval top-1, classifier accuracy or view
retrieval on the validation split).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config

from latentzoo.data import load_clip_tokenizer
from latentzoo.models.contrastive import (
    ConvImageEncoder,
    caption_targets,
    contrastive_loss,
    small_clip_text_model,
)

from .cache import cache_root, save_to_cache

logger = logging.getLogger(__name__)

DOMAIN_VERSION = "domain-v1"  # bump when the architecture or the training recipe changes
METRICS_FILE = "domain_metrics.json"
# Held-out metrics are computed on at most this many validation items (a (N, N) similarity matrix).
MAX_VALIDATION_ITEMS = 1000

# The default recipe. 1,000 steps of 128 images: about a minute on 2 idle CPU cores for 32x32 images (mnist: 98%
# classifier accuracy on the validation split).
DEFAULT_RECIPE = {
    "num_steps": 1000,
    "batch_size": 128,
    "learning_rate": 2e-3,
    "weight_decay": 1e-4,
    "seed": 0,
}


class DomainEncoder(ModelMixin, ConfigMixin):
    """Image features (and, with captions, text embeddings; with labels, class logits) for one dataset.

    Args:
        in_channels, image_size: the images it reads, (N, in_channels, image_size, image_size) in [-1, 1]
            (`image_size` may be (height, width)).
        block_out_channels, norm_num_groups: the conv tower (`ConvImageEncoder`: stride-2 blocks, average pool).
        embed_dim: width of the image features (the FID space) and of the shared image-text embedding space.
        num_classes: size of the classifier head; None for none.
        text_hidden_size, text_num_layers, text_num_heads, text_intermediate_size, max_prompt_length: the small
            `CLIPTextModel` text tower; `text_hidden_size=None` for none.
        initial_temperature: CLIP's τ at the start (learnt, as log(1/τ)).
    """

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        image_size: int | tuple[int, int] = 32,
        block_out_channels: tuple[int, ...] = (32, 64, 128),
        norm_num_groups: int = 8,
        embed_dim: int = 128,
        num_classes: int | None = None,
        text_hidden_size: int | None = None,
        text_num_layers: int = 2,
        text_num_heads: int = 2,
        text_intermediate_size: int = 256,
        max_prompt_length: int = 77,
        initial_temperature: float = 0.07,
    ):
        super().__init__()
        self.image_encoder = ConvImageEncoder(
            in_channels, tuple(block_out_channels), norm_num_groups, embed_dim
        )
        self.classifier = None if num_classes is None else torch.nn.Linear(embed_dim, num_classes)
        self.text_encoder = self.text_projection = None
        if text_hidden_size is not None:
            self.text_encoder = small_clip_text_model(
                text_hidden_size, text_num_layers, text_num_heads, text_intermediate_size, max_prompt_length
            )
            self.text_projection = torch.nn.Linear(text_hidden_size, embed_dim, bias=False)
        # log(1/τ), clipped at log(100) as in CLIP (sec. 2.5 of arXiv:2103.00020).
        self.log_logit_scale = torch.nn.Parameter(torch.tensor(math.log(1.0 / initial_temperature)))
        self._tokenizer = None
        # Set by `load_domain_encoder` / `train_domain_encoder`: the held-out metrics and the cache fingerprint.
        self.metrics: dict = {}
        self.fingerprint: str | None = None

    @property
    def image_shape(self) -> tuple[int, int]:
        """(height, width) of the images it reads."""
        size = self.config.image_size
        return (size, size) if isinstance(size, int) else tuple(size)

    @property
    def has_text(self) -> bool:
        return self.text_encoder is not None

    @property
    def has_classifier(self) -> bool:
        return self.classifier is not None

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.log_logit_scale.clamp(max=math.log(100.0)).exp()

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = load_clip_tokenizer(self.config.max_prompt_length)
        return self._tokenizer

    # ------------------------------------------------------------------ forward pieces (with gradients)
    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) in [-1, 1] → (N, embed_dim) image features."""
        return self.image_encoder(pixel_values)

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """Texts → (N, embed_dim) L2-normalised embeddings."""
        if not self.has_text:
            raise ValueError("This domain encoder has no text tower: its dataset has no captions.")
        # Padding to the longest text of the batch is exact: the causal mask keeps trailing pads out of the pooled
        # <|endoftext|> position.
        input_ids = self.tokenizer(
            list(texts),
            padding="longest",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids.to(self.device)
        pooled = self.text_encoder(input_ids).pooler_output  # (N, text_hidden_size)
        return F.normalize(self.text_projection(pooled).float(), dim=-1)

    # ------------------------------------------------------------------ inference (batched, no gradients)
    def check_images(self, images) -> torch.Tensor:
        if isinstance(images, np.ndarray):
            images = torch.from_numpy(images)
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"`images` must be a torch.Tensor or numpy array, got {type(images).__name__}.")
        expected = (self.config.in_channels, *self.image_shape)
        if images.ndim != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(
                f"This domain encoder reads images of shape (N, {', '.join(map(str, expected))}) in [-1, 1], got "
                f"{tuple(images.shape)}; resize them with `latentzoo.evaluation.generic.match_images`."
            )
        return images.to(self.device, torch.float32)

    @torch.no_grad()
    def _batched(self, fn, items, batch_size: int) -> torch.Tensor:
        was_training = self.training
        self.eval()
        try:
            return torch.cat(
                [fn(items[i : i + batch_size]).float().cpu() for i in range(0, len(items), batch_size)]
            )
        finally:
            self.train(was_training)

    def image_features(self, images, batch_size: int = 256) -> torch.FloatTensor:
        """(N, C, H, W) in [-1, 1] → (N, embed_dim) features: the space of domain-FID."""
        return self._batched(self, self.check_images(images), batch_size)

    def image_embeds(self, images, batch_size: int = 256) -> torch.FloatTensor:
        """(N, C, H, W) in [-1, 1] → (N, embed_dim) L2-normalised embeddings (the image-text space)."""
        return F.normalize(self.image_features(images, batch_size), dim=-1)

    def text_embeds(self, texts: list[str], batch_size: int = 256) -> torch.FloatTensor:
        """Texts → (N, embed_dim) L2-normalised embeddings (the image-text space)."""
        return self._batched(self.encode_text, list(texts), batch_size)

    def predict(self, images, batch_size: int = 256) -> torch.LongTensor:
        """(N, C, H, W) in [-1, 1] → (N,) predicted classes."""
        if not self.has_classifier:
            raise ValueError("This domain encoder has no classifier head: its dataset has no class labels.")
        return self._batched(
            lambda x: self.classifier(self(x)).argmax(1), self.check_images(images), batch_size
        ).long()


# ---------------------------------------------------------------------------------------------- augmentation
def random_shift(images: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Shift each image by an integer offset in [-max_shift, max_shift]², repeating the edge pixels.

    images: (N, C, H, W) → (N, C, H, W). Edge replication rather than a fixed background: a folder of photos has
    no background colour.
    """
    if max_shift <= 0:
        return images
    n, c, h, w = images.shape
    padded = F.pad(images, (max_shift,) * 4, mode="replicate")  # (N, C, H+2s, W+2s)
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(h))[:, None, :, None].expand(n, c, h, w + 2 * max_shift)
    cols = (dx[:, None] + torch.arange(w))[:, None, None, :].expand(n, c, h, w)
    return padded.gather(2, rows).gather(3, cols)


def simclr_view(images: torch.Tensor, generator: torch.Generator, noise_std: float = 0.05) -> torch.Tensor:
    """One augmented view for SimCLR: random shift by up to 1/8 of the side, horizontal flip, Gaussian noise."""
    views = random_shift(images, max(1, images.shape[-1] // 8), generator)
    flip = torch.rand(len(images), generator=generator) < 0.5
    views = torch.where(flip[:, None, None, None], views.flip(-1), views)
    noise = torch.randn(views.shape, generator=generator) * noise_std
    return (views + noise).clamp(-1, 1)


def _label_shift(images: torch.Tensor) -> int:
    # Captions and labels survive a small shift, never a flip ("to the left of"); 1 px per 16 of the side.
    return max(1, images.shape[-1] // 16)


# ---------------------------------------------------------------------------------------------- training
def _display_name(dataset) -> str:
    # `display_name` names a folder without its local path.
    return getattr(dataset, "display_name", None) or dataset.name


def _num_classes(dataset) -> int | None:
    if dataset.class_labels is None:
        return None
    return int(dataset.num_classes or int(dataset.class_labels.max()) + 1)


def _image_size(pixel_values: torch.Tensor) -> int | tuple[int, int]:
    height, width = pixel_values.shape[-2:]
    return int(height) if height == width else (int(height), int(width))


def default_architecture(dataset) -> dict:
    """DomainEncoder keyword arguments for `dataset`: its channels, size and classes; a text tower with captions."""
    return {
        "in_channels": dataset.num_channels,
        "image_size": _image_size(dataset.pixel_values),
        "num_classes": _num_classes(dataset),
        "text_hidden_size": 64 if dataset.has_captions else None,
    }


def _objectives(encoder: DomainEncoder) -> list[str]:
    names = []
    if encoder.has_text:
        names.append("clip")
    if encoder.has_classifier:
        names.append("classifier")
    return names or ["simclr"]


def train_domain_encoder(
    dataset_train,
    dataset_validation=None,
    num_steps: int = DEFAULT_RECIPE["num_steps"],
    batch_size: int = DEFAULT_RECIPE["batch_size"],
    learning_rate: float = DEFAULT_RECIPE["learning_rate"],
    weight_decay: float = DEFAULT_RECIPE["weight_decay"],
    seed: int = DEFAULT_RECIPE["seed"],
    **architecture,
) -> tuple[DomainEncoder, dict]:
    """Train a domain encoder on `dataset_train` (an `ImageDataset`) for `num_steps` steps; returns it and its
    metrics (held-out ones on `dataset_validation` when given).

    Deterministic for a given seed on a given machine; the global RNG is left untouched (weight init runs inside
    `torch.random.fork_rng`, batches, captions and augmentations draw from a seeded generator).
    `architecture` overrides `default_architecture(dataset_train)` (e.g. `block_out_channels=(8, 16)`).
    """
    if num_steps < 1 or batch_size < 1:
        raise ValueError(f"`num_steps` and `batch_size` must be positive, got {num_steps} and {batch_size}.")
    if len(dataset_train) < 2:
        raise ValueError(
            f"The domain encoder needs at least 2 training images, {_display_name(dataset_train)!r} has "
            f"{len(dataset_train)}."
        )
    pixel_values, labels = dataset_train.pixel_values, dataset_train.class_labels
    batch_size = min(batch_size, len(dataset_train))
    start = time.perf_counter()
    # enable_grad: callers may hold no_grad (evaluation trains the encoder on first use).
    with torch.random.fork_rng(devices=[]), torch.enable_grad():
        torch.manual_seed(seed)
        encoder = DomainEncoder(**{**default_architecture(dataset_train), **architecture})
        objectives = _objectives(encoder)
        generator = torch.Generator().manual_seed(seed)
        optimizer = torch.optim.AdamW(encoder.parameters(), lr=learning_rate, weight_decay=weight_decay)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=learning_rate, total_steps=num_steps)
        encoder.train()
        order = torch.randperm(len(dataset_train), generator=generator)
        position, losses = 0, []
        for _ in range(num_steps):
            if position + batch_size > len(order):  # a new epoch: no item twice in a batch
                order, position = torch.randperm(len(dataset_train), generator=generator), 0
            batch = order[position : position + batch_size]
            position += batch_size
            images = pixel_values[batch]  # (B, C, H, W)
            loss = torch.zeros(())
            if "simclr" in objectives:
                first = F.normalize(encoder(simclr_view(images, generator)), dim=-1)
                second = F.normalize(encoder(simclr_view(images, generator)), dim=-1)
                loss = loss + contrastive_loss(first, second, encoder.logit_scale)
            else:
                features = encoder(random_shift(images, _label_shift(images), generator))  # (B, embed_dim)
                if "clip" in objectives:
                    # One of each item's phrasings, drawn afresh every step.
                    texts = []
                    for i in batch.tolist():
                        phrasings = dataset_train.captions(i)
                        texts.append(phrasings[int(torch.randint(len(phrasings), (), generator=generator))])
                    loss = loss + contrastive_loss(
                        F.normalize(features, dim=-1),
                        encoder.encode_text(texts),
                        encoder.logit_scale,
                        caption_targets(texts),
                    )
                if "classifier" in objectives:
                    loss = loss + F.cross_entropy(encoder.classifier(features), labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
    encoder.eval()
    metrics = {
        "objectives": objectives,
        "train_examples": len(dataset_train),
        "train_seconds": round(time.perf_counter() - start, 1),
        "final_train_loss": float(np.mean(losses[-20:])),
        "num_steps": num_steps,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "weight_decay": weight_decay,
        "seed": seed,
        "torch_version": torch.__version__,
    }
    if dataset_validation is not None and len(dataset_validation):
        metrics.update(held_out_metrics(encoder, dataset_validation, seed))
    encoder.metrics = metrics
    return encoder, metrics


@torch.no_grad()
def held_out_metrics(encoder: DomainEncoder, dataset, seed: int = 0) -> dict:
    """The encoder's quality on (up to `MAX_VALIDATION_ITEMS` of) a held-out split, beside chance levels.

    Captions: retrieval top-1 both ways among the items (a hit is an item with the same caption). Labels:
    classifier accuracy. Neither: view retrieval (an augmented view of each image finds the image).
    """
    n = min(len(dataset), MAX_VALIDATION_ITEMS)
    images = dataset.pixel_values[:n]
    metrics = {"validation_examples": n}
    if encoder.has_text:
        texts = [dataset[i]["text"] for i in range(n)]
        similarity = encoder.text_embeds(texts) @ encoder.image_embeds(images).T  # (texts, images)
        same = caption_targets(texts) > 0  # (N, N) items whose captions are equal
        rows = torch.arange(n)
        metrics["text_to_image_top1"] = float(same[rows, similarity.argmax(dim=1)].float().mean())
        metrics["image_to_text_top1"] = float(same[similarity.argmax(dim=0), rows].float().mean())
        metrics["retrieval_chance"] = float(same.float().mean())
    if encoder.has_classifier:
        labels = dataset.class_labels[:n]
        metrics["classifier_accuracy"] = float((encoder.predict(images) == labels).float().mean())
        metrics["classifier_chance"] = float(torch.bincount(labels).max() / n)
    if not encoder.has_text and not encoder.has_classifier:
        views = simclr_view(images, torch.Generator().manual_seed(seed + 1))
        similarity = encoder.image_embeds(views) @ encoder.image_embeds(images).T  # (views, images)
        metrics["view_retrieval_top1"] = float((similarity.argmax(dim=1) == torch.arange(n)).float().mean())
        metrics["view_retrieval_chance"] = 1.0 / n
    return metrics


def describe_held_out(metrics: dict) -> str:
    """The held-out metrics of `domain_metrics.json` in words, beside chance."""
    parts = []
    if "text_to_image_top1" in metrics:
        parts.append(
            f"retrieval top-1 text→image {metrics['text_to_image_top1']:.1%}, image→text "
            f"{metrics['image_to_text_top1']:.1%} (chance {metrics['retrieval_chance']:.1%})"
        )
    if "classifier_accuracy" in metrics:
        parts.append(
            f"classifier accuracy {metrics['classifier_accuracy']:.1%} (majority class {metrics['classifier_chance']:.1%})"
        )
    if "view_retrieval_top1" in metrics:
        parts.append(
            f"augmented-view retrieval top-1 {metrics['view_retrieval_top1']:.1%} "
            f"(chance {metrics['view_retrieval_chance']:.1%})"
        )
    if not parts:
        return "no held-out metrics (empty validation split)"
    return f"on {metrics['validation_examples']} validation items: " + "; ".join(parts)


# ---------------------------------------------------------------------------------------------- cache
def default_cache_dir() -> Path:
    """`$LATENTZOO_CACHE/domain-v1`, by default `~/.cache/latentzoo/domain-v1`."""
    return cache_root() / DOMAIN_VERSION


def dataset_fingerprint(dataset, load_options: dict | None = None, recipe: dict | None = None) -> str:
    """`<name>-<16 hex digits>`: a hash of the dataset's name, `load_options`, training pixels (as 8-bit values),
    labels and captions, and of the training `recipe`. Equal datasets trained alike share a cache entry."""
    digest = hashlib.sha256()
    header = {"name": dataset.name, "load_options": load_options or {}, "recipe": recipe or {}}
    digest.update(json.dumps(header, sort_keys=True, default=str).encode())
    pixels = ((dataset.pixel_values.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    digest.update(str(tuple(pixels.shape)).encode())
    digest.update(pixels.numpy().tobytes())
    if dataset.class_labels is not None:
        digest.update(dataset.class_labels.numpy().tobytes())
    if dataset.has_captions:
        digest.update(json.dumps([dataset.captions(i) for i in range(len(dataset))]).encode())
    slug = re.sub(r"[^A-Za-z0-9_.]+", "-", _display_name(dataset))[:40]
    return f"{slug.strip('-.') or 'dataset'}-{digest.hexdigest()[:16]}"


def load_domain_encoder(
    dataset_train,
    dataset_validation=None,
    load_options: dict | None = None,
    cache_dir: str | os.PathLike | None = None,
    retrain: bool = False,
    device="cpu",
    **recipe,
) -> DomainEncoder:
    """The domain encoder of `dataset_train`, trained on first use and cached.

    Args:
        dataset_train, dataset_validation: `ImageDataset` splits; the encoder trains on the first only, the
            second gives its held-out metrics.
        load_options: how the dataset was loaded (e.g. `{"image_size": 64, "seed": 0}`), part of the fingerprint.
        cache_dir: the cache root; default `default_cache_dir()`. The encoder lives in `<cache_dir>/<fingerprint>`.
        retrain: train again even when a cached encoder exists (the cache entry is replaced).
        recipe: `train_domain_encoder` arguments that differ from `DEFAULT_RECIPE` (steps, batch size, ...,
            architecture); part of the fingerprint.

    Returns:
        The encoder in eval mode, with `encoder.metrics` (from `domain_metrics.json`) and `encoder.fingerprint`.
    """
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    fingerprint = dataset_fingerprint(dataset_train, load_options, {**DEFAULT_RECIPE, **recipe})
    folder = root / fingerprint
    metrics_path = folder / METRICS_FILE
    if retrain or not metrics_path.is_file():
        logger.info(
            "Training the domain encoder of %s on its training split (%d images), cached at %s.",
            _display_name(dataset_train),
            len(dataset_train),
            folder,
        )
        encoder, metrics = train_domain_encoder(dataset_train, dataset_validation, **recipe)
        metrics = {"dataset": dataset_train.name, "load_options": load_options or {}, **metrics}
        save_to_cache(encoder, metrics, folder, METRICS_FILE, replace=retrain)
    encoder = DomainEncoder.from_pretrained(folder)
    encoder.metrics = json.loads(metrics_path.read_text())
    encoder.fingerprint = fingerprint
    return encoder.to(device).eval()
