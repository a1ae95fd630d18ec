"""Sampling, reconstruction, interpolation and latent arithmetic with an autoencoder and a prior over its latents."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import PIL.Image
import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput
from diffusers.image_processor import VaeImageProcessor

from latentzoo.models.autoencoder import Autoencoder, GaussianPrior, TwoStageVAEPrior, VariationalAutoencoder
from latentzoo.models.checks import ClassLabels, check_class_labels, check_number
from latentzoo.models.latent_tools import (
    INTERPOLATION_METHODS,
    attribute_strip,
    attribute_vector,
    interpolate,
)
from latentzoo.models.mdn import MixtureDensityNetwork
from latentzoo.pipelines.utils import (
    check_generator,
    check_output_type,
    check_positive_int,
    check_strengths,
    postprocess_images,
    prepare_noise,
)

ImageInput = torch.Tensor | np.ndarray | PIL.Image.Image | list[PIL.Image.Image]


class AutoencoderPipeline(DiffusionPipeline):
    r"""
    Generation with an autoencoder: draw latents from a prior, decode them; and computation in its latent space.

    Args:
        autoencoder ([`~latentzoo.models.VariationalAutoencoder`] or [`~latentzoo.models.Autoencoder`]):
            Maps (B, C, H, W) images in [-1, 1] to (B, latent_dim) latents and back.
        prior ([`~latentzoo.models.GaussianPrior`], [`~latentzoo.models.MixtureDensityNetwork`] or
            [`~latentzoo.models.TwoStageVAEPrior`], *optional*):
            The distribution latents are sampled from. None means N(0, I), which is what a VAE is trained
            towards; a plain autoencoder needs a fitted prior (a `GaussianPrior`, or an MDN, which can also be
            class-conditional); a `TwoStageVAEPrior` maps u ~ N(0, I) to the latents a VAE's images were encoded to.

    Example:
        >>> pipe = AutoencoderPipeline.from_pretrained("outputs/vae-mnist")
        >>> images = pipe(batch_size=16, generator=torch.Generator().manual_seed(0), output_type="np").images
        >>> strip = pipe.interpolate(digits[:1], digits[1:2], num_steps=8, method="slerp").images
    """

    model_cpu_offload_seq = "prior->autoencoder"
    _optional_components = ["prior"]

    def __init__(
        self,
        autoencoder: Autoencoder | VariationalAutoencoder,
        prior: GaussianPrior | MixtureDensityNetwork | TwoStageVAEPrior | None = None,
    ):
        super().__init__()
        self.register_modules(autoencoder=autoencoder, prior=prior)
        # Pixels are (B, C, H, W) in [-1, 1]; no spatial latents, so no resizing factor.
        self.image_processor = VaeImageProcessor(vae_scale_factor=1, do_resize=False)

    @property
    def latent_dim(self) -> int:
        return self.autoencoder.config.latent_dim

    @property
    def num_classes(self) -> int | None:
        """Number of classes `class_labels` may name (a class-conditional MDN prior's), or None: unconditional."""
        return self.prior.config.num_classes if isinstance(self.prior, MixtureDensityNetwork) else None

    @property
    def is_class_conditional(self) -> bool:
        """`num_classes is not None`; kept for existing callers, new code reads `num_classes`."""
        return self.num_classes is not None

    # ------------------------------------------------------------------ checks and helpers
    def check_inputs(self, batch_size, class_labels, latents, output_type):
        """Raise a `ValueError`/`TypeError` naming the argument and the fix, before any work is done."""
        if batch_size is not None:
            check_positive_int(batch_size, "batch_size")
        if class_labels is not None:
            if self.num_classes is None:
                raise ValueError(
                    "`class_labels` needs a class-conditional prior (a MixtureDensityNetwork with `num_classes`, "
                    f"trained by the `mdn_prior` task); this pipeline's prior is {type(self.prior).__name__}."
                )
            check_class_labels(class_labels, self.num_classes, batch_size)
        elif self.num_classes is not None and latents is None:
            raise ValueError(
                "This pipeline's prior is class-conditional: pass `class_labels`, e.g. `class_labels=[0, 1, 7]` "
                "(or `latents` to decode)."
            )
        if isinstance(self.prior, MixtureDensityNetwork) and self.prior.config.condition_dim > 0:
            raise ValueError(
                "This pipeline's MDN prior is conditioned on vectors: call `pipe.prior.sample(condition=...)` and pass "
                "the result as `latents`."
            )
        if latents is not None and self.prior is not None and class_labels is not None:
            raise ValueError("Pass either `latents` or `class_labels`, not both: `latents` skip the prior.")
        check_output_type(output_type)

    def _as_pixel_values(self, images: ImageInput) -> torch.Tensor:
        """Tensors in [-1, 1] pass through (checked by the model); PIL images and arrays in [0, 1] are converted."""
        if not isinstance(images, torch.Tensor):
            images = self.image_processor.preprocess(images)
            if self.autoencoder.config.in_channels == 1 and images.shape[1] == 3:
                images = images.mean(1, keepdim=True)
        self.autoencoder.check_pixel_values(images)
        return images.to(device=self._execution_device, dtype=self.autoencoder.dtype)

    def _as_latents(self, images_or_latents: ImageInput, name: str) -> torch.Tensor:
        """(B, latent_dim) latents pass through; anything else is encoded as images."""
        if isinstance(images_or_latents, torch.Tensor) and images_or_latents.ndim == 2:
            if images_or_latents.shape[1] != self.latent_dim:
                raise ValueError(
                    f"`{name}` looks like latents but has {images_or_latents.shape[1]} dimensions; the autoencoder's "
                    f"latent_dim is {self.latent_dim}. Pass (B, {self.latent_dim}) latents or (B, C, H, W) images."
                )
            return images_or_latents.to(device=self._execution_device, dtype=self.autoencoder.dtype)
        return self.encode(images_or_latents)

    def _output(self, images: torch.Tensor, latents: torch.Tensor, output_type: str, return_dict: bool):
        check_output_type(output_type)
        if output_type == "latent":
            result = latents
        else:
            result = postprocess_images(images.float(), output_type, self.image_processor)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (result,)
        return ImagePipelineOutput(images=result)

    # ------------------------------------------------------------------ latent space
    @torch.no_grad()
    def encode(
        self,
        images: ImageInput,
        sample_posterior: bool = False,
        generator: torch.Generator | list[torch.Generator] | None = None,
    ) -> torch.Tensor:
        """Images → (B, latent_dim) latents: the posterior mean for a VAE (a sample with `sample_posterior=True`).

        Args:
            images: (B, C, H, W) tensor in [-1, 1], or PIL images / a (B, H, W, C) array in [0, 1].
        """
        pixel_values = self._as_pixel_values(images)
        if isinstance(self.autoencoder, VariationalAutoencoder):
            posterior = self.autoencoder.encode(pixel_values)
            return posterior.sample(generator) if sample_posterior else posterior.mode()
        return self.autoencoder.encode(pixel_values)

    @torch.no_grad()
    def decode(
        self, latents: torch.Tensor, output_type: str = "pil", return_dict: bool = True
    ) -> ImagePipelineOutput | tuple:
        """(B, latent_dim) latents → images in `output_type` ("pil", "np", "pt" in [0, 1], or "latent")."""
        latents = latents.to(device=self._execution_device, dtype=self.autoencoder.dtype)
        return self._output(self.autoencoder.decode(latents), latents, output_type, return_dict)

    @torch.no_grad()
    def reconstruct(self, images: ImageInput, output_type: str = "pil", return_dict: bool = True):
        """decode(encode(images)), with the VAE's posterior mean."""
        return self.decode(self.encode(images), output_type, return_dict)

    @torch.no_grad()
    def interpolate(
        self,
        start: ImageInput,
        end: ImageInput,
        num_steps: int = 8,
        method: str = "slerp",
        output_type: str = "pil",
        return_dict: bool = True,
    ):
        """Decoded strips from each `start` to its `end` (images or (B, latent_dim) latents): B * num_steps images.

        `method` is "slerp" (keeps the norm of Gaussian latents; the default) or "lerp". Lay the result out with
        `num_steps` images per row; each row begins at `start`'s reconstruction and ends at `end`'s.
        """
        check_number(
            num_steps, "num_steps", low=2, integer=True, example=8, hint="the two endpoints included"
        )
        if method not in INTERPOLATION_METHODS:
            raise ValueError(f"`method` must be one of {INTERPOLATION_METHODS}, got {method!r}.")
        latents = interpolate(
            self._as_latents(start, "start"), self._as_latents(end, "end"), num_steps, method
        )
        return self.decode(latents, output_type, return_dict)

    @torch.no_grad()
    def attribute_vector(self, images_with: ImageInput, images_without: ImageInput) -> torch.Tensor:
        """(latent_dim,) mean latent of `images_with` an attribute minus that of `images_without` (e.g. bold − thin)."""
        return attribute_vector(
            self._as_latents(images_with, "images_with"), self._as_latents(images_without, "images_without")
        )

    @torch.no_grad()
    def apply_attribute(
        self,
        images: ImageInput,
        vector: torch.Tensor,
        strength: float | Sequence[float] = 1.0,
        output_type: str = "pil",
        return_dict: bool = True,
    ):
        """Decode `images` (or latents) with `strength · vector` added to their latents.

        With a list of strengths, each image gives a strip of len(strengths) images (B * S in all), e.g.
        `strength=[-2, -1, 0, 1, 2]` from "less" to "more" of the attribute.
        """
        strengths = check_strengths(strength)
        latents = self._as_latents(images, "images")
        latents = attribute_strip(latents, vector.to(latents), strengths)
        return self.decode(latents, output_type, return_dict)

    # ------------------------------------------------------------------ sampling
    def prepare_latents(
        self,
        batch_size: int,
        class_labels: torch.Tensor | None,
        generator: torch.Generator | list[torch.Generator] | None,
        latents: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, latent_dim) latents: `latents` if given, else drawn from the prior (N(0, I) when there is none)."""
        device, dtype = self._execution_device, self.autoencoder.dtype
        shape = (batch_size, self.latent_dim)
        if latents is not None or self.prior is None:
            return prepare_noise(shape, generator, device, dtype, latents)
        return self.prior.sample(num_samples=batch_size, class_labels=class_labels, generator=generator).to(
            device=device, dtype=dtype
        )

    @torch.no_grad()
    def __call__(
        self,
        batch_size: int | None = None,
        class_labels: ClassLabels | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> ImagePipelineOutput | tuple:
        r"""
        Sample latents from the prior and decode them.

        Args:
            batch_size (`int`, *optional*, defaults to 1, or `len(class_labels)`):
                Number of images.
            class_labels (`int`, `list[int]` or `torch.Tensor`, *optional*):
                One label per image, each an int in [0, num_classes - 1], for a class-conditional MDN prior
                (required there, an error elsewhere); one int with `batch_size` gives that class to every image.
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*):
                Source of all randomness; a list gives one generator per image, so a batch reproduces the same
                images generated one by one.
            latents (`torch.Tensor`, *optional*):
                (B, latent_dim) latents to decode instead of drawing them.
            output_type (`str`, *optional*, defaults to `"pil"`):
                "pil", "np" ((B, H, W, C) in [0, 1]), "pt" ((B, C, H, W) in [0, 1]) or "latent" (the latents).
            return_dict (`bool`, *optional*, defaults to `True`):
                Return an [`ImagePipelineOutput`] rather than a tuple `(images,)`.

        Example:
            >>> pipe = AutoencoderPipeline.from_pretrained("outputs/mdn-prior-mnist")
            >>> sevens = pipe(class_labels=[7] * 8, generator=torch.Generator().manual_seed(0)).images
        """
        # 1. Check inputs
        self.check_inputs(batch_size, class_labels, latents, output_type)

        # 2. Define call parameters
        if class_labels is not None:
            class_labels = check_class_labels(class_labels, self.num_classes, batch_size)  # (B,)
            batch_size = len(class_labels)
        elif latents is not None:
            batch_size = batch_size or len(latents)
        else:
            batch_size = batch_size or 1
        check_generator(generator, batch_size)

        # 3. Draw the latents from the prior: (B, latent_dim)
        latents = self.prepare_latents(batch_size, class_labels, generator, latents)

        # 4. Decode: (B, latent_dim) → (B, C, H, W) in [-1, 1]
        images = None if output_type == "latent" else self.autoencoder.decode(latents)

        # 5. Post-process
        return self._output(images, latents, output_type, return_dict)
