"""The diffusion training objective shared by every denoiser latentzoo trains (pixel DDPM, latent text-to-image).

One noise scheduler per config (``make_noise_scheduler``) and one loss (``diffusion_loss``): ε- or v-prediction
target, optionally weighted by min-SNR-γ. A task noises its inputs with ``noise_scheduler.add_noise``, runs its
denoiser and hands the output here, so both tasks train the same objective by construction.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from diffusers.training_utils import compute_snr

# Config names → diffusers' `beta_schedule` names. "cosine" is the schedule of Nichol & Dhariwal
# (arXiv:2102.09672, eq. (17)): ᾱ_t = f(t) / f(0), f(t) = cos²((t/T + s) / (1 + s) · π/2), betas capped at 0.999.
NOISE_SCHEDULES = {"linear": "linear", "cosine": "squaredcos_cap_v2"}

NoiseSchedule = Literal["linear", "cosine"]
PredictionType = Literal["epsilon", "v_prediction"]


def make_noise_scheduler(config, clip_sample: bool = True) -> DDPMScheduler:
    """The training-time ``DDPMScheduler`` of a task config with ``noise_schedule`` ("linear" | "cosine"),
    ``num_train_timesteps`` and ``prediction_type``; samplers are built ``from_config`` of it.

    `clip_sample` clips predicted x_0 to [-1, 1] in DDPM/DDIM sampling: right for pixels, wrong for latents."""
    if config.noise_schedule not in NOISE_SCHEDULES:
        raise ValueError(
            f"`noise_schedule` must be one of {sorted(NOISE_SCHEDULES)}, got {config.noise_schedule!r}."
        )
    return DDPMScheduler(
        num_train_timesteps=config.num_train_timesteps,
        beta_schedule=NOISE_SCHEDULES[config.noise_schedule],
        prediction_type=config.prediction_type,
        clip_sample=clip_sample,
    )


def sample_timesteps(noise_scheduler: DDPMScheduler, batch_size: int, device: torch.device) -> torch.Tensor:
    """t ~ U{0, ..., T - 1}, one per sample, from torch's global generator (seeded and checkpointed by the Trainer)."""
    return torch.randint(0, noise_scheduler.config.num_train_timesteps, (batch_size,), device=device)


def diffusion_loss(
    noise_scheduler: DDPMScheduler,
    model_output: torch.Tensor,
    latents: torch.Tensor,
    noise: torch.Tensor,
    timesteps: torch.Tensor,
    prediction_type: str,
    snr_gamma: float | None = None,
) -> torch.Tensor:
    """Mean squared error of the denoiser's prediction, optionally min-SNR-γ weighted; a scalar.

    Args:
        noise_scheduler: the training scheduler that noised `latents` (its ᾱ_t give the SNR and the v target).
        model_output: (B, C, H, W) the denoiser's prediction for x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε.
        latents: (B, C, H, W) the clean x_0 (pixels or VAE latents).
        noise: (B, C, H, W) the ε that noised them.
        timesteps: (B,) int64 t.
        prediction_type: "epsilon" (target ε, eq. (14) of arXiv:2006.11239) or "v_prediction"
            (target v = sqrt(ᾱ_t) ε - sqrt(1 - ᾱ_t) x_0, sec. 4 of arXiv:2202.00512).
        snr_gamma: γ of min-SNR-γ weighting (Hang et al., arXiv:2303.09556), or None for uniform weights.
    """
    if prediction_type == "epsilon":
        target = noise
    elif prediction_type == "v_prediction":
        target = noise_scheduler.get_velocity(latents, noise, timesteps)
    else:
        raise ValueError(f"`prediction_type` must be 'epsilon' or 'v_prediction', got {prediction_type!r}.")
    loss = F.mse_loss(model_output.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))  # (B,)
    if snr_gamma is not None:
        snr = compute_snr(noise_scheduler, timesteps)  # ᾱ_t / (1 - ᾱ_t), (B,)
        weight = snr.clamp(max=snr_gamma)
        # min(SNR, γ) / SNR for ε-prediction; / (SNR + 1) for v-prediction (whose loss is SNR+1 times ε's).
        weight = weight / (snr + 1) if prediction_type == "v_prediction" else weight / snr
        loss = loss * weight
    return loss.mean()
