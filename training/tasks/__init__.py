"""Training tasks, one thin module per model family, looked up by the ``task`` key of a config."""

from __future__ import annotations

import importlib

from .base import Stage, TaskConfig, TrainingTask

# task name → "module:Class" inside this package; imported lazily so a config check does not import every model.
TASKS: dict[str, str] = {
    "autoencoder": "autoencoder:AutoencoderTask",
    "autoencoder_kl": "autoencoder_kl:AutoencoderKLTask",
    "clip_text": "contrastive:ContrastiveTextTask",
    "ddpm": "ddpm:DDPMTask",
    "ddpm_lcd": "consistency:PixelConsistencyDistillationTask",
    "gan": "gan:GANTask",
    "mdn_prior": "autoencoder:MixtureDensityPriorTask",
    "text2img": "text_to_image:TextToImageTask",
    "text2img_lcd": "consistency:ConsistencyDistillationTask",
    "two_stage_vae": "autoencoder:TwoStageVAETask",
    "vae": "autoencoder:VariationalAutoencoderTask",
}


def get_task_class(name: str) -> type[TrainingTask]:
    """The task class registered as `name`; a ValueError lists the registered names otherwise."""
    if name not in TASKS:
        raise ValueError(f"Unknown task {name!r}; registered tasks: {sorted(TASKS)}.")
    module_name, class_name = TASKS[name].split(":")
    module = importlib.import_module(f"{__name__}.{module_name}")
    return getattr(module, class_name)


__all__ = ["TASKS", "Stage", "TaskConfig", "TrainingTask", "get_task_class"]
