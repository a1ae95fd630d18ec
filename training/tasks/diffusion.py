"""The diffusion training objective shared by every denoiser latentzoo trains (pixel DDPM, latent text-to-image).

A diffusion task's config subclasses :class:`DiffusionConfig` (the objective's fields, declared once) and its task
holds one :class:`DiffusionObjective`, which owns everything between clean data and a scalar loss:

    noised = objective.noise(x_0)                       # draws t and ε; x_t, t, the target and its weight
    loss = objective.loss(denoiser(noised.sample, noised.timesteps, ...), noised)
    pipeline = Pipeline(..., scheduler=objective.sampler())

The task keeps only what is its own: what x_0 is (pixels or VAE latents) and how the denoiser is conditioned.
A new objective (flow matching, say) is another class with the same three methods.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, DPMSolverMultistepScheduler
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
    """The diffusion objective's hyperparameters: the base of every diffusion task's ``model:`` section."""

    noise_schedule: NoiseSchedule = "cosine"
    num_train_timesteps: PositiveInt = 1000
    prediction_type: PredictionType = "v_prediction"
    # Min-SNR-gamma loss weighting (Hang et al., arXiv:2303.09556): faster convergence; null for uniform weights.
    snr_gamma: PositiveFloat | None = 5.0
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
