"""Training configuration: dataclasses with documented defaults, loaded from YAML, overridden by ``key=value``.

A config file has the trainer's keys at the top level and the task's own hyperparameters under ``model``::

    base: ddpm-mnist-classes       # optional: a preset or file this one builds on
    output_dir: outputs/my-ddpm
    max_train_steps: 5000
    model:
      block_out_channels: [32, 64, 64]

Command-line overrides use the same names, dotted for the task's keys: ``seed=1 model.prediction_type=epsilon``.
Every key and value is checked before training starts: an unknown key or a value of the wrong type or outside
its choices is a ``ValueError`` that names the valid keys or choices.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml


@dataclass(frozen=True)
class Range:
    """The valid values of a numeric config field, declared with its type: ``Annotated[int, Range(min=1)]``.

    `load_config` and every config dataclass check it (with the type) before any work, so ``learning_rate=-1`` or
    ``model.num_train_timesteps=0`` is a ValueError naming the key and the range, not a crash deep in torch.
    """

    min: float | None = None
    max: float | None = None
    min_exclusive: bool = False
    max_exclusive: bool = False

    def __str__(self) -> str:
        if self.max is None:
            if self.min == 0 and self.min_exclusive:
                return "positive (> 0)"
            return f"{'>' if self.min_exclusive else '>='} {self.min}"
        if self.min is None:
            return f"{'<' if self.max_exclusive else '<='} {self.max}"
        return f"in {'(' if self.min_exclusive else '['}{self.min}, {self.max}{')' if self.max_exclusive else ']'}"

    def check(self, name: str, value: float) -> None:
        below = self.min is not None and (value <= self.min if self.min_exclusive else value < self.min)
        above = self.max is not None and (value >= self.max if self.max_exclusive else value > self.max)
        if below or above:
            raise ValueError(f"`{name}` must be {self}, got {value!r}.")


@dataclass(frozen=True)
class NonEmpty:
    """A list field that needs at least one entry (the channels of at least one block)."""


PositiveInt = Annotated[int, Range(min=1)]
NonNegativeInt = Annotated[int, Range(min=0)]
PositiveFloat = Annotated[float, Range(min=0, min_exclusive=True)]
NonNegativeFloat = Annotated[float, Range(min=0)]
# A probability that must leave something: dropout rates, EMA decay, Adam's betas.
UnitInterval = Annotated[float, Range(min=0, max=1, max_exclusive=True)]
Widths = Annotated[tuple[PositiveInt, ...], NonEmpty()]

MixedPrecision = Literal["auto", "no", "bf16", "fp16"]
LRScheduler = Literal[
    "constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial"
]


@dataclass
class TrainingConfig:
    """Everything the one :class:`~latentzoo.training.Trainer` needs; the task's own keys live in ``model``."""

    # What to train on what. `task` names a class registered in `latentzoo.training.tasks`.
    task: str = "text2img"
    # A name `latentzoo.data.load_dataset` knows: mnist, digits, shapes, imagefolder:PATH, hub:NAME.
    dataset: str = "mnist"
    # Square side the images are resized (shorter side) and center-cropped to; null keeps the dataset's own size.
    resolution: PositiveInt | None = None
    # 1 (grayscale) or 3 (RGB); null keeps the data's own (1 only when every image is grayscale).
    channels: int | None = None
    # Columns of a folder's metadata.jsonl / a hub dataset; null finds them (text/caption/..., a ClassLabel or label).
    caption_column: str | None = None
    label_column: str | None = None
    # Horizontal flip of each item, a function of (seed, epoch, item): augmentation that keeps resume bit-identical.
    random_flip: bool = False
    # Other keyword arguments for `latentzoo.data.load_dataset`, e.g. {size: 20000} for shapes.
    dataset_kwargs: dict = field(default_factory=dict)
    # The final pipeline is saved here (model_index.json at the top); checkpoints/, logs/ and samples/ beside it.
    output_dir: str = "outputs/run"
    # Seeds model initialisation identically on every process, then data order and noise per process.
    # numpy seeds must lie in [0, 2**32 - 1].
    seed: Annotated[int, Range(min=0, max=2**32 - 1)] = 0

    # Budget: training stops at whichever limit comes first. With none given, one epoch. Presets are bounded by
    # steps or epochs only, so the same seed gives the same model on a busy laptop and an idle server.
    max_train_steps: PositiveInt | None = None
    num_epochs: PositiveInt | None = None
    # Wall-clock budget in minutes, counted across resumed runs; the run stops cleanly and saves when it is spent.
    # A user option: the model it gives depends on how fast the machine is at the time.
    max_train_minutes: PositiveFloat | None = None

    # Optimisation. The batch is per process; the effective batch is
    # train_batch_size * gradient_accumulation_steps * num_processes.
    train_batch_size: PositiveInt = 64
    gradient_accumulation_steps: PositiveInt = 1
    learning_rate: PositiveFloat = 1e-4
    # AdamW; weight decay 0 by default because the models here are small and data is the bottleneck.
    adam_beta1: UnitInterval = 0.9
    adam_beta2: UnitInterval = 0.999
    adam_weight_decay: NonNegativeFloat = 0.0
    adam_epsilon: PositiveFloat = 1e-8
    # Global gradient-norm clip per optimizer; null disables it.
    max_grad_norm: PositiveFloat | None = 1.0
    lr_scheduler: LRScheduler = "constant_with_warmup"
    lr_warmup_steps: NonNegativeInt = 0
    # "bf16" runs autocast on CPU and GPU alike (faster on some CPUs with bf16 instructions, more so with
    # attention="blockwise", slower on others: benchmarks/results/train_throughput.md); "fp16" needs a GPU. "auto"
    # chooses at start, with `attention`: on a CPU the fastest of fp32 + SDPA, bf16 + SDPA and bf16 + blockwise over
    # a few steps of this model at this batch (the bf16 ones where the CPU has bf16 kernels), on a GPU bf16 (fp16
    # without bf16) and SDPA. The choice and the timings go into training_config.yaml (`speed_probe`); a resumed run
    # and the stages of this launch reuse it.
    mixed_precision: MixedPrecision = "auto"
    # torch.compile through Accelerate's dynamo plugin; pays a compile cost at start.
    torch_compile: bool = False
    # CPU, Linux/glibc: keep freed memory in the process instead of page-faulting each step's activations in afresh
    # (training/cpu_memory.py; measured in benchmarks/results/train_throughput.md). Process-wide; more resident memory.
    retain_cpu_memory: bool = False
    # Attention in the trained models' diffusers `Attention` layers: "sdpa" is diffusers' default processor;
    # "blockwise" computes a block of heads at a time (latentzoo.models.attention), faster under bf16 on CPU for the
    # short sequences of small UNets (benchmarks/results/train_throughput.md). Saved models keep no trace of it.
    # "auto": chosen with `mixed_precision` (the probe tries blockwise under bf16 only).
    attention: Literal["auto", "sdpa", "blockwise"] = "auto"
    # Written by the Trainer, not a setting: how `auto` was resolved (the probe's seconds per step per setting).
    speed_probe: dict | None = None

    # Exponential moving average of the weights (diffusers' EMAModel); validation and the saved pipeline use it.
    use_ema: bool = False
    ema_decay: UnitInterval = 0.999
    # Warm-up of the decay (1 - (1 + step / inv_gamma) ** -power) so early averages are not dominated by init.
    ema_use_warmup: bool = True
    ema_power: PositiveFloat = 0.75

    dataloader_num_workers: NonNegativeInt = 0

    # Logging, validation, checkpoints. Steps count optimizer updates (after gradient accumulation).
    logging_steps: PositiveInt = 10
    # null: validate only at the end of training.
    validation_steps: PositiveInt | None = None
    num_validation_images: PositiveInt = 16
    checkpointing_steps: PositiveInt | None = None
    # Keep at most this many complete checkpoints; older ones are deleted only after a new one is complete.
    checkpoints_total_limit: PositiveInt | None = None
    # A checkpoint folder, or "latest" for the newest complete one in output_dir/checkpoints (none: start fresh).
    resume_from_checkpoint: str | None = None
    # Training into an output_dir that holds a finished model or another run's checkpoints is refused unless this is
    # true (the old run's checkpoints, samples, logs and metrics are deleted first) or the run resumes.
    overwrite_output_dir: bool = False
    # "tensorboard", or "none" to log nothing.
    report_to: Literal["tensorboard", "none"] = "tensorboard"

    # The task's own hyperparameters: a dict in YAML, turned into the task's config dataclass by `load_config`.
    model: Any = field(default_factory=dict)
    # Overrides of the stages a task builds on (text2img: vae, text_encoder; mdn_prior: autoencoder), by stage
    # name: {vae: {max_train_steps: 50, model: {kl_weight: 1.0e-5}}}, or `stages.vae.max_train_steps=50`. A stage
    # otherwise takes its preset's values, with this run's data settings (DATA_KEYS) and seed.
    stages: dict = field(default_factory=dict)

    def __post_init__(self):
        check_fields(self)
        if self.channels not in (None, 1, 3):
            raise ValueError(
                f"`channels` must be 1 (grayscale), 3 (RGB) or null (the data's own), got {self.channels}."
            )

    def dataset_arguments(self) -> dict[str, Any]:
        """Keyword arguments of `latentzoo.data.load_dataset` (beside name and split) that this config asks for."""
        arguments: dict[str, Any] = {"image_size": self.resolution, "seed": self.seed}
        for key in ("channels", "caption_column", "label_column"):
            if getattr(self, key) is not None:
                arguments[key] = getattr(self, key)
        if self.random_flip:
            arguments["random_flip"] = True
        return {**arguments, **self.dataset_kwargs}


# What a stage inherits from the run that builds on it: the data, the seed, precision, attention and logging (mixed
# precision cannot even be overridden: Accelerate fixes it once per process, and stages train in the run's process).
DATA_KEYS = (
    "dataset",
    "resolution",
    "channels",
    "caption_column",
    "label_column",
    "random_flip",
    "dataset_kwargs",
)
INHERITED_KEYS = (*DATA_KEYS, "seed", "mixed_precision", "attention", "report_to")


def _check_value(name: str, value: Any, annotation: Any) -> Any:
    """Return `value` if it matches `annotation` (ints are accepted as floats), else raise a ValueError."""
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return value
    if origin is Annotated:
        base, *constraints = typing.get_args(annotation)
        value = _check_value(name, value, base)
        for constraint in constraints:
            if isinstance(constraint, Range):
                constraint.check(name, value)
            elif isinstance(constraint, NonEmpty) and len(value) == 0:
                raise ValueError(f"`{name}` needs at least one entry, got {value!r}.")
        return value
    if origin is Literal:
        choices = typing.get_args(annotation)
        if value is False and "no" in choices:  # YAML 1.1 reads a bare `no` (mixed_precision=no) as false
            value = "no"
        if value not in choices:
            raise ValueError(f"`{name}` must be one of {list(choices)}, got {value!r}.")
        return value
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _check_value(name, value, option)
            except ValueError as error:
                errors.append(str(error))
        raise ValueError(
            errors[0] if len(errors) == 1 else f"`{name}` got {value!r}, which is none of {annotation}."
        )
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"`{name}` must be a list, got {value!r}.")
        args = typing.get_args(annotation)
        item_type = args[0] if args else Any
        checked = [_check_value(f"{name}[{i}]", item, item_type) for i, item in enumerate(value)]
        return origin(checked)
    if origin is dict or annotation is dict:
        if not isinstance(value, dict):
            raise ValueError(f"`{name}` must be a mapping, got {value!r}.")
        return dict(value)
    if annotation is float:
        if isinstance(value, str):
            # YAML 1.1 reads "3e-3" (no dot) as a string; accept what Python reads as a number.
            try:
                value = float(value)
            except ValueError:
                raise ValueError(f"`{name}` must be a number, got {value!r}.") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"`{name}` must be a number, got {value!r}.")
        if not math.isfinite(value):
            raise ValueError(f"`{name}` must be a finite number, got {value!r}.")
        return float(value)
    if annotation is int and isinstance(value, bool):
        raise ValueError(f"`{name}` must be an integer, got {value!r}.")
    if isinstance(annotation, type) and not isinstance(value, annotation):
        raise ValueError(f"`{name}` must be of type {annotation.__name__}, got {value!r}.")
    return value


def check_fields(instance, prefix: str = "") -> None:
    """Check every field of a config dataclass against its declared type and range, in place (ints become floats
    where a float is declared). Config dataclasses call it in ``__post_init__``, so a config built in Python is
    checked like one loaded from YAML."""
    hints = typing.get_type_hints(type(instance), include_extras=True)
    for f in dataclasses.fields(instance):
        setattr(instance, f.name, _check_value(prefix + f.name, getattr(instance, f.name), hints[f.name]))


def build_dataclass(cls: type, values: dict[str, Any], prefix: str = ""):
    """Build dataclass `cls` from `values`, checking every key and value against the declared fields."""
    if not isinstance(values, dict):
        raise ValueError(f"`{prefix.rstrip('.') or cls.__name__}` must be a mapping, got {values!r}.")
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ValueError(
            f"Unknown config key(s) {[prefix + k for k in unknown]} for {cls.__name__}; "
            f"valid keys: {sorted(prefix + k for k in fields)}."
        )
    checked = {key: _check_value(prefix + key, value, hints[key]) for key, value in values.items()}
    return cls(**checked)


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """Turn ``["seed=1", "model.prediction_type=epsilon"]`` into a nested dict; values are parsed as YAML."""
    parsed: dict[str, Any] = {}
    for override in overrides:
        key, sep, raw = override.partition("=")
        if not sep or not key:
            raise ValueError(
                f"Override {override!r} must look like key=value (e.g. seed=1 or model.prediction_type=epsilon)."
            )
        value = yaml.safe_load(raw) if raw != "" else None
        node = parsed
        *parents, leaf = key.split(".")
        for parent in parents:
            node = node.setdefault(parent, {})
            if not isinstance(node, dict):
                raise ValueError(
                    f"Override {override!r} sets a key inside `{parent}`, which is not a mapping."
                )
        node[leaf] = value
    return parsed


def _merge(base: dict, update: dict) -> dict:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and key != "dataset_kwargs":
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def resolve_config_path(path: str | Path) -> Path:
    """A config path as given, or the name of a preset shipped in ``latentzoo/configs`` (``ddpm-mnist``)."""
    path = Path(path)
    if path.is_file():
        return path
    presets = Path(__file__).resolve().parent.parent / "configs"
    for candidate in (presets / path.name, presets / f"{path.name}.yaml"):
        if candidate.is_file():
            return candidate
    available = sorted(p.stem for p in presets.glob("*.yaml"))
    raise ValueError(f"Config {str(path)!r} is neither a file nor a preset; presets: {available}.")


def read_config_file(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The values of a config file or preset, with those of its ``base:`` (a preset name, or a file path relative to
    this file) underneath: ``gan-mnist-classes`` is ``base: gan-mnist`` and the few keys that differ."""
    resolved = resolve_config_path(path).resolve()
    if resolved in _seen:
        raise ValueError(f"Config {resolved} is its own base (through {[str(p) for p in _seen]}).")
    with open(resolved) as f:
        values = yaml.safe_load(f) or {}
    if not isinstance(values, dict):
        raise ValueError(f"Config file {path} must hold a mapping at the top level.")
    base = values.pop("base", None)
    if base is None:
        return values
    if not isinstance(base, str):
        raise ValueError(f"`base` in {resolved} must name a preset or a config file, got {base!r}.")
    beside = resolved.parent / base
    return _merge(read_config_file(beside if beside.is_file() else base, (*_seen, resolved)), values)


def _move_stage_folders(preset: dict[str, Any], values: dict[str, Any]) -> None:
    """Re-root, in `values`, the model paths `preset` keeps under its output_dir when `values` moved output_dir."""
    old_root, new_root = preset.get("output_dir"), values.get("output_dir")
    if not isinstance(old_root, str) or not isinstance(new_root, str) or old_root == new_root:
        return
    preset_model, model = preset.get("model") or {}, values.get("model")
    if not isinstance(preset_model, dict) or not isinstance(model, dict):
        return
    values["model"] = model = dict(model)
    for key, value in preset_model.items():
        if isinstance(value, str) and model.get(key) == value and Path(value).is_relative_to(old_root):
            model[key] = str(Path(new_root) / Path(value).relative_to(old_root))


def load_config(path: str | Path | None = None, overrides: list[str] | dict | None = None) -> TrainingConfig:
    """Load a YAML config (a file or a preset name, on top of its ``base:`` if it names one), apply overrides, and
    check it completely.

    When the overrides move ``output_dir``, the stage folders the file keeps inside its own output_dir
    (``model.vae``, ``model.text_encoder``, ...) move with it, unless they are overridden too.
    The returned config's ``model`` is an instance of the task's own config dataclass.
    """
    from .tasks import get_task_class

    values = read_config_file(path) if path is not None else {}
    if overrides:
        preset = values
        values = _merge(values, parse_overrides(overrides) if isinstance(overrides, list) else overrides)
        _move_stage_folders(preset, values)
    model_values = values.pop("model", None) or {}
    config = build_dataclass(TrainingConfig, values)
    task_class = get_task_class(config.task)
    if dataclasses.is_dataclass(model_values):
        config.model = model_values
    else:
        config.model = build_dataclass(task_class.Config, model_values, prefix="model.")
    # Every stage's config is built (and so checked) now, before any training starts.
    stage_configs(config)
    return config


def stage_configs(config: TrainingConfig) -> list[tuple[Any, TrainingConfig]]:
    """(stage, its complete TrainingConfig) for each stage `config`'s task builds on, in training order.

    A stage is its own preset, then this run's INHERITED_KEYS (the data, seed, precision, attention, logging)
    and its output folder, then this run's ``stages.<name>`` overrides. An unknown stage name is an error.
    """
    from .tasks import get_task_class

    stages = get_task_class(config.task).stages(config.model)
    names = [stage.name for stage in stages]
    unknown = sorted(set(config.stages) - set(names))
    if unknown:
        raise ValueError(
            f"`stages` names unknown stage(s) {unknown}; task {config.task!r} builds on "
            f"{names or 'no stages'} (e.g. stages.{names[0] if names else 'NAME'}.max_train_steps=50)."
        )
    built = []
    for stage in stages:
        overrides = {key: getattr(config, key) for key in INHERITED_KEYS}
        overrides["output_dir"] = stage.output_dir
        if config.resume_from_checkpoint == "latest":  # an interrupted stage continues too
            overrides["resume_from_checkpoint"] = "latest"
        own = config.stages.get(stage.name) or {}
        if not isinstance(own, dict):
            raise ValueError(f"`stages.{stage.name}` must be a mapping of config keys, got {own!r}.")
        if own.get("mixed_precision", config.mixed_precision) != config.mixed_precision:
            raise ValueError(
                f"`stages.{stage.name}.mixed_precision` must equal the run's ({config.mixed_precision!r}): a stage "
                "trains in the same launch, and Accelerate fixes mixed precision once per process. Train the "
                f"stage on its own first (`latentzoo train {stage.config} output_dir={stage.output_dir} ...`)."
            )
        try:
            built.append((stage, load_config(stage.config, _merge(overrides, own))))
        except ValueError as error:
            raise ValueError(f"Stage {stage.name!r} ({stage.config}): {error}") from None
    return built


def config_to_dict(config: TrainingConfig) -> dict[str, Any]:
    """The config as plain YAML-able data (the task's dataclass flattened back into a dict)."""
    return dataclasses.asdict(config)
