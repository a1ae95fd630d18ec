"""Sampling speed of `LatentTextToImagePipeline` against diffusers' `StableDiffusionPipeline`.

Both pipelines get the very same components (small but realistic: the sizes of a from-scratch MNIST model)
and the same DPM-Solver++ scheduler config, and generate the same batch with the same generator; runs are
interleaved (ours, theirs, ours, ...) so that load from other processes hits both alike, and the median is
reported. A second table compares 20 DPM-Solver++ steps with 1,000 DDPM steps for our pipeline.

    python benchmarks/bench_text_to_image_sampling.py                     # random weights, ~2-3 CPU minutes
    python benchmarks/bench_text_to_image_sampling.py --pipeline out/dir  # a trained, saved pipeline

Speed does not depend on the weights; the images (and so DPM-Solver++ vs DDPM quality) only mean something
for a trained pipeline, which `latentzoo evaluate` measures with the judge.
"""

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import (
    AutoencoderKL,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel

from latentzoo.data.tokenizer import load_clip_tokenizer
from latentzoo.pipelines import LatentTextToImagePipeline

PROMPTS = [
    "a bold seven, slanted right",
    "a thin three",
    "a zero",
    "a slanted left four",
]


def build_components() -> dict:
    """32x32x1 images → 8x8x4 latents; UNet (64, 128, 128) with cross-attention to a 128-wide CLIP text model."""
    torch.manual_seed(0)
    vae = AutoencoderKL(
        in_channels=1,
        out_channels=1,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(32, 64, 64),
        layers_per_block=1,
        norm_num_groups=16,
        latent_channels=4,
        sample_size=32,
    )
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(64, 128, 128),
        layers_per_block=1,
        norm_num_groups=32,
        cross_attention_dim=128,
        attention_head_dim=8,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=49408,
            hidden_size=128,
            intermediate_size=512,
            num_hidden_layers=4,
            num_attention_heads=4,
            max_position_embeddings=77,
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=49407,
        )
    )
    scheduler = DPMSolverMultistepScheduler(
        beta_schedule="squaredcos_cap_v2", algorithm_type="dpmsolver++", steps_offset=1
    )
    return {
        "vae": vae.eval(),
        "text_encoder": text_encoder.eval(),
        "tokenizer": load_clip_tokenizer(),
        "unet": unet.eval(),
        "scheduler": scheduler,
    }


def count_parameters(module: torch.nn.Module) -> str:
    return f"{sum(p.numel() for p in module.parameters()) / 1e6:.2f} M"


def time_call(pipe, prompts, steps, guidance_scale, seed=0) -> tuple[float, float, np.ndarray]:
    """(wall seconds, CPU seconds of this process, images) of one pipeline call."""
    generator = torch.Generator().manual_seed(seed)
    wall, cpu = time.perf_counter(), time.process_time()
    images = pipe(
        prompts,
        num_inference_steps=steps,
        guidance_scale=guidance_scale,
        generator=generator,
        output_type="np",
    ).images
    return time.perf_counter() - wall, time.process_time() - cpu, images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--pipeline", help="a saved LatentTextToImagePipeline folder (default: random weights)"
    )
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance-scale", type=float, default=4.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--ddpm-steps", type=int, default=1000)
    parser.add_argument("--ddpm-timed-steps", type=int, default=1000, help="time fewer DDPM steps and scale")
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch intra-op threads (0: torch's default); 1 on a shared machine",
    )
    parser.add_argument(
        "--output", type=Path, default=Path(__file__).parent / "results" / "text_to_image_sampling.md"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.pipeline:
        components = LatentTextToImagePipeline.from_pretrained(args.pipeline).components
        components = {k: v for k, v in components.items() if v is not None}
        if "prompt_projection" in components:
            raise SystemExit(
                "StableDiffusionPipeline has no concatenation conditioning: pass a cross-attention model"
            )
        components["scheduler"] = DPMSolverMultistepScheduler.from_config(
            components["scheduler"].config, algorithm_type="dpmsolver++"
        )
    else:
        components = build_components()
    ours = LatentTextToImagePipeline(**components)
    theirs = StableDiffusionPipeline(
        **{
            **components,
            "scheduler": DPMSolverMultistepScheduler.from_config(components["scheduler"].config),
        },
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    for pipe in (ours, theirs):
        pipe.set_progress_bar_config(disable=True)
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(args.batch_size)]

    # 1. Ours vs StableDiffusionPipeline, interleaved, after one warm-up call each
    *_, ours_images = time_call(ours, prompts, args.steps, args.guidance_scale)
    *_, their_images = time_call(theirs, prompts, args.steps, args.guidance_scale)
    max_diff = float(np.abs(ours_images - their_images).max())
    wall, cpu = {"ours": [], "theirs": []}, {"ours": [], "theirs": []}
    for repeat in range(args.repeats):
        for name, pipe in (("ours", ours), ("theirs", theirs)):
            wall_s, cpu_s, _ = time_call(pipe, prompts, args.steps, args.guidance_scale)
            wall[name].append(wall_s)
            cpu[name].append(cpu_s)
        print(
            f"run {repeat}: wall ours {wall['ours'][-1]:.2f}s / diffusers {wall['theirs'][-1]:.2f}s",
            flush=True,
        )
    median_wall = {name: statistics.median(values) for name, values in wall.items()}
    median_cpu = {name: statistics.median(values) for name, values in cpu.items()}
    wall_ratio = median_wall["theirs"] / median_wall["ours"]  # = images/s ours / images/s theirs
    cpu_ratio = median_cpu["theirs"] / median_cpu["ours"]

    # 2. DPM-Solver++ vs DDPM, our pipeline. A DDPM step costs the same at any step count (one UNet call and
    # one update), so `--ddpm-timed-steps` of them are timed and scaled to `--ddpm-steps` when fewer.
    dpm_wall, dpm_cpu = median_wall["ours"], median_cpu["ours"]
    # steps_offset=0: with "leading" spacing, offset 1 would put the first of 1000 steps at t=1000 (out of range)
    ours.scheduler = DDPMScheduler.from_config(ours.scheduler.config, clip_sample=False, steps_offset=0)
    timed_steps = min(args.ddpm_timed_steps, args.ddpm_steps)
    ddpm_wall, ddpm_cpu, _ = time_call(ours, prompts, timed_steps, args.guidance_scale)
    scale = args.ddpm_steps / timed_steps
    ddpm_wall, ddpm_cpu = ddpm_wall * scale, ddpm_cpu * scale
    ddpm_note = "" if scale == 1 else f" (timed {timed_steps} steps, x{scale:g})"

    lines = [
        "# Text-to-image sampling speed",
        "",
        "Produced by `python benchmarks/bench_text_to_image_sampling.py"
        + "".join(f" {arg}" for arg in sys.argv[1:])
        + "`.",
        "",
        f"- machine: {platform.machine()}, {os.cpu_count()} CPU cores visible, torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread(s), CPU, float32; load average (1 min) at the end "
        f"{os.getloadavg()[0]:.1f}: other jobs shared the cores, so wall times are noisy and CPU time (of this "
        "process) is the steadier measure",
        f"- components: {'`' + args.pipeline + '`' if args.pipeline else 'random weights'}; "
        f"UNet2DConditionModel {count_parameters(ours.unet)}, CLIPTextModel {count_parameters(ours.text_encoder)}, "
        f"AutoencoderKL {count_parameters(ours.vae)}; latents {ours.vae.config.latent_channels} x "
        f"{ours.unet.config.sample_size} x {ours.unet.config.sample_size}",
        f"- batch {args.batch_size} prompts, guidance scale {args.guidance_scale} (UNet batch "
        f"{2 * args.batch_size}), {args.steps} DPM-Solver++ steps, output_type np; "
        f"median of {args.repeats} interleaved runs after one warm-up each",
        "",
        "| pipeline | median wall s / call | images / s (wall) | median CPU s / call | wall runs (s) |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    names = {"ours": "LatentTextToImagePipeline", "theirs": "diffusers StableDiffusionPipeline"}
    for name, label in names.items():
        runs = ", ".join(f"{t:.2f}" for t in wall[name])
        lines.append(
            f"| {label} | {median_wall[name]:.3f} | {args.batch_size / median_wall[name]:.2f} | "
            f"{median_cpu[name]:.3f} | {runs} |"
        )
    lines += [
        "",
        f"**Speed ratio, images/s ours / diffusers: {wall_ratio:.3f}x wall, {cpu_ratio:.3f}x CPU time.** "
        f"Max abs difference of the two pipelines' images: {max_diff:.2e}.",
        "",
        "| sampler (our pipeline) | steps | wall s / call | CPU s / call | relative CPU time |",
        "| --- | ---: | ---: | ---: | ---: |",
        f"| DPM-Solver++ (2M) | {args.steps} | {dpm_wall:.2f} | {dpm_cpu:.2f} | 1.0x |",
        f"| DDPM | {args.ddpm_steps} | {ddpm_wall:.1f}{ddpm_note} | {ddpm_cpu:.1f} | {ddpm_cpu / dpm_cpu:.1f}x |",
        "",
        "Quality of the two samplers needs a trained model: run with `--pipeline DIR` for timings on it and",
        "compare the samplers' prompt accuracy and judge-FID with the evaluation protocol (README).",
    ]
    report = "\n".join(lines) + "\n"
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report)
    print(report)


if __name__ == "__main__":
    main()
