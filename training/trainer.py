"""The one Accelerate training loop every latentzoo model trains through.

It follows accelerate's canonical loop: ``set_seed`` before building models, one ``prepare``, each step inside
``accumulate`` with ``accelerator.backward``; clipping, EMA and ``global_step`` only under ``sync_gradients``;
``save_state``/``load_state`` plus ``skip_first_batches`` for resume; sampling and saving on the main process;
``end_training`` at the end. Multi-process runs come from ``accelerate launch`` unchanged.

What it guarantees beyond that loop:

- **No silent divergence.** A non-finite loss (or gradient norm, when clipping) stops the run at that step with
  :class:`NonFiniteLossError`, before the optimizer steps; no checkpoint or model with non-finite weights is ever
  written, so the last good checkpoint stays ``latest``.
- **No lost run.** SIGTERM (a cluster's preemption, ``kill``, ``timeout``) or SIGINT (Ctrl-C) finishes the current
  step, writes a checkpoint and raises :class:`TrainingInterrupted`; ``resume_from_checkpoint=latest`` continues
  bit-identically. A second signal acts at once.
- **Only complete checkpoints.** A checkpoint is written into a temporary folder, its ``manifest.json`` (every file
  and its size) last, then renamed; a folder whose files do not match its manifest is never resumed from.
- **One run per folder.** An output_dir holding a finished model or another run's checkpoints is refused unless
  the run resumes or ``overwrite_output_dir=true``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import os
import re
import shutil
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from accelerate import Accelerator, PartialState
from accelerate.logging import get_logger
from accelerate.state import AcceleratorState, is_initialized
from accelerate.utils import (
    DataLoaderConfiguration,
    ProjectConfiguration,
    broadcast_object_list,
    convert_outputs_to_fp32,
    parse_flag_from_env,
    set_seed,
)
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from ..data import load_dataset
from ..data.datasets import dataset_display_name
from ..evaluation.images import make_image_grid
from ..models.attention import use_blockwise_attention
from .config import TrainingConfig, config_to_dict
from .cpu_memory import retain_freed_memory
from .model_card import write_model_card
from .tasks import TrainingTask, get_task_class

logger = get_logger(__name__)

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
TEMPORARY_PREFIX = ".tmp-checkpoint-"
# Written last into a checkpoint: every other file and its size. A checkpoint is complete only when they match.
MANIFEST = "manifest.json"
# Schedules that do not need to know the total number of steps (the others decay towards it).
_CONSTANT_SCHEDULES = ("constant", "constant_with_warmup")
# Entries of a training_step's output named like this are logged (averaged over the logging window), not optimized.
METRIC_PREFIX = "metrics/"
# What a run writes into its output_dir besides the model: removed by `overwrite_output_dir=true`.
RUN_OUTPUTS = ("checkpoints", "samples", "logs", "train_state.json", "metrics.json")


class NonFiniteLossError(RuntimeError):
    """Training diverged: a loss, gradient norm or weight is NaN or infinite. Nothing non-finite was saved."""


class TrainingInterrupted(KeyboardInterrupt):
    """SIGTERM or SIGINT stopped training after a step; `checkpoint` holds it for ``resume_from_checkpoint=latest``.

    A KeyboardInterrupt, like the Ctrl-C it usually is, so ``except Exception`` code does not swallow it.
    """

    def __init__(self, message: str, signal_number: int, checkpoint: Path):
        super().__init__(message)
        self.signal_number = signal_number
        self.checkpoint = checkpoint


def checkpoint_problem(path: str | Path) -> str | None:
    """Why `path` is not a complete checkpoint (a missing manifest, a missing or truncated file), or None."""
    path = Path(path)
    try:
        files = json.loads((path / MANIFEST).read_text())["files"]
    except FileNotFoundError:
        return f"it has no {MANIFEST} (its save never finished)"
    except (ValueError, KeyError, TypeError):
        return f"its {MANIFEST} is unreadable"
    for name, size in files.items():
        file = path / name
        if not file.is_file():
            return f"{name} is missing"
        if file.stat().st_size != size:
            return f"{name} has {file.stat().st_size} bytes, its manifest says {size}"
    return None


def _checkpoint_folders(checkpoint_dir: str | Path) -> list[Path]:
    """Every ``checkpoint-<step>`` folder in `checkpoint_dir`, complete or not, oldest first."""
    checkpoint_dir = Path(checkpoint_dir)
    if not checkpoint_dir.is_dir():
        return []
    found = [
        (int(m.group(1)), p)
        for p in checkpoint_dir.iterdir()
        if p.is_dir() and (m := CHECKPOINT_PATTERN.match(p.name))
    ]
    return [path for _, path in sorted(found)]


def list_checkpoints(checkpoint_dir: str | Path) -> list[Path]:
    """Complete checkpoints in `checkpoint_dir`, oldest first: those whose files match their manifest.

    A save writes a ``.tmp-checkpoint-<step>`` folder, its manifest last, and renames it when complete; a killed
    save, a disk-full or a partial copy leaves a folder that is never chosen.
    """
    return [path for path in _checkpoint_folders(checkpoint_dir) if checkpoint_problem(path) is None]


def _write_manifest(folder: Path) -> None:
    files = {
        str(path.relative_to(folder)): path.stat().st_size
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }
    with open(folder / MANIFEST, "w") as f:
        json.dump({"files": files}, f, indent=1)
        f.flush()
        os.fsync(f.fileno())


def save_state_dict(state: dict[str, Any], folder: Path, name: str) -> None:
    """Write `state` (nested dicts and lists of tensors and JSON values) without pickle: its tensors into
    ``name.safetensors``, everything else into ``name.json``, where each tensor is replaced by a reference to it."""
    tensors: dict[str, torch.Tensor] = {}

    def strip(value, key: str):
        if isinstance(value, torch.Tensor):
            tensors[key] = value.detach().cpu().contiguous()
            return {"__tensor__": key}
        if isinstance(value, dict):
            return {str(k): strip(v, f"{key}.{k}") for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [strip(v, f"{key}.{i}") for i, v in enumerate(value)]
        return value

    skeleton = strip(state, name)
    save_file(tensors, folder / f"{name}.safetensors")
    with open(folder / f"{name}.json", "w") as f:
        json.dump(skeleton, f)


def load_state_dict(folder: Path, name: str, device: torch.device | str = "cpu") -> dict[str, Any]:
    """What :func:`save_state_dict` wrote as `name` in `folder`, tensors on `device`."""
    tensors = load_file(folder / f"{name}.safetensors")
    with open(folder / f"{name}.json") as f:
        skeleton = json.load(f)

    def fill(value):
        if isinstance(value, dict):
            if set(value) == {"__tensor__"}:
                return tensors[value["__tensor__"]].to(device)
            return {k: fill(v) for k, v in value.items()}
        if isinstance(value, list):
            return [fill(v) for v in value]
        return value

    return fill(skeleton)


@dataclass
class TrainState:
    """Counters that a checkpoint carries beside accelerate's own state."""

    global_step: int = 0
    # Training seconds spent by earlier runs of a resumed training, so `max_train_minutes` is a total budget.
    elapsed_seconds: float = 0.0
    images_seen: int = 0


# ------------------------------------------------------------------------------------------- speed settings
# `mixed_precision=auto` / `attention=auto`: timed steps per candidate of the speed probe, each candidate after one
# untimed warm-up step: a dozen forward and backward passes in all, under 2% of any preset's steps.
PROBE_STEPS = 3
# Another candidate replaces the first (fp32 + SDPA) only when at least this much faster: closer timings are noise,
# and fp32 is the safer arithmetic.
PROBE_MARGIN = 0.05
# The probe's clock; tests stub it.
probe_clock = time.perf_counter
SPEED_KEYS = ("mixed_precision", "attention")


def _cpu_has_bf16() -> bool:
    """Whether oneDNN has bf16 kernels for this CPU (AVX-512 or AMX on x86, BF16 on Arm); without them bf16 autocast
    is emulated and only loses."""
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def speed_candidates(mixed_precision: str, attention: str, device: torch.device) -> list[tuple[str, str]]:
    """The (mixed_precision, attention) settings that `auto` chooses among on `device`, the reference first.

    On a CPU: fp32 + SDPA, then bf16 + SDPA and bf16 + blockwise where the CPU has bf16 kernels (blockwise attention
    pays off under bf16 only). On a GPU, no probe: bf16 (fp16 without bf16) + SDPA. A value that is not `auto` keeps
    its meaning and narrows the list to itself.
    """
    if mixed_precision != "auto":
        precisions = [mixed_precision]
    elif device.type == "cuda":
        precisions = ["bf16" if torch.cuda.is_bf16_supported() else "fp16"]
    elif device.type == "cpu" and _cpu_has_bf16():
        precisions = ["no", "bf16"]
    else:
        precisions = ["no"]
    if attention != "auto":
        attentions = [attention]
    else:
        attentions = ["sdpa", "blockwise"] if device.type == "cpu" else ["sdpa"]
    return [
        (precision, kind)
        for precision in precisions
        for kind in attentions
        if attention != "auto" or kind == "sdpa" or precision == "bf16"
    ]


def setting_name(mixed_precision: str, attention: str) -> str:
    return f"mixed_precision={mixed_precision} attention={attention}"


def probe_speed(
    task: TrainingTask, batch: dict, candidates: list[tuple[str, str]], steps: int = PROBE_STEPS
) -> dict[tuple[str, str], float]:
    """Seconds per step of each CPU candidate: `task.training_step` on `batch` and its backward passes, as the Trainer
    runs them (Accelerate's autocast around each module's forward).

    Each candidate runs on its own copy of the task's modules and takes one warm-up step; then the candidates take
    turns, one timed step each per round, so a machine that speeds up or slows down meanwhile weighs on all alike.
    A candidate's fastest step counts: a slower one measured another process or a warm-up that was not over (bf16
    kernels take a few steps in a fresh process), not the setting. A blockwise candidate of models without diffusers
    Attention layers is the SDPA one, and is left out when that is a candidate too.
    """
    originals = task.trainable_modules()
    groups = task.optimizer_modules()
    runs = {}
    for precision, attention in candidates:
        modules = {name: copy.deepcopy(module) for name, module in originals.items()}
        changed = (
            sum(use_blockwise_attention(m) for m in modules.values()) if attention == "blockwise" else None
        )
        if changed == 0 and (precision, "sdpa") in candidates:
            continue
        if precision != "no":
            autocast = torch.autocast("cpu", dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
            for module in modules.values():
                module.forward = convert_outputs_to_fp32(autocast(module.forward))
        parameters = {
            name: [p for m in names for p in modules[m].parameters() if p.requires_grad]
            for name, names in groups.items()
        }
        runs[(precision, attention)] = (modules, parameters)
    for modules, parameters in runs.values():
        _probe_step(task, batch, modules, parameters)  # warm-up: first-call allocations and kernel choices
    times = {candidate: [] for candidate in runs}
    for _ in range(steps):
        for candidate, (modules, parameters) in runs.items():
            start = probe_clock()
            _probe_step(task, batch, modules, parameters)
            times[candidate].append(probe_clock() - start)
    return {candidate: min(seconds) for candidate, seconds in times.items()}


def _probe_step(task: TrainingTask, batch: dict, modules: dict, parameters: dict):
    """One forward and backward pass as `Trainer._micro_step` makes them; no optimizer step (its cost does not
    depend on the setting)."""
    outputs = task.training_step(batch, modules, 0)
    for name, params in parameters.items():
        outputs[name].backward(inputs=params if len(parameters) > 1 else None)
    for module in modules.values():
        module.zero_grad(set_to_none=True)


def fastest_setting(seconds: dict[tuple[str, str], float]) -> tuple[str, str]:
    """The fastest of `probe_speed`'s timings; the first (the reference) unless another beats it by PROBE_MARGIN."""
    reference = next(iter(seconds))
    fastest = min(seconds, key=seconds.get)
    return fastest if seconds[fastest] < (1 - PROBE_MARGIN) * seconds[reference] else reference


def recorded_speed_settings(folder: str | Path) -> dict | None:
    """The mixed_precision, attention and speed_probe that the run in `folder` trained with (its
    training_config.yaml), or None when it recorded no concrete values."""
    path = Path(folder) / "training_config.yaml"
    if not path.is_file():
        return None
    saved = yaml.safe_load(path.read_text()) or {}
    if any(saved.get(key) in (None, "auto") for key in SPEED_KEYS):
        return None
    return {key: saved.get(key) for key in (*SPEED_KEYS, "speed_probe")}


def with_speed_settings(config: TrainingConfig, settings: dict | None) -> TrainingConfig:
    """`config` with its `auto` mixed_precision and attention replaced by `settings`' values (and their
    speed_probe record); `config` itself when nothing is replaced."""
    chosen = {key: settings[key] for key in SPEED_KEYS if settings and getattr(config, key) == "auto"}
    if not chosen:
        return config
    return dataclasses.replace(config, **chosen, speed_probe=settings["speed_probe"])


class Trainer:
    """Trains any :class:`~latentzoo.training.tasks.TrainingTask` from a :class:`TrainingConfig`.

    Example::

        from latentzoo.training import Trainer, load_config

        config = load_config("ddpm-mnist", ["max_train_steps=500"])
        Trainer(config).train()   # the pipeline is saved in config.output_dir
    """

    def __init__(self, config: TrainingConfig, task_class: type[TrainingTask] | None = None):
        self.config = config
        self.task_class = task_class or get_task_class(config.task)
        self.output_dir = Path(config.output_dir)
        self.checkpoint_dir = self.output_dir / "checkpoints"
        self.state = TrainState()
        self._stop_signal: int | None = None

    # ------------------------------------------------------------------ setup
    def _setup(self) -> Path | None:
        """Build everything a run needs, in an order that keeps runs reproducible; return the checkpoint to resume."""
        # Processes and logging before the Accelerator, which fixes mixed precision for the process; `cpu` as the
        # Accelerator reads it (a CPU world under `accelerate launch`).
        PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))
        resume = self._resolve_resume()
        self._resolve_speed_settings(resume)
        self._make_accelerator()
        self._claim_output_dir(resume)
        # Identical initialisation on every process (seeded in _new_task); then per-process noise (DDP broadcasts rank
        # 0's weights anyway).
        self._build_task()
        set_seed(self.config.seed, device_specific=True)
        self.task.to(self.accelerator.device)
        self.train_data = self.task.train_dataset()
        self._prepare(*self._make_optimizers(), self._make_dataloader())
        self._make_ema()
        if self.accelerator.is_main_process and self.config.report_to != "none":
            self.accelerator.init_trackers(
                self.output_dir.name or "latentzoo",
                config=_flat_hparams(saved_config(self.config, self.dataset)),
            )
        return resume

    def _resolve_speed_settings(self, resume: Path | None):
        """Replace `auto` mixed_precision and attention in `self.config` by concrete values (see `speed_candidates`):
        those the resumed run recorded, else the one candidate there is (a GPU; mixed precision already fixed by an
        Accelerator of this process), else the fastest that `probe_speed` measures. Every process takes rank 0's.
        The choice and the timings are logged and saved as `speed_probe` in training_config.yaml."""
        cfg = self.config
        if "auto" not in (cfg.mixed_precision, cfg.attention):
            return
        recorded = recorded_speed_settings(resume.parent.parent) if resume is not None else None
        settings = recorded or self._measure_speed_settings()
        (settings,) = broadcast_object_list([settings])
        self.config = with_speed_settings(cfg, settings)
        record = settings["speed_probe"] or {}
        timings = ", ".join(f"{name} {s:.3f}" for name, s in record.get("seconds_per_step", {}).items())
        logger.info(
            f"auto: {setting_name(self.config.mixed_precision, self.config.attention)} ("
            + (
                f"recorded in {resume.parent.parent / 'training_config.yaml'}, not probed again"
                if recorded
                else record["how"]
            )
            + (f"; seconds per step: {timings}" if timings else "")
            + ")",
            main_process_only=True,
        )

    def _measure_speed_settings(self) -> dict:
        """`auto`'s choice on this process: one candidate as it is, several timed by `probe_speed` on this task."""
        cfg, device = self.config, PartialState().device
        precision, fixed = cfg.mixed_precision, False
        # An earlier Trainer of this process created an Accelerator: Accelerate allows no other mixed precision.
        if precision == "auto" and is_initialized():
            precision, fixed = AcceleratorState().mixed_precision, True
        candidates = speed_candidates(precision, cfg.attention, device)
        record = {"run": str(self.output_dir), "device": device.type}
        if len(candidates) == 1:
            chosen = candidates[0]
            record["how"] = f"the only candidate on {device.type}" + (
                " with the mixed precision this process's Accelerator fixed" if fixed else ""
            )
        else:
            start = time.perf_counter()
            _, task = self._new_task()  # the probe's own, seeded like the run's
            data = task.train_dataset()
            batch = torch.utils.data.default_collate(
                [data[i] for i in range(min(cfg.train_batch_size, len(data)))]
            )
            seconds = probe_speed(task, batch, candidates)
            chosen = fastest_setting(seconds)
            record["how"] = (
                f"probed: the fastest of {PROBE_STEPS} steps of each setting after a warm-up, batch "
                f"{cfg.train_batch_size}, {time.perf_counter() - start:.1f} s in all"
            )
            record["seconds_per_step"] = {setting_name(*c): round(s, 4) for c, s in seconds.items()}
        record["chosen"] = setting_name(*chosen)
        return {"mixed_precision": chosen[0], "attention": chosen[1], "speed_probe": record}

    def _make_accelerator(self):
        cfg = self.config
        self.accelerator = accelerator = Accelerator(
            gradient_accumulation_steps=cfg.gradient_accumulation_steps,
            mixed_precision=cfg.mixed_precision,
            log_with=None if cfg.report_to == "none" else cfg.report_to,
            project_config=ProjectConfiguration(
                project_dir=str(self.output_dir), logging_dir=str(self.output_dir / "logs")
            ),
            # The same permutation on every process (each takes its shard), reseeded per epoch: resumable.
            dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=cfg.seed),
            dynamo_backend="inductor" if cfg.torch_compile else None,
        )
        logger.info(
            f"world size {accelerator.num_processes} ({accelerator.distributed_type}), device {accelerator.device}, "
            f"mixed precision {accelerator.mixed_precision}",
            main_process_only=True,
        )
        if cfg.retain_cpu_memory and accelerator.device.type == "cpu" and not retain_freed_memory():
            logger.warning(
                "retain_cpu_memory: this C library has no glibc mallopt; allocation is left as it is."
            )

    def _claim_output_dir(self, resume: Path | None):
        """Refuse to start a fresh run over another run's model or checkpoints, unless `overwrite_output_dir`."""
        if resume is not None:
            return
        finished = [
            name
            for name in ("train_state.json", "model_index.json", "config.json")
            if (self.output_dir / name).is_file()
        ]
        checkpoints = _checkpoint_folders(self.checkpoint_dir)
        if not finished and not checkpoints:
            return
        if not self.config.overwrite_output_dir:
            held = (
                f"a finished model ({finished[0]})"
                if finished
                else f"checkpoints of an earlier run ({len(checkpoints)})"
            )
            replace = (
                "replace it with overwrite_output_dir=true (its checkpoints, samples and logs are deleted first), "
                "or choose another output_dir."
            )
            if self.config.resume_from_checkpoint:  # "latest" found no complete checkpoint
                raise ValueError(
                    f"output_dir {self.output_dir} holds {held} and no complete checkpoint to resume from: {replace}"
                )
            raise ValueError(
                f"output_dir {self.output_dir} already holds {held}: continue that run with "
                f"resume_from_checkpoint=latest, {replace}"
            )
        if self.accelerator.is_main_process:
            for name in RUN_OUTPUTS:
                path = self.output_dir / name
                if path.is_dir():
                    shutil.rmtree(path)
                elif path.exists():
                    path.unlink()
            logger.warning(
                f"overwrite_output_dir: removed the previous run's {', '.join(RUN_OUTPUTS)} in {self.output_dir}."
            )
        self.accelerator.wait_for_everyone()

    def _new_task(self) -> tuple:
        """(training data, task) as this config builds them: with the same seed, the same initial weights."""
        set_seed(self.config.seed)
        dataset = load_dataset(self.config.dataset, split="train", **self.config.dataset_arguments())
        return dataset, self.task_class(self.config.model, dataset)

    def _build_task(self):
        cfg = self.config
        self.dataset, self.task = self._new_task()
        if self.accelerator.is_main_process:
            # After the task is built: a task may fill defaults from the data (text2img's validation prompts).
            self.output_dir.mkdir(parents=True, exist_ok=True)
            with open(self.output_dir / "training_config.yaml", "w") as f:
                yaml.safe_dump(saved_config(cfg, self.dataset), f, sort_keys=False)
        modules = self.task.trainable_modules()
        if cfg.attention == "blockwise":
            layers = sum(use_blockwise_attention(module) for module in modules.values())
            if layers:
                logger.info(f"attention=blockwise in {layers} attention layers", main_process_only=True)
            else:
                logger.warning(
                    "attention=blockwise: the trained models have no diffusers Attention layer to change."
                )

    def _make_optimizers(self) -> tuple[dict, dict]:
        """One AdamW per key of the task's `optimizer_modules`, and its learning-rate schedule."""
        cfg = self.config
        modules = self.task.trainable_modules()
        groups = self.task.optimizer_modules()
        unknown = {m for names in groups.values() for m in names} - set(modules)
        if unknown:
            raise ValueError(
                f"{type(self.task).__name__}.optimizer_modules names unknown modules {sorted(unknown)}."
            )
        self.optimizer_groups = groups
        optimizers = {}
        for name, module_names in groups.items():
            params = [p for m in module_names for p in modules[m].parameters() if p.requires_grad]
            kwargs = dict(
                lr=cfg.learning_rate,
                betas=(cfg.adam_beta1, cfg.adam_beta2),
                weight_decay=cfg.adam_weight_decay,
                eps=cfg.adam_epsilon,
            )
            kwargs.update(self.task.optimizer_kwargs(name))
            optimizers[name] = torch.optim.AdamW(params, **kwargs)
        return modules, optimizers

    def _make_dataloader(self) -> torch.utils.data.DataLoader:
        cfg = self.config
        dataloader = torch.utils.data.DataLoader(
            self.train_data,
            batch_size=cfg.train_batch_size,
            shuffle=True,
            drop_last=True,
            num_workers=cfg.dataloader_num_workers,
            # Its own generator: creating an iterator then draws no number from the global RNG, so a run resumed
            # mid-epoch sees the same noise stream as an uninterrupted one.
            generator=torch.Generator().manual_seed(cfg.seed),
        )
        if len(dataloader) == 0:
            raise ValueError(
                f"`train_batch_size`={cfg.train_batch_size} is larger than the dataset ({len(self.train_data)} "
                "items)."
            )
        # Steps per epoch as seen after sharding across processes.
        self.steps_per_epoch = math.ceil(
            len(dataloader) / self.accelerator.num_processes / cfg.gradient_accumulation_steps
        )
        if cfg.max_train_steps is not None:
            self.max_steps = cfg.max_train_steps
        elif cfg.num_epochs is not None:
            self.max_steps = cfg.num_epochs * self.steps_per_epoch
        elif cfg.max_train_minutes is not None:
            self.max_steps = None  # the clock decides
        else:
            self.max_steps = self.steps_per_epoch
        if self.max_steps is None and cfg.lr_scheduler not in _CONSTANT_SCHEDULES:
            raise ValueError(
                f"`lr_scheduler`={cfg.lr_scheduler!r} decays over a known number of steps; set `max_train_steps` or "
                f"`num_epochs` beside `max_train_minutes`, or use one of {list(_CONSTANT_SCHEDULES)}."
            )
        return dataloader

    def _prepare(self, modules: dict, optimizers: dict, dataloader):
        """`accelerator.prepare` everything at once (what DeepSpeed and FSDP need), then keep the pieces by name."""
        cfg, accelerator = self.config, self.accelerator
        # Prepared schedulers step once per process per update (diffusers' examples scale the same way).
        schedulers = {
            name: get_scheduler(
                cfg.lr_scheduler,
                optimizer=optimizer,
                num_warmup_steps=cfg.lr_warmup_steps * accelerator.num_processes,
                num_training_steps=(self.max_steps or 1) * accelerator.num_processes,
            )
            for name, optimizer in optimizers.items()
        }
        names = list(modules)
        prepared = accelerator.prepare(
            *modules.values(), *optimizers.values(), *schedulers.values(), dataloader
        )
        self.modules = dict(zip(names, prepared[: len(names)], strict=True))
        self.optimizers = dict(
            zip(optimizers, prepared[len(names) : len(names) + len(optimizers)], strict=True)
        )
        self.schedulers = dict(zip(schedulers, prepared[len(names) + len(optimizers) : -1], strict=True))
        self.dataloader = prepared[-1]
        self.optimizer_params = {
            name: [p for m in module_names for p in self.modules[m].parameters() if p.requires_grad]
            for name, module_names in self.optimizer_groups.items()
        }

    def _make_ema(self):
        cfg = self.config
        ema_names = self.task.ema_modules()
        unknown = set(ema_names) - set(self.modules)
        if unknown:
            raise ValueError(
                f"{type(self.task).__name__}.ema_modules names unknown modules {sorted(unknown)}."
            )
        self.ema = {}
        if cfg.use_ema:
            self.ema = {
                name: EMAModel(
                    self.accelerator.unwrap_model(module).parameters(),
                    decay=cfg.ema_decay,
                    use_ema_warmup=cfg.ema_use_warmup,
                    power=cfg.ema_power,
                )
                for name, module in self.modules.items()
                if name in ema_names
            }

    # ------------------------------------------------------------ checkpoints
    def _resolve_resume(self) -> Path | None:
        value = self.config.resume_from_checkpoint
        if value is None:
            return None
        if value == "latest":
            for folder in _checkpoint_folders(self.checkpoint_dir):
                problem = checkpoint_problem(folder)
                if problem is not None:
                    logger.warning(
                        f"Skipping {folder}: not a complete checkpoint, {problem}.", main_process_only=True
                    )
            checkpoints = list_checkpoints(self.checkpoint_dir)
            if not checkpoints:
                logger.info(
                    f"No complete checkpoint in {self.checkpoint_dir}; starting a fresh run.",
                    main_process_only=True,
                )
                return None
            return checkpoints[-1]
        path = Path(value)
        problem = checkpoint_problem(path) if path.is_dir() else "it is not a folder"
        if problem is not None:
            raise ValueError(
                f"`resume_from_checkpoint`={value!r} is not a complete checkpoint folder ({problem}); "
                f"use 'latest' or one of {[str(p) for p in list_checkpoints(self.checkpoint_dir)]}."
            )
        return path

    def save_checkpoint(self) -> Path:
        """Write a checkpoint atomically (temporary folder, manifest last, then rename) and prune old complete ones.

        Raises :class:`NonFiniteLossError`, writing nothing, when a weight is not finite.
        """
        accelerator = self.accelerator
        self._check_weights_are_finite("checkpoint")
        step = self.state.global_step
        final = self.checkpoint_dir / f"checkpoint-{step}"
        temporary = self.checkpoint_dir / f"{TEMPORARY_PREFIX}{step}"
        if accelerator.is_main_process and temporary.exists():
            shutil.rmtree(temporary)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(temporary))  # every process writes its RNG state; the main one the rest
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            for name, ema in self.ema.items():
                state = ema.state_dict()
                state.pop("collected_params", None)  # only set between `store` and `restore`
                save_state_dict(state, temporary, f"ema_{name}")
            for name, obj in self.task.checkpoint_state().items():
                save_state_dict(obj.state_dict(), temporary, f"task_{name}")
            with open(temporary / "train_state.json", "w") as f:
                json.dump(self.state.__dict__, f)
            _write_manifest(temporary)
            if final.exists():
                shutil.rmtree(final)
            os.replace(temporary, final)
            self._prune_checkpoints(final)
        accelerator.wait_for_everyone()
        return final

    def _prune_checkpoints(self, newest: Path):
        """Keep `checkpoints_total_limit` complete checkpoints; drop the temporaries of saves that never finished."""
        for stale in self.checkpoint_dir.glob(f"{TEMPORARY_PREFIX}*"):
            shutil.rmtree(stale)
        limit = self.config.checkpoints_total_limit
        if limit is not None:
            complete = [p for p in list_checkpoints(self.checkpoint_dir) if p != newest]
            for old in complete[: max(0, len(complete) + 1 - limit)]:
                shutil.rmtree(old)

    def load_checkpoint(self, path: Path):
        self.accelerator.load_state(str(path))
        with open(path / "train_state.json") as f:
            self.state = TrainState(**json.load(f))
        for name, ema in self.ema.items():
            ema.load_state_dict(load_state_dict(path, f"ema_{name}", self.accelerator.device))
        for name, obj in self.task.checkpoint_state().items():
            obj.load_state_dict(load_state_dict(path, f"task_{name}", self.accelerator.device))
        logger.info(f"Resumed from {path} at step {self.state.global_step}.", main_process_only=True)

    def pipeline_from_checkpoint(self, path: str | Path, ema: bool = True):
        """The task's pipeline with the weights of checkpoint `path` (its EMA weights when it has them and `ema`),
        in eval mode, on the CPU, without starting a run: to evaluate the checkpoints of a training curve."""
        path = Path(path)
        problem = checkpoint_problem(path)
        if problem is not None:
            raise ValueError(f"{path} is not a complete checkpoint ({problem}).")
        _, task = self._new_task()
        modules = task.trainable_modules()
        with torch.no_grad():
            for index, (name, module) in enumerate(modules.items()):
                # accelerate's save_state names the prepared models' weights in the order they were prepared.
                module.load_state_dict(load_file(path / f"model{f'_{index}' if index else ''}.safetensors"))
                if ema and (path / f"ema_{name}.json").is_file():
                    shadow = load_state_dict(path, f"ema_{name}")["shadow_params"]
                    for parameter, average in zip(module.parameters(), shadow, strict=True):
                        parameter.copy_(average)
                module.eval()
        return task.make_pipeline(modules)

    # ------------------------------------------------------------- divergence
    def _on_any_process(self, *flags: bool) -> list[bool]:
        """Each flag, true when it is true on any process: every process must take the same branch, or the others
        would wait forever in their next collective."""
        if self.accelerator.num_processes == 1:
            return list(flags)
        votes = torch.tensor([float(flag) for flag in flags], device=self.accelerator.device)
        return [bool(vote > 0) for vote in self.accelerator.reduce(votes, reduction="sum")]

    def _clip_and_check_gradients(self, step_losses: dict[str, torch.Tensor]):
        """Clip each optimizer's gradients (when `max_grad_norm`), then stop the run if this step's losses or
        gradient norms are not finite, before any optimizer steps.

        Under fp16 an infinite gradient norm is the loss scaler's business: it skips that step and lowers its scale
        (the warm-up of every fp16 run), so only the loss counts there.
        """
        cfg, accelerator = self.config, self.accelerator
        norms = {}
        if cfg.max_grad_norm is not None:
            for name in self.optimizers:
                norm = accelerator.clip_grad_norm_(self.optimizer_params[name], cfg.max_grad_norm)
                if norm is not None:  # DeepSpeed clips inside its own step and returns nothing
                    norms[name] = norm
        checked = list(step_losses.values())
        if accelerator.mixed_precision != "fp16":
            checked += list(norms.values())
        local = not bool(torch.isfinite(torch.stack([v.detach().float().reshape(()) for v in checked])).all())
        (diverged,) = self._on_any_process(local)
        if diverged:
            values = ", ".join(
                [f"loss/{name} = {float(v):.4g}" for name, v in step_losses.items()]
                + [f"gradient norm of {name} = {float(v):.4g}" for name, v in norms.items()]
            )
            latest = list_checkpoints(self.checkpoint_dir)
            raise NonFiniteLossError(
                f"Training diverged at step {self.state.global_step + 1}: {values}"
                f"{' (on another process)' if not local else ''}. Nothing was saved from this step; "
                + (
                    f"the last good checkpoint is {latest[-1]} (resume_from_checkpoint=latest). "
                    if latest
                    else "there is no checkpoint (set checkpointing_steps to keep one). "
                )
                + f"Lower learning_rate (now {cfg.learning_rate:g})"
                + (", set max_grad_norm (e.g. 1.0)" if cfg.max_grad_norm is None else "")
                + (", or train with mixed_precision=bf16 or no" if cfg.mixed_precision == "fp16" else "")
                + "."
            )

    def _check_weights_are_finite(self, what: str):
        """Raise NonFiniteLossError, before anything is written, when a weight or EMA weight is not finite."""
        tensors = {
            f"{name}.{parameter}": value
            for name, module in self._unwrapped_modules().items()
            for parameter, value in module.named_parameters()
        }
        for name, ema in self.ema.items():
            tensors.update({f"ema_{name}.{i}": value for i, value in enumerate(ema.shadow_params)})
        finite = torch.stack([torch.isfinite(value).all() for value in tensors.values()]).tolist()
        bad = next((name for name, ok in zip(tensors, finite, strict=True) if not ok), None)
        (any_bad,) = self._on_any_process(bad is not None)
        if any_bad:
            raise NonFiniteLossError(
                f"Not writing the {what} of step {self.state.global_step}: weights are not finite "
                f"({bad or 'on another process'}). Lower learning_rate (now {self.config.learning_rate:g}) or set "
                "max_grad_norm; the last good checkpoint is kept."
            )

    # ------------------------------------------------------------- interrupts
    @contextmanager
    def _checkpoint_on_signals(self):
        """While training, SIGTERM and SIGINT ask for a checkpoint after the current step (see `train`); a second
        signal takes the previous handler's way (Ctrl-C twice stops at once)."""
        self._stop_signal = None
        if threading.current_thread() is not threading.main_thread():
            yield  # signal handlers can only be set from the main thread
            return
        previous = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}

        def request_stop(number, frame):
            self._stop_signal = number
            for other, handler in previous.items():
                signal.signal(other, handler)
            logger.warning(
                f"{signal.Signals(number).name}: finishing this step, then writing a checkpoint "
                "(send it again to stop at once)."
            )

        for number in previous:
            signal.signal(number, request_stop)
        try:
            yield
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)

    def _stop_for_signal(self, end_training: bool):
        """Write a checkpoint of the step just finished (unless it has one), end the run, raise TrainingInterrupted."""
        number = self._stop_signal or signal.SIGTERM  # another process may have received it first
        path = self.checkpoint_dir / f"checkpoint-{self.state.global_step}"
        if checkpoint_problem(path) is not None:
            path = self.save_checkpoint()
        self._end(end_training)
        message = (
            f"{signal.Signals(number).name} at step {self.state.global_step}: checkpoint written to {path}. "
            "Continue with resume_from_checkpoint=latest."
        )
        logger.warning(message, main_process_only=True)
        raise TrainingInterrupted(message, number, path)

    def _end(self, end_training: bool):
        if end_training:
            self.accelerator.end_training()
        else:
            for tracker in self.accelerator.trackers:
                tracker.finish()

    # ------------------------------------------------------------- validation
    def _unwrapped_modules(self) -> dict[str, torch.nn.Module]:
        return {name: self.accelerator.unwrap_model(module) for name, module in self.modules.items()}

    @contextmanager
    def ema_weights(self):
        """The EMA weights (when on) in the modules, in eval mode, for the duration: what is validated and saved."""
        modules = self._unwrapped_modules()
        for name, ema in self.ema.items():
            params = list(modules[name].parameters())
            ema.store(params)
            ema.copy_to(params)
        for module in modules.values():
            module.eval()
        try:
            yield modules
        finally:
            for module in modules.values():
                module.train()
            for name, ema in self.ema.items():
                ema.restore(list(modules[name].parameters()))

    def validate(self) -> Path | None:
        """Sample a grid through the task's pipeline (EMA weights when on) on the main process."""
        accelerator = self.accelerator
        path = None
        if accelerator.is_main_process:
            with self.ema_weights() as modules:
                pipeline = self.task.make_pipeline(modules)
                generator = torch.Generator(device="cpu").manual_seed(self.config.seed)
                images = self.task.validation_images(pipeline, self.config.num_validation_images, generator)
                metrics = self.task.validation_metrics(
                    pipeline, torch.Generator(device="cpu").manual_seed(self.config.seed)
                )
            grid = make_image_grid(images)
            path = self.output_dir / "samples" / f"step-{self.state.global_step:06d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            grid.save(path)
            if self.config.report_to == "tensorboard":
                tracker = accelerator.get_tracker("tensorboard", unwrap=True)
                array = np.asarray(grid)
                tracker.add_image(
                    "samples",
                    array if array.ndim == 3 else array[..., None],
                    self.state.global_step,
                    dataformats="HWC",
                )
            self._log_validation_metrics(metrics)
        accelerator.wait_for_everyone()
        return path

    def _log_validation_metrics(self, metrics: dict):
        """Scalars through `accelerator.log`; 1-D tensors as TensorBoard histograms (e.g. a judge's class counts)."""
        step = self.state.global_step
        scalars = {k: float(v) for k, v in metrics.items() if not isinstance(v, torch.Tensor) or v.ndim == 0}
        if scalars:
            self.accelerator.log(scalars, step=step)
        histograms = {k: v for k, v in metrics.items() if isinstance(v, torch.Tensor) and v.ndim > 0}
        if histograms and self.config.report_to == "tensorboard":
            tracker = self.accelerator.get_tracker("tensorboard", unwrap=True)
            for key, values in histograms.items():
                tracker.add_histogram(key, values.detach().cpu().float().numpy(), step)

    # ------------------------------------------------------------------ train
    def train(self, end_training: bool = True) -> Path:
        """Run training to the configured budget, save the task's pipeline in `output_dir`, return that path.

        `end_training=False` keeps the process group alive for a following stage in the same launch. Raises
        :class:`NonFiniteLossError` when training diverges and :class:`TrainingInterrupted` after SIGTERM/SIGINT.
        """
        resume = self._setup()
        if resume is not None:
            self.load_checkpoint(resume)
        # A signal during the final validation and save waits for them: a half-written model is worse than none.
        with self._checkpoint_on_signals():
            self._train_loop(end_training)
            logger.info(
                f"Trained {self.state.global_step} steps ({self.state.images_seen} images) in "
                f"{self.state.elapsed_seconds / 60:.1f} min.",
                main_process_only=True,
            )
            self.validate()
            self.save_pipeline()
        self._end(end_training)
        return self.output_dir

    def _train_loop(self, end_training: bool):
        """Steps until the budget is spent; each optimizer step is one `global_step`."""
        cfg, accelerator, state = self.config, self.accelerator, self.state
        images_per_step = cfg.train_batch_size * cfg.gradient_accumulation_steps * accelerator.num_processes
        first_epoch, resume_batches = divmod(state.global_step, self.steps_per_epoch)
        resume_batches *= cfg.gradient_accumulation_steps
        progress = tqdm(
            total=self.max_steps,
            initial=state.global_step,
            desc=f"{cfg.task}",
            disable=not accelerator.is_local_main_process,
            dynamic_ncols=True,
        )
        run_start = time.perf_counter()
        window_start, window_steps = time.perf_counter(), 0
        loss_sums: dict[str, torch.Tensor] = {}  # over the logging window, for the log
        # Over this step's micro-batches, for the divergence check.
        self._step_losses: dict[str, torch.Tensor] = {}
        budget_seconds = cfg.max_train_minutes * 60 if cfg.max_train_minutes is not None else math.inf

        def finished() -> bool:
            return self.max_steps is not None and state.global_step >= self.max_steps

        epoch = first_epoch
        stop = finished()
        try:
            while not stop:
                self.dataloader.set_epoch(epoch)
                if hasattr(self.train_data, "set_epoch"):
                    self.train_data.set_epoch(epoch)  # caption phrasings are a function of (item, epoch)
                batches = self.dataloader
                if resume_batches:
                    batches = accelerator.skip_first_batches(self.dataloader, resume_batches)
                    resume_batches = 0
                for batch in batches:
                    with accelerator.accumulate(*self.modules.values()):
                        outputs = self._micro_step(batch)
                    for name, value in outputs.items():
                        loss_sums[name] = loss_sums.get(name, 0) + value.detach().float()
                    if not accelerator.sync_gradients:
                        continue

                    state.global_step += 1
                    state.images_seen += images_per_step
                    window_steps += 1
                    for name, ema in self.ema.items():
                        ema.step(accelerator.unwrap_model(self.modules[name]).parameters())
                    progress.update(1)

                    if state.global_step % cfg.logging_steps == 0 or finished():
                        seconds = time.perf_counter() - window_start
                        self._log_window(loss_sums, window_steps, seconds, images_per_step, progress)
                        loss_sums, window_steps, window_start = {}, 0, time.perf_counter()

                    if cfg.checkpointing_steps and state.global_step % cfg.checkpointing_steps == 0:
                        state.elapsed_seconds += time.perf_counter() - run_start
                        run_start = time.perf_counter()
                        self.save_checkpoint()
                        window_start = time.perf_counter()
                    if (
                        cfg.validation_steps
                        and state.global_step % cfg.validation_steps == 0
                        and not finished()
                    ):
                        self.validate()
                        window_start = time.perf_counter()

                    # Every process must agree to stop, or the others would wait forever in the next all-reduce.
                    spent = state.elapsed_seconds + time.perf_counter() - run_start >= budget_seconds
                    signalled, spent = self._on_any_process(self._stop_signal is not None, spent)
                    if signalled:
                        state.elapsed_seconds += time.perf_counter() - run_start
                        progress.close()
                        self._stop_for_signal(end_training)
                    if spent or finished():
                        stop = True
                        break
                epoch += 1
        finally:
            progress.close()  # ends its line, so what follows (an error) starts on its own
        state.elapsed_seconds += time.perf_counter() - run_start

    def _micro_step(self, batch) -> dict[str, torch.Tensor]:
        """One micro-batch, inside `accumulate`: the task's losses, each backpropagated into its own optimizer's
        parameters; at an accumulation boundary the gradients are clipped and checked, then every optimizer and
        schedule steps (between boundaries accelerate makes those steps no-ops). Returns the task's outputs."""
        accelerator = self.accelerator
        outputs = self.task.training_step(batch, self.modules, self.state.global_step)
        losses = {k: v for k, v in outputs.items() if not k.startswith(METRIC_PREFIX)}
        if set(losses) != set(self.optimizers):
            raise ValueError(
                f"{type(self.task).__name__}.training_step returned losses {sorted(losses)}; expected one per "
                f"optimizer: {sorted(self.optimizers)} (and, optionally, '{METRIC_PREFIX}...' scalars to log)."
            )
        for name, loss in losses.items():
            self._step_losses[name] = self._step_losses.get(name, 0) + loss.detach().float()
        # Every backward pass before any step: all losses are gradients at the same parameters (a GAN's G loss
        # backpropagates through D's graph, which an in-place step of D would invalidate). With several optimizers
        # each loss reaches only its own parameters (a GAN's G loss must not leave gradients in D).
        several = len(self.optimizers) > 1
        for name in self.optimizers:
            accelerator.backward(losses[name], inputs=self.optimizer_params[name] if several else None)
        if accelerator.sync_gradients:
            self._clip_and_check_gradients(self._step_losses)
            self._step_losses = {}
        for name, optimizer in self.optimizers.items():
            optimizer.step()
            self.schedulers[name].step()
            optimizer.zero_grad(set_to_none=True)
        return outputs

    def _log_window(self, sums: dict, steps: int, seconds: float, images_per_step: int, progress):
        """Log the window's mean losses and metrics, the learning rates and the throughput; show them in `progress`."""
        per_batch = steps * self.config.gradient_accumulation_steps
        logs = {
            (name if name.startswith(METRIC_PREFIX) else f"loss/{name}"): (total / per_batch).item()
            for name, total in sums.items()
        }
        logs.update({f"lr/{name}": s.get_last_lr()[0] for name, s in self.schedulers.items()})
        logs["images_per_second"] = steps * images_per_step / max(seconds, 1e-9)
        self.accelerator.log(logs, step=self.state.global_step)
        shown = {k.split("/")[-1]: f"{v:.4f}" for k, v in logs.items() if k.startswith("loss/")}
        progress.set_postfix({**shown, "img/s": f"{logs['images_per_second']:.1f}"})

    def save_pipeline(self):
        """Save the task's pipeline (EMA weights when on) with `save_pretrained` and its model card."""
        accelerator = self.accelerator
        accelerator.wait_for_everyone()
        self._check_weights_are_finite("model")
        if accelerator.is_main_process:
            with self.ema_weights() as modules:  # the saved pipeline carries the EMA weights
                self.task.make_pipeline(modules).save_pretrained(self.output_dir)
            with open(self.output_dir / "train_state.json", "w") as f:
                json.dump(
                    {
                        **self.state.__dict__,
                        "world_size": accelerator.num_processes,
                        "device": accelerator.device.type,
                        "dataset": self.dataset.describe(),
                    },
                    f,
                )
            write_model_card(self.output_dir, task_class=self.task_class)
        accelerator.wait_for_everyone()


def saved_config(config: TrainingConfig, dataset) -> dict:
    """The config as written to training_config.yaml: the dataset by its name (`imagefolder:<folder name>`), never
    a local path, since the file travels with the model to the Hub."""
    values = config_to_dict(config)
    values["dataset"] = dataset.display_name
    return values


def _flat_hparams(config: dict, prefix: str = "") -> dict:
    """TensorBoard's hparams accept scalars and strings only: flatten nested dicts and stringify lists."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(_flat_hparams(value, f"{prefix}{key}."))
        elif isinstance(value, (int, float, str, bool)):
            flat[prefix + key] = value
        else:
            flat[prefix + key] = str(value)
    return flat


def check_stage_data(stage, stage_config: TrainingConfig) -> None:
    """Refuse a stage folder whose model was trained on other data than this run's (its training_config.yaml says):
    a VAE of the digits must not silently become the latent space of a run on your own images."""
    saved_path = Path(stage.output_dir) / "training_config.yaml"
    if not saved_path.is_file():
        return  # a model from elsewhere (e.g. the Hub): the user chose it
    saved = yaml.safe_load(saved_path.read_text()) or {}
    wanted = {
        "dataset": dataset_display_name(stage_config.dataset),
        "resolution": stage_config.resolution,
        "channels": stage_config.channels,
    }
    differences = {key: (saved.get(key), value) for key, value in wanted.items() if saved.get(key) != value}
    if differences:
        described = ", ".join(f"{key} {old!r} (this run: {new!r})" for key, (old, new) in differences.items())
        raise ValueError(
            f"Stage {stage.name}: {stage.output_dir} holds a model trained with {described}. Train this run into "
            "another output_dir (its stage folders move with it), or delete that folder to train the stage again."
        )


def check_data(config: TrainingConfig, what: str | None = None) -> None:
    """Raise a ValueError unless `config`'s training data carries what its task `requires` (captions, labels).

    The data is loaded as the Trainer will load it (memoised per process, so it is read once).
    """
    task_class = get_task_class(config.task)
    if task_class.requires(config.model):
        dataset = load_dataset(config.dataset, split="train", **config.dataset_arguments())
        task_class.check_dataset(config.model, dataset, f" of {what}" if what else "")


def train(config: TrainingConfig, end_training: bool = True) -> Path:
    """Train the stages `config` builds on that hold no model yet (text2img's VAE and text encoder), then `config`
    itself; return its output_dir.

    Each stage is its own :class:`Trainer` run in this same launch, on this run's data and seed
    (:func:`~latentzoo.training.config.stage_configs`), and may build on stages of its own.
    """
    from .config import stage_configs

    stages = stage_configs(config)
    # What the first model trained in this launch resolved `auto` to, for the rest: Accelerate fixes mixed precision
    # once per process.
    settings = None
    # Before anything trains: a stage's hour must not be spent to find that the run's data lacks captions.
    for stage, stage_config in stages:
        if not stage.trained:
            check_data(stage_config, f"stage {stage.name} ({stage.config})")
    check_data(config)
    for stage, stage_config in stages:
        if stage.trained:
            check_stage_data(stage, stage_config)
            logging.getLogger(__name__).info(
                f"Stage {stage.name}: {stage.output_dir} holds a model; not trained again."
            )
            continue
        logging.getLogger(__name__).info(
            f"Stage {stage.name}: {stage.config} on {stage_config.dataset} -> {stage.output_dir}"
        )
        train(with_speed_settings(stage_config, settings), end_training=False)
        settings = settings or recorded_speed_settings(stage.output_dir)
    return Trainer(with_speed_settings(config, settings)).train(end_training=end_training)
