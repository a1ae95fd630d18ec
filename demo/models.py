"""The demo's models: each saved folder loaded once, with what its tabs need (family, samplers, a lock, and for an
autoencoder or a GAN the attribute directions measured on digits: an autoencoder's data, a GAN's own samples)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from diffusers import DiffusionPipeline

from latentzoo.data import load_dataset, measure_attribute_values
from latentzoo.evaluation import pipeline_family
from latentzoo.evaluation.projector import bold_minus_thin_vector
from latentzoo.models.autoencoder import VariationalAutoencoder
from latentzoo.models.checks import cycle_class_labels
from latentzoo.pipelines.loading import load_pipeline
from latentzoo.pipelines.samplers import sampler_names

logger = logging.getLogger(__name__)

# Datasets whose images are digits: stroke weight and slant (latentzoo.data.attributes) are measured on them.
DIGIT_DATASETS = ("mnist", "digits")
# A GAN's attribute directions come from this many of its own samples (seeds 0..N-1): a second or two per direction
# on a CPU for the 32x32 presets, and a few hundred samples in each class the directions average.
GAN_ATTRIBUTE_SAMPLES = 1000
# Name of each direction → (attribute, the class it points to, the class it points away from).
GAN_DIRECTIONS = {
    "stroke weight (bold − thin)": ("weight", "bold", "thin"),
    "slant (right − left)": ("slant", "right", "left"),
}


@dataclass
class DemoModel:
    """One saved pipeline, loaded once and shared by every request.

    Attributes:
        name: the tab's label and the model's key in the API (the folder's name, made unique).
        path: the folder it was loaded from.
        pipeline: the loaded pipeline (progress bars off).
        family: "text-to-image", "pixel diffusion", "autoencoder" or "GAN" (`latentzoo.evaluation.pipeline_family`).
        lock: held while the pipeline samples: a diffusers scheduler keeps state between steps, so one pipeline
            serves one request at a time (the app's queue runs one event per model at a time as well).
        attribute_vectors: for an autoencoder or a GAN trained on digits, name → (latent_dim,) direction in its
            latent space.
        attribute_note: why an autoencoder or a GAN has no attribute directions, or None.
    """

    name: str
    path: Path
    pipeline: DiffusionPipeline
    family: str
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    attribute_vectors: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    attribute_note: str | None = None

    @property
    def num_classes(self) -> int | None:
        """Classes the pipeline takes (`pipeline.num_classes`), None: unconditional or prompted."""
        return self.pipeline.num_classes

    @property
    def is_vae(self) -> bool:
        return isinstance(getattr(self.pipeline, "autoencoder", None), VariationalAutoencoder)

    @property
    def guidance_is_embedded(self) -> bool:
        """A guidance-distilled text-to-image UNet (a few-step consistency model): no negative prompt."""
        return bool(getattr(self.pipeline, "guidance_is_embedded", False))

    @property
    def guidance_is_distilled(self) -> bool:
        """A class-conditional pixel UNet distilled at one guidance scale (a few-step consistency model): the scale
        is fixed, so the tab shows no guidance slider."""
        return bool(getattr(self.pipeline, "guidance_is_distilled", False))

    @property
    def samplers(self) -> list[str]:
        """The sampler names (`latentzoo.pipelines.samplers.make_sampler`) that fit the saved scheduler; [] for a
        pipeline without one."""
        scheduler = getattr(self.pipeline, "scheduler", None)
        if scheduler is None:
            return []
        return sampler_names(scheduler.config)

    @property
    def label(self) -> str:
        """What the model's tab is called, e.g. "Text to image · text2img-mnist"."""
        kind = {
            "text-to-image": "Few-step text to image" if self.guidance_is_embedded else "Text to image",
            "pixel diffusion": "Class-conditional diffusion" if self.num_classes else "Diffusion",
            "GAN": "Class-conditional GAN" if self.num_classes else "GAN",
            "autoencoder": "Latent explorer (VAE)" if self.is_vae else "Latent explorer (autoencoder)",
        }[self.family]
        return f"{kind} · {self.name}"


def _training_dataset(path: Path) -> str | None:
    """The dataset named in the run's training_config.yaml; None without one (a folder save_pretrained wrote)."""
    config_file = path / "training_config.yaml"
    if not config_file.is_file():
        return None
    config = yaml.safe_load(config_file.read_text(encoding="utf-8")) or {}
    dataset = config.get("dataset") if isinstance(config, dict) else None
    return dataset if isinstance(dataset, str) else None


@torch.no_grad()
def attribute_directions(pipeline, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
    """The measured-attribute directions of an autoencoder's latent space, from digits `pixel_values` (N, 1, H, W):
    stroke weight (mean latent of the boldest third minus that of the thinnest,
    `latentzoo.evaluation.projector.bold_minus_thin_vector`) and slant (the third leaning furthest right minus the
    third leaning furthest left, by measured shear)."""
    slant = measure_attribute_values(pixel_values)["slant"]
    left, right = slant.quantile(1 / 3), slant.quantile(2 / 3)
    return {
        "stroke weight (bold − thin)": bold_minus_thin_vector(pipeline, pixel_values),
        "slant (right − left)": pipeline.attribute_vector(
            pixel_values[slant >= right], pixel_values[slant <= left]
        ),
    }


def _add_attribute_vectors(model: DemoModel, datasets: dict) -> None:
    """Measure stroke weight and slant on the validation split of the model's digits (mnist for a folder without
    a training config) and set `model.attribute_vectors`, or say in `attribute_note` why there are none."""
    autoencoder = model.pipeline.autoencoder
    name = _training_dataset(model.path) or "mnist"
    if name not in DIGIT_DATASETS or autoencoder.config.in_channels != 1:
        model.attribute_note = (
            f"Stroke weight and slant are measured on digits; this model was trained on {name!r}, so it has no "
            "attribute directions."
        )
        return
    key = (name, autoencoder.config.sample_size)
    if key not in datasets:
        datasets[key] = load_dataset(name, split="validation", image_size=autoencoder.config.sample_size)
    model.attribute_vectors = attribute_directions(model.pipeline, datasets[key].pixel_values)


def gan_attribute_directions(pipeline, num_samples: int = GAN_ATTRIBUTE_SAMPLES) -> dict[str, torch.Tensor]:
    """The measured-attribute directions of a GAN's latent space, from its own samples
    (`GANPipeline.attribute_vector_from_samples`, generator seeds 0..num_samples-1; a class-conditional GAN draws
    the classes in turn, so one direction serves every class): mean z of the samples measured bold minus that of
    the thin ones, and right − left by measured slant. A `ValueError` when a class got no sample."""
    labels = None if pipeline.num_classes is None else cycle_class_labels(num_samples, pipeline.num_classes)
    return {
        name: pipeline.attribute_vector_from_samples(
            attribute,
            high,
            low,
            num_samples,
            class_labels=labels,
            generator=[torch.Generator().manual_seed(i) for i in range(num_samples)],
        ).vector.cpu()
        for name, (attribute, high, low) in GAN_DIRECTIONS.items()
    }


def _add_gan_attribute_vectors(model: DemoModel) -> None:
    """Set a GAN's `attribute_vectors` from its own samples, or say in `attribute_note` why there are none (not
    trained on digits, not grayscale, or samples that never fall in a class: an undertrained GAN)."""
    name = _training_dataset(model.path) or "mnist"
    if name not in DIGIT_DATASETS or model.pipeline.generator.config.out_channels != 1:
        model.attribute_note = (
            f"Stroke weight and slant are measured on digits; this GAN was trained on {name!r}, so it has no "
            "attribute directions."
        )
        return
    try:
        model.attribute_vectors = gan_attribute_directions(model.pipeline)
    except ValueError as error:
        model.attribute_note = f"No attribute directions for {model.name}: {error}"


def load_models(model_dirs: Sequence[str | Path]) -> list[DemoModel]:
    """Load each saved pipeline folder once (`latentzoo.pipelines.loading.load_pipeline`: every folder kind
    latentzoo saves, also those saved under diffusers' class names).

    Raises:
        `ValueError`: no folder given, or a folder that is not a saved pipeline (the loader's message, naming it).
        `FileNotFoundError`: a folder that does not exist.
    """
    if not model_dirs:
        raise ValueError(
            "Pass at least one model folder, e.g. the output of `latentzoo quickstart` (outputs/text2img-mnist)."
        )
    models, datasets = [], {}
    for model_dir in model_dirs:
        path = Path(model_dir)
        if not path.is_dir():
            raise FileNotFoundError(
                f"{path} does not exist: pass folders a training run (or save_pretrained) saved a pipeline in."
            )
        pipeline = load_pipeline(path)
        pipeline.set_progress_bar_config(disable=True)
        name = path.resolve().name
        taken = {model.name for model in models}
        if name in taken:
            name = next(f"{name}-{i}" for i in range(2, len(models) + 3) if f"{name}-{i}" not in taken)
        model = DemoModel(name=name, path=path, pipeline=pipeline, family=pipeline_family(pipeline))
        if model.family == "autoencoder":
            _add_attribute_vectors(model, datasets)
        elif model.family == "GAN":
            _add_gan_attribute_vectors(model)
        logger.info("Loaded %s from %s", model.label, path)
        models.append(model)
    return models
