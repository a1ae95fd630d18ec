"""Evaluate a pipeline of any family on any dataset, in the features of the dataset's domain encoder.

``evaluate_pipeline`` recognises the family by the pipeline's class, samples ``num_samples`` images (one seeded
generator per image, so the batch size changes nothing) under the conditions of the first ``num_samples`` items
of the validation split (their captions as prompts, their labels as requested classes), and scores them:

- every family: domain-FID against those validation images, beside the real-vs-real floor at the same count
  (as many random training images against the same validation images): what a perfect generator would reach;
- text-to-image: prompt alignment (CLIP-score style: the mean cosine similarity of each image with its prompt in
  the domain encoder's image-text space), beside the same score for the real validation images with their own
  captions and with mismatched captions;
- class-conditional models, when the dataset has labels: the domain classifier's accuracy on the requested
  class, beside its accuracy on the real validation images;
- autoencoders: reconstruction PSNR of the validation images.

Every number comes back with the protocol that produced it, the sample count capped at the validation split's
size said in so many words.
"""

from __future__ import annotations

import logging
import time

import torch
import torch.nn.functional as F

from latentzoo.models.contrastive import caption_targets
from latentzoo.pipelines import (
    AutoencoderPipeline,
    GANPipeline,
    LatentTextToImagePipeline,
    PixelDiffusionPipeline,
)

from .domain import DomainEncoder, describe_held_out, load_domain_encoder
from .metrics import frechet_distance, psnr
from .sampling import sample_images, sampling_record, sampling_settings

logger = logging.getLogger(__name__)

# Below this many samples FID in a 128-d feature space is dominated by its estimation noise and bias: warn.
MIN_RELIABLE_FID_SAMPLES = 100

OBJECTIVES = {
    "clip": "CLIP-style with a text tower",
    "classifier": "with a classifier head",
    "simclr": "SimCLR on augmented views",
}

FAMILIES = {
    LatentTextToImagePipeline: "text-to-image",
    PixelDiffusionPipeline: "pixel diffusion",
    AutoencoderPipeline: "autoencoder",
    GANPipeline: "GAN",
}


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _name(dataset) -> str:
    # `display_name` names a folder without its local path (protocols end up in model cards).
    return getattr(dataset, "display_name", None) or dataset.name


def pipeline_family(pipeline) -> str:
    """ "text-to-image", "pixel diffusion", "autoencoder" or "GAN", from the pipeline's class."""
    for pipeline_class, family in FAMILIES.items():
        if isinstance(pipeline, pipeline_class):
            return family
    raise TypeError(
        f"evaluate_pipeline knows {', '.join(c.__name__ for c in FAMILIES)}; got {type(pipeline).__name__}."
    )


def match_images(images: torch.Tensor, channels: int, size: int | tuple[int, int]) -> torch.Tensor:
    """(N, C, H, W) in [-1, 1] → (N, channels, *size): RGB → luma (ITU-R BT.601), grey → RGB, bilinear resize."""
    height, width = (size, size) if isinstance(size, int) else size
    if images.shape[1] != channels:
        if channels == 1 and images.shape[1] == 3:
            weights = torch.tensor([0.299, 0.587, 0.114], dtype=images.dtype, device=images.device)
            images = (images * weights.view(1, 3, 1, 1)).sum(1, keepdim=True)
        elif channels == 3 and images.shape[1] == 1:
            images = images.repeat(1, 3, 1, 1)
        else:
            raise ValueError(f"Cannot turn {images.shape[1]}-channel images into {channels}-channel ones.")
    if tuple(images.shape[-2:]) != (height, width):
        images = F.interpolate(images, size=(height, width), mode="bilinear", antialias=True).clamp(-1, 1)
    return images


def _requested_labels(pipeline, num_classes: int, validation, n: int, seed: int) -> tuple[torch.Tensor, bool]:
    """The labels to sample: the validation items' own (True), or seeded uniform draws without labels (False)."""
    if validation.class_labels is not None:
        labels = validation.class_labels[:n]
        if int(labels.max()) >= num_classes:
            raise ValueError(
                f"The dataset's labels go up to {int(labels.max())}, but this {type(pipeline).__name__} knows "
                f"{num_classes} classes: evaluate it on the dataset it was trained on."
            )
        return labels, True
    return torch.randint(num_classes, (n,), generator=torch.Generator().manual_seed(seed)), False


@torch.no_grad()
def _reconstruction_psnr(pipeline: AutoencoderPipeline, images: torch.Tensor, batch_size: int) -> float:
    config = pipeline.autoencoder.config
    inputs = match_images(images, config.in_channels, config.sample_size)
    outputs = torch.cat(
        [
            pipeline.reconstruct(chunk, output_type="pt").images.float().cpu() * 2 - 1
            for chunk in inputs.split(batch_size)
        ]
    )
    return psnr(outputs, inputs)


@torch.no_grad()
def prompt_alignment(domain_encoder: DomainEncoder, images: torch.Tensor, texts: list[str]) -> torch.Tensor:
    """(N,) cosine similarity of each image with its text in the domain encoder's image-text space."""
    return (domain_encoder.image_embeds(images) * domain_encoder.text_embeds(texts)).sum(dim=1)


@torch.no_grad()
def evaluate_pipeline(
    pipeline,
    dataset_train,
    dataset_validation,
    num_samples: int = 500,
    seed: int = 0,
    num_inference_steps: int | None = None,
    guidance_scale: float | None = None,
    batch_size: int = 64,
    domain_encoder: DomainEncoder | None = None,
    load_options: dict | None = None,
    domain_recipe: dict | None = None,
) -> dict:
    """Sample `num_samples` images from `pipeline` and score them in the domain encoder of the dataset.

    Args:
        pipeline: a `LatentTextToImagePipeline`, `PixelDiffusionPipeline`, `AutoencoderPipeline` or `GANPipeline`.
        dataset_train, dataset_validation: `ImageDataset` splits of the dataset the model was trained on.
        num_samples: images to sample; capped at the validation split's size (the protocol says so).
        seed: image i is drawn with a generator seeded `seed + i`; also seeds the floor's random training images.
        num_inference_steps, guidance_scale: for the diffusion families; default: the ones saved with the pipeline
            (what it was validated with). An unconditional pixel-diffusion model is sampled without guidance.
        batch_size: images per pipeline call; changes nothing in the result.
        domain_encoder: the feature space; default `load_domain_encoder(dataset_train, dataset_validation,
            load_options, **domain_recipe)` (trained on first use, cached).

    Returns:
        `{"metrics": {name: value}, "protocol": str, "sampling": {"sampler", "num_inference_steps",
        "guidance_scale"} ({} for autoencoders and GANs), "images": (N, C, H, W) in [-1, 1], "warnings": [str]}`.
    """
    # 1. Check inputs
    family = pipeline_family(pipeline)
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"`num_samples` must be a positive int, got {num_samples!r}.")
    if len(dataset_validation) == 0:
        raise ValueError(
            f"The validation split of {_name(dataset_validation)!r} is empty: nothing to compare with."
        )
    if family == "text-to-image" and not dataset_validation.has_captions:
        raise ValueError(
            f"A text-to-image model needs prompts: {_name(dataset_validation)!r} has no captions to take them from."
        )
    n = min(num_samples, len(dataset_validation))
    warnings, notes = [], []
    if n < num_samples:
        notes.append(
            f"{num_samples} samples requested, capped at the {_count(len(dataset_validation), 'image')} of the "
            "validation split"
        )
    if domain_encoder is None:
        domain_encoder = load_domain_encoder(
            dataset_train, dataset_validation, load_options, **(domain_recipe or {})
        )
    channels, size = domain_encoder.config.in_channels, domain_encoder.image_shape

    # 2. Conditions: the first n validation items' captions or labels
    reference = dataset_validation.pixel_values[:n]  # (n, C, H, W)
    texts = [dataset_validation[i]["text"] for i in range(n)] if dataset_validation.has_captions else None
    num_classes = pipeline.num_classes
    requested, labels_from_data = None, False
    conditions, settings, sampling = {}, {}, ""  # conditions: one prompt or class label per image, or none
    if family == "text-to-image":
        conditions = {"prompt": texts}
        settings = sampling_settings(pipeline, num_inference_steps, guidance_scale)
        sampling = "prompts: the captions of those validation images"
    elif num_classes is not None:
        requested, labels_from_data = _requested_labels(pipeline, num_classes, dataset_validation, n, seed)
        conditions = {"class_labels": requested.tolist()}
        sampling = (
            "classes: the labels of those validation images"
            if labels_from_data
            else f"classes drawn uniformly from {num_classes} with seed {seed} (the dataset has no labels)"
        )
    else:
        sampling = "unconditional"
    if family == "pixel diffusion":
        # Guidance needs class labels; an unconditional model samples without.
        settings = sampling_settings(
            pipeline, num_inference_steps, guidance_scale, guided=num_classes is not None
        )
    if "num_inference_steps" in settings:
        sampling += (
            f"; {settings['num_inference_steps']} {type(pipeline.scheduler).__name__} steps, guidance scale "
            f"{settings['guidance_scale']}"
        )

    # 3. Sample
    start = time.perf_counter()
    generated = sample_images(pipeline, n, seed, batch_size, **conditions, **settings)
    seconds = time.perf_counter() - start
    if generated.shape[1] != channels or tuple(generated.shape[-2:]) != size:
        notes.append(
            f"samples of shape {tuple(generated.shape[1:])} resized to the dataset's {(channels, *size)} "
            "before scoring"
        )
        generated = match_images(generated, channels, size)

    # 4. Domain-FID beside the real-vs-real floor at the same count
    metrics = {}
    floor_count = min(n, len(dataset_train))
    if n >= 2 and floor_count >= 2:
        order = torch.randperm(len(dataset_train), generator=torch.Generator().manual_seed(seed))
        train_images = dataset_train.pixel_values[order[:floor_count]]
        reference_features = domain_encoder.image_features(reference)
        metrics[f"domain-FID ({n} samples)"] = frechet_distance(
            domain_encoder.image_features(generated), reference_features
        )
        counts = f"{n} samples" if floor_count == n else f"{floor_count} train vs {n} validation images"
        metrics[f"real-vs-real domain-FID ({counts})"] = frechet_distance(
            domain_encoder.image_features(train_images), reference_features
        )
        if floor_count < n:
            notes.append(f"the floor uses all {floor_count} training images")
        if n < MIN_RELIABLE_FID_SAMPLES:
            warnings.append(
                f"FID at {n} samples is mostly estimation noise (reliable from about {MIN_RELIABLE_FID_SAMPLES}): "
                "compare it with the floor beside it only, and evaluate on a larger validation split if you can"
            )
    else:
        warnings.append(
            f"no domain-FID: it needs at least 2 validation and 2 training images, the dataset has "
            f"{len(dataset_validation)} and {len(dataset_train)}"
        )

    # 5. Family-specific scores
    if family == "text-to-image" and domain_encoder.has_text:
        metrics["prompt alignment (samples with their prompts)"] = float(
            prompt_alignment(domain_encoder, generated, texts).mean()
        )
        metrics["prompt alignment (real validation images, own captions)"] = float(
            prompt_alignment(domain_encoder, reference, texts).mean()
        )
        different = caption_targets(texts) == 0  # (n, n) pairs whose captions differ
        if different.any():
            similarity = domain_encoder.text_embeds(texts) @ domain_encoder.image_embeds(reference).T
            metrics["prompt alignment (real validation images, mismatched captions)"] = float(
                similarity[different].mean()
            )
    if requested is not None and labels_from_data and domain_encoder.has_classifier:
        metrics["class accuracy (samples, requested class)"] = float(
            (domain_encoder.predict(generated) == requested).float().mean()
        )
        metrics["class accuracy (real validation images)"] = float(
            (domain_encoder.predict(reference) == requested).float().mean()
        )
    if family == "autoencoder":
        metrics[f"reconstruction PSNR dB ({n} validation images)"] = _reconstruction_psnr(
            pipeline, reference, batch_size
        )
    metrics["images/s (sampling)"] = n / seconds

    # 6. Protocol
    for warning in warnings:
        logger.warning(warning)
    recipe = domain_encoder.metrics
    protocol = (
        f"{family} model, {n} samples ({'; '.join([sampling, *notes])}), generator seeds {seed}..{seed + n - 1}, "
        f"one per image. Domain encoder {domain_encoder.fingerprint or '(given)'}: a conv image tower "
        f"({', '.join(OBJECTIVES[name] for name in recipe.get('objectives', []))}) trained for "
        f"{recipe.get('num_steps', '?')} steps on the {recipe.get('train_examples', '?')} training images of "
        f"{_name(dataset_train)!r} only; "
        f"{describe_held_out(recipe)}. domain-FID: in its {domain_encoder.config.embed_dim}-d image features, "
        f"the samples against the first {n} validation images; the real-vs-real floor: {floor_count} random "
        f"training images (seed {seed}) against the same validation images."
    )
    if "prompt alignment (samples with their prompts)" in metrics:
        protocol += " Prompt alignment: mean cosine similarity of image and caption embeddings."
    if family == "autoencoder":
        protocol += " PSNR: decode(encode(x)) with the posterior mean, in [-1, 1]."
    if warnings:
        protocol += " Warning: " + "; ".join(warnings) + "."
    return {
        "metrics": metrics,
        "protocol": protocol,
        "sampling": sampling_record(pipeline, settings),
        "images": generated,
        "warnings": warnings,
    }
