"""Sampler names used by the command line and the benchmarks → diffusers schedulers.

Every sampler is built ``from_config`` of the pipeline's own scheduler, so it keeps the trained noise schedule
(``beta_schedule``, ``num_train_timesteps``) and ``prediction_type``.
"""

from __future__ import annotations

from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    SchedulerMixin,
)

SAMPLERS: dict[str, type[SchedulerMixin]] = {
    "dpm++": DPMSolverMultistepScheduler,  # DPM-Solver++(2M), arXiv:2211.01095: good images in 10-20 steps
    "ddim": DDIMScheduler,
    "ddpm": DDPMScheduler,  # ancestral sampling of arXiv:2006.11239; needs ~1000 steps
    "euler": EulerDiscreteScheduler,
}


# DDIM clips x̂_0 to [-1, 1] but keeps the model's ε, and under classifier-free guidance the two disagree: the
# class-conditional pixel DDPM sampled with DDIM at 20 steps lost its class (27.5% class accuracy against 100% without
# clipping, benchmarks/results/ddpm.md). DDPM's ancestral step uses its clipped x̂_0 consistently and keeps it.
SAMPLER_SETTINGS: dict[str, dict] = {"ddim": {"clip_sample": False}}


def make_sampler(name: str, scheduler_config) -> SchedulerMixin:
    """The scheduler called `name` (one of SAMPLERS), configured like `scheduler_config` (plus SAMPLER_SETTINGS)."""
    if name not in SAMPLERS:
        raise ValueError(f"Unknown sampler {name!r}; choose one of {sorted(SAMPLERS)}.")
    return SAMPLERS[name].from_config(scheduler_config, **SAMPLER_SETTINGS.get(name, {}))
