"""Pixel-space DDPM (Ho et al., arXiv:2006.11239): a ``UNet2DModel`` denoising images directly, unconditional or
class-conditional.

A class-conditional UNet has ``num_class_embeds = num_classes + 1``; the last index is the null class. Labels are
replaced by it with probability ``label_dropout``, so the same network learns the unconditional model that
classifier-free guidance needs (Ho & Salimans, arXiv:2207.12598). The noise schedule, prediction target and loss
weighting are the ones every latentzoo diffusion model shares (``tasks/diffusion.py``); EMA is the Trainer's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import UNet2DModel

from ...models.checks import cycle_class_labels
from ...pipelines.pixel_diffusion import PixelDiffusionPipeline
from ..config import NonNegativeInt, PositiveInt, UnitInterval, Widths
from .base import TrainingTask, conditioning_classes
from .diffusion import DiffusionConfig, make_objective


@dataclass
class DDPMConfig(DiffusionConfig):
    # Denoiser on (B, C, H, W) pixels: one resolution level per entry (32 → 16 → 8 for three levels).
    # Small on purpose: on a CPU budget more updates of a 0.7M-parameter UNet beat fewer of a bigger one.
    block_out_channels: Widths = (16, 32, 64)
    layers_per_block: PositiveInt = 1
    # Levels (0 = full resolution) whose blocks add self-attention; attention at 32x32 costs more than it gives.
    attention_levels: tuple[NonNegativeInt, ...] = (2,)
    attention_head_dim: PositiveInt = 8
    norm_num_groups: PositiveInt = 8

    # Class conditioning: false trains an unconditional model. `num_classes` null: taken from the dataset.
    class_conditional: bool = True
    num_classes: PositiveInt | None = None
    # Probability of replacing a label by the null class, for classifier-free guidance.
    label_dropout: UnitInterval = 0.1

    def __post_init__(self):
        super().__post_init__()
        bad = [level for level in self.attention_levels if not 0 <= level < len(self.block_out_channels)]
        if bad:
            raise ValueError(
                f"`model.attention_levels` must index `model.block_out_channels` "
                f"(0..{len(self.block_out_channels) - 1}), got {bad}."
            )


def build_unet(
    config: DDPMConfig, in_channels: int, sample_size: int, num_classes: int | None
) -> UNet2DModel:
    """The denoiser; `num_classes` real classes get one more embedding, the null class, at index `num_classes`."""
    levels = range(len(config.block_out_channels))
    down = tuple("AttnDownBlock2D" if i in config.attention_levels else "DownBlock2D" for i in levels)
    up = tuple("AttnUpBlock2D" if i in config.attention_levels else "UpBlock2D" for i in reversed(levels))
    return UNet2DModel(
        sample_size=sample_size,
        in_channels=in_channels,
        out_channels=in_channels,
        down_block_types=down,
        up_block_types=up,
        block_out_channels=tuple(config.block_out_channels),
        layers_per_block=config.layers_per_block,
        attention_head_dim=config.attention_head_dim,
        norm_num_groups=config.norm_num_groups,
        num_class_embeds=None if num_classes is None else num_classes + 1,
    )


class DDPMTask(TrainingTask):
    name = "ddpm"
    Config = DDPMConfig

    def __init__(self, config: DDPMConfig, dataset):
        super().__init__(config, dataset)
        example = dataset[0]
        self.num_classes = conditioning_classes(config, dataset)
        channels, height, width = example["pixel_values"].shape
        if height != width or height % 2 ** (len(config.block_out_channels) - 1):
            raise ValueError(
                f"Images of {height}x{width} pixels do not halve {len(config.block_out_channels) - 1} times; "
                "use square images and fewer `model.block_out_channels` levels (e.g. [32, 64] for 8x8 digits)."
            )
        self.unet = build_unet(config, channels, height, self.num_classes)
        self.objective = make_objective(config)

    def trainable_modules(self):
        return {"unet": self.unet}

    def training_step(self, batch, modules, step):
        pixel_values = batch["pixel_values"]  # x_0: (B, C, H, W) in [-1, 1]
        noised = self.objective.noise(pixel_values)

        class_labels = None
        if self.num_classes is not None:
            class_labels = batch["class_labels"].to(pixel_values.device)
            drop = torch.rand(len(class_labels), device=class_labels.device) < self.config.label_dropout
            class_labels = torch.where(drop, self.num_classes, class_labels)  # the null class

        model_output = modules["unet"](noised.sample, noised.timesteps, class_labels=class_labels).sample
        return {"loss": self.objective.loss(model_output, noised)}

    def make_pipeline(self, modules):
        # A call without guidance or steps samples as validation did (saved in model_index.json); an
        # unconditional model has nothing to guide towards.
        guidance = self.config.validation_guidance_scale if self.num_classes is not None else None
        return PixelDiffusionPipeline(
            unet=modules["unet"],
            scheduler=self.objective.sampler(),
            default_guidance_scale=guidance,
            default_num_inference_steps=self.config.validation_num_inference_steps,
        )

    def validation_images(self, pipeline, num_images, generator):
        pipeline.set_progress_bar_config(disable=True)
        settings = dict(
            num_inference_steps=self.config.validation_num_inference_steps,
            generator=generator,
            output_type="pt",
        )
        if self.num_classes is None:
            return pipeline(batch_size=num_images, **settings).images
        class_labels = cycle_class_labels(num_images, self.num_classes)
        return pipeline(
            class_labels=class_labels, guidance_scale=self.config.validation_guidance_scale, **settings
        ).images
