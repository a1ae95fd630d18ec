"""Load any saved latentzoo (or diffusers) pipeline folder by the class named in its ``model_index.json``; the names
latentzoo folders are saved under.

Only pipeline classes latentzoo or diffusers provide are loaded: a folder cannot make latentzoo import code, as
diffusers refuses a custom pipeline (``"_class_name": ["module", "Class"]``) without ``trust_remote_code=True``,
which latentzoo never passes. A malformed, incomplete or corrupt folder is a ValueError naming the file.

A latentzoo pipeline whose components make it compute exactly what a diffusers pipeline computes is saved under that
diffusers class's name (`SavedAsDiffusersPipeline`), so diffusers alone loads the folder
(``DiffusionPipeline.from_pretrained(folder)``); `load_pipeline` loads such a folder with the latentzoo class that
saved it (`LATENTZOO_CLASS_OF`).
"""

from __future__ import annotations

import json
from pathlib import Path

import diffusers
from diffusers import DiffusionPipeline
from safetensors import SafetensorError, safe_open

from .samplers import make_sampler

# The diffusers pipelines latentzoo folders may be saved as, and the latentzoo class that loads each such folder.
LATENTZOO_CLASS_OF = {
    "StableDiffusionPipeline": "LatentTextToImagePipeline",
    "LatentConsistencyModelPipeline": "LatentTextToImagePipeline",
    "DDPMPipeline": "PixelDiffusionPipeline",
}

NO_CODE_FROM_FOLDERS = (
    "latentzoo loads only its own and diffusers' pipeline classes, never code a model folder names (diffusers "
    "needs trust_remote_code=True for that): use a folder written by a latentzoo or diffusers pipeline's "
    "save_pretrained, or, if you trust that code, DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)."
)


class SavedAsDiffusersPipeline:
    """Mixin of a latentzoo pipeline that, with some components, computes exactly what a diffusers pipeline computes.

    With such components, `save_pretrained` writes model_index.json under that diffusers class's name
    (`diffusers_class_name`), plus the entries that class needs for components latentzoo's has not
    (`diffusers_index_entries`) and without latentzoo's absent optional components, so that
    ``diffusers.DiffusionPipeline.from_pretrained(folder)`` loads it with diffusers alone. The latentzoo class still
    loads the folder: diffusers' ``from_pretrained`` called on a subclass uses that subclass and drops the entries of
    the class the folder names that the subclass does not take. Saved extras of the latentzoo class
    (``default_guidance_scale``, ...) stay in model_index.json; diffusers' class warns that it ignores them.
    """

    @property
    def diffusers_class_name(self) -> str | None:
        """The diffusers pipeline that computes what this one does with these components, or None (none does: the
        folder is saved under the latentzoo class's name)."""
        return None

    def diffusers_index_entries(self) -> dict:
        """model_index.json entries the diffusers class needs beyond this pipeline's own (components it has and this
        one lacks, as `[null, null]`, ...)."""
        return {}

    def to_json_file(self, json_file_path: str | Path) -> None:
        """Write the config (model_index.json for a pipeline) as diffusers does, under `diffusers_class_name` if
        there is one."""
        config = json.loads(self.to_json_string())
        class_name = self.diffusers_class_name
        if class_name is not None:
            absent = [
                name
                for name in self._optional_components
                if isinstance(config.get(name), list) and config[name][0] is None
            ]
            config = {key: value for key, value in config.items() if key not in absent}
            config.update(self.diffusers_index_entries(), _class_name=class_name)
        Path(json_file_path).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def read_model_index(path: str | Path) -> dict:
    """The parsed `path`/model_index.json; a ValueError naming the file when it is missing or not a JSON object."""
    index = Path(path) / "model_index.json"
    if not index.is_file():
        raise ValueError(
            f"{path} holds no saved pipeline (no model_index.json); pass a folder written by save_pretrained."
        )
    try:
        model_index = json.loads(index.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{index} is not valid JSON ({error.msg} at line {error.lineno}, column {error.colno}): re-save the "
            "pipeline with save_pretrained, download it again, or fix the file."
        ) from error
    if not isinstance(model_index, dict):
        raise ValueError(
            f"{index} holds a JSON {type(model_index).__name__}, not the object save_pretrained writes: re-save "
            "the pipeline with save_pretrained or download it again."
        )
    return model_index


def _pipeline_class(index: Path, model_index: dict) -> type[DiffusionPipeline]:
    from .. import pipelines

    class_name = model_index.get("_class_name")
    if isinstance(class_name, list):
        raise ValueError(
            f"{index} names custom pipeline code {json.dumps(class_name)}. {NO_CODE_FROM_FOLDERS}"
        )
    if not isinstance(class_name, str) or not class_name:
        raise ValueError(
            f"{index} names no pipeline class (`_class_name` is {json.dumps(class_name)}): pass a folder written "
            "by a pipeline's save_pretrained."
        )
    # A folder saved by latentzoo under a diffusers name loads with the latentzoo class, unless it carries a safety
    # checker, which latentzoo's pipelines do not run (a Stable Diffusion folder from elsewhere: diffusers' class).
    safety_checker = model_index.get("safety_checker")
    if class_name in LATENTZOO_CLASS_OF and (safety_checker is None or safety_checker == [None, None]):
        class_name = LATENTZOO_CLASS_OF[class_name]
    # latentzoo's pipelines first (diffusers' own lookup knows diffusers only), then diffusers' pipelines.
    found = (
        getattr(pipelines, class_name)
        if class_name in pipelines.__all__
        else getattr(diffusers, class_name, None)
    )
    if not (isinstance(found, type) and issubclass(found, DiffusionPipeline)):
        raise ValueError(
            f"{index} names the pipeline class {class_name!r}, which is neither a latentzoo pipeline "
            f"({', '.join(pipelines.__all__)}) nor a diffusers one. {NO_CODE_FROM_FOLDERS}"
        )
    return found


def pipeline_class(path: str | Path) -> type[DiffusionPipeline]:
    """The pipeline class `path`/model_index.json names, without loading any weights."""
    return _pipeline_class(Path(path) / "model_index.json", read_model_index(path))


def _broken_files(path: Path, components: list[str]) -> list[str]:
    """The files of `components` that do not parse, and model folders without weights: where a loading error
    came from (diffusers' and safetensors' messages do not always say)."""
    broken = []
    for name in components:
        files = sorted((path / name).glob("*"))
        if (path / name / "config.json").is_file() and not any(
            f.suffix in (".safetensors", ".bin") for f in files
        ):
            broken.append(f"{name}/ has no weights")
        for file in files:
            try:
                if file.suffix == ".json":
                    json.loads(file.read_text())
                elif file.suffix == ".safetensors":
                    with safe_open(file, framework="pt"):
                        pass
            except (OSError, ValueError, SafetensorError):
                broken.append(f"{file.relative_to(path)} is unreadable")
    return broken


def load_pipeline(path: str | Path, sampler: str | None = None, **kwargs) -> DiffusionPipeline:
    """``from_pretrained`` of the pipeline class recorded in `path`/model_index.json, optionally with another sampler.

    diffusers' ``DiffusionPipeline.from_pretrained`` looks classes up in diffusers only; latentzoo's pipelines are
    found here first (also for a folder latentzoo saved under a diffusers name, `LATENTZOO_CLASS_OF`), then diffusers'
    pipelines; any other `_class_name` is refused (see the module docstring).
    """
    model_index = read_model_index(path)
    pipeline_type = _pipeline_class(Path(path) / "model_index.json", model_index)
    # Components saved in their own folder: [library, class] entries; [null, null] is an absent optional one.
    components = [
        name
        for name, entry in model_index.items()
        if not name.startswith("_") and isinstance(entry, list) and None not in entry and name not in kwargs
    ]
    missing = [name for name in components if not (Path(path) / name).is_dir()]
    if missing:
        raise ValueError(
            f"{path} lacks the folder of its component(s) {', '.join(missing)} listed in model_index.json: the "
            "folder is incomplete; re-save the pipeline with save_pretrained or download it again."
        )
    try:
        pipeline = pipeline_type.from_pretrained(path, **kwargs)
    except (OSError, SafetensorError, json.JSONDecodeError) as error:
        broken = _broken_files(Path(path), components)
        where = f" ({'; '.join(broken)})" if broken else ""
        raise ValueError(
            f"Cannot load the {pipeline_type.__name__} in {path}{where}: {str(error).strip().rstrip('.')}. The "
            "folder is incomplete or corrupt: re-save the pipeline with save_pretrained or download it again."
        ) from error
    if sampler is not None:
        pipeline.scheduler = make_sampler(sampler, pipeline.scheduler.config)
    return pipeline
