"""Seeded sampling for evaluation and benchmarks: image i is drawn with its own generator, seeded `seed + i`.

    images = sample_images(pipe, 500, seed=0, batch_size=100, class_labels=labels, num_inference_steps=20)
    images = sample_images(pipe, len(prompts), seed=0, batch_size=64, prompt=prompts, guidance_scale=3.0)
    images = sample_images(gan, 500, seed=0, truncation=1.5)   # unconditional: `batch_size=` images per call

Every metric that samples goes through here, so "generator seeds 0..N-1, one per image" means the same thing in
every protocol. Batches are consecutive ([0, b), [b, 2b), ...); with `batch_size=None` all images come from one call.
Each image's noise depends on its own generator alone (the pipelines draw a list of generators row by row), so the
batch size changes an image only by the summation order of batched kernels: to float tolerance, never its content.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..models.checks import ClassLabels, check_number

__all__ = ["sample_images", "sampling_record", "sampling_settings"]


# Steps and guidance for a pipeline that saves none (one called like latentzoo's, from elsewhere).
FALLBACK_NUM_INFERENCE_STEPS = 20
FALLBACK_GUIDANCE_SCALE = 3.0


def sampling_settings(
    pipeline, num_inference_steps: int | None = None, guidance_scale: float | None = None, guided: bool = True
) -> dict:
    """The `num_inference_steps` and `guidance_scale` a diffusion pipeline samples with: the given ones, else the
    ones saved with it (`pipeline.default_num_inference_steps` / `default_guidance_scale`, what the model was
    validated with; 20 and 3.0 for a pipeline without them). `guided=False` (an unconditional pixel-diffusion
    model): guidance 1.0.

    Protocols resolve their settings here, so the numbers they report name the values actually used. {} for a
    pipeline without a scheduler (autoencoders, GANs).
    """
    if not hasattr(pipeline, "scheduler"):
        return {}
    if num_inference_steps is None:
        num_inference_steps = getattr(pipeline, "default_num_inference_steps", FALLBACK_NUM_INFERENCE_STEPS)
    if not guided:
        guidance_scale = 1.0
    elif guidance_scale is None:
        guidance_scale = getattr(pipeline, "default_guidance_scale", FALLBACK_GUIDANCE_SCALE)
    return {"num_inference_steps": num_inference_steps, "guidance_scale": guidance_scale}


def sampling_record(pipeline, settings: dict) -> dict:
    """What a protocol sampled with, machine-readable (metrics.json, model cards): `settings` and the scheduler's
    class name as "sampler"; {} for a pipeline without a scheduler."""
    if not settings:
        return {}
    return {"sampler": type(pipeline.scheduler).__name__, **settings}


@torch.no_grad()
def sample_images(
    pipeline,
    num_images: int,
    seed: int,
    batch_size: int | None = None,
    *,
    prompt: Sequence[str] | None = None,
    class_labels: ClassLabels | None = None,
    **call_kwargs,
) -> torch.Tensor:
    r"""
    `num_images` images from `pipeline`, image i drawn with `torch.Generator().manual_seed(seed + i)`.

    Args:
        pipeline:
            Any latentzoo pipeline (or one called like them: `generator` takes a list, `output_type="pt"` gives
            (B, C, H, W) in [0, 1]).
        num_images (`int`):
            How many images.
        seed (`int`):
            Image i's generator seed is `seed + i`.
        batch_size (`int`, *optional*):
            Images per pipeline call; None: all in one call.
        prompt (`list[str]`, *optional*):
            One prompt per image, for a text-to-image pipeline; each call gets its batch's slice.
        class_labels (`list[int]`, 1-D tensor or array, *optional*):
            One label per image, for a class-conditional pipeline; each call gets its batch's slice. Without
            `prompt` and `class_labels`, each call gets `batch_size=` its number of images.
        **call_kwargs:
            Passed to every call unchanged, e.g. `num_inference_steps`, `guidance_scale`, `truncation`.

    Returns:
        `torch.Tensor`: (num_images, C, H, W) float32 on the CPU in [-1, 1] (the pipelines' [0, 1] output times
        2 minus 1), the range of the datasets' `pixel_values` that the metrics compare them with.
    """
    check_number(num_images, "num_images", low=1, integer=True, example=100)
    if batch_size is not None:
        check_number(batch_size, "batch_size", low=1, integer=True, example=64)
    if prompt is not None and class_labels is not None:
        raise ValueError("Pass `prompt` or `class_labels`, not both: a pipeline takes one kind of condition.")
    # The per-image condition, sliced per call; without one, each call is unconditional.
    name, values = ("prompt", prompt) if prompt is not None else ("class_labels", class_labels)
    if values is not None and len(values) != num_images:
        raise ValueError(f"`{name}` has {len(values)} entries for {num_images} images: pass one per image.")
    batch_size = batch_size or num_images
    images = []
    for start in range(0, num_images, batch_size):
        stop = min(start + batch_size, num_images)
        condition = {"batch_size": stop - start} if values is None else {name: values[start:stop]}
        generators = [torch.Generator().manual_seed(seed + i) for i in range(start, stop)]
        output = pipeline(**condition, generator=generators, output_type="pt", **call_kwargs)
        images.append(output.images.float().cpu() * 2 - 1)
    return torch.cat(images)
