"""Load any saved latentzoo (or diffusers) pipeline folder by the class named in its ``model_index.json``."""

from __future__ import annotations

import json
from pathlib import Path

from diffusers import DiffusionPipeline

from .samplers import make_sampler


def load_pipeline(path: str | Path, sampler: str | None = None, **kwargs) -> DiffusionPipeline:
    """``from_pretrained`` of the pipeline class recorded in `path`/model_index.json, optionally with another sampler.

    diffusers' ``DiffusionPipeline.from_pretrained`` looks classes up in diffusers only; latentzoo's pipelines are
    found here first, anything else falls through to diffusers.
    """
    from . import __dict__ as pipelines

    index = Path(path) / "model_index.json"
    if not index.is_file():
        raise ValueError(
            f"{path} holds no saved pipeline (no model_index.json); pass a folder written by save_pretrained."
        )
    class_name = json.loads(index.read_text()).get("_class_name")
    pipeline_class = pipelines.get(class_name, DiffusionPipeline)
    pipeline = pipeline_class.from_pretrained(path, **kwargs)
    if sampler is not None:
        pipeline.scheduler = make_sampler(sampler, pipeline.scheduler.config)
    return pipeline
