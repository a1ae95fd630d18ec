"""Text-to-image latent diffusion (Rombach et al., arXiv:2112.10752): denoise in a VAE's latent space,
conditioned on a CLIP text encoder, then decode.

The default path (cross-attention only) computes exactly what diffusers' `StableDiffusionPipeline` computes
for the same components, without its safety checker, adapters, LoRA mixins and deprecation shims (with a
guidance-distilled UNet and an `LCMScheduler`: what `LatentConsistencyModelPipeline` computes), and is saved under that
class's name, so that diffusers alone loads the folder (`diffusers_class_name`). With the optional
`prompt_projection`, the denoiser is also conditioned by concatenation (see `latentzoo.models.conditioning`).
"""

from collections.abc import Callable

import torch
from diffusers import (
    AutoencoderKL,
    DiffusionPipeline,
    ImagePipelineOutput,
    LCMScheduler,
    UNet2DConditionModel,
)
from diffusers.image_processor import VaeImageProcessor
from diffusers.schedulers import KarrasDiffusionSchedulers
from diffusers.utils import logging
from transformers import CLIPTextModel, CLIPTokenizer

from latentzoo.models.conditioning import PromptProjection
from latentzoo.pipelines.loading import SavedAsDiffusersPipeline
from latentzoo.pipelines.utils import (
    SavedSamplingDefaults,
    apply_classifier_free_guidance,
    check_callback_tensor_inputs,
    check_eta,
    check_generator,
    check_guidance_interval,
    check_guidance_scale,
    check_image_size,
    check_num_inference_steps,
    check_output_type,
    check_positive_int,
    default_sample_size,
    guidance_enabled,
    guidance_scale_embedding,
    init_noise_sigma,
    postprocess_images,
    prepare_extra_step_kwargs,
    prepare_noise,
    scale_model_input,
    set_timesteps,
)

logger = logging.get_logger(__name__)

# What a Stable Diffusion-type diffusers pipeline needs in model_index.json for the components latentzoo's has not:
# no safety checker (and no warning about it), no image encoder.
NO_SAFETY_CHECKER = {
    "safety_checker": [None, None],
    "feature_extractor": [None, None],
    "image_encoder": [None, None],
    "requires_safety_checker": False,
}


def stable_diffusion_samples_with(scheduler) -> bool:
    """Whether diffusers' `StableDiffusionPipeline` samples with `scheduler` as `LatentTextToImagePipeline` does.

    It calls the scheduler's `scale_model_input` and `init_noise_sigma`, which flow-matching schedulers lack; and its
    constructor rewrites a scheduler config with `clip_sample: true` (to false) or a `steps_offset` other than 1 (to
    1), a deprecation shim that changes sampling where the scheduler clips, or where it offsets its timesteps (only
    "leading" timestep spacing does). Where the shim changes nothing, it still warns once on loading.
    """
    if not (hasattr(scheduler, "scale_model_input") and hasattr(scheduler, "init_noise_sigma")):
        return False
    config = scheduler.config
    if config.get("clip_sample", False) is True:
        return False
    return config.get("steps_offset", 1) == 1 or config.get("timestep_spacing") in ("linspace", "trailing")


class LatentTextToImagePipeline(SavedSamplingDefaults, SavedAsDiffusersPipeline, DiffusionPipeline):
    r"""
    Text-to-image generation with a latent diffusion model.

    Args:
        vae ([`AutoencoderKL`]):
            Maps images to latents and back; latents are multiplied by `vae.config.scaling_factor` (after
            subtracting `vae.config.shift_factor`, if set) so the denoiser sees roughly unit variance.
        text_encoder ([`~transformers.CLIPTextModel`]):
            Encodes the tokenized prompt; its last hidden states (B, 77, D) are the UNet's
            `encoder_hidden_states`, its `pooler_output` (B, D) feeds `prompt_projection`.
        tokenizer ([`~transformers.CLIPTokenizer`]):
            CLIP's BPE tokenizer (`latentzoo.data.tokenizer.load_clip_tokenizer()` bundles it).
        unet ([`UNet2DConditionModel`]):
            Predicts the noise (or v, or x_0: whatever `scheduler.config.prediction_type` says) of the latents.
        scheduler ([`SchedulerMixin`]):
            Any diffusers scheduler, e.g. `DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)`.
        prompt_projection ([`~latentzoo.models.conditioning.PromptProjection`], *optional*):
            If given, the projected pooled prompt embedding is broadcast to (B, C, h, w) and concatenated to the
            latents as extra UNet input channels (`unet.config.in_channels == latent_channels + C`).
        default_guidance_scale (`float`, *optional*):
            The `guidance_scale` of a call without one: the value the model was validated with, saved in
            model_index.json. None (a folder saved without it): Stable Diffusion's 7.5.
        default_num_inference_steps (`int`, *optional*):
            The `num_inference_steps` of a call without them, saved like `default_guidance_scale`. None: 50.
    """

    model_cpu_offload_seq = "text_encoder->prompt_projection->unet->vae"
    _optional_components = ["prompt_projection"]
    _callback_tensor_inputs = ["latents", "prompt_embeds", "negative_prompt_embeds"]

    # A call's values when neither it nor the saved config (folders saved before these keys existed) gives any.
    fallback_guidance_scale = 7.5

    def __init__(
        self,
        vae: AutoencoderKL,
        text_encoder: CLIPTextModel,
        tokenizer: CLIPTokenizer,
        unet: UNet2DConditionModel,
        scheduler: KarrasDiffusionSchedulers,
        prompt_projection: PromptProjection | None = None,
        default_guidance_scale: float | None = None,
        default_num_inference_steps: int | None = None,
    ):
        super().__init__()
        self.register_modules(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            scheduler=scheduler,
            prompt_projection=prompt_projection,
        )
        # Not modules: saved in model_index.json and given back to __init__ by `from_pretrained`.
        self.register_sampling_defaults(
            default_guidance_scale, default_num_inference_steps, guidance_example=3.0
        )
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.image_processor = VaeImageProcessor(vae_scale_factor=self.vae_scale_factor)

    @property
    def num_classes(self) -> None:
        """None: conditioned on prompts, never on class labels (every latentzoo pipeline answers `num_classes`)."""
        return None

    # Read at every step, so a `callback_on_step_end` may switch guidance off mid-way (e.g. diffusers'
    # `SDCFGCutoffCallback`, which sets `pipe._guidance_scale = 0.0` and keeps the conditional embeddings).
    @property
    def guidance_scale(self) -> float:
        return self._guidance_scale

    @property
    def guidance_is_embedded(self) -> bool:
        """Whether the UNet was distilled to take the guidance scale as an input (`unet.config.time_cond_proj_dim`,
        as latent consistency models do): one conditional UNet call per step gives the guided prediction."""
        return self.unet.config.get("time_cond_proj_dim") is not None

    @property
    def do_classifier_free_guidance(self) -> bool:
        return self._guidance_scale > 1 and not self.guidance_is_embedded

    @property
    def diffusers_class_name(self) -> str | None:
        """The diffusers pipeline that computes what this one computes with these components, named in the saved
        model_index.json so that diffusers alone loads the folder: `LatentConsistencyModelPipeline` for a
        guidance-distilled UNet sampled with an `LCMScheduler`, else `StableDiffusionPipeline` where it drives the
        scheduler as this pipeline does (`stable_diffusion_samples_with`); None (the folder names this class) with
        `prompt_projection` or a VAE `shift_factor`, which neither has."""
        if self.prompt_projection is not None or self.vae.config.get("shift_factor") is not None:
            return None
        if self.guidance_is_embedded and isinstance(self.scheduler, LCMScheduler):
            return "LatentConsistencyModelPipeline"
        if stable_diffusion_samples_with(self.scheduler):
            return "StableDiffusionPipeline"
        return None

    def diffusers_index_entries(self) -> dict:
        return NO_SAFETY_CHECKER

    def check_inputs(
        self,
        prompt,
        negative_prompt,
        prompt_embeds,
        negative_prompt_embeds,
        pooled_prompt_embeds,
        negative_pooled_prompt_embeds,
        height,
        width,
        num_inference_steps,
        num_images_per_prompt,
        output_type,
        callback_on_step_end_tensor_inputs,
        guidance_scale=7.5,
        eta=0.0,
    ):
        """Raise a `ValueError`/`TypeError` naming the argument and the fix, before any work is done."""
        if (prompt is None) == (prompt_embeds is None):
            raise ValueError(
                "Pass exactly one of `prompt` (text) and `prompt_embeds` (precomputed text encoder hidden states), "
                f"got {'both' if prompt is not None else 'neither'}."
            )
        if prompt is not None and not (
            isinstance(prompt, str) or (isinstance(prompt, list) and all(isinstance(p, str) for p in prompt))
        ):
            raise TypeError(f"`prompt` must be a str or a list of str, got {type(prompt).__name__}.")
        if isinstance(prompt, list) and not prompt:
            raise ValueError("`prompt` is an empty list: pass at least one prompt.")
        if negative_prompt is not None and negative_prompt_embeds is not None:
            raise ValueError("Pass at most one of `negative_prompt` and `negative_prompt_embeds`, got both.")
        if negative_prompt is not None and not (
            isinstance(negative_prompt, str)
            or (isinstance(negative_prompt, list) and all(isinstance(p, str) for p in negative_prompt))
        ):
            raise TypeError(
                f"`negative_prompt` must be a str or a list of str, got {type(negative_prompt).__name__}."
            )

        if self.guidance_is_embedded and (negative_prompt is not None or negative_prompt_embeds is not None):
            raise ValueError(
                "This UNet is guidance-distilled (it takes `guidance_scale` as an input and makes one conditional "
                "call per step), so there is no unconditional pass for a negative prompt to replace: leave "
                "`negative_prompt` and `negative_prompt_embeds` out."
            )

        batch_size = self._batch_size(prompt, prompt_embeds)
        if isinstance(negative_prompt, list) and len(negative_prompt) != batch_size:
            raise ValueError(
                f"`negative_prompt` has {len(negative_prompt)} entries but `prompt` has batch size {batch_size}: "
                "pass one negative prompt per prompt, or a single str for all of them."
            )
        if prompt_embeds is not None and prompt_embeds.ndim != 3:
            raise ValueError(
                f"`prompt_embeds` must have shape (batch, tokens, hidden), got {tuple(prompt_embeds.shape)}."
            )
        if (
            negative_prompt_embeds is not None
            and prompt_embeds is not None
            and negative_prompt_embeds.shape != prompt_embeds.shape
        ):
            raise ValueError(
                f"`negative_prompt_embeds` has shape {tuple(negative_prompt_embeds.shape)}, but "
                f"`prompt_embeds` has {tuple(prompt_embeds.shape)}: they must match."
            )

        if self.prompt_projection is not None:
            if prompt_embeds is not None and pooled_prompt_embeds is None:
                raise ValueError(
                    "This pipeline conditions by concatenation (`prompt_projection` is set), so `prompt_embeds` "
                    "needs `pooled_prompt_embeds` too (the text encoder's `pooler_output`)."
                )
            if negative_prompt_embeds is not None and negative_pooled_prompt_embeds is None:
                raise ValueError(
                    "`negative_prompt_embeds` needs `negative_pooled_prompt_embeds` when `prompt_projection` is set."
                )
            expected = self.vae.config.latent_channels + self.prompt_projection.config.out_channels
        else:
            expected = self.vae.config.latent_channels
        if self.unet.config.in_channels != expected:
            raise ValueError(
                f"`unet.config.in_channels` is {self.unet.config.in_channels}, but the VAE's latent channels plus "
                f"`prompt_projection`'s output channels make {expected}."
            )

        check_image_size(height, width, self.vae_scale_factor)
        check_num_inference_steps(num_inference_steps, self.scheduler.config.get("num_train_timesteps"))
        check_positive_int(num_images_per_prompt, "num_images_per_prompt")
        check_guidance_scale(guidance_scale)
        check_eta(eta)
        check_output_type(output_type)
        check_callback_tensor_inputs(callback_on_step_end_tensor_inputs, self._callback_tensor_inputs)

    @staticmethod
    def _batch_size(prompt, prompt_embeds) -> int:
        if isinstance(prompt, str):
            return 1
        if isinstance(prompt, list):
            return len(prompt)
        return prompt_embeds.shape[0]

    def _encode_text(self, text: list[str], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids padded/truncated to `tokenizer.model_max_length` → (last hidden states (B, L, D), pooled (B, D))."""
        max_length = self.tokenizer.model_max_length
        text_input_ids = self.tokenizer(
            text, padding="max_length", max_length=max_length, truncation=True, return_tensors="pt"
        ).input_ids
        untruncated_ids = self.tokenizer(text, padding="longest", return_tensors="pt").input_ids
        if untruncated_ids.shape[-1] > max_length:
            removed = self.tokenizer.batch_decode(
                untruncated_ids[:, max_length - 1 : -1], skip_special_tokens=True
            )
            logger.warning(
                f"A prompt is longer than CLIP's {max_length} tokens and was truncated; the removed part is: "
                f"{[r for r in removed if r]}"
            )
        output = self.text_encoder(text_input_ids.to(device))
        return output[0], output[1]

    def encode_prompt(
        self,
        prompt: str | list[str] | None,
        device: torch.device,
        num_images_per_prompt: int = 1,
        do_classifier_free_guidance: bool = True,
        negative_prompt: str | list[str] | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        pooled_prompt_embeds: torch.Tensor | None = None,
        negative_pooled_prompt_embeds: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        r"""
        Encode the prompt (and, for guidance, the negative prompt) with the text encoder.

        Args:
            prompt (`str` or `list[str]`, *optional*):
                The prompt(s); ignored where `prompt_embeds` is given.
            device (`torch.device`):
                Where the embeddings go.
            num_images_per_prompt (`int`, defaults to 1):
                Each embedding is repeated this many times, consecutively: (B, ...) → (B * n, ...).
            do_classifier_free_guidance (`bool`, defaults to `True`):
                Whether to also return the unconditional embeddings.
            negative_prompt (`str` or `list[str]`, *optional*):
                What to guide away from; the empty prompt "" if not given (the unconditional model that caption
                dropout trains).
            prompt_embeds, negative_prompt_embeds (`torch.Tensor`, *optional*):
                Precomputed (B, L, D) text encoder hidden states.
            pooled_prompt_embeds, negative_pooled_prompt_embeds (`torch.Tensor`, *optional*):
                Precomputed (B, D) pooled embeddings, used only with `prompt_projection`.

        Returns:
            `tuple`: `(prompt_embeds, negative_prompt_embeds, pooled_prompt_embeds, negative_pooled_prompt_embeds)`,
            each with batch B * num_images_per_prompt; the negative ones are `None` without guidance, the pooled
            ones `None` where not computed or given.
        """
        batch_size = self._batch_size(prompt, prompt_embeds)
        if prompt_embeds is None:
            prompt = [prompt] if isinstance(prompt, str) else prompt
            prompt_embeds, pooled_prompt_embeds = self._encode_text(prompt, device)

        if do_classifier_free_guidance and negative_prompt_embeds is None:
            if negative_prompt is None:
                negative_prompt = [""] * batch_size
            elif isinstance(negative_prompt, str):
                negative_prompt = [negative_prompt] * batch_size
            negative_prompt_embeds, negative_pooled_prompt_embeds = self._encode_text(negative_prompt, device)
        elif not do_classifier_free_guidance:
            negative_prompt_embeds = negative_pooled_prompt_embeds = None

        dtype = self.text_encoder.dtype if self.text_encoder is not None else self.unet.dtype

        def repeat(embeds: torch.Tensor | None) -> torch.Tensor | None:
            # (B, ...) → (B * n, ...), the n copies of each prompt next to each other
            if embeds is None:
                return None
            return embeds.to(device=device, dtype=dtype).repeat_interleave(num_images_per_prompt, dim=0)

        return (
            repeat(prompt_embeds),
            repeat(negative_prompt_embeds),
            repeat(pooled_prompt_embeds),
            repeat(negative_pooled_prompt_embeds),
        )

    def prepare_latents(
        self,
        batch_size: int,
        height: int,
        width: int,
        dtype: torch.dtype,
        device: torch.device,
        generator: torch.Generator | list[torch.Generator] | None,
        latents: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x_T: (B, latent_channels, height / f, width / f) standard normal noise times `init_noise_sigma`."""
        shape = (
            batch_size,
            self.vae.config.latent_channels,
            height // self.vae_scale_factor,
            width // self.vae_scale_factor,
        )
        return prepare_noise(shape, generator, device, dtype, latents, init_noise_sigma(self.scheduler))

    def decode_latents(self, latents: torch.Tensor, generator=None) -> torch.Tensor:
        """Undo the latent scaling, z = latents / scaling_factor + shift_factor, and decode: → (B, C, H, W) in [-1, 1]."""
        latents = latents / self.vae.config.scaling_factor
        shift_factor = getattr(self.vae.config, "shift_factor", None)
        if shift_factor is not None:
            latents = latents + shift_factor
        return self.vae.decode(latents, return_dict=False, generator=generator)[0]

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        negative_prompt: str | list[str] | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        num_images_per_prompt: int = 1,
        height: int | None = None,
        width: int | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        pooled_prompt_embeds: torch.Tensor | None = None,
        negative_pooled_prompt_embeds: torch.Tensor | None = None,
        eta: float = 0.0,
        guidance_start: float = 0.0,
        guidance_stop: float = 1.0,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable[["LatentTextToImagePipeline", int, torch.Tensor, dict], dict]
        | None = None,
        callback_on_step_end_tensor_inputs: list[str] | tuple[str, ...] = ("latents",),
    ) -> ImagePipelineOutput | tuple:
        r"""
        Generate images from text.

        Args:
            prompt (`str` or `list[str]`, *optional*):
                The prompt(s) to guide generation. Exactly one of `prompt` and `prompt_embeds` is required.
                Prompts longer than the tokenizer's `model_max_length` (77) tokens are truncated with a warning.
            negative_prompt (`str` or `list[str]`, *optional*):
                What to guide away from; one str for all prompts or one per prompt. Defaults to the empty
                prompt. Ignored when `guidance_scale <= 1`; refused by a guidance-distilled UNet.
            num_inference_steps (`int`, *optional*, defaults to `config.default_num_inference_steps`):
                Denoising steps, at most the scheduler's `num_train_timesteps`; ~20 suffice with
                `DPMSolverMultistepScheduler`, DDPM needs its full 1000. Not given: the number the model was
                validated with (saved with it, stated in its model card), or 50 for a folder saved without one.
            guidance_scale (`float`, *optional*, defaults to `config.default_guidance_scale`):
                Classifier-free guidance weight (`uncond + s * (cond - uncond)`, arXiv:2207.12598), a finite
                number >= 0. With `guidance_scale <= 1` the UNet runs on the conditional batch only (half the
                compute). A guidance-distilled UNet (`pipe.guidance_is_embedded`, e.g. a latent consistency
                model) takes the scale as an input instead and always runs once per step, with no negative
                prompt. Not given: the scale the model was validated with (saved with it, stated in its model
                card), or Stable Diffusion's 7.5 for a folder saved without one.
            num_images_per_prompt (`int`, *optional*, defaults to 1):
                Images generated for each prompt.
            height, width (`int`, *optional*, default to `unet.config.sample_size * vae_scale_factor`):
                Image size in pixels; multiples of the VAE's downsampling factor.
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*):
                Source of all randomness. A list gives one generator per image (length
                `batch_size * num_images_per_prompt`), so a batch reproduces images generated one by one.
            latents (`torch.Tensor`, *optional*):
                Starting noise (B * num_images_per_prompt, latent_channels, height / f, width / f), drawn from
                `generator` if not given.
            prompt_embeds, negative_prompt_embeds (`torch.Tensor`, *optional*):
                Precomputed (B, L, D) text encoder hidden states instead of `prompt` / `negative_prompt`.
            pooled_prompt_embeds, negative_pooled_prompt_embeds (`torch.Tensor`, *optional*):
                Precomputed (B, D) pooled embeddings; needed with `prompt_embeds` when `prompt_projection` is set.
            eta (`float`, *optional*, defaults to 0.0):
                DDIM's η (arXiv:2010.02502) in [0, 1]: 0 is deterministic, 1 DDPM-like; other schedulers ignore it.
            guidance_start, guidance_stop (`float`, *optional*, default to 0.0 and 1.0):
                Classifier-free guidance runs on the steps i with int(start·N) <= i < int(stop·N) of the N steps
                (the interval of diffusers' `ClassifierFreeGuidance(start=, stop=)` guider); the other steps run the
                conditional batch alone, at half the UNet cost. The default guides every step; a shorter interval
                is faster and changes the images (measured in README: "Sampling speed").
            output_type (`str`, *optional*, defaults to `"pil"`):
                `"pil"` (list of `PIL.Image`), `"np"` ((B, H, W, C) in [0, 1]), `"pt"` ((B, C, H, W) in [0, 1]), or
                `"latent"` (the final scaled latents, not decoded).
            return_dict (`bool`, *optional*, defaults to `True`):
                Return an [`ImagePipelineOutput`] rather than a tuple `(images,)`.
            callback_on_step_end (`Callable`, *optional*):
                Called after every scheduler step as `callback_on_step_end(pipe, step_index, timestep,
                callback_kwargs)`, where `callback_kwargs` holds the tensors named in
                `callback_on_step_end_tensor_inputs`; tensors in the dict it returns replace the pipeline's
                (e.g. modified `latents`). `prompt_embeds` there is the UNet's batch: with guidance, the negative
                embeddings first, then the conditional ones.
            callback_on_step_end_tensor_inputs (`list[str]`, *optional*, defaults to `("latents",)`):
                Names from `_callback_tensor_inputs`: "latents", "prompt_embeds", "negative_prompt_embeds".

        Returns:
            [`ImagePipelineOutput`] or `tuple`: the images, in the format `output_type` says.

        Example:
            >>> import torch
            >>> from diffusers import DPMSolverMultistepScheduler
            >>> from latentzoo.pipelines import LatentTextToImagePipeline

            >>> pipe = LatentTextToImagePipeline.from_pretrained("out/text2img-mnist")
            >>> pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
            >>> generator = torch.Generator().manual_seed(0)
            >>> image = pipe("a bold seven, slanted right", num_inference_steps=20, generator=generator).images[0]
        """
        # 0. Values not given: the saved ones the model was validated with; height and width: the UNet's sample size
        if num_inference_steps is None:
            num_inference_steps = self.default_num_inference_steps
        if guidance_scale is None:
            guidance_scale = self.default_guidance_scale
        if height is None or width is None:
            default_height, default_width = default_sample_size(
                self.unet.config.sample_size, self.vae_scale_factor
            )
            height = default_height if height is None else height
            width = default_width if width is None else width

        # 1. Check inputs
        self.check_inputs(
            prompt,
            negative_prompt,
            prompt_embeds,
            negative_prompt_embeds,
            pooled_prompt_embeds,
            negative_pooled_prompt_embeds,
            height,
            width,
            num_inference_steps,
            num_images_per_prompt,
            output_type,
            callback_on_step_end_tensor_inputs,
            guidance_scale,
            eta,
        )
        check_guidance_interval(guidance_start, guidance_stop)
        self._guidance_scale = guidance_scale

        # 2. Define call parameters
        batch_size = self._batch_size(prompt, prompt_embeds) * num_images_per_prompt
        check_generator(generator, batch_size)
        device = self._execution_device

        # 3. Encode the prompt: (B, L, D) hidden states, (B, D) pooled; the unconditional batch goes first
        prompt_embeds, negative_prompt_embeds, pooled_prompt_embeds, negative_pooled_prompt_embeds = (
            self.encode_prompt(
                prompt,
                device,
                num_images_per_prompt,
                self.do_classifier_free_guidance,
                negative_prompt,
                prompt_embeds,
                negative_prompt_embeds,
                pooled_prompt_embeds,
                negative_pooled_prompt_embeds,
            )
        )
        if self.do_classifier_free_guidance:
            prompt_embeds = torch.cat([negative_prompt_embeds, prompt_embeds])  # (2B, L, D)

        # 4. Prepare timesteps
        set_timesteps(self.scheduler, num_inference_steps, device)
        timesteps = self.scheduler.timesteps

        # 5. Prepare latent variables: (B, 4, H/f, W/f)
        latents = self.prepare_latents(
            batch_size, height, width, prompt_embeds.dtype, device, generator, latents
        )
        latent_height, latent_width = latents.shape[-2:]

        # 6. Concatenation conditioning: (B or 2B, C, H/f, W/f) extra UNet input channels, fixed over the steps
        prompt_channels = None
        if self.prompt_projection is not None:
            pooled = pooled_prompt_embeds
            if self.do_classifier_free_guidance:
                pooled = torch.cat([negative_pooled_prompt_embeds, pooled_prompt_embeds])
            prompt_channels = self.prompt_projection(
                pooled.to(self.prompt_projection.dtype), latent_height, latent_width
            ).to(latents.dtype)

        # 7. A guidance-distilled UNet takes the guidance scale as an embedding added to its timestep's
        timestep_cond = None
        if self.guidance_is_embedded:
            scales = torch.full((batch_size,), float(self.guidance_scale))
            timestep_cond = guidance_scale_embedding(scales, self.unet.config.time_cond_proj_dim)
            timestep_cond = timestep_cond.to(device=device, dtype=latents.dtype)

        step_kwargs = prepare_extra_step_kwargs(self.scheduler, generator, eta)

        # 8. Denoising loop
        self._num_timesteps = len(timesteps)
        with self.progress_bar(total=len(timesteps)) as progress_bar:
            for i, t in enumerate(timesteps):
                # (2B, 4, h, w) with guidance: one UNet call for the unconditional and conditional batches; steps
                # outside [guidance_start, guidance_stop) run the conditional batch alone
                guided = self.do_classifier_free_guidance and guidance_enabled(
                    i, len(timesteps), guidance_start, guidance_stop
                )
                latent_model_input = torch.cat([latents] * 2) if guided else latents
                latent_model_input = scale_model_input(self.scheduler, latent_model_input, t)
                if prompt_channels is not None:
                    # the last rows are the conditional ones: right also after a callback turned guidance off
                    latent_model_input = torch.cat(
                        [latent_model_input, prompt_channels[-latent_model_input.shape[0] :]], dim=1
                    )

                noise_pred = self.unet(
                    latent_model_input,
                    t,
                    # the last rows are the conditional ones
                    encoder_hidden_states=prompt_embeds[-latent_model_input.shape[0] :],
                    timestep_cond=timestep_cond,
                    return_dict=False,
                )[0]
                if guided:
                    noise_pred = apply_classifier_free_guidance(noise_pred, self.guidance_scale)

                # x_t → x_{t-1}
                latents = self.scheduler.step(noise_pred, t, latents, **step_kwargs, return_dict=False)[0]

                if callback_on_step_end is not None:
                    tensors = {
                        "latents": latents,
                        "prompt_embeds": prompt_embeds,
                        "negative_prompt_embeds": negative_prompt_embeds,
                    }
                    callback_kwargs = {name: tensors[name] for name in callback_on_step_end_tensor_inputs}
                    callback_outputs = callback_on_step_end(self, i, t, callback_kwargs) or {}
                    latents = callback_outputs.pop("latents", latents)
                    prompt_embeds = callback_outputs.pop("prompt_embeds", prompt_embeds)
                    negative_prompt_embeds = callback_outputs.pop(
                        "negative_prompt_embeds", negative_prompt_embeds
                    )

                progress_bar.update()

        # 9. Decode and post-process: (B, 4, h, w) → (B, C, H, W) in [-1, 1] → output_type
        image = latents if output_type == "latent" else self.decode_latents(latents, generator)
        image = postprocess_images(image, output_type, self.image_processor)

        self.maybe_free_model_hooks()

        if not return_dict:
            return (image,)
        return ImagePipelineOutput(images=image)
