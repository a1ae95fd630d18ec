"""The training objectives of every denoiser latentzoo trains (pixel DDPM, latent text-to-image).

A diffusion task's config subclasses :class:`DiffusionConfig` (the objectives' fields, declared once) and its task
holds the objective ``make_objective(config)`` picks by ``model.objective``, which owns everything between clean
data and a scalar loss:

    noised = objective.noise(x_0)                       # draws t and ε; x_t, t, the target and its weight
    loss = objective.loss(denoiser(noised.sample, noised.timesteps, ...), noised)
    pipeline = Pipeline(..., scheduler=objective.sampler())

The task keeps only what is its own: what x_0 is (pixels or VAE latents) and how the denoiser is conditioned.

- ``ddpm`` (:class:`DiffusionObjective`): x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε on a noise schedule, ε- or
  v-prediction, optional min-SNR-γ weighting; sampled with DPM-Solver++.
- ``flow_matching`` (:class:`FlowMatchingObjective`): the rectified flow x_t = (1 - t) x_0 + t ε, velocity target
  ε - x_0, t uniform or logit-normal (SD3, arXiv:2403.03206); sampled with ``FlowMatchEulerDiscreteScheduler``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler
from diffusers.training_utils import compute_snr

from ..config import NonNegativeFloat, PositiveFloat, PositiveInt
from .base import TaskConfig

# Config names → diffusers' `beta_schedule` names. "cosine" is the schedule of Nichol & Dhariwal
# (arXiv:2102.09672, eq. (17)): ᾱ_t = f(t) / f(0), f(t) = cos²((t/T + s) / (1 + s) · π/2), betas capped at 0.999.
NOISE_SCHEDULES = {"linear": "linear", "cosine": "squaredcos_cap_v2"}

NoiseSchedule = Literal["linear", "cosine"]
PredictionType = Literal["epsilon", "v_prediction"]


@dataclass
class DiffusionConfig(TaskConfig):
    """The objectives' hyperparameters: the base of every diffusion task's ``model:`` section."""

    # "ddpm": noise schedule + ε/v prediction; "flow_matching": rectified flow with a velocity target.
    objective: Literal["ddpm", "flow_matching"] = "ddpm"
    # Timesteps of training: t = timestep / num_train_timesteps for flow matching.
    num_train_timesteps: PositiveInt = 1000
    # ddpm only.
    noise_schedule: NoiseSchedule = "cosine"
    prediction_type: PredictionType = "v_prediction"
    # ddpm only. Min-SNR-gamma loss weighting (Hang et al., arXiv:2303.09556): faster convergence; null for uniform.
    snr_gamma: PositiveFloat | None = 5.0
    # flow_matching only: how t is drawn. "logit_normal": sigmoid of N(mean, std), more weight on the middle of the
    # path (SD3's choice); "uniform": U(0, 1).
    timestep_sampling: Literal["uniform", "logit_normal"] = "logit_normal"
    logit_mean: float = 0.0
    logit_std: PositiveFloat = 1.0
    # Validation grid (and the default sampler settings written into the model card).
    validation_num_inference_steps: PositiveInt = 20
    validation_guidance_scale: NonNegativeFloat = 2.0


def make_noise_scheduler(
    noise_schedule: NoiseSchedule = "cosine",
    num_train_timesteps: int = 1000,
    prediction_type: PredictionType = "epsilon",
    clip_sample: bool = True,
) -> DDPMScheduler:
    """The training-time ``DDPMScheduler`` of a noise schedule; samplers are built ``from_config`` of it.

    `clip_sample` clips predicted x_0 to [-1, 1] in DDPM/DDIM sampling: right for pixels, wrong for latents."""
    if noise_schedule not in NOISE_SCHEDULES:
        raise ValueError(
            f"`noise_schedule` must be one of {sorted(NOISE_SCHEDULES)}, got {noise_schedule!r}."
        )
    return DDPMScheduler(
        num_train_timesteps=num_train_timesteps,
        beta_schedule=NOISE_SCHEDULES[noise_schedule],
        prediction_type=prediction_type,
        clip_sample=clip_sample,
    )


class NoisedBatch(NamedTuple):
    """What a denoiser is trained on for one batch of clean x_0 (B, C, H, W)."""

    sample: torch.Tensor  # x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε, (B, C, H, W)
    timesteps: torch.Tensor  # t, (B,) int64
    target: torch.Tensor  # what the denoiser should output: ε or v, (B, C, H, W)
    weight: torch.Tensor | None  # per-sample loss weight (B,), or None for uniform


class DiffusionObjective:
    """DDPM's objective (arXiv:2006.11239) with ε- or v-prediction and optional min-SNR-γ weighting.

    Random draws come from torch's global generator, which the Trainer seeds and checkpoints: ε first, then t.

    Args:
        config: a :class:`DiffusionConfig`.
        clip_sample: whether samplers clip predicted x_0 to [-1, 1] (pixels: yes; latents: no).
    """

    def __init__(self, config: DiffusionConfig, clip_sample: bool = True):
        self.noise_scheduler = make_noise_scheduler(
            config.noise_schedule, config.num_train_timesteps, config.prediction_type, clip_sample
        )
        self.prediction_type = config.prediction_type
        self.snr_gamma = config.snr_gamma

    def noise(self, x0: torch.Tensor) -> NoisedBatch:
        """Draw ε ~ N(0, I) and t ~ U{0, ..., T - 1} per sample; noise `x0` (B, C, H, W) to x_t."""
        noise = torch.randn_like(x0)
        timesteps = torch.randint(
            0, self.noise_scheduler.config.num_train_timesteps, (x0.shape[0],), device=x0.device
        )
        # q(x_t | x_0) = N(sqrt(ᾱ_t) x_0, (1 - ᾱ_t) I), eq. (4) of arXiv:2006.11239
        sample = self.noise_scheduler.add_noise(x0, noise, timesteps)
        if self.prediction_type == "epsilon":
            target = noise  # eq. (14) of arXiv:2006.11239
        else:  # v = sqrt(ᾱ_t) ε - sqrt(1 - ᾱ_t) x_0, sec. 4 of arXiv:2202.00512
            target = self.noise_scheduler.get_velocity(x0, noise, timesteps)
        weight = None
        if self.snr_gamma is not None:
            snr = compute_snr(self.noise_scheduler, timesteps)  # ᾱ_t / (1 - ᾱ_t), (B,)
            weight = snr.clamp(max=self.snr_gamma)
            # min(SNR, γ) / SNR for ε-prediction; / (SNR + 1) for v-prediction (whose loss is SNR+1 times ε's).
            weight = weight / (snr + 1) if self.prediction_type == "v_prediction" else weight / snr
        return NoisedBatch(sample, timesteps, target, weight)

    def loss(self, model_output: torch.Tensor, noised: NoisedBatch) -> torch.Tensor:
        """Mean squared error of the denoiser's output against `noised.target`, weighted per sample: a scalar."""
        loss = F.mse_loss(model_output.float(), noised.target.float(), reduction="none").mean(dim=(1, 2, 3))
        if noised.weight is not None:
            loss = loss * noised.weight
        return loss.mean()

    def sampler(self) -> DPMSolverMultistepScheduler:
        """The scheduler a trained pipeline is saved with: DPM-Solver++ on this noise schedule."""
        return DPMSolverMultistepScheduler.from_config(self.noise_scheduler.config)


class FlowMatchingObjective:
    """Rectified flow / conditional flow matching (Liu et al., arXiv:2209.03003; Lipman et al., arXiv:2210.02747).

    x_t = (1 - t) x_0 + t ε runs in a straight line from the data (t = 0) to noise (t = 1); the denoiser predicts
    the velocity dx_t/dt = ε - x_0 and is told the timestep t · num_train_timesteps, as diffusers' flow-matching
    schedulers call it. Random draws come from torch's global generator: ε first, then t.
    """

    def __init__(self, config: DiffusionConfig):
        self.num_train_timesteps = config.num_train_timesteps
        self.timestep_sampling = config.timestep_sampling
        self.logit_mean, self.logit_std = config.logit_mean, config.logit_std

    def sample_t(self, batch_size: int, device: torch.device) -> torch.Tensor:
        """t in (0, 1), one per sample: (B,)."""
        if self.timestep_sampling == "uniform":
            return torch.rand(batch_size, device=device)
        return torch.sigmoid(torch.randn(batch_size, device=device) * self.logit_std + self.logit_mean)

    def noise(self, x0: torch.Tensor) -> NoisedBatch:
        noise = torch.randn_like(x0)
        t = self.sample_t(x0.shape[0], x0.device)
        t_ = t.view(-1, *([1] * (x0.ndim - 1))).to(x0.dtype)
        sample = (1 - t_) * x0 + t_ * noise
        return NoisedBatch(sample, t * self.num_train_timesteps, noise - x0, None)

    def loss(self, model_output: torch.Tensor, noised: NoisedBatch) -> torch.Tensor:
        return F.mse_loss(model_output.float(), noised.target.float())

    def sampler(self) -> FlowMatchEulerDiscreteScheduler:
        """Euler steps along the learned velocity field, from t = 1 to 0."""
        return FlowMatchEulerDiscreteScheduler(num_train_timesteps=self.num_train_timesteps, shift=1.0)


def make_objective(
    config: DiffusionConfig, clip_sample: bool = True
) -> DiffusionObjective | FlowMatchingObjective:
    """The objective `config.objective` names. `clip_sample` (ddpm only): whether samplers clip predicted x_0 to
    [-1, 1] (pixels: yes; latents: no)."""
    if config.objective == "flow_matching":
        return FlowMatchingObjective(config)
    return DiffusionObjective(config, clip_sample=clip_sample)
