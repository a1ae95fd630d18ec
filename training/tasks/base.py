"""The contract between the one Trainer and a model: a task builds modules, returns losses, builds a pipeline."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import torch

from ..config import check_fields


@dataclass
class TaskConfig:
    """Base of every task's hyperparameter dataclass (the ``model:`` section of a config).

    Fields declare their valid values with their types (``PositiveInt``, ``UnitInterval``, ... from
    `latentzoo.training.config`), checked when the config is built; a subclass's ``__post_init__`` calls
    ``super().__post_init__()`` first, then checks what involves several fields.
    """

    def __post_init__(self):
        check_fields(self, prefix="model.")


class Stage(NamedTuple):
    """A model a task builds on, trained first from its own config into `output_dir` while that folder holds none.

    It trains on the data of the run that builds on it (`latentzoo.training.config.DATA_KEYS`) and with its seed;
    the run's ``stages.<name>`` entry overrides anything else (``stages.vae.max_train_steps=50``).
    """

    name: str  # the key of its overrides under `stages`
    config: str  # a config file or preset name
    output_dir: str

    @property
    def trained(self) -> bool:
        """Whether `output_dir` already holds a saved model or pipeline (then the stage is not trained again)."""
        return any((Path(self.output_dir) / name).is_file() for name in ("config.json", "model_index.json"))


def load_built_on(pipeline_class, path: str, field: str, what: str, fix: str):
    """The trained pipeline a task builds on (a stage's output, or the user's folder) from `path`, the value of
    `model.<field>`; a ValueError saying `what` it should hold and the `fix` when it holds none."""
    try:
        return pipeline_class.from_pretrained(path)
    except (OSError, ValueError) as error:
        raise ValueError(f"`model.{field}`={path!r} holds no {what} ({error}). {fix}") from None


class TrainingTask:
    """A thin description of what to train; the :class:`~latentzoo.training.Trainer` does the rest.

    Subclasses set ``name`` and ``Config`` and implement ``__init__`` (build modules), ``training_step`` and
    ``make_pipeline``. The Trainer never looks inside a model: it optimizes the modules returned by
    ``trainable_modules`` with one optimizer per key of ``optimizer_modules`` and backpropagates each loss that
    ``training_step`` returns into its own optimizer's parameters only (a GAN returns two losses).

    With several optimizers the Trainer runs every backward pass first and only then steps the optimizers (in the
    order of ``optimizer_modules``): each loss is a gradient at the parameters its forward pass saw. A GAN's
    generator loss D(G(z)) backpropagates through the discriminator's graph, which stepping the discriminator
    in place first would invalidate; the result is the simultaneous-update GAN step from one forward pass.
    """

    name: ClassVar[str]
    Config: ClassVar[type[TaskConfig]] = TaskConfig

    def __init__(self, config: TaskConfig, dataset: torch.utils.data.Dataset):
        self.config = config
        self.dataset = dataset
        self.check_dataset(config, dataset)

    @classmethod
    def requires(cls, config: TaskConfig) -> tuple[str, ...]:
        """What the items of its dataset must carry besides pixels: "captions", "class_labels" (when conditional)."""
        if getattr(config, "class_conditional", False):
            return ("class_labels",)
        return ()

    @classmethod
    def check_dataset(cls, config: TaskConfig, dataset, where: str = "") -> None:
        """Raise a ValueError, saying how to fix the data, unless `dataset` carries what the task `requires`.

        Checked for the run and every stage before any of them trains (`latentzoo.training.train`), and when a task
        is built. `where` names the stage in the message.
        """
        for what in cls.requires(config):
            otherwise = (
                "set model.class_conditional=false to train without labels"
                if what == "class_labels"
                else None
            )
            dataset.require(what, f"The {cls.name} task{where}", otherwise)

    @classmethod
    def stages(cls, config: TaskConfig) -> list[Stage]:
        """The stages this task builds on, in training order, whether already trained or not.

        Text-to-image returns its VAE and text-encoder stages; `latentzoo.training.train` trains those not yet
        `trained`, in order, before the task itself.
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

    def ema_modules(self) -> list[str]:
        """Names of the modules averaged when the config's ``use_ema`` is on: all by default (a GAN: its generator)."""
        return list(self.trainable_modules())

    def checkpoint_state(self) -> dict[str, Any]:
        """State of the task's own that must survive a resume, by name: objects with ``state_dict()`` and
        ``load_state_dict()`` (a target network or teacher as an ``nn.Module``, counters as tensors in a module).

        The Trainer writes it into every checkpoint (tensors in safetensors, the rest in JSON; from the main process)
        and restores it on resume, so a resumed run continues bit-identically. Nothing by default.
        """
        return {}

    def optimizer_kwargs(self, name: str) -> dict[str, Any]:
        """Overrides of the config's AdamW settings for optimizer `name` (e.g. a GAN's own betas)."""
        return {}

    def training_step(
        self, batch: dict[str, Any], modules: dict[str, torch.nn.Module], step: int
    ) -> dict[str, torch.Tensor]:
        """Compute one loss per optimizer name from `batch`, using `modules` (the prepared, possibly wrapped ones).

        `step` is the number of optimizer steps taken before this batch (the Trainer's ``global_step``; micro-batches
        of one accumulated step share it): for schedules of the task's own, such as a target network's decay.

        Call each module through ``module(...)``, never a method such as ``module.encode``: under DDP only the
        wrapper's ``forward`` synchronises gradients (a module needing several calls gets a small training wrapper
        whose ``forward`` does them all, as the AutoencoderKL task shows).

        Extra detached scalars to log beside the losses (e.g. a GAN's mean D(real)) go in the same dict under keys
        starting with ``"metrics/"``; the Trainer averages them over its logging window and never optimizes them.

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

    def validation_metrics(self, pipeline, generator: torch.Generator) -> dict[str, float | torch.Tensor]:
        """Extra numbers logged at each validation (EMA weights on, main process): floats and 0-d tensors as
        scalars, 1-D tensors as TensorBoard histograms (a GAN logs its samples' judged classes). None by default."""
        return {}

    @classmethod
    def card_info(cls, config) -> dict[str, Any]:
        """Model card fields for a run of `config` (a TrainingConfig): ``pipeline_tag``, ``tags``, ``title``,
        ``description``, ``usage`` (code; MODEL_DIR stands for the folder or repo id), ``limitations``.

        The task's entry of ``model_cards/tasks.yaml`` (Jinja templates); a task not listed there may override this.
        """
        from ..model_card import card_fields

        return card_fields(cls.name, config)


def conditioning_classes(config, dataset) -> int | None:
    """The number of classes a class-conditional task conditions on, or None for an unconditional one.

    `config` has ``class_conditional`` and ``num_classes`` (None: the dataset's); a conditional task needs a
    dataset with ``class_labels`` and a known class count.
    """
    if not config.class_conditional:
        return None
    num_classes = config.num_classes or getattr(dataset, "num_classes", None)
    if "class_labels" not in dataset[0] or num_classes is None:
        raise ValueError(
            f"`model.class_conditional` needs a dataset with class labels; {getattr(dataset, 'name', 'this dataset')} "
            "has none. Give a folder one sub-folder per class or a `label` column in metadata.jsonl (or "
            "`label_column=NAME`), or set `model.class_conditional=false` for unconditional training."
        )
    return num_classes
