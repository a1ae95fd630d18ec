"""What each tab of the demo computes, as plain functions of a `DemoModel` and the widgets' values (no Gradio here,
so every one is testable without a browser).

Bad values raise `ValueError` or `TypeError` naming the field and the fix (the pipelines' own checks, or the ones
here for fields the pipelines do not see); the app shows them as a message in the page. Images come back as PIL
images at the model's own resolution. Image i of a batch is drawn with generator seed `seed + i`, as in
`latentzoo generate` and every metric (`latentzoo.evaluation.sampling`).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from contextlib import contextmanager

import numpy as np
import PIL.Image
import torch
from matplotlib.figure import Figure

from latentzoo.evaluation.forward_process import noise_images
from latentzoo.evaluation.images import make_image_grid
from latentzoo.evaluation.projector import latent_manifold
from latentzoo.evaluation.sampling import sample_images, sampling_settings
from latentzoo.models.checks import check_number
from latentzoo.pipelines.samplers import make_sampler
from latentzoo.training.tasks.diffusion import NOISE_SCHEDULES, make_noise_scheduler

from .models import DemoModel

# The sampler choice that keeps the scheduler saved with the model.
SAVED_SAMPLER = "saved"
# At most this many images per request, so one request never holds a model long.
MAX_IMAGES = 16
# The 2-D manifold: cells per side, and the normal quantiles its grid spans (`latent_manifold`'s default).
MANIFOLD_GRID = 12
MANIFOLD_RANGE = (0.05, 0.95)
# Uploaded images for the forward process are shrunk to at most this side, in pixels.
MAX_FORWARD_SIDE = 256
EXAMPLE_PROMPT = "a bold seven slanted to the right"

Progress = Callable[..., None]  # gr.Progress: progress(fraction, desc=...)


def _whole(value, name: str, low: int | None = 0, high: int | None = None) -> int:
    """An int field; sliders and number boxes send 3.0 for 3, which counts as 3."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return check_number(value, name, low=low, high=high, integer=True)


def _expect(model: DemoModel, *families: str) -> None:
    if model.family not in families:
        raise ValueError(
            f"{model.name} is a {model.family} model; this tab needs a {' or '.join(families)} one."
        )


def _pil(images: torch.Tensor) -> list[PIL.Image.Image]:
    """(N, C, H, W) in [0, 1] (the pipelines' "pt" output) → N PIL images of H x W ("L" for one channel, "RGB" for
    three)."""
    return [make_image_grid(image[None].float().cpu()) for image in images]


def _class_label(model: DemoModel, class_label) -> int | None:
    """The class a conditional model samples (a dropdown sends it as text), None for an unconditional one."""
    if model.num_classes is None:
        if class_label not in (None, ""):
            raise ValueError(f"{model.name} is unconditional: it takes no class (got {class_label!r}).")
        return None
    if isinstance(class_label, str) and class_label.strip().lstrip("-").isdigit():
        class_label = int(class_label)
    return _whole(class_label, "class", 0, model.num_classes - 1)


@contextmanager
def _sampling(model: DemoModel, sampler: str | None = SAVED_SAMPLER):
    """Hold the model's lock, with `sampler` (a `make_sampler` name) in place of the saved scheduler until the block
    ends; `make_sampler`'s ValueError names the samplers that fit."""
    with model.lock:
        pipeline = model.pipeline
        saved = getattr(pipeline, "scheduler", None)
        if sampler not in (None, "", SAVED_SAMPLER):
            if saved is None:
                raise ValueError(f"{model.name} has no scheduler, so no sampler to choose; leave it out.")
            pipeline.scheduler = make_sampler(sampler, saved.config)
        try:
            yield pipeline
        finally:
            if saved is not None:
                pipeline.scheduler = saved


def _on_step(progress: Progress | None):
    """A `callback_on_step_end` that reports each denoising step to `progress`; None without one."""
    if progress is None:
        return None

    def callback(pipeline, step: int, timestep, callback_kwargs: dict) -> dict:
        total = max(len(pipeline.scheduler.timesteps), step + 1)
        progress((step + 1) / total, desc=f"step {step + 1} of {total}")
        return callback_kwargs

    return callback


def _summary(count: int, seconds: float, seed: int, settings: dict, scheduler: str | None) -> str:
    seeds = f"seed {seed}" if count == 1 else f"seeds {seed}–{seed + count - 1}"
    how = ""
    if settings:
        how = (
            f", {settings['num_inference_steps']} {scheduler} steps, guidance scale "
            f"{settings['guidance_scale']:g}"
        )
    return f"{count} image{'s' if count != 1 else ''} in {seconds:.2f} s ({seeds}{how})"


def text_to_image(
    model: DemoModel,
    prompt: str,
    negative_prompt: str | None = None,
    num_inference_steps: int | None = None,
    guidance_scale: float | None = None,
    sampler: str | None = SAVED_SAMPLER,
    seed: int = 0,
    num_images: int = 4,
    progress: Progress | None = None,
) -> tuple[list[PIL.Image.Image], str]:
    r"""
    The *Text to image* tab: `num_images` images of `prompt`.

    Args:
        model (`DemoModel`): a text-to-image model.
        prompt (`str`): what to draw; not empty.
        negative_prompt (`str`, *optional*): what to guide away from; refused by a guidance-distilled (few-step
            consistency) model.
        num_inference_steps, guidance_scale (*optional*): None: the values saved with the model.
        sampler (`str`, *optional*): "saved" (the saved scheduler) or a `make_sampler` name that fits the model
            (`DemoModel.samplers`).
        seed (`int`): image i is drawn with generator seed `seed + i`.
        num_images (`int`): 1 to `MAX_IMAGES`.
        progress (*optional*): called after each denoising step with the fraction done (e.g. `gr.Progress()`).

    Returns:
        The images, and one line saying how long they took and with which settings.
    """
    _expect(model, "text-to-image")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"Type a prompt, e.g. {EXAMPLE_PROMPT!r}.")
    negative_prompt = negative_prompt.strip() if isinstance(negative_prompt, str) else negative_prompt
    seed = _whole(seed, "seed")
    num_images = _whole(num_images, "number of images", 1, MAX_IMAGES)
    if num_inference_steps is not None:
        num_inference_steps = _whole(num_inference_steps, "steps", 1)
    if guidance_scale is not None:
        guidance_scale = check_number(guidance_scale, "guidance scale", low=0, example=3.0)
    settings = sampling_settings(model.pipeline, num_inference_steps, guidance_scale)
    extra = {"negative_prompt": negative_prompt} if negative_prompt else {}
    start = time.perf_counter()
    with _sampling(model, sampler) as pipeline:
        images = sample_images(
            pipeline,
            num_images,
            seed,
            prompt=[prompt] * num_images,
            callback_on_step_end=_on_step(progress),
            **settings,
            **extra,
        )
        scheduler = type(pipeline.scheduler).__name__
    return _pil((images + 1) / 2), _summary(
        num_images, time.perf_counter() - start, seed, settings, scheduler
    )


def class_samples(
    model: DemoModel,
    class_label: int | str | None = None,
    seed: int = 0,
    num_images: int = 4,
    *,
    guidance_scale: float | None = None,
    num_inference_steps: int | None = None,
    sampler: str | None = SAVED_SAMPLER,
    truncation: float | None = None,
    progress: Progress | None = None,
) -> tuple[list[PIL.Image.Image], str]:
    r"""
    The sampling part of the *Class-conditional diffusion*, *GAN* and *Latent explorer* tabs: `num_images` samples
    of class `class_label` (None for an unconditional model).

    Args:
        guidance_scale, num_inference_steps, sampler: pixel diffusion only (None, "saved": the saved values).
        truncation (`float`, *optional*): GANs only: redraw latent entries beyond ±truncation; None or 0: off.

    Returns:
        The images, and one line saying how long they took.
    """
    _expect(model, "pixel diffusion", "GAN", "autoencoder")
    label = _class_label(model, class_label)
    seed = _whole(seed, "seed")
    num_images = _whole(num_images, "number of images", 1, MAX_IMAGES)
    call = {}
    if model.family == "pixel diffusion":
        if num_inference_steps is not None:
            num_inference_steps = _whole(num_inference_steps, "steps", 1)
        if guidance_scale is not None:
            guidance_scale = check_number(guidance_scale, "guidance scale", low=0, example=3.0)
        call = sampling_settings(
            model.pipeline, num_inference_steps, guidance_scale, guided=label is not None
        )
    elif (
        guidance_scale is not None or num_inference_steps is not None or sampler not in (None, SAVED_SAMPLER)
    ):
        raise ValueError(f"{model.name} is a {model.family}: it takes no steps, guidance or sampler.")
    if truncation:
        if model.family != "GAN":
            raise ValueError(f"Truncation applies to GANs; {model.name} is a {model.family}.")
        call["truncation"] = check_number(truncation, "truncation", low=0, low_inclusive=False, example=1.5)
    if progress is not None:
        progress(0.0, desc="sampling")
    labels = None if label is None else [label] * num_images
    start = time.perf_counter()
    with _sampling(model, sampler) as pipeline:
        images = sample_images(pipeline, num_images, seed, class_labels=labels, **call)
        scheduler = type(pipeline.scheduler).__name__ if hasattr(pipeline, "scheduler") else None
    settings = {key: call[key] for key in ("num_inference_steps", "guidance_scale") if key in call}
    return _pil((images + 1) / 2), _summary(
        num_images, time.perf_counter() - start, seed, settings, scheduler
    )


def _prior_latent(pipeline, seed: int, label: int | None, truncation: float | None) -> torch.Tensor:
    """(1, latent_dim): the latent a GAN or an autoencoder's prior draws for `seed` (and class `label`)."""
    call = {"truncation": truncation} if truncation else {}
    return pipeline(
        batch_size=1,
        class_labels=None if label is None else [label],
        generator=torch.Generator().manual_seed(seed),
        output_type="latent",
        **call,
    ).images


def interpolation(
    model: DemoModel,
    seed_start: int,
    seed_end: int,
    num_steps: int = 8,
    method: str = "slerp",
    class_label: int | str | None = None,
    truncation: float | None = None,
) -> PIL.Image.Image:
    """The interpolation strip of the *GAN* and *Latent explorer* tabs: the latents the prior (a GAN's N(0, I),
    optionally truncated; an autoencoder's prior) draws for two seeds, and `num_steps` points from one to the other
    by `method` ("slerp" or "lerp"), decoded; one row of `num_steps` images."""
    _expect(model, "GAN", "autoencoder")
    label = _class_label(model, class_label)
    seeds = [_whole(seed_start, "first seed"), _whole(seed_end, "second seed")]
    num_steps = _whole(num_steps, "steps", 2, 32)
    if truncation and model.family != "GAN":
        raise ValueError(f"Truncation applies to GANs; {model.name} is a {model.family}.")
    with _sampling(model) as pipeline:
        start, end = (_prior_latent(pipeline, seed, label, truncation) for seed in seeds)
        labels = {"class_labels": label} if model.family == "GAN" and label is not None else {}
        images = pipeline.interpolate(
            start, end, num_steps=num_steps, method=method, output_type="pt", **labels
        )
    return make_image_grid(images.images, nrow=num_steps)


def manifold(model: DemoModel, grid_size: int = MANIFOLD_GRID) -> PIL.Image.Image:
    """The *Latent explorer*'s 2-D manifold: a `grid_size` x `grid_size` grid of decoded latents at evenly spaced
    normal quantiles (`latentzoo.evaluation.projector.latent_manifold`); a ValueError unless latent_dim is 2."""
    _expect(model, "autoencoder")
    with model.lock:
        return latent_manifold(model.pipeline, _whole(grid_size, "grid size", 2, 64), MANIFOLD_RANGE)


def manifold_click(
    x: float, y: float, width: int, height: int, grid_size: int = MANIFOLD_GRID
) -> tuple[float, float]:
    """The (z_1, z_2) of the point clicked at pixel (x, y) of the `width` x `height` manifold image: the inverse of
    its layout, so a click on a cell's centre gives exactly the latent decoded there (columns go from low to high
    z_1, rows from high to low z_2), and points between centres interpolate the quantiles."""
    from scipy.stats import norm

    low, high = MANIFOLD_RANGE

    def quantile(position: float, size: int) -> float:
        cell = min(max(position / size * grid_size - 0.5, 0.0), grid_size - 1.0)
        return low + (high - low) * cell / (grid_size - 1)

    z1 = float(norm.ppf(quantile(x, width)))
    z2 = float(norm.ppf(low + high - quantile(y, height)))
    return round(z1, 3) + 0.0, round(z2, 3) + 0.0  # + 0.0: no -0.0 on the sliders


def decode_point(model: DemoModel, z1: float, z2: float) -> PIL.Image.Image:
    """The image decoded at (z_1, z_2) of a 2-D latent space, in the manifold's coordinates: standard-normal ones,
    mapped through a fitted Gaussian prior (mean + L z) as `latent_manifold` maps its grid."""
    _expect(model, "autoencoder")
    pipeline = model.pipeline
    if pipeline.latent_dim != 2:
        raise ValueError(
            f"{model.name} has a {pipeline.latent_dim}-D latent space; points are picked in a 2-D one "
            "(configs/vae-mnist-2d.yaml)."
        )
    point = torch.tensor([[check_number(z1, "z_1"), check_number(z2, "z_2")]], dtype=torch.float32)
    prior = getattr(pipeline, "prior", None)
    if prior is not None and hasattr(prior, "scale_tril"):
        point = prior.mean.cpu() + point @ prior.scale_tril.cpu().T
    with model.lock:
        return _pil(pipeline.decode(point, output_type="pt").images)[0]


def attribute_edit(
    model: DemoModel,
    attribute: str,
    strength: float,
    seed: int = 0,
    class_label: int | str | None = None,
    truncation: float | None = None,
) -> tuple[PIL.Image.Image, PIL.Image.Image]:
    """The attribute slider of the *Latent explorer* and *GAN* tabs: the prior's sample for `seed` (a GAN's
    z ~ N(0, I), optionally truncated, with class `class_label`), and the same latent moved by `strength` along a
    measured attribute direction (`DemoModel.attribute_vectors`: stroke weight, slant; a GAN's found from its own
    samples by `GANPipeline.attribute_vector_from_samples`). A GAN keeps the class at every strength."""
    _expect(model, "autoencoder", "GAN")
    if not model.attribute_vectors:
        raise ValueError(model.attribute_note or f"{model.name} has no attribute directions.")
    if attribute not in model.attribute_vectors:
        raise ValueError(f"Choose an attribute among {sorted(model.attribute_vectors)}, got {attribute!r}.")
    strength = check_number(strength, "strength", example=1.5)
    label = _class_label(model, class_label)
    seed = _whole(seed, "seed")
    if truncation and model.family != "GAN":
        raise ValueError(f"Truncation applies to GANs; {model.name} is a {model.family}.")
    labels = {"class_labels": label} if model.family == "GAN" and label is not None else {}
    with model.lock:
        latent = _prior_latent(model.pipeline, seed, label, truncation)
        vector = model.attribute_vectors[attribute]
        images = model.pipeline.apply_attribute(
            latent, vector, strength=[0.0, strength], output_type="pt", **labels
        ).images
    sample, edited = _pil(images)
    return sample, edited


@functools.cache
def noise_schedulers() -> dict:
    """The training-time schedulers of the linear and cosine schedules (`make_noise_scheduler`), made once."""
    return {name: make_noise_scheduler(name) for name in NOISE_SCHEDULES}


def _as_x0(image) -> torch.Tensor:
    """A PIL image or (H, W[, C]) uint8 array → (1, C, H, W) in [-1, 1]; grey stays one channel, the rest RGB."""
    if image is None:
        raise ValueError("Upload an image (or keep the example digit) to noise.")
    if isinstance(image, np.ndarray):
        image = PIL.Image.fromarray(image.astype(np.uint8))
    if not isinstance(image, PIL.Image.Image):
        raise TypeError(f"The image must be a PIL image or an array, got {type(image).__name__}.")
    image = image.convert("L" if image.mode in ("1", "L", "LA", "I", "I;16", "F") else "RGB")
    if max(image.size) > MAX_FORWARD_SIDE:
        image = image.copy()
        image.thumbnail((MAX_FORWARD_SIDE, MAX_FORWARD_SIDE))
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1  # (H, W) or (H, W, 3)
    pixels = torch.from_numpy(array)
    return (pixels[None] if pixels.ndim == 2 else pixels.permute(2, 0, 1))[None]


def forward_process(image, t: int, seed: int = 0) -> tuple[PIL.Image.Image, PIL.Image.Image, Figure, str]:
    """The *Forward process* tab: x_t ~ q(x_t | x_0) = N(sqrt(ᾱ_t) x_0, (1 - ᾱ_t) I) of `image` under the linear and
    the cosine schedule, with the same ε (seeded by `seed`) for both (`latentzoo.evaluation.forward_process`), and
    the plot of ᾱ_t for both with t marked.

    Returns:
        x_t under the linear schedule, under the cosine one (PIL, the image's size), the plot (a matplotlib
        `Figure`) and one line with both ᾱ_t.
    """
    schedulers = noise_schedulers()
    last = len(next(iter(schedulers.values())).alphas_cumprod) - 1
    t = _whole(t, "t", 0, last)
    seed = _whole(seed, "seed")
    x0 = _as_x0(image)
    noised = {
        name: noise_images(scheduler, x0, [t], torch.Generator().manual_seed(seed))[0, 0]
        for name, scheduler in schedulers.items()
    }
    alpha_bar = {name: float(scheduler.alphas_cumprod[t]) for name, scheduler in schedulers.items()}

    figure = Figure(figsize=(6, 3), layout="tight")
    axis = figure.add_subplot()
    for name, scheduler in schedulers.items():
        axis.plot(scheduler.alphas_cumprod.double().numpy(), label=f"{name}: ᾱ_t = {alpha_bar[name]:.3f}")
        axis.plot([t], [alpha_bar[name]], "o", color=axis.lines[-1].get_color())
    axis.axvline(t, color="gray", linestyle="--", linewidth=1)
    axis.set(xlabel="t", ylabel="ᾱ_t", ylim=(0, 1.02), title="ᾱ_t of the linear and cosine schedules")
    axis.grid(alpha=0.3)
    axis.legend()

    info = f"t = {t}: " + ", ".join(
        f"{name} ᾱ_t = {value:.3f} (keeps sqrt(ᾱ_t) = {value**0.5:.2f} of x_0)"
        for name, value in alpha_bar.items()
    )
    linear, cosine = (_pil((noised[name][None] + 1) / 2)[0] for name in ("linear", "cosine"))
    return linear, cosine, figure, info
