"""The text-to-image evaluation protocol: prompts, sampling settings and the numbers reported for them.

``text_to_image_prompts`` builds a balanced prompt set (the same count per digit, attributes and phrasings
drawn with a seeded generator); ``evaluate_text_to_image`` samples them through any text-to-image pipeline and
scores the images with the judge: prompt accuracy, attribute accuracy, and judge-FID beside the real-vs-real FID
at the same sample count. Every number comes back with the protocol that produced it.
"""

from __future__ import annotations

import time

import torch

from ..data import NUM_PHRASINGS, caption_for, load_dataset
from ..data.attributes import SLANT_CLASSES, WEIGHT_CLASSES
from ..data.captions import mnist_label_words
from .judge import Judge, load_judge
from .metrics import attribute_accuracy, fid_report, prompt_accuracy
from .sampling import sample_images, sampling_record, sampling_settings

# Phrasings that never occur in the training captions, to check that the text encoder generalises.
HELD_OUT_TEMPLATES = (
    "a picture of the number {word}",
    "{numeral}",
    "a handwritten {numeral}, {weight} strokes",
    "draw a {word}",
)


def text_to_image_prompts(per_digit: int = 100, seed: int = 0, held_out: bool = False) -> list[str]:
    """`per_digit` prompts for each digit 0-9, in digit order, with seeded random attributes and phrasings."""
    generator = torch.Generator().manual_seed(seed)
    prompts = []
    for digit in range(10):
        for _ in range(per_digit):
            weight = WEIGHT_CLASSES[int(torch.randint(len(WEIGHT_CLASSES), (), generator=generator))]
            slant = SLANT_CLASSES[int(torch.randint(len(SLANT_CLASSES), (), generator=generator))]
            if held_out:
                template = HELD_OUT_TEMPLATES[
                    int(torch.randint(len(HELD_OUT_TEMPLATES), (), generator=generator))
                ]
                prompts.append(template.format(word=mnist_label_words[digit], numeral=digit, weight=weight))
            else:
                phrasing = int(torch.randint(NUM_PHRASINGS, (), generator=generator))
                prompts.append(caption_for(digit, weight, slant, phrasing))
    return prompts


def evaluate_text_to_image(
    pipeline,
    per_digit: int = 100,
    num_inference_steps: int | None = None,
    guidance_scale: float | None = None,
    seed: int = 0,
    batch_size: int = 100,
    judge: Judge | None = None,
    reference_images: torch.Tensor | None = None,
    held_out_per_digit: int = 20,
    **call_kwargs,
) -> dict:
    """Sample the protocol's prompts and score them; returns ``{"metrics": ..., "protocol": ...}``.

    `reference_images` (N, 1, 32, 32) in [-1, 1] default to the held-out mnist validation split (500 digits).
    `num_inference_steps` and `guidance_scale` default to the ones saved with the pipeline (what it was validated
    with); the protocol names the values used. `call_kwargs` go to every pipeline call (e.g. `guidance_stop=0.5`)
    and are named in the protocol too.
    """
    judge = judge or load_judge()
    if reference_images is None:
        reference_images = load_dataset("mnist", split="validation").pixel_values
    sampler = type(pipeline.scheduler).__name__
    settings = sampling_settings(pipeline, num_inference_steps, guidance_scale)
    num_inference_steps, guidance_scale = settings["num_inference_steps"], settings["guidance_scale"]

    prompts = text_to_image_prompts(per_digit, seed)
    start = time.perf_counter()
    images = sample_images(
        pipeline, len(prompts), seed, batch_size, prompt=prompts, **settings, **call_kwargs
    )
    seconds = time.perf_counter() - start
    attributes = attribute_accuracy(images, prompts)
    fid = fid_report(judge, images, reference_images, seed=seed)
    metrics = {
        "prompt accuracy": prompt_accuracy(judge, images, prompts),
        "weight accuracy": attributes["weight"],
        "slant accuracy": attributes["slant"],
        f"judge-FID ({fid['num_samples']} samples)": fid["fid"],
        f"real-vs-real judge-FID ({fid['num_samples']} samples)": fid["real_vs_real_fid"],
        "images/s (sampling)": len(images) / seconds,
    }
    if held_out_per_digit:
        held_out = text_to_image_prompts(held_out_per_digit, seed + 1, held_out=True)
        held_out_images = sample_images(
            pipeline, len(held_out), seed + 1, batch_size, prompt=held_out, **settings, **call_kwargs
        )
        metrics["prompt accuracy, held-out phrasings"] = prompt_accuracy(judge, held_out_images, held_out)
    protocol = (
        f"{len(prompts)} samples ({per_digit} per digit; phrasings and weight/slant drawn with seed {seed} from the "
        f"training caption templates), {num_inference_steps} {sampler} steps, guidance scale {guidance_scale}"
        + "".join(f", {key}={value!r}" for key, value in call_kwargs.items())
        + ", "
        f"generator seeds {seed}..{seed + len(prompts) - 1}; judge: a CNN trained on the mnist train split "
        f"({judge.validation_accuracy:.1%} on the held-out validation split); FID in the judge's features against "
        f"held-out real digits; held-out phrasings: {held_out_per_digit} per digit from {list(HELD_OUT_TEMPLATES)}."
    )
    return {
        "metrics": metrics,
        "protocol": protocol,
        "sampling": sampling_record(pipeline, settings),
        "images": images,
        "prompts": prompts,
    }
