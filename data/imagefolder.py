"""Your own images: `imagefolder:PATH` folders and `hub:NAME` datasets, prepared as one tensor per split.

Folder conventions are those of datasets' `imagefolder` builder (which does the discovery) and of
diffusers' training examples:

    PATH/
      0001.png, 0002.jpg, ...     any of `image_extensions()`, in sub-folders too; hidden files ignored
      metadata.jsonl              optional, one line per image, `file_name` relative to this file:
                                  {"file_name": "0001.png", "text": "a red circle", "label": "circle"}
                                  (or metadata.csv with a `file_name` column)
      cat/ dog/                   without metadata, images in two or more sub-folders at the same depth
                                  get a `label` from the folder names
      train/ validation/ (test/)  optional held-out split; without one a fixed 10% of the images is
                                  the validation split

Preparing a split, in order (everything that can be wrong with the folder fails before training):

1. `check_folder`: the path is a folder with images; every metadata.jsonl/.csv line is an object with an
   existing `file_name` and a caption / label in every line or none (errors give file, line and fix).
2. datasets' `imagefolder` builds a table of image *paths* (no pixels yet); its split detection runs on
   our listing of the folder (`split_patterns`), not ~70 globs of the disk.
3. `scan_images`: every image opens and verifies, in both splits (else the error names the file);
   modes and the first size.
4. `decode_split`: images of the split are decoded a chunk at a time into one preallocated tensor.

Pixels (`image_to_array`): transparency (RGBA, LA, "P"/"L"/"RGB" with a transparent colour) is composited
over white; 16-bit grayscale ("I;16") is scaled 0-65535 → 0-255; `channels=1` uses PIL's "L" conversion
(ITU-R 601-2 luma), grayscale → RGB replicates; then the shorter side is resized to `image_size` (PIL
bicubic, antialiased) and the centre square cropped, as diffusers' `train_text_to_image.py` does.

Memory: a split is held as float32, N × C × S × S × 4 bytes (50,000 RGB 64×64 images = 2.5 GB; 50,000
RGB 256×256 = 39 GB, too much: pass a smaller `image_size`). Decoding adds one chunk of `DECODE_CHUNK`
images on top. Prepared splits are memoised in this process (`clear_prepared_cache`), keyed by the path,
split, options and a fingerprint of the folder (file names, sizes and modification times), so the stages
of one training run decode the folder once; they share the tensor, so treat `pixel_values` as read-only.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import logging
import os
import re
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

logger = logging.getLogger(__name__)

TEXT_COLUMNS = ("text", "caption", "captions", "prompt", "sentence")  # caption column, first found
LABEL_COLUMN = "label"  # datasets' name for sub-folder labels; also looked for in metadata
VALIDATION_SPLITS = ("validation", "valid", "val", "test")  # held-out split names, first found
METADATA_FILENAMES = ("metadata.jsonl", "metadata.csv", "metadata.parquet")
GRAYSCALE_MODES = ("L", "1", "I", "I;16", "I;16B", "I;16L", "I;16N", "F", "LA", "La")
DECODE_CHUNK = 256  # images decoded at a time: bounds the PIL images alive at once
# Value dtypes of a "label" column taken as class labels without being named.
_LABEL_DTYPES = tuple(f"{u}int{bits}" for u in ("", "u") for bits in (8, 16, 32, 64)) + (
    "string",
    "large_string",
)
MEMO_MAX_ENTRIES = 4
MEMO_MAX_BYTES = 8 << 30  # the memo drops its oldest splits past these (a dataset keeps its own alive)

_METADATA_EXAMPLE = '{"file_name": "0001.png", "text": "a red circle"}'


def image_extensions() -> tuple[str, ...]:
    """The file extensions datasets' `imagefolder` recognises as images (lower case, with the dot)."""
    from datasets.packaged_modules.imagefolder.imagefolder import ImageFolder

    return tuple(ImageFolder.EXTENSIONS)


@dataclasses.dataclass(frozen=True)
class PreparedSplit:
    """One split as tensors; `ImageDataset` wraps it.

    pixel_values: (N, C, S, S) float32 in [-1, 1], shared between memoised loads: read-only.
    class_labels: (N,) int64 or None. captions: per item a non-empty list of phrasings, or None.
    """

    pixel_values: torch.Tensor
    class_labels: torch.Tensor | None
    captions: list[list[str]] | None
    num_classes: int | None
    class_names: list[str] | None


# ----------------------------------------------------------------------------------------------------
# 1. The folder, checked before datasets sees it


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def list_folder(path: str) -> list[tuple[str, int, int]]:
    """Every non-hidden file under `path`: (path relative to it, size in bytes, mtime in ns), sorted.

    Skips names starting with "." and folders starting with "__", as datasets' file patterns do.
    """
    entries = []
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = sorted(d for d in dirnames if not _is_hidden(d) and not d.startswith("__"))
        for filename in sorted(filenames):
            if _is_hidden(filename):
                continue
            full = os.path.join(dirpath, filename)
            try:
                stat = os.stat(full)
            except OSError:  # a dangling link: datasets skips it too
                continue
            entries.append((os.path.relpath(full, path), stat.st_size, stat.st_mtime_ns))
    return entries


def folder_fingerprint(entries: Sequence[tuple[str, int, int]]) -> str:
    """A cheap fingerprint of `list_folder`'s entries: changes when a file is added, removed or rewritten.

    Rewrites within the file system's mtime resolution that keep the size are not seen (coarse on FAT).
    """
    digest = hashlib.sha256()
    for relpath, size, mtime_ns in entries:
        digest.update(f"{relpath}\0{size}\0{mtime_ns}\n".encode())
    return digest.hexdigest()


def _describe_value(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_metadata_rows(
    metadata_path: str,
    rows: list[tuple[int, dict]],
    caption_column: str | None,
    label_column: str | None,
    is_csv: bool,
) -> set[str]:
    """Check (line number, row) pairs of one metadata file; return the absolute paths of the images named.

    In a CSV every value is a string and an empty cell is a missing value.
    """
    base = os.path.dirname(metadata_path)
    kind = os.path.basename(metadata_path)
    if not rows:
        raise ValueError(
            f"{metadata_path} lists no images. Add one line per image, e.g. {_METADATA_EXAMPLE}, "
            f"or delete {kind} to use every image in the folder."
        )

    def missing(row, column):
        value = row.get(column)
        return value is None or (is_csv and value == "")

    columns = list(dict.fromkeys(key for _, row in rows for key in row))
    referenced = set()
    for line, row in rows:
        if missing(row, "file_name"):
            raise ValueError(
                f'{metadata_path}, line {line}: no "file_name" (columns: {sorted(row)}). Every line names '
                f"its image relative to the folder of {kind}, e.g. {_METADATA_EXAMPLE}."
            )
        file_name = row["file_name"]
        if not isinstance(file_name, str) or not file_name.strip():
            raise ValueError(
                f'{metadata_path}, line {line}: "file_name" must be a non-empty string, got '
                f"{_describe_value(file_name)}."
            )
        relative = os.path.normpath(file_name).replace("\\", "/")
        if os.path.isabs(file_name) or relative == ".." or relative.startswith("../") or "://" in file_name:
            raise ValueError(
                f"{metadata_path}, line {line}: file_name {file_name!r} must be a path relative to the "
                f"folder of {kind}, inside it (datasets refuses absolute paths, URLs and '..')."
            )
        full = os.path.join(base, relative)
        if not os.path.isfile(full):
            raise ValueError(
                f"{metadata_path}, line {line}: file_name {file_name!r} does not exist (looked for {full}). "
                "Fix the name or remove the line."
            )
        referenced.add(os.path.normpath(os.path.abspath(full)))

    if caption_column is not None and caption_column not in columns:
        raise ValueError(
            f"caption_column {caption_column!r} is not a column of {metadata_path}: its columns are "
            f'{columns}. Pass caption_column=<one of those>, or add "{caption_column}" to every line.'
        )
    text_column = caption_column or next((c for c in TEXT_COLUMNS if c in columns), None)
    if text_column is not None:
        for line, row in rows:
            if missing(row, text_column):
                raise ValueError(
                    f"{metadata_path}, line {line}: no caption in column {text_column!r}, but other lines "
                    "have one. Give every line a non-empty caption (or drop the column from every line "
                    "to train without captions)."
                )
            value = row[text_column]
            phrasings = value if isinstance(value, list) and not is_csv else [value]
            if not phrasings or not all(isinstance(p, str) and p.strip() for p in phrasings):
                raise ValueError(
                    f"{metadata_path}, line {line}: the caption in column {text_column!r} must be a "
                    f"non-empty string (or a non-empty list of them), got {_describe_value(value)}."
                )

    if label_column is not None and label_column not in columns:
        raise ValueError(
            f"label_column {label_column!r} is not a column of {metadata_path}: its columns are {columns}. "
            f'Pass label_column=<one of those>, or add "{label_column}" to every line.'
        )
    class_column = label_column
    if class_column is None and LABEL_COLUMN in columns:
        # A "label" column is taken when it holds class names or integers (missing ones are errors
        # below); anything else (scores, lists) is not a class label unless named.
        values = [row[LABEL_COLUMN] for _, row in rows if not missing(row, LABEL_COLUMN)]
        if all(isinstance(v, (int, str)) and not isinstance(v, bool) for v in values):
            class_column = LABEL_COLUMN
    if class_column is not None:
        first_of_type = {}  # "int" / "str" → first line with a label of that type
        for line, row in rows:
            if missing(row, class_column):
                raise ValueError(
                    f"{metadata_path}, line {line}: no label in column {class_column!r}, but other lines "
                    "have one. Give every line a label (a class name or an integer ≥ 0)."
                )
            value = row[class_column]
            if isinstance(value, str) and value.strip():
                kind_of_label = "str"
            elif isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                kind_of_label = "int"
            else:
                raise ValueError(
                    f"{metadata_path}, line {line}: the label in column {class_column!r} must be a class "
                    f"name (string) or an integer ≥ 0, got {_describe_value(value)}."
                )
            first_of_type.setdefault(kind_of_label, line)
            if len(first_of_type) > 1:
                raise ValueError(
                    f"{metadata_path}, line {line}: the label in column {class_column!r} is "
                    f"{'a string' if kind_of_label == 'str' else 'an integer'}, but line "
                    f"{first_of_type['int' if kind_of_label == 'str' else 'str']} has "
                    f"{'an integer' if kind_of_label == 'str' else 'a string'}. Use class names everywhere "
                    "or integers everywhere."
                )
    return referenced


def _read_jsonl(metadata_path: str) -> list[tuple[int, dict]]:
    rows = []
    with open(metadata_path, encoding="utf-8") as file:
        for line_number, line in enumerate(file, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(
                    f"{metadata_path}, line {line_number}: not valid JSON ({error.msg} at column "
                    f"{error.colno}). Each line must be one JSON object, e.g. {_METADATA_EXAMPLE}."
                ) from None
            if not isinstance(row, dict):
                raise ValueError(
                    f"{metadata_path}, line {line_number}: a JSON {type(row).__name__}, not an object. "
                    f"Each line must be one JSON object, e.g. {_METADATA_EXAMPLE}."
                )
            rows.append((line_number, row))
    return rows


def _read_csv(metadata_path: str) -> list[tuple[int, dict]]:
    with open(metadata_path, encoding="utf-8", newline="") as file:
        reader = csv.DictReader(file)
        if reader.fieldnames is None or "file_name" not in reader.fieldnames:
            raise ValueError(
                f'{metadata_path}: the header has no "file_name" column (columns: {reader.fieldnames}). '
                "The first line names the columns, e.g. `file_name,text`, and each row names its image "
                "relative to the folder of metadata.csv."
            )
        return [(reader.line_num, dict(row)) for row in reader]


def missing_data_hint(path: str, what: str) -> str:
    """How to give the folder `path` captions (`what`="captions") or class labels ("class_labels"), naming its
    metadata file and the columns that file has."""
    metadata = next(
        (
            os.path.join(path, name)
            for name in METADATA_FILENAMES[:2]
            if os.path.isfile(os.path.join(path, name))
        ),
        None,
    )
    columns = []
    if metadata is not None:
        rows = _read_jsonl(metadata) if metadata.endswith(".jsonl") else _read_csv(metadata)
        columns = list(dict.fromkeys(key for _, row in rows for key in row))
    if what == "captions":
        if metadata is None:
            return f"Add {os.path.join(path, 'metadata.jsonl')} with one line per image, e.g. {_METADATA_EXAMPLE}."
        return (
            f"{metadata} has the columns {columns}, none of them a caption column {list(TEXT_COLUMNS)}: add a "
            f'"text" caption to every line, or name your caption column with caption_column=NAME.'
        )
    where = metadata or os.path.join(path, "metadata.jsonl")
    listed = f" (its columns: {columns})" if metadata is not None else ""
    return (
        f"Put the images in one sub-folder per class (named after it), or give every line of {where}{listed} a "
        f'"{LABEL_COLUMN}" (or name your label column with label_column=NAME).'
    )


def check_folder(
    path: str,
    entries: Sequence[tuple[str, int, int]],
    caption_column: str | None = None,
    label_column: str | None = None,
) -> list[str]:
    """Check an image folder before datasets reads it; return its metadata files.

    `entries` is `list_folder(path)`. Raises ValueError naming the file (and line) for: no images, a
    metadata line that is not a JSON object, lacks `file_name` or names a file that does not exist, a
    caption or label missing from some lines only, a `caption_column` / `label_column` not in the
    metadata. Warns about images that the metadata does not list (datasets ignores them).
    """
    extensions = image_extensions()
    images = [rel for rel, _, _ in entries if os.path.splitext(rel)[1].lower() in extensions]
    metadata = [rel for rel, _, _ in entries if os.path.basename(rel) in METADATA_FILENAMES]
    if not images:
        others = sorted(
            {os.path.splitext(rel)[1].lower() or rel for rel, _, _ in entries} - {".jsonl", ".csv"}
        )
        found = (
            f" It holds {len(entries)} other file(s) ({', '.join(others[:8])})."
            if entries
            else " It is empty."
        )
        archive = " Extract .zip archives first." if ".zip" in others else ""
        raise ValueError(
            f"imagefolder {path!r} contains no images: no file in it or its sub-folders has one of the "
            f"recognised extensions ({' '.join(sorted(extensions))}).{found}{archive}"
        )
    formats = {os.path.splitext(rel)[1] for rel in metadata}
    if len(formats) > 1:
        raise ValueError(
            f"imagefolder {path!r} has metadata files of different formats ({sorted(metadata)}); "
            "datasets reads one format per folder: keep only metadata.jsonl files or only metadata.csv files."
        )
    referenced = set()
    for rel in metadata:
        metadata_path = os.path.join(path, rel)
        if rel.endswith(".jsonl"):
            rows, is_csv = _read_jsonl(metadata_path), False
        elif rel.endswith(".csv"):
            rows, is_csv = _read_csv(metadata_path), True
        else:
            continue  # parquet: datasets checks it; columns are checked after loading
        referenced |= _check_metadata_rows(metadata_path, rows, caption_column, label_column, is_csv)
    if metadata and referenced:
        unlisted = [
            rel
            for rel in images
            if os.path.normpath(os.path.abspath(os.path.join(path, rel))) not in referenced
        ]
        if unlisted:
            logger.warning(
                "imagefolder %r: %d image(s) are not listed in %s and are ignored, e.g. %s.",
                path,
                len(unlisted),
                ", ".join(sorted(metadata)),
                ", ".join(unlisted[:3]),
            )
    return [os.path.join(path, rel) for rel in metadata]


def split_patterns(entries: Sequence[tuple[str, int, int]]) -> dict[str, list[str]] | None:
    """datasets' split detection (`datasets.data_files.get_data_patterns`) run on `list_folder`'s entries.

    datasets tries ~70 glob patterns (train/**, **/*-test-*, ...), each walking the whole folder: minutes
    for tens of thousands of images. Its own `_get_data_files_patterns` is given a resolver that matches
    fsspec's glob regexes against the listing instead. Returns e.g. {"train": ["**"]}, or None when this
    datasets / fsspec lacks the pieces (datasets then walks the folder itself).
    """
    try:
        from datasets.data_files import _get_data_files_patterns
        from fsspec.utils import glob_translate
    except ImportError:
        return None
    paths = [relpath.replace(os.sep, "/") for relpath, _, _ in entries]

    def resolve(pattern: str) -> list[str]:
        regex = re.compile(glob_translate(pattern))
        matched = [path for path in paths if regex.match(path)]
        if not matched:
            raise FileNotFoundError(pattern)
        return matched

    try:
        return _get_data_files_patterns(resolve)
    except (FileNotFoundError, TypeError, ValueError):
        return None


# ----------------------------------------------------------------------------------------------------
# 2. Images → arrays


def _has_transparency(image: Image.Image) -> bool:
    return "A" in image.getbands() or "a" in image.getbands() or "transparency" in image.info


def image_to_array(image: Image.Image, channels: int, image_size: int) -> np.ndarray:
    """A PIL image → uint8 (S, S) for `channels=1` or (S, S, 3) for `channels=3`, S = `image_size`.

    Transparent pixels are composited over white; 16-bit grayscale ("I;16…", e.g. 16-bit PNG) is scaled
    65535 → 255 (PIL's own conversion would clip it); 32-bit "I" and "F" follow PIL (0-255, clipped). Then
    the shorter side is resized to S (bicubic, antialiased) and the centre S × S square is kept.
    """
    if _has_transparency(image):
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    elif image.mode.startswith("I;16"):
        values = np.asarray(image, dtype=np.float64) / 257.0
        image = Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), mode="L")
    image = image.convert("L" if channels == 1 else "RGB")
    return np.asarray(resize_and_center_crop(image, image_size))


def resize_and_center_crop(
    image: Image.Image, image_size: int, resample: Image.Resampling = Image.Resampling.BICUBIC
) -> Image.Image:
    """Resize the shorter side to `image_size` (bicubic by default, antialiased), then crop the centre square.

    Sizes and offsets round as torchvision's `Resize(image_size)` + `CenterCrop(image_size)` do, the
    transforms of diffusers' `train_text_to_image.py` (bicubic) and `train_unconditional.py` (bilinear).
    """
    width, height = image.size
    if (width, height) == (image_size, image_size):
        return image
    if width <= height:
        new_width, new_height = image_size, int(image_size * height / width)
    else:
        new_width, new_height = int(image_size * width / height), image_size
    if (new_width, new_height) != (width, height):
        image = image.resize((new_width, new_height), resample=resample)
    left = int(round((new_width - image_size) / 2.0))
    top = int(round((new_height - image_size) / 2.0))
    return image.crop((left, top, left + image_size, top + image_size))


def uint8_to_pixel_values(arrays: np.ndarray, out: torch.Tensor | None = None) -> torch.Tensor:
    """(N, H, W) or (N, H, W, C) uint8 → (N, C, H, W) float32 in [-1, 1], written into `out` if given.

    x / 255 · 2 - 1 in float32, the same arithmetic as the built-in datasets (0 → -1 and 255 → 1 exactly).
    """
    tensor = torch.from_numpy(np.ascontiguousarray(arrays))
    tensor = tensor[:, None] if tensor.ndim == 3 else tensor.permute(0, 3, 1, 2)
    if out is None:
        out = torch.empty(tensor.shape, dtype=torch.float32)
    out.copy_(tensor)
    return out.div_(255.0).mul_(2).sub_(1)


# ----------------------------------------------------------------------------------------------------
# 3. datasets tables → tensors (shared by folders and Hub datasets)


def _where(value: dict, name: str, split_name: str, row: int) -> str:
    path = value.get("path")
    if value.get("bytes") is None and path:
        return path
    return f"row {row} of {name} split {split_name!r}" + (f" ({path})" if path else "")


def _open_lazily(value: dict) -> tuple[Image.Image, bool]:
    """Open an image without decoding its pixels where possible: (image, whether it is still undecoded)."""
    if value.get("bytes") is not None:
        return Image.open(io.BytesIO(value["bytes"])), True
    path = value.get("path")
    if path and os.path.isfile(path):
        return Image.open(path), True
    import datasets

    return datasets.Image().decode_example(value), False  # remote path: datasets fetches it


def _undecoded(table, image_column: str):
    import datasets

    return table.cast_column(image_column, datasets.Image(decode=False))


def _chunks(table, column: str, chunk: int = DECODE_CHUNK):
    """(first row, values) of `table[column]`, `chunk` rows at a time."""
    for start in range(0, len(table), chunk):
        yield start, table[start : start + chunk][column]


def scan_images(
    table, image_column: str, name: str, split_name: str
) -> tuple[set[str], tuple[int, int], str]:
    """Open every image without decoding it: (the set of modes, the first image's (width, height), where).

    `Image.verify` also reads the rest of the file (PNG: chunk checksums, so a truncated PNG fails here,
    ~20 µs an image); a JPEG truncated after its header fails only when decoded (`decode_split`).
    Raises ValueError naming the file when PIL cannot open one.
    """
    modes, first_size, first_where = set(), None, None
    for start, values in _chunks(_undecoded(table, image_column), image_column):
        for offset, value in enumerate(values):
            try:
                image, undecoded = _open_lazily(value)
                with image:
                    modes.add(image.mode)
                    if first_size is None:
                        first_size, first_where = image.size, _where(value, name, split_name, start + offset)
                    if undecoded:
                        image.verify()
            except Exception as error:
                raise ValueError(
                    f"cannot open image {_where(value, name, split_name, start + offset)}: "
                    f"{type(error).__name__}: {error}. Replace or remove it (and its metadata line)."
                ) from error
    return modes, first_size, first_where


def decode_split(
    table, image_column: str, channels: int, image_size: int, name: str, split: str
) -> torch.Tensor:
    """Decode the images of `table` into (N, C, S, S) float32 in [-1, 1], `DECODE_CHUNK` at a time."""
    import datasets

    decoder = datasets.Image()  # datasets' decoding: EXIF orientation applied
    pixel_values = torch.empty((len(table), channels, image_size, image_size), dtype=torch.float32)
    for start, values in _chunks(_undecoded(table, image_column), image_column):
        arrays = []
        for offset, value in enumerate(values):
            try:
                image = decoder.decode_example(value)
            except Exception as error:
                raise ValueError(
                    f"cannot decode image {_where(value, name, split, start + offset)}: "
                    f"{type(error).__name__}: {error}. Replace or remove it (and its metadata line)."
                ) from error
            arrays.append(image_to_array(image, channels, image_size))
        uint8_to_pixel_values(np.stack(arrays), out=pixel_values[start : start + len(arrays)])
    return pixel_values


def _resolve_column(
    features, given: str | None, kind: str, columns_source: str, columns_note: str, fallback
) -> str | None:
    if given is None:
        return fallback
    if given not in features:
        raise ValueError(
            f"{kind}_column {given!r} is not a column of {columns_source}: its columns are {list(features)}"
            f"{columns_note}. Pass {kind}_column=<one of those> (or leave it None to detect one)."
        )
    return given


def _labels(tables, column: str, feature, name: str):
    """Class indices for every table, `num_classes` and `class_names` from a ClassLabel, int or str column."""
    import datasets

    values = [list(table[column]) for table in tables]
    everything = [v for part in values for v in part]
    if isinstance(feature, datasets.ClassLabel):
        class_names, num_classes = list(feature.names), feature.num_classes
        indices = values
    elif all(isinstance(v, str) and v for v in everything):
        class_names = sorted(set(everything))
        num_classes = len(class_names)
        lookup = {c: i for i, c in enumerate(class_names)}
        indices = [[lookup[v] for v in part] for part in values]
    elif all(isinstance(v, int) and not isinstance(v, bool) for v in everything):
        class_names, num_classes = None, max(everything) + 1
        indices = values
    else:
        odd = [v for v in everything if not isinstance(v, (int, str)) or isinstance(v, bool) or v == ""]
        found = f"found {_describe_value(odd[0])}" if odd else "found both"
        raise ValueError(
            f"{name}: the label column {column!r} must hold class names (strings) or integers ≥ 0 in every "
            f"row, not a mix; {found} ({feature})."
        )
    if any(v is None or v < 0 for part in indices for v in part):
        raise ValueError(
            f"{name}: the label column {column!r} has missing or negative labels; label every image."
        )
    return indices, num_classes, class_names


def _captions(table, column: str, name: str, split: str) -> list[list[str]]:
    captions = []
    for row, value in enumerate(table[column]):
        phrasings = list(value) if isinstance(value, (list, tuple)) else [value]
        if not phrasings or not all(isinstance(p, str) and p.strip() for p in phrasings):
            raise ValueError(
                f"{name}: row {row} of split {split!r} has no caption in column {column!r} (got "
                f"{_describe_value(value)}); give every image a non-empty caption."
            )
        captions.append(phrasings)
    return captions


def prepare_hf_split(
    dataset_dict,
    name: str,
    split: str,
    *,
    image_size: int | None,
    channels: int | None,
    caption_column: str | None,
    label_column: str | None,
    split_seed: int,
    validation_fraction: float,
    columns_source: str | None = None,
    columns_note: str = "",
) -> PreparedSplit:
    """Turn a `datasets.DatasetDict` with an Image column into the `PreparedSplit` of `split`.

    "train" serves the training split; the first of `VALIDATION_SPLITS` present the validation split,
    else a fixed `validation_fraction` of "train" (permutation seeded by `split_seed`). The channels
    (when None) and the image size (when None) come from all images of both splits, so the two agree.
    """
    import datasets

    # 1. The tables
    available = list(dataset_dict)
    if "train" not in available or len(dataset_dict["train"]) == 0:
        raise ValueError(
            f"{name} has no training images (its splits: "
            f"{ {s: len(t) for s, t in dataset_dict.items()} }). Put the training images at the top of the "
            "folder or in a `train/` sub-folder (Hub datasets: a 'train' split)."
        )
    full_train = dataset_dict["train"]
    held_out = next((s for s in VALIDATION_SPLITS if s in available), None)
    sources = [("train", full_train)] + ([(held_out, dataset_dict[held_out])] if held_out else [])
    if held_out:
        table = dataset_dict[held_out] if split == "validation" else full_train
    else:
        # No held-out split: carve a fixed fraction out of "train".
        order = np.random.default_rng(split_seed).permutation(len(full_train))
        n_val = max(1, round(validation_fraction * len(full_train))) if len(full_train) > 1 else 0
        table = full_train.select(np.sort(order[:n_val] if split == "validation" else order[n_val:]).tolist())
    if len(table) == 0:
        raise ValueError(
            f"{name} split {split!r} is empty: {len(full_train)} training image(s) and no held-out split, so "
            f"the {validation_fraction:.0%} validation share rounds to none. Add images, or a `validation/` "
            "sub-folder."
        )

    # 2. The columns
    features = full_train.features
    columns_source = columns_source or name
    image_column = next((k for k, f in features.items() if isinstance(f, datasets.Image)), None)
    if image_column is None:
        raise ValueError(f"{name} has no image column (features: {dict(features)}).")
    text_column = _resolve_column(
        features,
        caption_column,
        "caption",
        columns_source,
        columns_note,
        next((k for k in TEXT_COLUMNS if k in features), None),
    )
    auto_label = next((k for k, f in features.items() if isinstance(f, datasets.ClassLabel)), None)
    if auto_label is not None and set(features[auto_label].names) <= set(available):
        auto_label = None  # datasets named "classes" after split folders (train/*.png, validation/*.png)
    label_feature = features.get(LABEL_COLUMN)
    if (
        auto_label is None
        and isinstance(label_feature, datasets.Value)
        and label_feature.dtype in _LABEL_DTYPES
    ):
        auto_label = LABEL_COLUMN  # class names or integers; a float "label" (a score?) only when named
    class_column = _resolve_column(features, label_column, "label", columns_source, columns_note, auto_label)

    # 3. Every image opens; channels and size
    modes, first_size, first_where = set(), None, None
    for source_name, source in sources:
        source_modes, size, where = scan_images(source, image_column, name, source_name)
        modes |= source_modes
        if first_size is None:
            first_size, first_where = size, where
    if channels is None:
        channels = 1 if modes <= set(GRAYSCALE_MODES) else 3
    if image_size is None:
        width, height = first_size
        if width != height:
            raise ValueError(
                f"{name}: the first image ({first_where}) is {width}×{height}, not square, and "
                "`image_size` is None (use the first image's size). Pass image_size=<side>: every image is "
                "then resized (shorter side) and centre-cropped to a square of that side."
            )
        image_size = width

    # 4. Labels and captions
    class_labels = num_classes = class_names = None
    if class_column is not None:
        label_tables = [s for _, s in sources] + [table]
        indices, num_classes, class_names = _labels(label_tables, class_column, features[class_column], name)
        class_labels = torch.as_tensor(indices[-1], dtype=torch.int64)
    captions = None if text_column is None else _captions(table, text_column, name, split)

    # 5. Pixels
    pixel_values = decode_split(table, image_column, channels, image_size, name, split)
    return PreparedSplit(pixel_values, class_labels, captions, num_classes, class_names)


# ----------------------------------------------------------------------------------------------------
# 4. Memo and the two loaders

_MEMO: OrderedDict[tuple, PreparedSplit] = OrderedDict()


def clear_prepared_cache() -> None:
    """Forget every memoised split (their tensors are freed once no dataset uses them)."""
    _MEMO.clear()


def _memoised(key: tuple, prepare) -> PreparedSplit:
    if key in _MEMO:
        _MEMO.move_to_end(key)
        logger.info("Reusing the prepared %s split of %s.", key[3], key[1])
        return _MEMO[key]
    prepared = prepare()
    _MEMO[key] = prepared

    def size(p):
        return p.pixel_values.numel() * p.pixel_values.element_size()

    while len(_MEMO) > 1 and (
        len(_MEMO) > MEMO_MAX_ENTRIES or sum(map(size, _MEMO.values())) > MEMO_MAX_BYTES
    ):
        _MEMO.popitem(last=False)
    return prepared


def _options_key(split, image_size, channels, caption_column, label_column, split_seed, fraction, kwargs):
    return (
        split,
        image_size,
        channels,
        caption_column,
        label_column,
        split_seed,
        fraction,
        repr(sorted(kwargs.items())),
    )


def prepare_imagefolder(
    path: str,
    split: str,
    *,
    image_size: int | None = None,
    channels: int | None = None,
    caption_column: str | None = None,
    label_column: str | None = None,
    split_seed: int,
    validation_fraction: float,
    dataset_kwargs: dict | None = None,
) -> PreparedSplit:
    """Check, read and decode one split of an image folder (memoised; see the module docstring)."""
    dataset_kwargs = dict(dataset_kwargs or {})
    if not os.path.isdir(path):
        what = "does not exist" if not os.path.exists(path) else "is a file, not a directory"
        raise ValueError(
            f"imagefolder path {path!r} {what}. Pass `imagefolder:<folder of images>`, "
            "e.g. imagefolder:./my_images."
        )
    entries = list_folder(path)
    options = (caption_column, label_column, split_seed, validation_fraction)
    key = ("imagefolder", os.path.realpath(path), folder_fingerprint(entries)) + _options_key(
        split, image_size, channels, *options, dataset_kwargs
    )

    def prepare():
        import datasets

        metadata = check_folder(path, entries, caption_column, label_column)
        if "data_files" not in dataset_kwargs:
            dataset_kwargs["data_files"] = split_patterns(entries)  # None: datasets finds the splits itself
        try:
            dataset_dict = datasets.load_dataset("imagefolder", data_dir=path, **dataset_kwargs)
        except Exception as error:
            raise ValueError(
                f"datasets could not read imagefolder {path!r}: {type(error).__name__}: {error}. Check "
                "that every metadata line has the same columns with the same types."
            ) from error
        if metadata:
            columns_source, columns_note = ", ".join(metadata), ""
        else:
            columns_source = f"imagefolder {path!r}"
            columns_note = (
                " (it has no metadata.jsonl / metadata.csv: captions come from one, e.g. "
                f"{_METADATA_EXAMPLE}; a `label` comes from sub-folder names when the images sit in two or "
                "more sub-folders at the same depth, e.g. cat/ and dog/)"
            )
        return prepare_hf_split(
            dataset_dict,
            f"imagefolder:{path}",
            split,
            image_size=image_size,
            channels=channels,
            caption_column=caption_column,
            label_column=label_column,
            split_seed=split_seed,
            validation_fraction=validation_fraction,
            columns_source=columns_source,
            columns_note=columns_note,
        )

    return _memoised(key, prepare)


def prepare_hub_dataset(
    name: str,
    split: str,
    load,
    *,
    image_size: int | None = None,
    channels: int | None = None,
    caption_column: str | None = None,
    label_column: str | None = None,
    split_seed: int,
    validation_fraction: float,
    dataset_kwargs: dict | None = None,
) -> PreparedSplit:
    """One split of a Hub dataset; `load()` returns its `DatasetDict` (memoised by name and options)."""
    options = (caption_column, label_column, split_seed, validation_fraction)
    key = ("hub", name, None) + _options_key(
        split, image_size, channels, *options, dict(dataset_kwargs or {})
    )

    def prepare():
        return prepare_hf_split(
            load(),
            f"hub:{name}",
            split,
            image_size=image_size,
            channels=channels,
            caption_column=caption_column,
            label_column=label_column,
            split_seed=split_seed,
            validation_fraction=validation_fraction,
        )

    return _memoised(key, prepare)
