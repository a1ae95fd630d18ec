"""The contract between the one Trainer and a model: a task builds modules, returns losses, builds a pipeline."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch


@dataclass
class TaskConfig:
    """Base of every task's hyperparameter dataclass (the ``model:`` section of a config)."""


class TrainingTask:
    """A thin description of what to train; the :class:`~latentzoo.training.Trainer` does the rest.

    Subclasses set ``name`` and ``Config`` and implement ``__init__`` (build modules), ``training_step`` and
    ``make_pipeline``. The Trainer never looks inside a model: it optimizes the modules returned by
    ``trainable_modules`` with one optimizer per key of ``optimizer_modules`` and backpropagates each loss that
    ``training_step`` returns into its own optimizer's parameters only (a GAN returns two losses).
    """

    name: ClassVar[str]
    Config: ClassVar[type[TaskConfig]] = TaskConfig

    def __init__(self, config: TaskConfig, dataset: torch.utils.data.Dataset):
        self.config = config
        self.dataset = dataset

    @classmethod
    def prerequisites(cls, config: TaskConfig) -> list[tuple[str, str]]:
        """Stages to train first, as (config file or preset, output_dir) pairs, when their output is missing.

        Text-to-image returns its VAE's stage here; `latentzoo.training.train` runs them in order.
        """
        return []

    def train_dataset(self) -> torch.utils.data.Dataset:
        """What the Trainer iterates over: the dataset, or a view of it the task prepared once (e.g. latents)."""
        return self.dataset

    def trainable_modules(self) -> dict[str, torch.nn.Module]:
        """The modules the Trainer prepares (DDP etc.), optimizes, checkpoints and, with EMA on, averages."""
        raise NotImplementedError

    def to(self, device: torch.device) -> None:
        """Move the frozen modules the task holds itself (e.g. a pretrained VAE) to the training device."""

    def optimizer_modules(self) -> dict[str, list[str]]:
        """Optimizer name → names of the modules it updates. One optimizer over everything by default."""
        return {"loss": list(self.trainable_modules())}

    def optimizer_kwargs(self, name: str) -> dict[str, Any]:
        """Overrides of the config's AdamW settings for optimizer `name` (e.g. a GAN's own betas)."""
        return {}

    def training_step(
        self, batch: dict[str, Any], modules: dict[str, torch.nn.Module]
    ) -> dict[str, torch.Tensor]:
        """Compute one loss per optimizer name from `batch`, using `modules` (the prepared, possibly wrapped ones).

        Call each module through ``module(...)``, never a method such as ``module.encode``: under DDP only the
        wrapper's ``forward`` synchronises gradients (a module needing several calls gets a small training wrapper
        whose ``forward`` does them all, as the AutoencoderKL task shows).

        Randomness here (noise, timesteps, dropout of captions) uses torch's global generator, which the Trainer
        seeds per process and saves in every checkpoint, so a resumed run draws exactly what an uninterrupted one
        would.
        """
        raise NotImplementedError

    def make_pipeline(self, modules: dict[str, torch.nn.Module]):
        """Build the inference object saved at the end (a DiffusionPipeline, or a ModelMixin for a lone model)."""
        raise NotImplementedError

    def validation_images(self, pipeline, num_images: int, generator: torch.Generator) -> torch.Tensor:
        """Images for the sample grid, float (N, C, H, W) in [0, 1]. By default the pipeline samples them."""
        output = pipeline(batch_size=num_images, generator=generator, output_type="pt")
        return output.images

    @classmethod
    def card_info(cls, config) -> dict[str, Any]:
        """Model card fields for a run of `config` (a TrainingConfig): ``pipeline_tag``, ``tags``, ``title``,
        ``description``, ``usage`` (code; MODEL_DIR stands for the folder or repo id), ``limitations``."""
        return {}
