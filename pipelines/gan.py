"""Sampling, interpolation and latent arithmetic with a GAN generator."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput
from diffusers.image_processor import VaeImageProcessor
from diffusers.utils.torch_utils import randn_tensor

from latentzoo.data.attributes import ATTRIBUTE_CLASSES, bin_attribute, measure_attribute_values
from latentzoo.models.checks import ClassLabels, check_class_labels, check_number
from latentzoo.models.gan import Generator
from latentzoo.models.latent_tools import (
    INTERPOLATION_METHODS,
    attribute_strip,
    attribute_vector,
    interpolate,
)
from latentzoo.pipelines.utils import (
    GeneratorArgument,
    check_generator,
    check_output_type,
    check_positive_int,
    check_strengths,
    postprocess_images,
    prepare_noise,
)

# Rounds of redrawing for the truncation trick; the share of entries still outside [-t, t] after k rounds is
# P(|z| > t)^k, e.g. 0.32^200 for t = 1: none in practice.
MAX_TRUNCATION_ROUNDS = 200


def truncated_noise(
    shape: tuple[int, ...],
    truncation: float,
    generator: GeneratorArgument,
    device: torch.device,
    dtype: torch.dtype,
) -> torch.Tensor:
    """N(0, I) restricted to [-truncation, truncation] per entry, by redrawing the entries outside (BigGAN's
    truncation trick, Brock et al., arXiv:1809.11096, sec. 3.1).

    Every round redraws the whole tensor with `generator` and keeps the new value only where the old one is outside,
    so with a list of generators each row depends on its own generator alone (batched = one by one). Entries still
    outside after `MAX_TRUNCATION_ROUNDS` rounds (only for tiny thresholds) are clamped.
    """
    latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
    for _ in range(MAX_TRUNCATION_ROUNDS):
        outside = latents.abs() > truncation
        if not outside.any():
            break
        latents = torch.where(
            outside, randn_tensor(shape, generator=generator, device=device, dtype=dtype), latents
        )
    return latents.clamp(-truncation, truncation)


class SampledAttributeVector(NamedTuple):
    r"""
    What [`GANPipeline.attribute_vector_from_samples`] found.

    Attributes:
        vector (`torch.Tensor`):
            (latent_dim,) mean z of the samples measured `high` minus mean z of those measured `low`; pass it to
            `apply_attribute`.
        counts (`dict[str, int]`):
            How many of the samples fell in each class of the attribute, all classes in increasing order (e.g.
            `{"thin": 712, "regular": 650, "bold": 638}`).
        latents (`torch.Tensor`):
            (num_samples, latent_dim) the z's drawn, in order.
        values (`torch.Tensor`):
            (num_samples,) the attribute measured on each z's image (e.g. stroke width in pixels).
        classes (`list[str]`):
            The class of each sample, from `values` by the attribute's fixed thresholds.
    """

    vector: torch.Tensor
    counts: dict[str, int]
    latents: torch.Tensor
    values: torch.Tensor
    classes: list[str]


class GANPipeline(DiffusionPipeline):
    r"""
    Generation with a GAN generator: draw latents z ~ N(0, I) (optionally truncated), map them to images in one pass.

    Args:
        generator ([`~latentzoo.models.Generator`]):
            Maps (B, latent_dim) latents [and class labels] to (B, C, H, W) images in [-1, 1]. (The *model* is named
            `generator` as in every GAN paper; the `generator` argument of `__call__` is, as in all of diffusers,
            the `torch.Generator` that seeds the latents.)

    Example:
        >>> pipe = GANPipeline.from_pretrained("outputs/gan-mnist")
        >>> images = pipe(batch_size=16, generator=torch.Generator().manual_seed(0), output_type="np").images
        >>> z = pipe.prepare_latents(2, torch.Generator().manual_seed(1))
        >>> strip = pipe.interpolate(z[:1], z[1:], num_steps=8).images
    """

    model_cpu_offload_seq = "generator"

    def __init__(self, generator: Generator):
        super().__init__()
        self.register_modules(generator=generator)
        self.image_processor = VaeImageProcessor(vae_scale_factor=1, do_resize=False)

    @property
    def latent_dim(self) -> int:
        return self.generator.config.latent_dim

    @property
    def num_classes(self) -> int | None:
        """Number of classes `class_labels` may name (the generator's), or None for an unconditional generator."""
        return self.generator.config.num_classes

    # ------------------------------------------------------------------ checks and helpers
    def _as_class_labels(
        self, class_labels: ClassLabels | None, batch_size: int | None = None, batch_name: str = "batch_size"
    ) -> torch.Tensor | None:
        """None, an int, a list or a tensor → None or a (B,) int64 tensor, checked against `num_classes`; one int is
        the label of all `batch_size` images."""
        if class_labels is None:
            if self.num_classes is not None:
                raise ValueError(
                    f"This generator is class-conditional ({self.num_classes} classes): pass `class_labels`, e.g. "
                    "`class_labels=[0, 1, 7]`, one per image."
                )
            return None
        if self.num_classes is None:
            raise ValueError("This generator is unconditional: leave `class_labels` out (use `batch_size`).")
        labels = check_class_labels(class_labels, self.num_classes, batch_size, batch_name=batch_name)
        return labels.to(self._execution_device)

    def check_inputs(self, batch_size, latents, truncation, output_type):
        """Raise a `ValueError`/`TypeError` naming the argument and the fix, before any work is done."""
        if batch_size is not None:
            check_positive_int(batch_size, "batch_size")
        if truncation is not None:
            # t = inf would be plain N(0, I), which is what None says; t <= 0 leaves no latent to draw.
            check_number(
                truncation,
                "truncation",
                low=0,
                low_inclusive=False,
                example=1.0,
                hint="latents are then drawn within [-1, 1]; None (the default) draws plain N(0, I)",
            )
        if latents is not None:
            self.generator.check_latents(latents)
            if batch_size is not None and batch_size != len(latents):
                raise ValueError(f"`batch_size`={batch_size} disagrees with the {len(latents)} `latents`.")
            if truncation is not None:
                raise ValueError(
                    "`truncation` applies to latents the pipeline draws; truncate your own `latents` before passing "
                    "them, or leave `latents` out."
                )
        check_output_type(output_type)

    def prepare_latents(
        self,
        batch_size: int,
        generator: GeneratorArgument = None,
        latents: torch.Tensor | None = None,
        truncation: float | None = None,
    ) -> torch.Tensor:
        """(B, latent_dim) latents: `latents` if given, else N(0, I) drawn with `generator` (truncated to
        [-truncation, truncation] by redrawing, when `truncation` is set)."""
        shape = (batch_size, self.latent_dim)
        device, dtype = self._execution_device, self.generator.dtype
        if truncation is not None and latents is None:
            return truncated_noise(shape, truncation, generator, device, dtype)
        return prepare_noise(shape, generator, device, dtype, latents)

    def _output(
        self, images: torch.Tensor | None, latents: torch.Tensor, output_type: str, return_dict: bool
    ):
        result = (
            latents
            if output_type == "latent"
            else postprocess_images(images.float(), output_type, self.image_processor)
        )
        self.maybe_free_model_hooks()
        if not return_dict:
            return (result,)
        return ImagePipelineOutput(images=result)

    # ------------------------------------------------------------------ latent space
    @torch.no_grad()
    def decode(
        self,
        latents: torch.Tensor,
        class_labels: ClassLabels | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> ImagePipelineOutput | tuple:
        """(B, latent_dim) latents [and labels] → images in `output_type` ("pil", "np", "pt" in [0, 1], "latent")."""
        self.generator.check_latents(latents)
        check_output_type(output_type)
        class_labels = self._as_class_labels(class_labels, len(latents), "len(latents)")
        latents = latents.to(device=self._execution_device, dtype=self.generator.dtype)
        images = None if output_type == "latent" else self.generator(latents, class_labels)
        return self._output(images, latents, output_type, return_dict)

    @torch.no_grad()
    def interpolate(
        self,
        start: torch.Tensor,
        end: torch.Tensor,
        num_steps: int = 8,
        method: str = "slerp",
        class_labels: ClassLabels | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
    ):
        """Images along a path from each `start` latent to its `end` latent, (B, latent_dim) each: B * num_steps.

        `method` "slerp" (the default; keeps the norm typical of N(0, I) draws) or "lerp"; each strip of `num_steps`
        images is consecutive. A class-conditional generator takes one label per strip (or one int for all).
        """
        check_number(
            num_steps, "num_steps", low=2, integer=True, example=8, hint="the two endpoints included"
        )
        if method not in INTERPOLATION_METHODS:
            raise ValueError(f"`method` must be one of {INTERPOLATION_METHODS}, got {method!r}.")
        start, end = (x[None] if isinstance(x, torch.Tensor) and x.ndim == 1 else x for x in (start, end))
        self.generator.check_latents(start)
        self.generator.check_latents(end)
        labels = self._as_class_labels(class_labels, len(start), "len(start)")
        latents = interpolate(start, end, num_steps, method)  # (B * num_steps, D), each strip consecutive
        if labels is not None:
            labels = labels.repeat_interleave(num_steps)  # one label per strip → one per image
        return self.decode(latents, labels, output_type, return_dict)

    @staticmethod
    def attribute_vector(latents_with: torch.Tensor, latents_without: torch.Tensor) -> torch.Tensor:
        """(latent_dim,) mean latent of samples with an attribute minus that of samples without it (DCGAN's vector
        arithmetic, arXiv:1511.06434 sec. 6.3). A GAN has no encoder: sort *generated* samples by the attribute
        (e.g. measured stroke width) and pass their latents."""
        return attribute_vector(latents_with, latents_without)

    @torch.no_grad()
    def apply_attribute(
        self,
        latents: torch.Tensor,
        vector: torch.Tensor,
        strength: float | Sequence[float] = 1.0,
        class_labels: ClassLabels | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
    ):
        """Decode `latents + strength · vector`; a list of strengths gives a strip of len(strengths) per latent."""
        self.generator.check_latents(latents)
        strengths = check_strengths(strength)
        labels = self._as_class_labels(class_labels, len(latents), "len(latents)")
        latents = attribute_strip(latents, vector.to(latents), strengths)
        if labels is not None:
            labels = labels.repeat_interleave(len(strengths))
        return self.decode(latents, labels, output_type, return_dict)

    @torch.no_grad()
    def attribute_vector_from_samples(
        self,
        attribute: str,
        high: str,
        low: str,
        num_samples: int = 2000,
        class_labels: ClassLabels | None = None,
        generator: GeneratorArgument = None,
        truncation: float | None = None,
        batch_size: int = 500,
        measure: Callable[[torch.Tensor], dict[str, torch.Tensor]] | None = None,
    ) -> SampledAttributeVector:
        r"""
        An attribute vector from the generator's own samples (DCGAN's vector arithmetic, arXiv:1511.06434 sec. 6.3,
        with a measurement instead of hand-picked samples): draw `num_samples` z's, generate, measure `attribute` on
        the pixels, sort the samples into the attribute's classes, and return mean z of class `high` minus mean z of
        class `low` (`latentzoo.models.latent_tools.attribute_vector`).

        Args:
            attribute (`str`):
                "weight" (stroke width) or "slant" (shear): `latentzoo.data.attributes`, the measurement behind the
                mnist captions and the attribute accuracy.
            high, low (`str`):
                Two different classes of `attribute`: "thin", "regular", "bold" for weight; "left", "upright",
                "right" for slant. E.g. `("weight", "bold", "thin")` points from thin towards bold strokes.
            num_samples (`int`, *optional*, defaults to 2000):
                How many z's to draw; each class should get enough of them for a stable mean (hundreds).
            class_labels (`int`, `list[int]` or `torch.Tensor`, *optional*):
                For a class-conditional generator (required there, an error elsewhere): one int for every sample, or
                one label per sample, e.g. `cycle_class_labels(num_samples, 10)` for a direction shared by all
                digits. The labels only condition the images; the vector is a difference of mean z's.
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*):
                Seeds the z's (a list: one generator per sample, as in `__call__`).
            truncation (`float`, *optional*):
                Draw the z's from N(0, I) truncated to [-truncation, truncation], as in `__call__`.
            batch_size (`int`, *optional*, defaults to 500):
                Images generated per forward pass (memory only; the result does not depend on it).
            measure (`Callable`, *optional*):
                images (B, C, H, W) in [-1, 1] → `{attribute: (B,) values}`; defaults to
                `latentzoo.data.attributes.measure_attribute_values`, which measures one-channel digits.

        Returns:
            [`SampledAttributeVector`]: the vector, the count of samples per class, and the z's, values and classes
            (to reuse the z's, e.g. to show samples of each class).

        Raises:
            `ValueError`: an unknown attribute or class, `high == low`, a bad count, or a class that got no samples
            (the message gives every class's count and suggests more samples).

        Example:
            >>> pipe = GANPipeline.from_pretrained("outputs/gan-mnist")
            >>> seed = torch.Generator().manual_seed(0)
            >>> bold = pipe.attribute_vector_from_samples("weight", "bold", "thin", num_samples=2000, generator=seed)
            >>> bold.counts
            {'thin': ..., 'regular': ..., 'bold': ...}
            >>> z = pipe.prepare_latents(4, torch.Generator().manual_seed(1))
            >>> strips = pipe.apply_attribute(z, bold.vector, strength=[-2, -1, 0, 1, 2]).images
        """
        # 1. Check inputs
        if attribute not in ATTRIBUTE_CLASSES:
            raise ValueError(
                f"`attribute` must be one of {sorted(ATTRIBUTE_CLASSES)} (latentzoo.data.attributes), got "
                f"{attribute!r}."
            )
        classes = ATTRIBUTE_CLASSES[attribute]
        for name, value in (("high", high), ("low", low)):
            if value not in classes:
                raise ValueError(
                    f"`{name}` must be a {attribute} class, one of {list(classes)}, got {value!r}."
                )
        if high == low:
            raise ValueError(
                f"`high` and `low` must be two different {attribute} classes, got {high!r} twice; e.g. "
                f"high={classes[-1]!r}, low={classes[0]!r}."
            )
        check_number(
            num_samples, "num_samples", low=2, integer=True, example=2000, hint="hundreds per class at least"
        )
        check_positive_int(batch_size, "batch_size")
        self.check_inputs(num_samples, None, truncation, "pt")
        labels = self._as_class_labels(class_labels, num_samples, "num_samples")
        check_generator(generator, num_samples)

        # 2. Draw all z's at once (so a batch size changes nothing), generate and measure in batches
        latents = self.prepare_latents(num_samples, generator, None, truncation)  # (N, latent_dim)
        measure = measure or measure_attribute_values
        values = []
        for start in range(0, num_samples, batch_size):
            batch = slice(start, start + batch_size)
            images = self.generator(latents[batch], None if labels is None else labels[batch])  # [-1, 1]
            measured = measure(images.float())
            if not isinstance(measured, dict) or attribute not in measured:
                raise ValueError(
                    f"`measure` must return a dict with the key {attribute!r} (like measure_attribute_values), "
                    f"got {type(measured).__name__}"
                    + (f" with keys {sorted(measured)}" if isinstance(measured, dict) else "")
                    + "."
                )
            values.append(torch.as_tensor(measured[attribute], dtype=torch.float32).reshape(-1).cpu())
        values = torch.cat(values)  # (N,)
        if len(values) != num_samples:
            raise ValueError(
                f"`measure` gave {len(values)} values for {num_samples} images; give one per image."
            )
        self.maybe_free_model_hooks()

        # 3. Sort into classes, average z per class and subtract
        sample_classes = bin_attribute(attribute, values)
        counts = {name: sample_classes.count(name) for name in classes}
        empty = [name for name in (high, low) if counts[name] == 0]
        if empty:
            found = ", ".join(f"{name} {count}" for name, count in counts.items())
            raise ValueError(
                f"No sample of the {num_samples} was measured {' or '.join(map(repr, empty))} ({attribute}: {found}): "
                "no mean latent to take. Draw more samples (`num_samples`), or pick classes the generator draws."
            )
        member = {
            name: torch.tensor([c == name for c in sample_classes], device=latents.device)
            for name in (high, low)
        }
        vector = attribute_vector(latents[member[high]], latents[member[low]])
        return SampledAttributeVector(vector, counts, latents, values, sample_classes)

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def __call__(
        self,
        batch_size: int | None = None,
        class_labels: ClassLabels | None = None,
        latents: torch.Tensor | None = None,
        truncation: float | None = None,
        generator: GeneratorArgument = None,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> ImagePipelineOutput | tuple:
        r"""
        Draw latents and generate images in one forward pass of the generator.

        Args:
            batch_size (`int`, *optional*, defaults to 1, `len(class_labels)` or `len(latents)`):
                Number of images.
            class_labels (`int`, `list[int]` or `torch.Tensor`, *optional*):
                One label per image, each an int in [0, num_classes - 1], for a class-conditional generator
                (required there, an error elsewhere); an int with `batch_size` gives that class to every image.
            latents (`torch.Tensor`, *optional*):
                (B, latent_dim) latents to use instead of drawing them.
            truncation (`float`, *optional*):
                The truncation trick: draw latents from N(0, I) truncated to [-truncation, truncation], *resampling*
                every entry outside (not rescaling); a finite number > 0. Smaller is more typical, less varied
                images; None (default) draws plain N(0, I).
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*):
                Source of all randomness; a list gives one generator per image, so a batch reproduces the same
                images generated one by one.
            output_type (`str`, *optional*, defaults to `"pil"`):
                "pil", "np" ((B, H, W, C) in [0, 1]), "pt" ((B, C, H, W) in [0, 1]) or "latent" (the latents).
            return_dict (`bool`, *optional*, defaults to `True`):
                Return an [`ImagePipelineOutput`] rather than a tuple `(images,)`.

        Example:
            >>> pipe = GANPipeline.from_pretrained("outputs/gan-mnist-classes")
            >>> sevens = pipe(class_labels=[7] * 8, truncation=1.5, generator=torch.Generator().manual_seed(0)).images
        """
        # 1. Check inputs
        self.check_inputs(batch_size, latents, truncation, output_type)

        # 2. Define call parameters; class labels: (B,), or None for an unconditional generator
        batch_name = "batch_size"
        if batch_size is None and latents is not None:
            batch_size, batch_name = len(latents), "len(latents)"
        class_labels = self._as_class_labels(class_labels, batch_size, batch_name)
        batch_size = len(class_labels) if class_labels is not None else batch_size or 1
        check_generator(generator, batch_size)

        # 3. Draw the latents: (B, latent_dim)
        latents = self.prepare_latents(batch_size, generator, latents, truncation)

        # 4. Generate: (B, latent_dim) → (B, C, H, W) in [-1, 1]
        images = None if output_type == "latent" else self.generator(latents, class_labels)

        # 5. Post-process
        return self._output(images, latents, output_type, return_dict)
