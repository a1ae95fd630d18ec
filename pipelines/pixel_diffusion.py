"""Pixel-space denoising diffusion (Ho et al., arXiv:2006.11239), unconditional or class-conditional with
classifier-free guidance (Ho & Salimans, arXiv:2207.12598).

What diffusers' `DDPMPipeline` does, plus class labels, guidance, user-given noise, a list of generators and every
output type, with the argument checks shared by latentzoo's pipelines. Any diffusers scheduler samples it:
`pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)`. An unconditional one computes what
`DDPMPipeline` computes for the same components, and is then saved under that class's name, so that diffusers alone
loads the folder (`diffusers_class_name`).
"""

import inspect

import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput, UNet2DModel
from diffusers.image_processor import VaeImageProcessor
from diffusers.schedulers import KarrasDiffusionSchedulers

from latentzoo.models.checks import ClassLabels, check_class_labels, check_number
from latentzoo.pipelines.loading import SavedAsDiffusersPipeline
from latentzoo.pipelines.utils import (
    SavedSamplingDefaults,
    apply_classifier_free_guidance,
    check_eta,
    check_generator,
    check_guidance_interval,
    check_guidance_scale,
    check_num_inference_steps,
    check_output_type,
    check_positive_int,
    default_sample_size,
    guidance_enabled,
    init_noise_sigma,
    postprocess_images,
    prepare_extra_step_kwargs,
    prepare_noise,
    scale_model_input,
    set_timesteps,
)


class PixelDiffusionPipeline(SavedSamplingDefaults, SavedAsDiffusersPipeline, DiffusionPipeline):
    r"""
    Image generation with a diffusion model on pixels.

    Args:
        unet ([`UNet2DModel`]):
            Predicts the noise (or v, or x_0: whatever `scheduler.config.prediction_type` says) of noisy images
            (B, C, H, W) in [-1, 1]. A class-conditional UNet has `num_class_embeds = num_classes + 1`: the
            last embedding, index `num_classes`, is the null class ("no label"), learned by label dropout and
            used as the unconditional branch of classifier-free guidance.
        scheduler ([`SchedulerMixin`]):
            Any diffusers scheduler, e.g. `DDPMScheduler` (1,000 ancestral steps), `DDIMScheduler`,
            `DPMSolverMultistepScheduler` or `EulerDiscreteScheduler` built `from_config` of the trained one.
        default_guidance_scale (`float`, *optional*):
            The `guidance_scale` of a call with `class_labels` and no `guidance_scale`: the value the model was
            validated with, saved in model_index.json. None (a folder saved without it): 1.0.
        default_num_inference_steps (`int`, *optional*):
            The `num_inference_steps` of a call without them, saved like `default_guidance_scale`. None: 50.
        distilled_guidance_scale (`float`, *optional*):
            Set for a few-step UNet distilled at this guidance scale (task `ddpm_lcd`): its conditional output is
            already the guided one, so each step makes one conditional call, and a call may not ask for another
            scale. None (every other model): classifier-free guidance as usual.
    """

    model_cpu_offload_seq = "unet"

    # A call's values when neither it nor the saved config (folders saved before these keys existed) gives any.
    fallback_guidance_scale = 1.0

    def __init__(
        self,
        unet: UNet2DModel,
        scheduler: KarrasDiffusionSchedulers,
        default_guidance_scale: float | None = None,
        default_num_inference_steps: int | None = None,
        distilled_guidance_scale: float | None = None,
    ):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)
        # Not modules: saved in model_index.json and given back to __init__ by `from_pretrained`.
        self.register_sampling_defaults(
            default_guidance_scale, default_num_inference_steps, guidance_example=2.0
        )
        if distilled_guidance_scale is not None:
            distilled_guidance_scale = check_number(
                distilled_guidance_scale, "distilled_guidance_scale", low=0, example=3.0
            )
            if unet.config.num_class_embeds is None:
                raise ValueError(
                    "`distilled_guidance_scale` is for a class-conditional UNet distilled with guidance; this UNet "
                    "is unconditional: leave it out."
                )
        self.register_to_config(distilled_guidance_scale=distilled_guidance_scale)
        self.image_processor = VaeImageProcessor(vae_scale_factor=1, do_normalize=True)

    @property
    def num_classes(self) -> int | None:
        """Number of real classes `class_labels` may name, or None for an unconditional UNet. The null class (the
        UNet's last class embedding, index `num_classes`) is not one of them: it is the guidance's "no label"."""
        num_class_embeds = self.unet.config.num_class_embeds
        return None if num_class_embeds is None else num_class_embeds - 1

    @property
    def guidance_scale(self) -> float:
        return self._guidance_scale

    @property
    def default_guidance_scale(self) -> float:
        """The scale of a call that gives none: a distilled model's own, else the saved one (see
        `SavedSamplingDefaults`)."""
        distilled = self.config.get("distilled_guidance_scale")
        return distilled if distilled is not None else super().default_guidance_scale

    @property
    def guidance_is_distilled(self) -> bool:
        """Whether the UNet was distilled at one guidance scale (`config.distilled_guidance_scale`): one conditional
        call per step gives the guided prediction."""
        return self.config.get("distilled_guidance_scale") is not None

    @property
    def do_classifier_free_guidance(self) -> bool:
        return self._guidance_scale > 1 and not self.guidance_is_distilled

    @property
    def diffusers_class_name(self) -> str | None:
        """`DDPMPipeline` where diffusers' DDPMPipeline computes what this one computes with these components, named
        in the saved model_index.json so that diffusers alone loads the folder: an unconditional UNet, and a scheduler
        that starts from unit-variance noise (DDPMPipeline does not scale x_T, nor the UNet's input, which every
        scheduler with `init_noise_sigma` 1 leaves as it is) and whose `step` takes the `generator` DDPMPipeline passes
        it. None (the folder names this class) otherwise."""
        if self.num_classes is not None or init_noise_sigma(self.scheduler) != 1:
            return None
        if "generator" not in inspect.signature(self.scheduler.step).parameters:
            return None
        return "DDPMPipeline"

    def check_inputs(
        self, batch_size, class_labels, guidance_scale, num_inference_steps, output_type, eta=0.0
    ):
        """Raise a `ValueError`/`TypeError` naming the argument and the fix, before any work is done."""
        check_num_inference_steps(num_inference_steps, self.scheduler.config.num_train_timesteps)
        check_guidance_scale(guidance_scale)
        check_eta(eta)
        check_output_type(output_type)
        if batch_size is not None:
            check_positive_int(batch_size, "batch_size")
        if class_labels is None:
            if self.guidance_is_distilled:
                raise ValueError(
                    "This few-step UNet was distilled for class labels (at guidance scale "
                    f"{self.config.distilled_guidance_scale}): pass `class_labels`."
                )
            if guidance_scale > 1:
                raise ValueError(
                    f"`guidance_scale`={guidance_scale} guides towards `class_labels`, but none were given; pass "
                    "`class_labels` or `guidance_scale=1.0` for unconditional samples."
                )
            return
        if self.num_classes is None:
            raise ValueError(
                "This pipeline's UNet is unconditional (`unet.config.num_class_embeds` is None): pass `batch_size` "
                "instead of `class_labels`."
            )
        distilled = self.config.get("distilled_guidance_scale")
        if self.guidance_is_distilled and guidance_scale != distilled:
            raise ValueError(
                f"This few-step UNet was distilled at guidance scale {distilled}, which it cannot change: leave "
                f"`guidance_scale` out (or pass {distilled}); for another scale distil again "
                "(`latentzoo train ddpm-mnist-classes-fewstep model.guidance_scale=...`)."
            )
        self.prepare_class_labels(class_labels, batch_size, "cpu")  # checks the labels against num_classes

    def prepare_class_labels(
        self, class_labels: ClassLabels | None, batch_size: int | None, device: torch.device
    ) -> torch.Tensor | None:
        """(B,) int64 labels for the UNet: the given ones (checked; one int is the label of all `batch_size` images),
        or the null class for an unconditional batch of a class-conditional model, or None for an unconditional
        model."""
        if self.num_classes is None:
            return None
        if class_labels is None:
            null_class = self.num_classes  # index num_classes: the UNet's last class embedding
            return torch.full((batch_size or 1,), null_class, dtype=torch.long, device=device)
        labels = check_class_labels(
            class_labels,
            self.num_classes,
            batch_size,
            hint=f"index {self.num_classes} is the null class, for guidance only: for unconditional samples pass "
            "`batch_size` without `class_labels`",
        )
        return labels.to(device)

    def prepare_latents(
        self,
        batch_size: int,
        dtype: torch.dtype,
        device: torch.device,
        generator: torch.Generator | list[torch.Generator] | None,
        latents: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x_T: (B, in_channels, H, W) standard normal noise times the scheduler's `init_noise_sigma`."""
        height, width = default_sample_size(self.unet.config.sample_size)
        shape = (batch_size, self.unet.config.in_channels, height, width)
        return prepare_noise(shape, generator, device, dtype, latents, init_noise_sigma(self.scheduler))

    @torch.no_grad()
    def __call__(
        self,
        batch_size: int | None = None,
        class_labels: ClassLabels | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        eta: float = 0.0,
        guidance_start: float = 0.0,
        guidance_stop: float = 1.0,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> ImagePipelineOutput | tuple:
        r"""
        Generate images, unconditionally or of the given classes.

        Args:
            batch_size (`int`, *optional*):
                Number of images when `class_labels` is not given (default 1). A class-conditional model then
                samples its unconditional (null-class) distribution.
            class_labels (`int`, `list[int]` or `torch.Tensor`, *optional*):
                One image per label, each an int in [0, num_classes - 1]; one int with `batch_size` gives that
                class to every image. Floats are refused, not rounded.
            num_inference_steps (`int`, *optional*, defaults to `config.default_num_inference_steps`):
                Denoising steps, at most the scheduler's `num_train_timesteps`: 10-20 suffice with
                `DPMSolverMultistepScheduler`, DDPM's ancestral sampler wants all 1,000. Not given: the number the
                model was validated with (saved with it), or 50 for a folder saved without one.
            guidance_scale (`float`, *optional*, defaults to `config.default_guidance_scale`):
                Classifier-free guidance `uncond + s * (cond - uncond)` (arXiv:2207.12598, eq. (6)), the null class
                being "uncond"; a finite number >= 0. With `guidance_scale <= 1` the UNet runs on the conditional
                batch only. Not given: with `class_labels`, the scale the model was validated with (saved with
                it; 1.0 for a folder saved without one); without them 1.0 (unconditional samples). A few-step UNet
                distilled at one scale (`guidance_is_distilled`) takes that scale only, in one conditional call
                per step.
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*):
                Source of all randomness. A list gives one generator per image, so a batch reproduces the images
                generated one by one.
            latents (`torch.Tensor`, *optional*):
                Starting noise x_T (B, C, H, W), drawn from `generator` if not given.
            eta (`float`, *optional*, defaults to 0.0):
                DDIM's η (arXiv:2010.02502) in [0, 1]: 0 is deterministic, 1 DDPM-like; other schedulers ignore it.
            guidance_start, guidance_stop (`float`, *optional*, default to 0.0 and 1.0):
                Classifier-free guidance runs on the steps i with int(start·N) <= i < int(stop·N) of the N steps
                (the interval of diffusers' `ClassifierFreeGuidance(start=, stop=)` guider); the other steps run the
                conditional batch alone, at half the UNet cost. The default guides every step; a shorter interval
                is faster and changes the images (measured in README: "Sampling speed").
            output_type (`str`, *optional*, defaults to `"pil"`):
                `"pil"` (list of `PIL.Image`), `"np"` ((B, H, W, C) in [0, 1]), `"pt"` ((B, C, H, W) in [0, 1]) or
                `"latent"` (the raw samples (B, C, H, W) in about [-1, 1], not clamped).
            return_dict (`bool`, *optional*, defaults to `True`):
                Return an [`ImagePipelineOutput`] rather than a tuple `(images,)`.

        Returns:
            [`ImagePipelineOutput`] or `tuple`: the images, in the format `output_type` says.

        Example:
            >>> import torch
            >>> from diffusers import DPMSolverMultistepScheduler
            >>> from latentzoo.pipelines import PixelDiffusionPipeline

            >>> pipe = PixelDiffusionPipeline.from_pretrained("outputs/ddpm-mnist-classes")
            >>> # the guidance scale and steps it was validated with (pipe.config.default_guidance_scale, ...)
            >>> images = pipe(class_labels=[3, 7], generator=torch.Generator().manual_seed(0)).images
            >>> pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
            >>> images = pipe(class_labels=[3, 7], num_inference_steps=20, guidance_scale=2.0,
            ...               generator=torch.Generator().manual_seed(0)).images
        """
        # 0. Values not given: the saved ones the model was validated with (guidance only towards class labels)
        if num_inference_steps is None:
            num_inference_steps = self.default_num_inference_steps
        if guidance_scale is None:
            guidance_scale = (
                self.fallback_guidance_scale
                if class_labels is None and not self.guidance_is_distilled
                else self.default_guidance_scale
            )

        # 1. Check inputs
        self.check_inputs(batch_size, class_labels, guidance_scale, num_inference_steps, output_type, eta)
        check_guidance_interval(guidance_start, guidance_stop)
        self._guidance_scale = guidance_scale

        # 2. Define call parameters; class labels: (B,), or None for an unconditional UNet
        device = self._execution_device
        class_labels = self.prepare_class_labels(class_labels, batch_size, device)
        batch_size = len(class_labels) if class_labels is not None else batch_size or 1
        check_generator(generator, batch_size)

        # 3. With guidance, the null class first: (2B,) = [null] * B + labels
        if self.do_classifier_free_guidance:
            null_labels = torch.full_like(class_labels, self.num_classes)  # the null class: index num_classes
            class_labels = torch.cat([null_labels, class_labels])

        # 4. Prepare timesteps
        set_timesteps(self.scheduler, num_inference_steps, device)
        timesteps = self.scheduler.timesteps

        # 5. Prepare x_T: (B, C, H, W)
        latents = self.prepare_latents(batch_size, self.unet.dtype, device, generator, latents)
        extra_step_kwargs = prepare_extra_step_kwargs(self.scheduler, generator, eta)

        # 6. Denoising loop
        self._num_timesteps = len(timesteps)
        for i, t in enumerate(self.progress_bar(timesteps)):
            # (2B, C, H, W) with guidance: one UNet call for the null-class and conditional batches; steps outside
            # [guidance_start, guidance_stop) run the conditional batch alone
            guided = self.do_classifier_free_guidance and guidance_enabled(
                i, len(timesteps), guidance_start, guidance_stop
            )
            model_input = torch.cat([latents] * 2) if guided else latents
            model_input = scale_model_input(self.scheduler, model_input, t)
            labels = (
                None if class_labels is None else class_labels[-len(model_input) :]
            )  # conditional rows last
            model_output = self.unet(model_input, t, class_labels=labels, return_dict=False)[0]
            if guided:
                model_output = apply_classifier_free_guidance(model_output, self.guidance_scale)
            # x_t → x_{t-1}
            latents = self.scheduler.step(model_output, t, latents, **extra_step_kwargs, return_dict=False)[0]

        # 7. Post-process: (B, C, H, W) in [-1, 1] → output_type
        images = postprocess_images(latents, output_type, self.image_processor)

        self.maybe_free_model_hooks()

        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)
