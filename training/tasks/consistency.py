"""Few-step generation: latent consistency distillation (LCD) of a trained diffusion model.

Luo et al., "Latent Consistency Models" (arXiv:2310.04378), after Song et al.'s consistency distillation
(arXiv:2303.01469). A student UNet f(x_t, t, ·) learns to map every point of the teacher's guided probability-flow
ODE trajectory to the same clean sample, so a 1-4 step sampler (diffusers' ``LCMScheduler`` or
``FlowMatchLCMScheduler``) can jump along it. Per batch of clean samples x_0 (VAE latents for text to image, pixels
for the pixel DDPM):

    t, t' = t - T/N ≥ 0                                            a step of the teacher's ODE; guidance scale s
    x_t       = α_t x_0 + σ_t ε                                    (fresh noise)
    x_t'      = one DDIM step of the teacher from x_t to t', with the guided x_0 and ε  cond + (s - 1)(cond - uncond)
    loss      = d( f_student(x_t, t),  sg[f_target(x_t', t')] )     pseudo-Huber d

Two kinds of teacher (:class:`NoiseScheduleODE`, :class:`FlowODE`):

- noise schedule (``model.objective=ddpm``): α_t, σ_t from ᾱ_t; t is one of N solver timesteps (every T/N-th);
  f(x, t) = c_skip(t) x + c_out(t) x̂_0(x, t) with LCMScheduler's boundary scalings (f = x at t = 0), and the student
  is saved with that ``LCMScheduler``;
- flow matching (``model.objective=flow_matching``): α_t = 1 - t, σ_t = t on the straight path, t ~ U(0, 1] (the
  teacher was trained on continuous t); the DDIM step is its Euler step, f(x, t) = x̂_0 = x - t·v (f = x at t = 0 by
  construction), and the student is saved with a ``FlowMatchLCMScheduler`` (x̂_0, then re-noise to the next t).

The target network is an exponential moving average of the student (decay `target_decay`, updated before every
optimizer step), checkpointed with the run. The teacher is frozen; a `teacher_config` preset trains it first when its
folder holds no model (a stage). Two students:

- ``text2img_lcd`` (`ConsistencyDistillationTask`): the text-to-image UNet plus a guidance input
  (`time_cond_proj_dim`, zero-initialised so that it starts as the teacher), s ~ U[s_min, s_max] per sample, so one
  conditional call per step samples at any scale in that range. The VAE, text encoder and tokenizer are saved
  unchanged; ``pipe(prompt, num_inference_steps=4)`` samples as validation did.
- ``ddpm_lcd`` (`PixelConsistencyDistillationTask`): the class-conditional pixel UNet, a ``UNet2DModel`` with no
  input for a scale, distilled at one fixed scale s (`guidance_scale`) into a copy of the teacher; its pipeline
  records that scale (`distilled_guidance_scale`) and makes one conditional call per step:
  ``pipe(class_labels=[3, 7], num_inference_steps=4)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from diffusers import FlowMatchLCMScheduler, LCMScheduler, UNet2DConditionModel, UNet2DModel

from ...models.checks import cycle_class_labels
from ...pipelines.pixel_diffusion import PixelDiffusionPipeline
from ...pipelines.samplers import is_flow_matching
from ...pipelines.text_to_image import LatentTextToImagePipeline
from ...pipelines.utils import guidance_scale_embedding
from ..config import NonNegativeFloat, PositiveFloat, PositiveInt, UnitInterval
from .base import Stage, TaskConfig, TrainingTask, load_built_on
from .text_to_image import LatentDataset, first_captions
from .text_tower import token_ids


@dataclass
class DistillationConfig(TaskConfig):
    """What both students share."""

    # The trained pipeline to distil (folder or Hub id), trained with either objective. When the folder holds no
    # model yet and `teacher_config` is set, `latentzoo train` first trains it from that preset (a stage:
    # `stages.teacher.max_train_steps=...` overrides it).
    teacher: str = ""
    teacher_config: str | None = None
    # N: one DDIM (Euler for flow matching) step of the teacher's ODE per loss spans 1/N of the path. LCM's 50.
    num_ddim_timesteps: PositiveInt = 50
    # Noise-schedule teachers: LCMScheduler's `timestep_scaling`: c_skip(t) = σ² / ((t·k)² + σ²) with σ = 0.5, so
    # f(x, t) is x̂_0 but near t=0.
    timestep_scaling: PositiveFloat = 10.0
    # Distance between student and target: pseudo-Huber sqrt(d² + c²) - c (c = huber_c), or mean squared error.
    loss_type: Literal["huber", "l2"] = "huber"
    huber_c: PositiveFloat = 0.001
    # The target network's EMA decay of the student (LCM's 0.95).
    target_decay: UnitInterval = 0.95
    # Steps of the validation grid, saved with the pipeline as its default.
    validation_num_inference_steps: PositiveInt = 4
    # The teacher's objective, read from its saved scheduler and recorded here (null: not read yet); a value given
    # that the teacher contradicts is refused.
    objective: Literal["ddpm", "flow_matching"] | None = None


@dataclass
class ConsistencyDistillationConfig(DistillationConfig):
    # A cross-attention LatentTextToImagePipeline.
    teacher: str = "outputs/text2img-mnist"
    teacher_config: str | None = "text2img-mnist"

    # Guidance scales s the student learns, drawn uniformly per sample (the teacher guided with cond + (s-1)(cond -
    # uncond)); a sampling call may then pick any s in this range.
    guidance_scale_min: NonNegativeFloat = 1.0
    guidance_scale_max: NonNegativeFloat = 5.0
    # Width of the guidance embedding the student's time embedding takes (`time_cond_proj_dim`).
    guidance_embedding_dim: PositiveInt = 256

    # Validation grid and the defaults saved with the pipeline (a call without steps or guidance uses them). The
    # guidance scale must lie in [guidance_scale_min, guidance_scale_max]. null prompts: the first 10
    # distinct captions of the data.
    validation_prompts: tuple[str, ...] | None = None
    validation_guidance_scale: NonNegativeFloat = 3.0

    def __post_init__(self):
        super().__post_init__()
        if self.guidance_scale_min > self.guidance_scale_max:
            raise ValueError(
                f"`model.guidance_scale_min`={self.guidance_scale_min} is above `model.guidance_scale_max`="
                f"{self.guidance_scale_max}: give a range low to high (e.g. 1.0 and 5.0)."
            )
        if not self.guidance_scale_min <= self.validation_guidance_scale <= self.guidance_scale_max:
            raise ValueError(
                f"`model.validation_guidance_scale`={self.validation_guidance_scale} lies outside the trained range "
                f"[{self.guidance_scale_min}, {self.guidance_scale_max}]: choose one inside it."
            )


@dataclass
class PixelConsistencyDistillationConfig(DistillationConfig):
    # A class-conditional PixelDiffusionPipeline.
    teacher: str = "outputs/ddpm-mnist-classes"
    teacher_config: str | None = "ddpm-mnist-classes"
    # The one guidance scale distilled into the student (a UNet2DModel takes no scale): the teacher's guided ODE at s.
    guidance_scale: PositiveFloat = 3.0


# What an LCMScheduler takes over from the teacher's scheduler: its noise schedule and what its UNet predicts.
_SCHEDULE_KEYS = (
    "num_train_timesteps",
    "beta_start",
    "beta_end",
    "beta_schedule",
    "trained_betas",
    "prediction_type",
    "rescale_betas_zero_snr",
)


class NoiseScheduleODE:
    """The probability-flow ODE of a noise-schedule teacher: x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε on its discrete
    timesteps, the UNet's ε, v or x_0 prediction, and LCMScheduler's boundary scalings. The LCMScheduler it builds
    (the student's sampler) fixes the N solver timesteps and the scalings: training reads them from it, so the two
    cannot disagree."""

    def __init__(self, teacher_scheduler, num_steps: int, timestep_scaling: float):
        schedule = {
            key: teacher_scheduler.config[key] for key in _SCHEDULE_KEYS if key in teacher_scheduler.config
        }
        self.scheduler = LCMScheduler(
            **schedule,
            original_inference_steps=num_steps,
            timestep_scaling=timestep_scaling,
            clip_sample=False,
        )
        num_train_timesteps = self.scheduler.config.num_train_timesteps
        if num_train_timesteps % num_steps:
            raise ValueError(
                f"`model.num_ddim_timesteps`={num_steps} must divide the teacher's {num_train_timesteps} training "
                "timesteps (e.g. 50)."
            )
        self.scheduler.set_timesteps(num_steps)
        self.solver_timesteps = self.scheduler.timesteps.flip(0).long()  # ascending: T/N - 1, ..., T - 1
        self.skip = num_train_timesteps // num_steps
        self.alphas_cumprod = self.scheduler.alphas_cumprod.float()
        self.prediction_type = self.scheduler.config.prediction_type

    def to(self, device) -> None:
        self.alphas_cumprod = self.alphas_cumprod.to(device)
        self.solver_timesteps = self.solver_timesteps.to(device)

    def draw(self, batch_size: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """(t, t') per sample, as the UNet takes them: t one of the N solver timesteps, t' = t - T/N (≥ 0)."""
        start = self.solver_timesteps[
            torch.randint(0, len(self.solver_timesteps), (batch_size,), device=device)
        ]
        return start, (start - self.skip).clamp(min=0)

    def alpha_sigma(self, timesteps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        alphas = self.alphas_cumprod[timesteps].view(-1, 1, 1, 1)
        return alphas.sqrt(), (1 - alphas).sqrt()

    def x0_and_noise(self, output, sample, timesteps) -> tuple[torch.Tensor, torch.Tensor]:
        """(x̂_0, ε̂) from a UNet's output at (sample, t), whatever its prediction type."""
        alpha, sigma = self.alpha_sigma(timesteps)
        if self.prediction_type == "epsilon":
            return (sample - sigma * output) / alpha, output
        if self.prediction_type == "v_prediction":
            return alpha * sample - sigma * output, alpha * output + sigma * sample
        if self.prediction_type == "sample":
            return output, (sample - alpha * output) / sigma
        raise ValueError(f"Unsupported prediction_type {self.prediction_type!r} of the teacher's scheduler.")

    def consistency(self, output, sample, timesteps) -> torch.Tensor:
        """f(x, t) = c_skip(t) x + c_out(t) x̂_0(x, t): the LCMScheduler's denoised sample."""
        c_skip, c_out = self.scheduler.get_scalings_for_boundary_condition_discrete(timesteps.float())
        x0, _ = self.x0_and_noise(output, sample, timesteps)
        return c_skip.view(-1, 1, 1, 1) * sample + c_out.view(-1, 1, 1, 1) * x0


class FlowODE:
    """The ODE of a flow-matching teacher: x_t = (1 - t) x_0 + t ε with t = timestep / T, the UNet's velocity
    v = ε - x_0. On this straight path DDIM's step is Euler's, and f(x, t) = x̂_0 = x - t·v already equals x at t = 0:
    the student is saved with a FlowMatchLCMScheduler, whose step computes that x̂_0 and re-noises it to the next t.
    Start times are drawn from U(0, 1], as the teacher was trained on continuous t and the sampler's (1, 1 - 1/n,
    ..., 1/n for n steps: `latentzoo.pipelines.utils.set_timesteps`) lie between any fixed grid's."""

    def __init__(self, teacher_scheduler, num_steps: int):
        self.num_train_timesteps = teacher_scheduler.config.num_train_timesteps
        self.scheduler = FlowMatchLCMScheduler(
            num_train_timesteps=self.num_train_timesteps, shift=teacher_scheduler.config.get("shift", 1.0)
        )
        self.step = 1.0 / num_steps

    def to(self, device) -> None:
        pass

    def draw(self, batch_size: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """(t, t') per sample in the UNet's units (t · T): t ~ U(0, 1], t' = t - 1/N (≥ 0)."""
        start = 1 - torch.rand(batch_size, device=device)
        end = (start - self.step).clamp(min=0)
        return start * self.num_train_timesteps, end * self.num_train_timesteps

    def alpha_sigma(self, timesteps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = (timesteps / self.num_train_timesteps).view(-1, 1, 1, 1)
        return 1 - t, t

    def x0_and_noise(self, output, sample, timesteps) -> tuple[torch.Tensor, torch.Tensor]:
        """(x̂_0, ε̂) = (x - t·v, x + (1 - t)·v)."""
        t = (timesteps / self.num_train_timesteps).view(-1, 1, 1, 1)
        return sample - t * output, sample + (1 - t) * output

    def consistency(self, output, sample, timesteps) -> torch.Tensor:
        return self.x0_and_noise(output, sample, timesteps)[0]


def teacher_ode(teacher_scheduler, config: DistillationConfig) -> NoiseScheduleODE | FlowODE:
    """The ODE the teacher saved with `teacher_scheduler` integrates; records its objective in `config.objective`."""
    objective = "flow_matching" if is_flow_matching(teacher_scheduler.config) else "ddpm"
    if config.objective not in (None, objective):
        raise ValueError(
            f"`model.objective`={config.objective} but the teacher was trained with {objective} (its saved "
            f"scheduler says so): leave `model.objective` out, it is read from the teacher."
        )
    config.objective = objective
    if objective == "flow_matching":
        return FlowODE(teacher_scheduler, config.num_ddim_timesteps)
    return NoiseScheduleODE(teacher_scheduler, config.num_ddim_timesteps, config.timestep_scaling)


class _Target(torch.nn.Module):
    """The target network and the optimizer step it was last updated before, checkpointed together."""

    def __init__(self, unet: torch.nn.Module):
        super().__init__()
        self.unet = unet
        self.register_buffer("updated_at_step", torch.tensor(-1, dtype=torch.int64))


def _load_teacher_pipeline(pipeline_class, path: str, what: str, preset: str):
    """The teacher pipeline saved in `path`, or a ValueError naming the preset that trains one."""
    return load_built_on(
        pipeline_class,
        path,
        "teacher",
        f"trained {what} pipeline",
        f"Train one first (`latentzoo train {preset}`), or set `model.teacher_config` to the preset that trains it.",
    )


def _check_teacher(teacher, path: str) -> None:
    """Refuse a teacher this distillation cannot use, naming the fix."""
    if getattr(teacher, "guidance_is_embedded", False) or getattr(teacher, "guidance_is_distilled", False):
        raise ValueError(
            f"The teacher at {path} is already a few-step (guidance-distilled) model; distil the model it came from "
            "(its `model.teacher`)."
        )


class _ConsistencyDistillationTask(TrainingTask):
    """The distillation both students share (module docstring): the teacher's ODE (its steps, consistency function
    and the student's sampler), the EMA target, one guided DDIM step of the teacher, the consistency loss. A subclass
    gives the clean samples and their condition, the guidance scales, and how its UNets are called."""

    @classmethod
    def stages(cls, config: DistillationConfig) -> list[Stage]:
        """The teacher, trained from `teacher_config` into `teacher` when that folder holds no model."""
        if config.teacher_config is None:
            return []
        return [Stage("teacher", config.teacher_config, config.teacher)]

    def _set_up_distillation(
        self, teacher_scheduler, teacher_unet: torch.nn.Module, student: torch.nn.Module
    ):
        """`student` starts as a copy of `teacher_unet`; the target starts as a copy of the student. The teacher's
        ODE (`teacher_ode`) gives the steps, the consistency function and the sampler the student is saved with."""
        self.ode = teacher_ode(teacher_scheduler, self.config)
        self.scheduler = self.ode.scheduler
        self.teacher_unet = teacher_unet.requires_grad_(False).eval()
        self.student = student
        self.target = _Target(type(student).from_config(student.config))
        self.target.unet.load_state_dict(student.state_dict())
        self.target.requires_grad_(False).eval()

    def to(self, device):
        for module in (self.teacher_unet, self.target):
            module.to(device)
        self.ode.to(device)

    def trainable_modules(self):
        return {"unet": self.student}

    def checkpoint_state(self):
        return {"target": self.target}

    # ------------------------------------------------------------------ what a student gives
    def clean_and_condition(self, batch) -> tuple[torch.Tensor, object]:
        """x_0 (B, C, H, W) and the condition both UNets take."""
        raise NotImplementedError

    def guidance_scales(self, batch_size: int, device) -> torch.Tensor:
        """(B,) guidance scales s of the teacher's steps."""
        raise NotImplementedError

    def teacher_outputs(self, noisy, timesteps, condition) -> tuple[torch.Tensor, torch.Tensor]:
        """The teacher's conditional and unconditional outputs at (x_t, t), from one batched call."""
        raise NotImplementedError

    def student_output(self, unet, sample, timesteps, condition, scales) -> torch.Tensor:
        """A student (or target) UNet's output at (x, t)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ the distillation
    @torch.no_grad()
    def _update_target(self, step: int) -> None:
        """θ⁻ ← μ θ⁻ + (1 - μ) θ, once per optimizer step (the first micro-batch of step `step` does it)."""
        if int(self.target.updated_at_step) == step:
            return
        if step > 0:  # at step 0 the target is the student's copy
            for target, online in zip(self.target.unet.parameters(), self.student.parameters(), strict=True):
                target.lerp_(online.detach().to(target.dtype), 1 - self.config.target_decay)
        self.target.updated_at_step.fill_(step)

    @torch.no_grad()
    def teacher_step(self, noisy, start, end, condition, scales) -> torch.Tensor:
        """One DDIM step (η = 0) of the teacher from x_t at `start` to `end`, guided with scales s (B,): the guided
        x̂_0 and ε̂ are cond + (s - 1)(cond - uncond), and x_t' = sqrt(ᾱ_t') x̂_0 + sqrt(1 - ᾱ_t') ε̂."""
        conditional_output, unconditional_output = self.teacher_outputs(noisy, start, condition)
        conditional_x0, conditional_eps = self.ode.x0_and_noise(conditional_output, noisy, start)
        unconditional_x0, unconditional_eps = self.ode.x0_and_noise(unconditional_output, noisy, start)
        w = (scales - 1).view(-1, 1, 1, 1)
        x0 = conditional_x0 + w * (conditional_x0 - unconditional_x0)
        eps = conditional_eps + w * (conditional_eps - unconditional_eps)
        alpha, sigma = self.ode.alpha_sigma(end)
        return alpha * x0 + sigma * eps

    def training_step(self, batch, modules, step):
        self._update_target(step)
        clean, condition = self.clean_and_condition(batch)
        batch_size, device = clean.shape[0], clean.device

        noise = torch.randn_like(clean)
        start, end = self.ode.draw(batch_size, device)
        scales = self.guidance_scales(batch_size, device)

        alpha, sigma = self.ode.alpha_sigma(start)
        noisy = alpha * clean + sigma * noise  # q(x_t | x_0)

        with torch.no_grad():
            previous = self.teacher_step(noisy, start, end, condition, scales)
            target_output = self.student_output(self.target.unet, previous, end, condition, scales)
            target = self.ode.consistency(target_output, previous, end)

        output = self.student_output(modules["unet"], noisy, start, condition, scales)
        prediction = self.ode.consistency(output, noisy, start)
        if self.config.loss_type == "l2":
            loss = torch.nn.functional.mse_loss(prediction.float(), target.float())
        else:
            c = self.config.huber_c
            loss = (torch.sqrt((prediction.float() - target.float()) ** 2 + c**2) - c).mean()
        return {"loss": loss}


class ConsistencyDistillationTask(_ConsistencyDistillationTask):
    """``text2img_lcd``: the text-to-image student, guidance scale an input (module docstring)."""

    name = "text2img_lcd"
    Config = ConsistencyDistillationConfig

    @classmethod
    def requires(cls, config: ConsistencyDistillationConfig) -> tuple[str, ...]:
        return ("captions",)

    def __init__(self, config: ConsistencyDistillationConfig, dataset):
        super().__init__(config, dataset)
        teacher = self._load_teacher(config.teacher)
        self.vae, self.text_encoder, self.tokenizer = teacher.vae, teacher.text_encoder, teacher.tokenizer
        for module in (self.vae, self.text_encoder):
            module.requires_grad_(False).eval()
        if dataset[0]["pixel_values"].shape[0] != self.vae.config.in_channels:
            raise ValueError(
                f"The data has {dataset[0]['pixel_values'].shape[0]} channel(s), the teacher's VAE takes "
                f"{self.vae.config.in_channels}: distil on the data the teacher was trained on."
            )
        # The student: the teacher's UNet plus a guidance input whose projection starts at zero (student = teacher).
        student = UNet2DConditionModel.from_config(
            teacher.unet.config, time_cond_proj_dim=config.guidance_embedding_dim
        )
        missing, unexpected = student.load_state_dict(teacher.unet.state_dict(), strict=False)
        assert not unexpected and all("cond_proj" in name for name in missing), (missing, unexpected)
        torch.nn.init.zeros_(student.time_embedding.cond_proj.weight)
        self._set_up_distillation(teacher.scheduler, teacher.unet, student)

        self.unconditional_ids = self.tokenize([""])
        self._unconditional: torch.Tensor | None = None  # its hidden states: the text encoder is frozen
        if config.validation_prompts is None:
            config.validation_prompts = tuple(first_captions(dataset, 10))

    @staticmethod
    def _load_teacher(path: str) -> LatentTextToImagePipeline:
        teacher = _load_teacher_pipeline(LatentTextToImagePipeline, path, "text-to-image", "text2img-mnist")
        if teacher.prompt_projection is not None:
            raise ValueError(
                f"The teacher at {path} is conditioned by concatenation; consistency distillation here needs a "
                "cross-attention text-to-image model (model.conditioning=cross_attention)."
            )
        _check_teacher(teacher, path)
        return teacher

    def train_dataset(self):
        return LatentDataset(self.dataset, self.vae)

    def to(self, device):
        super().to(device)
        for module in (self.vae, self.text_encoder):
            module.to(device)

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        return token_ids(self.tokenizer, texts)

    def clean_and_condition(self, batch):
        mean, std = batch["latent_mean"], batch["latent_std"]
        latents = (mean + std * torch.randn_like(mean)) * self.vae.config.scaling_factor
        with torch.no_grad():
            text = self.text_encoder(self.tokenize(batch["text"]).to(latents.device))[0]
        return latents, text

    def guidance_scales(self, batch_size, device):
        return torch.empty(batch_size, device=device).uniform_(
            self.config.guidance_scale_min, self.config.guidance_scale_max
        )

    def teacher_outputs(self, noisy, timesteps, text):
        if self._unconditional is None or self._unconditional.device != noisy.device:
            self._unconditional = self.text_encoder(self.unconditional_ids.to(noisy.device))[0]
        unconditional = self._unconditional.expand_as(text)
        return self.teacher_unet(
            torch.cat([noisy, noisy]),
            torch.cat([timesteps, timesteps]),
            encoder_hidden_states=torch.cat([text, unconditional]),
        ).sample.chunk(2)

    def student_output(self, unet, sample, timesteps, text, scales):
        embedding = guidance_scale_embedding(scales, self.config.guidance_embedding_dim).to(sample.dtype)
        return unet(sample, timesteps, encoder_hidden_states=text, timestep_cond=embedding).sample

    def make_pipeline(self, modules):
        return LatentTextToImagePipeline(
            vae=self.vae,
            text_encoder=self.text_encoder,
            tokenizer=self.tokenizer,
            unet=modules["unet"],
            scheduler=type(self.scheduler).from_config(self.scheduler.config),
            default_guidance_scale=self.config.validation_guidance_scale,
            default_num_inference_steps=self.config.validation_num_inference_steps,
        )

    def validation_images(self, pipeline, num_images, generator):
        prompts = list(self.config.validation_prompts)
        per_prompt = max(1, num_images // len(prompts))
        return pipeline(
            prompts, num_images_per_prompt=per_prompt, generator=generator, output_type="pt"
        ).images


class PixelConsistencyDistillationTask(_ConsistencyDistillationTask):
    """``ddpm_lcd``: the class-conditional pixel student, distilled at one guidance scale (module docstring)."""

    name = "ddpm_lcd"
    Config = PixelConsistencyDistillationConfig

    def __init__(self, config: PixelConsistencyDistillationConfig, dataset):
        super().__init__(config, dataset)
        teacher = self._load_teacher(config.teacher)
        self.num_classes = teacher.num_classes
        unet_config = teacher.unet.config
        expected = (unet_config.in_channels, unet_config.sample_size, unet_config.sample_size)
        if tuple(dataset[0]["pixel_values"].shape) != expected:
            raise ValueError(
                f"The data's images are {tuple(dataset[0]['pixel_values'].shape)}, the teacher's UNet takes "
                f"{expected}: distil on the data the teacher was trained on."
            )
        student = UNet2DModel.from_config(unet_config)
        student.load_state_dict(teacher.unet.state_dict())
        self._set_up_distillation(teacher.scheduler, teacher.unet, student)

    @staticmethod
    def _load_teacher(path: str) -> PixelDiffusionPipeline:
        teacher = _load_teacher_pipeline(
            PixelDiffusionPipeline, path, "pixel diffusion", "ddpm-mnist-classes"
        )
        if teacher.num_classes is None:
            raise ValueError(
                f"The teacher at {path} is unconditional; `ddpm_lcd` distils classifier-free guidance, which needs a "
                "class-conditional teacher (`latentzoo train ddpm-mnist-classes`)."
            )
        _check_teacher(teacher, path)
        return teacher

    def clean_and_condition(self, batch):
        pixel_values = batch["pixel_values"]  # x_0: (B, C, H, W) in [-1, 1]
        return pixel_values, batch["class_labels"].to(pixel_values.device)

    def guidance_scales(self, batch_size, device):
        return torch.full((batch_size,), self.config.guidance_scale, device=device)

    def teacher_outputs(self, noisy, timesteps, class_labels):
        null_labels = torch.full_like(class_labels, self.num_classes)  # the null class: index num_classes
        return self.teacher_unet(
            torch.cat([noisy, noisy]),
            torch.cat([timesteps, timesteps]),
            class_labels=torch.cat([class_labels, null_labels]),
        ).sample.chunk(2)

    def student_output(self, unet, sample, timesteps, class_labels, scales):
        return unet(sample, timesteps, class_labels=class_labels).sample

    def make_pipeline(self, modules):
        return PixelDiffusionPipeline(
            unet=modules["unet"],
            scheduler=type(self.scheduler).from_config(self.scheduler.config),
            default_guidance_scale=self.config.guidance_scale,
            default_num_inference_steps=self.config.validation_num_inference_steps,
            distilled_guidance_scale=self.config.guidance_scale,
        )

    def validation_images(self, pipeline, num_images, generator):
        pipeline.set_progress_bar_config(disable=True)
        class_labels = cycle_class_labels(num_images, self.num_classes)
        return pipeline(class_labels=class_labels, generator=generator, output_type="pt").images
