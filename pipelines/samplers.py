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


def make_sampler(name: str, scheduler_config) -> SchedulerMixin:
    """The scheduler called `name` (one of SAMPLERS), configured like `scheduler_config`."""
    if name not in SAMPLERS:
        raise ValueError(f"Unknown sampler {name!r}; choose one of {sorted(SAMPLERS)}.")
    return SAMPLERS[name].from_config(scheduler_config)
