"""Helpers shared by latentzoo's pipelines: argument checks, noise, scheduler plumbing, guidance, output.

Each pipeline (latent text-to-image, pixel DDPM, autoencoder, GAN) imports these instead of copying them,
so an argument is checked, and an error worded, the same way everywhere. The checks of numbers and class labels
themselves (`check_number`, `check_class_labels`) live in `latentzoo.models.checks`, as models use them too.
"""

import inspect
import math
from collections.abc import Sequence

import numpy as np
import PIL.Image
import torch
from diffusers import FlowMatchLCMScheduler
from diffusers.image_processor import VaeImageProcessor
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils.torch_utils import randn_tensor

from latentzoo.models.checks import check_number

OUTPUT_TYPES = ("pil", "np", "pt", "latent")

GeneratorArgument = torch.Generator | list[torch.Generator] | None


def check_num_inference_steps(num_inference_steps: int, num_train_timesteps: int | None = None) -> None:
    """Raise unless `num_inference_steps` is a positive int, at most `num_train_timesteps` when that is given."""
    check_number(
        num_inference_steps,
        "num_inference_steps",
        low=1,
        integer=True,
        example=20,
        hint="about 20 suffice with DPM-Solver++, DDPM wants its full 1000",
    )
    if num_train_timesteps is not None and num_inference_steps > num_train_timesteps:
        raise ValueError(
            f"`num_inference_steps`={num_inference_steps} exceeds the {num_train_timesteps} timesteps the model "
            f"was trained with; use at most {num_train_timesteps}."
        )


def check_positive_int(value: int, name: str) -> None:
    """Raise unless `value` (the argument called `name`) is a positive integer, e.g. `num_images_per_prompt`."""
    check_number(value, name, low=1, integer=True, example=1)


def check_guidance_scale(guidance_scale: float) -> None:
    """Raise unless `guidance_scale` is a finite number >= 0 (values up to 1 switch guidance off)."""
    check_number(
        guidance_scale,
        "guidance_scale",
        low=0,
        example=3.0,
        hint="values up to 1 run the conditional model alone, larger ones guide (arXiv:2207.12598)",
    )


def check_guidance_interval(guidance_start: float, guidance_stop: float) -> None:
    """Raise unless 0 <= `guidance_start` <= `guidance_stop` <= 1 (fractions of the sampling steps)."""
    check_number(guidance_start, "guidance_start", low=0, high=1, example=0.0)
    check_number(guidance_stop, "guidance_stop", low=0, high=1, example=0.5)
    if guidance_start > guidance_stop:
        raise ValueError(
            f"`guidance_start`={guidance_start} is after `guidance_stop`={guidance_stop}: guidance runs from the "
            "first fraction of the steps to the second, e.g. `guidance_start=0.0, guidance_stop=0.5`."
        )


def guidance_enabled(step_index: int, num_steps: int, guidance_start: float, guidance_stop: float) -> bool:
    """Whether step `step_index` of `num_steps` is guided: int(start·N) <= i < int(stop·N), the interval of diffusers'
    `ClassifierFreeGuidance(start=, stop=)` guider. The other steps run the conditional model alone (one UNet batch
    instead of two); (0, 1) guides every step."""
    return int(guidance_start * num_steps) <= step_index < int(guidance_stop * num_steps)


def check_eta(eta: float) -> None:
    """Raise unless `eta`, DDIM's η, is a finite number in [0, 1] (0: deterministic DDIM, 1: DDPM-like)."""
    check_number(
        eta,
        "eta",
        low=0,
        high=1,
        example=0.0,
        hint="0 is deterministic DDIM, 1 DDPM-like; other schedulers ignore it",
    )


def check_strengths(strength: float | Sequence[float]) -> list[float]:
    """`apply_attribute`'s `strength`, one number or a list of them, as a list of finite floats (any sign)."""
    if isinstance(strength, list | tuple) or (
        isinstance(strength, torch.Tensor | np.ndarray) and strength.ndim == 1
    ):
        if len(strength) == 0:
            raise ValueError(
                "`strength` is empty: pass a number or a list of them, e.g. `strength=[-2, -1, 0, 1, 2]`."
            )
        return [check_number(s, "strength", example=1.0) for s in strength]
    return [check_number(strength, "strength", example=1.0)]


def check_generator(generator: GeneratorArgument, batch_size: int) -> None:
    """Raise unless `generator` is None, one `torch.Generator`, or a list of exactly `batch_size` of them.

    Args:
        generator (`torch.Generator` or `list[torch.Generator]`, *optional*):
            The pipeline's `generator` argument.
        batch_size (`int`):
            The number of images the call generates, e.g. `len(prompt) * num_images_per_prompt`: a list gives
            one generator to each image.
    """
    if generator is None or isinstance(generator, torch.Generator):
        return
    if not isinstance(generator, list) or not all(isinstance(g, torch.Generator) for g in generator):
        raise TypeError(
            f"`generator` must be a `torch.Generator` or a list of them, got {type(generator).__name__}."
        )
    if len(generator) != batch_size:
        raise ValueError(
            f"`generator` is a list of {len(generator)} generators, but the call generates {batch_size} images "
            f"(batch size x images per prompt). Pass one generator per image ({batch_size}), or a single generator."
        )


def check_image_size(height: int, width: int, factor: int) -> None:
    """Raise unless `height` and `width` are positive multiples of `factor` (the VAE's downsampling factor)."""
    for name, size in (("height", height), ("width", width)):
        size = check_number(
            size,
            name,
            low=1,
            integer=True,
            hint=f"pass a multiple of the VAE's downsampling factor {factor}, or None for the model's own size",
        )
        if size % factor != 0:
            nearest = max(factor, round(size / factor) * factor)
            raise ValueError(
                f"`{name}` must be a positive multiple of the VAE's downsampling factor {factor}, got {size!r}; "
                f"use e.g. `{name}={nearest}`."
            )


def check_output_type(output_type: str) -> None:
    if output_type not in OUTPUT_TYPES:
        raise ValueError(f"`output_type` must be one of {OUTPUT_TYPES}, got {output_type!r}.")


def check_callback_tensor_inputs(names: Sequence[str] | None, allowed: Sequence[str]) -> None:
    """Raise unless every name in `callback_on_step_end_tensor_inputs` is one the pipeline can hand out."""
    unknown = [name for name in names or () if name not in allowed]
    if unknown:
        raise ValueError(
            f"`callback_on_step_end_tensor_inputs` may only name {list(allowed)}, but got {unknown}."
        )


def default_sample_size(sample_size: int | Sequence[int], scale_factor: int = 1) -> tuple[int, int]:
    """(height, width) in pixels from a denoiser's `config.sample_size` (an int or a (height, width) pair)."""
    height, width = (sample_size, sample_size) if isinstance(sample_size, int) else sample_size
    return height * scale_factor, width * scale_factor


def prepare_noise(
    shape: tuple[int, ...],
    generator: GeneratorArgument,
    device: torch.device,
    dtype: torch.dtype,
    latents: torch.Tensor | None = None,
    init_noise_sigma: float | torch.Tensor = 1.0,
) -> torch.Tensor:
    """The starting point x_T of sampling: `latents` if given, else N(0, I) drawn with `generator`.

    Both are multiplied by the scheduler's `init_noise_sigma` (1 for DDPM/DDIM/DPM-Solver, sigma_max for
    Euler-type schedulers), as every diffusers pipeline does.

    Args:
        shape (`tuple[int, ...]`): e.g. (B, C, H/f, W/f) for latents.
        generator: one generator, or a list with one per sample (`shape[0]`), or None.
        latents (`torch.Tensor`, *optional*): user-given noise of exactly `shape`.
        init_noise_sigma: `scheduler.init_noise_sigma`.
    """
    if latents is None:
        latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
    elif tuple(latents.shape) != tuple(shape):
        raise ValueError(
            f"`latents` has shape {tuple(latents.shape)}, but the call needs {tuple(shape)} "
            "(batch size x images per prompt, channels, height / factor, width / factor)."
        )
    else:
        latents = latents.to(device=device, dtype=dtype)
    return latents * init_noise_sigma


def scale_model_input(scheduler: SchedulerMixin, sample: torch.Tensor, timestep) -> torch.Tensor:
    """`scheduler.scale_model_input(sample, timestep)` where the scheduler has it (Euler-type σ scaling); flow-matching
    schedulers have none and take the sample as it is."""
    scale = getattr(scheduler, "scale_model_input", None)
    return sample if scale is None else scale(sample, timestep)


def init_noise_sigma(scheduler: SchedulerMixin) -> float:
    """The standard deviation of x_T for `scheduler`: its `init_noise_sigma`, 1 for flow-matching schedulers."""
    return getattr(scheduler, "init_noise_sigma", 1.0)


def compile_denoiser(pipeline, dtype: torch.dtype | None = None) -> None:
    """Compile the pipeline's UNet in place for sampling: `torch.compile` (inductor) with `freezing`, which folds the
    weights into the compiled graph as constants (oneDNN prepacks them, casts of constant weights disappear), after
    casting the weights to `dtype` (bf16: then call the pipeline under `torch.autocast(device, torch.bfloat16)`,
    which casts its inputs to match).

    The first call compiles (1-2 minutes for the quickstart's UNet on 2 CPU cores), and the first call with another
    batch size once more, for every batch size after it: it pays for thousands of images, not for a grid. Freezing
    assumes the weights no longer change: load new weights into a fresh pipeline. On the quickstart model, 20 guided
    steps: 1.4x the images/s of bf16 autocast alone, images within 0.03 of fp32's (README, "Few-step generation")."""
    if dtype is not None:
        pipeline.unet.to(dtype)
    pipeline.unet.compile(options={"freezing": True})


def set_timesteps(scheduler: SchedulerMixin, num_inference_steps: int, device) -> None:
    """`scheduler.set_timesteps(num_inference_steps)`, except for a consistency sampler on a flow (a
    FlowMatchLCMScheduler). Its default grid runs from t = 1 to t = 1/T before the final t = 0, and a consistency
    step at t = 1/T returns its input: N steps would do the work of N - 1 (2 steps give 1 step's images). It gets
    FLUX's spacing instead, as diffusers' FluxPipeline passes it: sigmas linspace(1, 1/N, N) (shifted by the
    scheduler as configured), then 0: 1, 0.75, 0.5, 0.25 for 4 steps.

    Flow-matching Euler has the same last step on that grid (0.001 of the path) but keeps diffusers' grid, so that an
    unconditional flow DDPM samples exactly as diffusers' DDPMPipeline does; README ("Few-step generation") measures
    what that costs at 2 steps."""
    if isinstance(scheduler, FlowMatchLCMScheduler):
        sigmas = np.linspace(1.0, 1.0 / num_inference_steps, num_inference_steps).tolist()
        scheduler.set_timesteps(sigmas=sigmas, device=device)
    else:
        scheduler.set_timesteps(num_inference_steps, device=device)


def prepare_extra_step_kwargs(
    scheduler: SchedulerMixin, generator: GeneratorArgument, eta: float = 0.0
) -> dict[str, object]:
    """Keyword arguments for `scheduler.step` that only some schedulers take.

    `eta` is DDIM's η (arXiv:2010.02502, eq. (16): 0 is deterministic DDIM, 1 is DDPM-like); `generator`
    feeds stochastic steps (DDPM's variance noise, Euler's churn). Computed once per call, not per step.
    """
    parameters = inspect.signature(scheduler.step).parameters
    kwargs = {}
    if "eta" in parameters:
        kwargs["eta"] = eta
    if "generator" in parameters:
        kwargs["generator"] = generator
    return kwargs


def apply_classifier_free_guidance(noise_pred: torch.Tensor, guidance_scale: float) -> torch.Tensor:
    """Classifier-free guidance (Ho & Salimans, arXiv:2207.12598, eq. (6)).

    Args:
        noise_pred (`torch.Tensor`): (2B, ...) model outputs, the unconditional half first.
        guidance_scale (`float`): w + 1 in the paper's notation; 1 is the conditional model alone.

    Returns:
        `torch.Tensor`: (B, ...) `uncond + guidance_scale * (cond - uncond)`.
    """
    noise_pred_uncond, noise_pred_cond = noise_pred.chunk(2)
    return noise_pred_uncond + guidance_scale * (noise_pred_cond - noise_pred_uncond)


def guidance_scale_embedding(guidance_scale: torch.Tensor, embedding_dim: int) -> torch.Tensor:
    """The embedding of a guidance-distilled denoiser's guidance (Meng et al., arXiv:2210.03142; LCM).

    A UNet built with `time_cond_proj_dim` takes it as `timestep_cond`. Same values as diffusers'
    `LatentConsistencyModelPipeline.get_guidance_scale_embedding`, so plain diffusers samples such a model too.

    Args:
        guidance_scale (`torch.Tensor`): (B,) guidance scales s (1: the conditional model alone).
        embedding_dim (`int`): the UNet's `time_cond_proj_dim`.

    Returns:
        `torch.Tensor`: (B, embedding_dim) float32 sinusoidal features of 1000 * (s - 1).
    """
    # written in diffusers' order of operations: the arguments reach thousands, where rounding would show
    w = (guidance_scale.float() - 1) * 1000.0
    half_dim = embedding_dim // 2
    frequencies = torch.exp(
        torch.arange(half_dim, dtype=torch.float32) * -(math.log(10000.0) / (half_dim - 1))
    )
    arguments = w[:, None] * frequencies.to(w.device)[None, :]
    embedding = torch.cat([torch.sin(arguments), torch.cos(arguments)], dim=1)
    return torch.nn.functional.pad(embedding, (0, embedding_dim % 2))


def postprocess_images(
    images: torch.Tensor, output_type: str, image_processor: VaeImageProcessor
) -> list[PIL.Image.Image] | np.ndarray | torch.Tensor:
    """(B, C, H, W) images in [-1, 1] to `output_type`.

    "pil": list of PIL images; "np": (B, H, W, C) float array in [0, 1]; "pt": (B, C, H, W) tensor in [0, 1];
    "latent": `images` unchanged (pipelines pass their latents for it).
    """
    check_output_type(output_type)
    return image_processor.postprocess(images, output_type=output_type)


class SavedSamplingDefaults:
    """Mixin of a diffusion pipeline saved with the sampling settings its model was validated with.

    `default_guidance_scale` and `default_num_inference_steps` live in the pipeline's config (model_index.json, given
    back to `__init__` by `from_pretrained`); a call that leaves them out uses them. A folder saved without them uses
    the class's `fallback_guidance_scale` / `fallback_num_inference_steps`.
    """

    fallback_guidance_scale: float
    fallback_num_inference_steps: int = 50

    def register_sampling_defaults(
        self, guidance_scale: float | None, num_inference_steps: int | None, guidance_example: float
    ) -> None:
        """Check the saved defaults (None: not saved) and register them to the config."""
        if guidance_scale is not None:
            guidance_scale = check_number(
                guidance_scale, "default_guidance_scale", low=0, example=guidance_example
            )
        if num_inference_steps is not None:
            num_inference_steps = check_number(
                num_inference_steps, "default_num_inference_steps", low=1, integer=True, example=20
            )
        self.register_to_config(
            default_guidance_scale=guidance_scale, default_num_inference_steps=num_inference_steps
        )

    @property
    def default_guidance_scale(self) -> float:
        """The `guidance_scale` of a call that gives none: the saved one, else `fallback_guidance_scale`."""
        saved = self.config.get("default_guidance_scale")
        return self.fallback_guidance_scale if saved is None else saved

    @property
    def default_num_inference_steps(self) -> int:
        """The `num_inference_steps` of a call that gives none: the saved number, else `fallback_num_inference_steps`."""
        saved = self.config.get("default_num_inference_steps")
        return self.fallback_num_inference_steps if saved is None else saved
