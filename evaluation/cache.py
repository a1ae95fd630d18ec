"""The cache of models that evaluation trains once per machine (the MNIST judge, the domain encoders)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path


def cache_root() -> Path:
    """`$LATENTZOO_CACHE`, by default `~/.cache/latentzoo`."""
    return Path(
        os.environ.get("LATENTZOO_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "latentzoo")
    )


def save_to_cache(model, metrics: dict, folder: Path, metrics_file: str, replace: bool = False) -> None:
    """Save `model` (save_pretrained) and `metrics` (json, `metrics_file`) as `folder`, atomically.

    Everything is written into a temporary folder beside `folder`, then renamed: a crash or a concurrent run never
    leaves half a model. When another process cached one meanwhile, theirs is kept (unless `replace`).
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    model.save_pretrained(staging)
    (staging / metrics_file).write_text(json.dumps(metrics, indent=2, default=str) + "\n")
    if replace and folder.exists():
        shutil.rmtree(folder)
    try:
        staging.rename(folder)
    except OSError:  # another process cached one meanwhile: keep theirs
        shutil.rmtree(staging, ignore_errors=True)
