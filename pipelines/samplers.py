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
    FlowMatchEulerDiscreteScheduler,
    FlowMatchHeunDiscreteScheduler,
    FlowMatchLCMScheduler,
    LCMScheduler,
    SchedulerMixin,
    TCDScheduler,
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


# A flow-matching model (trained with model.objective=flow_matching) predicts a velocity along x_t = (1 - t) x_0 + t ε;
# these samplers integrate it. DPM-Solver++ does so with its flow sigmas and "flow_prediction".
FLOW_SAMPLERS: dict[str, tuple[type[SchedulerMixin], dict]] = {
    "euler": (FlowMatchEulerDiscreteScheduler, {}),
    "heun": (FlowMatchHeunDiscreteScheduler, {}),
    "dpm++": (DPMSolverMultistepScheduler, {"use_flow_sigmas": True, "prediction_type": "flow_prediction"}),
}


# A consistency-distilled model (tasks text2img_lcd and ddpm_lcd) maps any point of the trajectory to its end, and only
# consistency samplers use that: LCM's multistep sampler (arXiv:2310.04378), or TCD's (arXiv:2402.19159), whose `eta`
# (the pipeline call's; 0 by default: deterministic) sets how much noise each step re-injects. A student of a
# noise-schedule teacher is saved with an LCMScheduler; one of a flow-matching teacher with a FlowMatchLCMScheduler
# (x̂_0 = x_t - t·v, then x_t' = (1 - t') x̂_0 + t' ε: LCM's step on the straight path).
CONSISTENCY_SAMPLERS: dict[str, type[SchedulerMixin]] = {"lcm": LCMScheduler, "tcd": TCDScheduler}
FLOW_CONSISTENCY_SAMPLERS: dict[str, type[SchedulerMixin]] = {"lcm": FlowMatchLCMScheduler}


def is_consistency_model(scheduler_config) -> bool:
    """Whether a scheduler config is a consistency sampler's: LCM's and TCD's boundary-condition `timestep_scaling`,
    or the keys only FlowMatchLCMScheduler has."""
    return "timestep_scaling" in scheduler_config or "upscale_mode" in scheduler_config


def is_flow_matching(scheduler_config) -> bool:
    """Whether a scheduler config is a flow-matching one (a `shift`, no noise schedule)."""
    return "shift" in scheduler_config and "beta_schedule" not in scheduler_config


def _samplers_for(scheduler_config) -> dict:
    """The samplers (name → scheduler class, or class and settings) that fit a model saved with `scheduler_config`."""
    flow = is_flow_matching(scheduler_config)
    if is_consistency_model(scheduler_config):
        return FLOW_CONSISTENCY_SAMPLERS if flow else CONSISTENCY_SAMPLERS
    return FLOW_SAMPLERS if flow else SAMPLERS


def sampler_names(scheduler_config) -> list[str]:
    """The names `make_sampler` accepts for a model saved with `scheduler_config`."""
    return sorted(_samplers_for(scheduler_config))


def make_sampler(name: str, scheduler_config) -> SchedulerMixin:
    """The scheduler called `name`, configured like `scheduler_config`: one of SAMPLERS (plus SAMPLER_SETTINGS) for
    a noise-schedule model, one of FLOW_SAMPLERS for a flow-matching one, one of CONSISTENCY_SAMPLERS (of
    FLOW_CONSISTENCY_SAMPLERS for a flow teacher's student) for a consistency-distilled one."""
    choices = sampler_names(scheduler_config)
    if name in choices:
        if is_consistency_model(scheduler_config):
            return _samplers_for(scheduler_config)[name].from_config(scheduler_config)
        if is_flow_matching(scheduler_config):
            scheduler_class, settings = FLOW_SAMPLERS[name]
            if scheduler_class is DPMSolverMultistepScheduler:
                settings = {**settings, "flow_shift": scheduler_config["shift"]}
            return scheduler_class.from_config(scheduler_config, **settings)
        return SAMPLERS[name].from_config(scheduler_config, **SAMPLER_SETTINGS.get(name, {}))
    if is_consistency_model(scheduler_config):
        raise ValueError(
            f"Sampler {name!r} does not sample a consistency-distilled model, which jumps to the end of the "
            f"trajectory at every step; choose one of {choices}."
        )
    if name in CONSISTENCY_SAMPLERS:
        raise ValueError(
            f"Sampler {name!r} samples consistency-distilled models only (`latentzoo train "
            f"text2img-mnist-fewstep`); this model was trained to denoise: choose one of {choices}."
        )
    if is_flow_matching(scheduler_config):
        raise ValueError(
            f"Sampler {name!r} does not integrate a flow-matching model's velocity; choose one of {choices}."
        )
    raise ValueError(f"Unknown sampler {name!r}; choose one of {choices}.")
