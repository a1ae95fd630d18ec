"""The one Accelerate training loop every latentzoo model trains through.

It follows accelerate's canonical loop: ``set_seed`` before building models, one ``prepare``, each step inside
``accumulate`` with ``accelerator.backward``; clipping, EMA and ``global_step`` only under ``sync_gradients``;
``save_state``/``load_state`` plus ``skip_first_batches`` for resume; sampling and saving on the main process;
``end_training`` at the end. Multi-process runs come from ``accelerate launch`` unchanged.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from PIL import Image
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from ..data import load_dataset
from ..data.datasets import dataset_display_name
from ..models.attention import use_blockwise_attention
from .config import TrainingConfig, config_to_dict
from .cpu_memory import retain_freed_memory
from .model_card import write_model_card
from .tasks import TrainingTask, get_task_class

logger = get_logger(__name__)

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
# Schedules that need to know the total number of steps to decay towards.
_CONSTANT_SCHEDULES = ("constant", "constant_with_warmup")
# Entries of a training_step's output named like this are logged (averaged over the logging window), not optimized.
METRIC_PREFIX = "metrics/"


def list_checkpoints(checkpoint_dir: str | Path) -> list[Path]:
    """Complete checkpoints in `checkpoint_dir`, oldest first.

    A checkpoint is written to a temporary folder and renamed when complete, so only ``checkpoint-<step>``
    folders count; an interrupted save leaves a ``.tmp-checkpoint-<step>`` folder that is never chosen.
    """
    checkpoint_dir = Path(checkpoint_dir)
    if not checkpoint_dir.is_dir():
        return []
    found = [
        (int(m.group(1)), p)
        for p in checkpoint_dir.iterdir()
        if p.is_dir() and (m := CHECKPOINT_PATTERN.match(p.name))
    ]
    return [path for _, path in sorted(found)]


def make_image_grid(images: torch.Tensor, nrow: int | None = None) -> Image.Image:
    """(N, C, H, W) float in [0, 1] → one PIL grid image with `nrow` images per row (default: square-ish)."""
    n, c, h, w = images.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    ncol = math.ceil(n / nrow)
    grid = torch.zeros(c, ncol * h, nrow * w)
    for i, image in enumerate(images.float().clamp(0, 1).cpu()):
        row, col = divmod(i, nrow)
        grid[:, row * h : (row + 1) * h, col * w : (col + 1) * w] = image
    array = (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    return Image.fromarray(array[..., 0] if c == 1 else array)


@dataclass
class TrainState:
    """Counters that a checkpoint carries beside accelerate's own state."""

    global_step: int = 0
    # Training seconds spent by earlier runs of a resumed training, so `max_train_minutes` is a total budget.
    elapsed_seconds: float = 0.0
    images_seen: int = 0


class Trainer:
    """Trains any :class:`~latentzoo.training.tasks.TrainingTask` from a :class:`TrainingConfig`.

    Example::

        from latentzoo.training import Trainer, load_config

        config = load_config("ddpm-mnist", ["max_train_minutes=5"])
        Trainer(config).train()   # the pipeline is saved in config.output_dir
    """

    def __init__(self, config: TrainingConfig, task_class: type[TrainingTask] | None = None):
        self.config = config
        self.task_class = task_class or get_task_class(config.task)
        self.output_dir = Path(config.output_dir)
        self.checkpoint_dir = self.output_dir / "checkpoints"
        self.state = TrainState()

    # ------------------------------------------------------------------ setup
    def _setup(self):
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

        # Identical initialisation on every process; then per-process noise (DDP broadcasts rank 0's weights anyway).
        set_seed(cfg.seed)
        self.dataset = load_dataset(cfg.dataset, split="train", **cfg.dataset_arguments())
        self.task = self.task_class(cfg.model, self.dataset)
        if accelerator.is_main_process:
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
        set_seed(cfg.seed, device_specific=True)
        self.task.to(accelerator.device)
        train_data = self.task.train_dataset()

        groups = self.task.optimizer_modules()
        unknown = {m for names in groups.values() for m in names} - set(modules)
        if unknown:
            raise ValueError(
                f"{type(self.task).__name__}.optimizer_modules names unknown modules {sorted(unknown)}."
            )
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

        dataloader = torch.utils.data.DataLoader(
            train_data,
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
                f"`train_batch_size`={cfg.train_batch_size} is larger than the dataset ({len(train_data)} items)."
            )
        # Steps per epoch as seen after sharding across processes.
        steps_per_epoch = math.ceil(
            len(dataloader) / accelerator.num_processes / cfg.gradient_accumulation_steps
        )
        if cfg.max_train_steps is not None:
            max_steps = cfg.max_train_steps
        elif cfg.num_epochs is not None:
            max_steps = cfg.num_epochs * steps_per_epoch
        elif cfg.max_train_minutes is not None:
            max_steps = None  # the clock decides
        else:
            max_steps = steps_per_epoch
        if max_steps is None and cfg.lr_scheduler not in _CONSTANT_SCHEDULES:
            raise ValueError(
                f"`lr_scheduler`={cfg.lr_scheduler!r} decays over a known number of steps; set `max_train_steps` or "
                f"`num_epochs` beside `max_train_minutes`, or use one of {list(_CONSTANT_SCHEDULES)}."
            )
        # Prepared schedulers step once per process per update (diffusers' examples scale the same way).
        schedulers = {
            name: get_scheduler(
                cfg.lr_scheduler,
                optimizer=optimizer,
                num_warmup_steps=cfg.lr_warmup_steps * accelerator.num_processes,
                num_training_steps=(max_steps or 1) * accelerator.num_processes,
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
        self.train_data = train_data
        self.optimizer_params = {
            name: [p for m in groups[name] for p in self.modules[m].parameters() if p.requires_grad]
            for name in groups
        }
        self.steps_per_epoch = steps_per_epoch
        self.max_steps = max_steps
        ema_names = self.task.ema_modules()
        unknown = set(ema_names) - set(self.modules)
        if unknown:
            raise ValueError(
                f"{type(self.task).__name__}.ema_modules names unknown modules {sorted(unknown)}."
            )
        self.ema = (
            {
                name: EMAModel(
                    accelerator.unwrap_model(module).parameters(),
                    decay=cfg.ema_decay,
                    use_ema_warmup=cfg.ema_use_warmup,
                    power=cfg.ema_power,
                )
                for name, module in self.modules.items()
                if name in ema_names
            }
            if cfg.use_ema
            else {}
        )
        if accelerator.is_main_process and cfg.report_to != "none":
            accelerator.init_trackers(
                self.output_dir.name or "latentzoo", config=_flat_hparams(saved_config(cfg, self.dataset))
            )

    # ------------------------------------------------------------ checkpoints
    def _resolve_resume(self) -> Path | None:
        value = self.config.resume_from_checkpoint
        if value is None:
            return None
        if value == "latest":
            checkpoints = list_checkpoints(self.checkpoint_dir)
            if not checkpoints:
                logger.info(
                    f"No complete checkpoint in {self.checkpoint_dir}; starting a fresh run.",
                    main_process_only=True,
                )
                return None
            return checkpoints[-1]
        path = Path(value)
        if not path.is_dir() or not (path / "train_state.json").is_file():
            raise ValueError(
                f"`resume_from_checkpoint`={value!r} is not a complete checkpoint folder; "
                f"use 'latest' or one of {[str(p) for p in list_checkpoints(self.checkpoint_dir)]}."
            )
        return path

    def save_checkpoint(self) -> Path:
        """Write a checkpoint atomically (temporary folder, then rename) and prune old complete ones."""
        accelerator = self.accelerator
        step = self.state.global_step
        final = self.checkpoint_dir / f"checkpoint-{step}"
        temporary = self.checkpoint_dir / f".tmp-checkpoint-{step}"
        if accelerator.is_main_process and temporary.exists():
            shutil.rmtree(temporary)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(temporary))  # every process writes its RNG state; the main one the rest
        if accelerator.is_main_process:
            for name, ema in self.ema.items():
                state = ema.state_dict()
                shadow = state.pop("shadow_params")
                state.pop("collected_params", None)
                save_file(
                    {str(i): p.detach().cpu().contiguous() for i, p in enumerate(shadow)},
                    temporary / f"ema_{name}.safetensors",
                )
                with open(temporary / f"ema_{name}.json", "w") as f:
                    json.dump(state, f)
            with open(temporary / "train_state.json", "w") as f:
                json.dump(self.state.__dict__, f)
            if final.exists():
                shutil.rmtree(final)
            os.replace(temporary, final)
            limit = self.config.checkpoints_total_limit
            if limit is not None:
                complete = [p for p in list_checkpoints(self.checkpoint_dir) if p != final]
                for old in complete[: max(0, len(complete) + 1 - limit)]:
                    shutil.rmtree(old)
        accelerator.wait_for_everyone()
        return final

    def load_checkpoint(self, path: Path):
        self.accelerator.load_state(str(path))
        with open(path / "train_state.json") as f:
            self.state = TrainState(**json.load(f))
        for name, ema in self.ema.items():
            tensors = load_file(path / f"ema_{name}.safetensors")
            with open(path / f"ema_{name}.json") as f:
                state = json.load(f)
            state["shadow_params"] = [
                tensors[str(i)].to(self.accelerator.device) for i in range(len(tensors))
            ]
            ema.load_state_dict(state)
        logger.info(f"Resumed from {path} at step {self.state.global_step}.", main_process_only=True)

    # ------------------------------------------------------------- validation
    def _unwrapped_modules(self) -> dict[str, torch.nn.Module]:
        return {name: self.accelerator.unwrap_model(module) for name, module in self.modules.items()}

    def _apply_ema(self, store: bool):
        for name, ema in self.ema.items():
            params = list(self._unwrapped_modules()[name].parameters())
            if store:
                ema.store(params)
            ema.copy_to(params)

    def _restore_from_ema(self):
        for name, ema in self.ema.items():
            ema.restore(list(self._unwrapped_modules()[name].parameters()))

    def validate(self) -> Path | None:
        """Sample a grid through the task's pipeline (EMA weights when on) on the main process."""
        accelerator = self.accelerator
        path = None
        if accelerator.is_main_process:
            modules = self._unwrapped_modules()
            self._apply_ema(store=True)
            for module in modules.values():
                module.eval()
            pipeline = self.task.make_pipeline(modules)
            generator = torch.Generator(device="cpu").manual_seed(self.config.seed)
            images = self.task.validation_images(pipeline, self.config.num_validation_images, generator)
            metrics = self.task.validation_metrics(
                pipeline, torch.Generator(device="cpu").manual_seed(self.config.seed)
            )
            for module in modules.values():
                module.train()
            self._restore_from_ema()
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

        `end_training=False` keeps the process group alive for a following stage in the same launch.
        """
        cfg = self.config
        self._setup()
        accelerator = self.accelerator
        resume = self._resolve_resume()
        if resume is not None:
            self.load_checkpoint(resume)
        state = self.state

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
        multiple_optimizers = len(self.optimizers) > 1
        run_start = time.perf_counter()
        window_start, window_steps = time.perf_counter(), 0
        loss_sums: dict[str, torch.Tensor] = {}
        budget_seconds = cfg.max_train_minutes * 60 if cfg.max_train_minutes is not None else math.inf

        def finished() -> bool:
            return self.max_steps is not None and state.global_step >= self.max_steps

        epoch = first_epoch
        stop = finished()
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
                    outputs = self.task.training_step(batch, self.modules)
                    losses = {k: v for k, v in outputs.items() if not k.startswith(METRIC_PREFIX)}
                    if set(losses) != set(self.optimizers):
                        raise ValueError(
                            f"{type(self.task).__name__}.training_step returned losses {sorted(losses)}; "
                            f"expected one per optimizer: {sorted(self.optimizers)} (and, optionally, "
                            f"'{METRIC_PREFIX}...' scalars to log)."
                        )
                    # Every backward pass before any step: all losses are gradients at the same parameters (a
                    # GAN's G loss backpropagates through D's graph, which an in-place step of D would invalidate).
                    for name in self.optimizers:
                        # With several optimizers each loss reaches only its own parameters (a GAN's G loss must
                        # not leave gradients in D).
                        params = self.optimizer_params[name]
                        accelerator.backward(losses[name], inputs=params if multiple_optimizers else None)
                    for name, optimizer in self.optimizers.items():
                        if accelerator.sync_gradients and cfg.max_grad_norm is not None:
                            accelerator.clip_grad_norm_(self.optimizer_params[name], cfg.max_grad_norm)
                        optimizer.step()
                        self.schedulers[name].step()
                        optimizer.zero_grad(set_to_none=True)
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
                    logs = {
                        (name if name.startswith(METRIC_PREFIX) else f"loss/{name}"): (
                            total / (window_steps * cfg.gradient_accumulation_steps)
                        ).item()
                        for name, total in loss_sums.items()
                    }
                    logs.update({f"lr/{name}": s.get_last_lr()[0] for name, s in self.schedulers.items()})
                    logs["images_per_second"] = window_steps * images_per_step / max(seconds, 1e-9)
                    accelerator.log(logs, step=state.global_step)
                    progress.set_postfix(
                        {
                            **{
                                k.split("/")[-1]: f"{v:.4f}" for k, v in logs.items() if k.startswith("loss/")
                            },
                            "img/s": f"{logs['images_per_second']:.1f}",
                        }
                    )
                    loss_sums = {}
                    window_steps = 0
                    window_start = time.perf_counter()

                if cfg.checkpointing_steps and state.global_step % cfg.checkpointing_steps == 0:
                    state.elapsed_seconds += time.perf_counter() - run_start
                    run_start = time.perf_counter()
                    self.save_checkpoint()
                    window_start = time.perf_counter()
                if cfg.validation_steps and state.global_step % cfg.validation_steps == 0 and not finished():
                    self.validate()
                    window_start = time.perf_counter()

                if state.elapsed_seconds + time.perf_counter() - run_start >= budget_seconds:
                    accelerator.set_trigger()
                # Every process must agree to stop, or the others would wait forever in the next all-reduce.
                if accelerator.check_trigger() or finished():
                    stop = True
                    break
            epoch += 1
        progress.close()
        state.elapsed_seconds += time.perf_counter() - run_start
        logger.info(
            f"Trained {state.global_step} steps ({state.images_seen} images) in {state.elapsed_seconds / 60:.1f} min.",
            main_process_only=True,
        )
        self.validate()
        self.save_pipeline()
        if end_training:
            accelerator.end_training()
        else:
            for tracker in accelerator.trackers:
                tracker.finish()
        return self.output_dir

    def save_pipeline(self):
        """Save the task's pipeline (EMA weights when on) with `save_pretrained` and its model card."""
        accelerator = self.accelerator
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            self._apply_ema(store=True)  # the saved pipeline carries the EMA weights
            modules = self._unwrapped_modules()
            for module in modules.values():
                module.eval()
            pipeline = self.task.make_pipeline(modules)
            pipeline.save_pretrained(self.output_dir)
            self._restore_from_ema()
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


def train(config: TrainingConfig, end_training: bool = True) -> Path:
    """Train the stages `config` builds on that hold no model yet (text2img's VAE and text encoder), then `config`
    itself; return its output_dir.

    Each stage is its own :class:`Trainer` run in this same launch, on this run's data and seed
    (:func:`~latentzoo.training.config.stage_configs`), and may build on stages of its own.
    """
    from .config import stage_configs

    for stage, stage_config in stage_configs(config):
        if stage.trained:
            check_stage_data(stage, stage_config)
            logging.getLogger(__name__).info(
                f"Stage {stage.name}: {stage.output_dir} holds a model; not trained again."
            )
            continue
        logging.getLogger(__name__).info(
            f"Stage {stage.name}: {stage.config} on {stage_config.dataset} -> {stage.output_dir}"
        )
        train(stage_config, end_training=False)
    return Trainer(config).train(end_training=end_training)
