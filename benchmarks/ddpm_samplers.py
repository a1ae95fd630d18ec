"""Quality and speed of a class-conditional pixel DDPM against the sampler and the number of steps.

For each saved model and each ``sampler:steps`` pair, the same class labels (``--per-class`` of each digit) and
the same seeds (one generator per image: seed + index) are sampled; the judge scores them:

- class accuracy: the share of images the judge classifies as the class they were generated for;
- judge-FID against held-out real mnist digits, beside the real-vs-real FID at the same sample count
  (``latentzoo.evaluation.fid_report``; with 500 validation digits, at most 250 samples count);
- sampling time (wall clock, this process, batch ``--batch-size`` images).

    OMP_NUM_THREADS=1 nice -n 19 python benchmarks/ddpm_samplers.py outputs/ddpm-mnist-classes \\
        --runs ddim:10 ddim:20 ddim:50 dpm++:10 dpm++:20 dpm++:50 --per-class 20 --guidance-scale 2

Appends one JSON line per (model, sampler, steps) to ``--output`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
import yaml

from latentzoo.data import load_dataset
from latentzoo.evaluation import fid_report, load_judge
from latentzoo.evaluation.images import make_image_grid
from latentzoo.evaluation.sampling import sample_images
from latentzoo.pipelines.loading import load_pipeline

SAMPLER_NAMES = {"ddpm": "DDPM", "ddim": "DDIM", "dpm++": "DPM-Solver++(2M)", "euler": "Euler"}


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "model_dirs", nargs="+", help="saved PixelDiffusionPipeline folders (class-conditional)"
    )
    parser.add_argument("--runs", nargs="+", default=["dpm++:20"], help="sampler:steps pairs, e.g. ddpm:1000")
    parser.add_argument("--per-class", type=int, default=20)
    parser.add_argument("--guidance-scale", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--output", default="benchmarks/results/ddpm.jsonl")
    parser.add_argument("--save-grid", action="store_true", help="save the first 10 per class as a PNG grid")
    parser.add_argument(
        "--scheduler-config",
        nargs="*",
        default=[],
        help="KEY=VALUE overrides of the sampler's config (YAML values), e.g. clip_sample=false",
    )
    args = parser.parse_args()

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
    judge = load_judge()
    reference = load_dataset("mnist", split="validation").pixel_values  # (500, 1, 32, 32)
    class_labels = [digit for digit in range(10) for _ in range(args.per_class)]
    overrides = {
        key: yaml.safe_load(value) for key, value in (kv.split("=", 1) for kv in args.scheduler_config)
    }
    rows = []
    for model_dir in args.model_dirs:
        config = json.loads((Path(model_dir) / "scheduler" / "scheduler_config.json").read_text())
        state = json.loads((Path(model_dir) / "train_state.json").read_text())
        for run in args.runs:
            sampler, steps = run.split(":")
            pipeline = load_pipeline(model_dir, sampler=sampler)
            if overrides:
                pipeline.scheduler = type(pipeline.scheduler).from_config(
                    pipeline.scheduler.config, **overrides
                )
            pipeline.set_progress_bar_config(disable=True)
            start = time.perf_counter()
            images = sample_images(
                pipeline,
                len(class_labels),
                args.seed,
                args.batch_size,
                class_labels=class_labels,
                num_inference_steps=int(steps),
                guidance_scale=args.guidance_scale,
            )
            seconds = time.perf_counter() - start
            accuracy = (judge.predict(images) == torch.tensor(class_labels)).float().mean().item()
            fid = fid_report(judge, images, reference, seed=args.seed)
            row = {
                "model": str(model_dir),
                "schedule": "cosine"
                if config["beta_schedule"] == "squaredcos_cap_v2"
                else config["beta_schedule"],
                "train_steps": state.get("global_step"),
                "train_minutes": round(state.get("elapsed_seconds", 0) / 60, 1),
                "sampler": SAMPLER_NAMES.get(sampler, sampler),
                "steps": int(steps),
                "scheduler_config": overrides,
                "clip_sample": pipeline.scheduler.config.get("clip_sample"),
                "guidance_scale": args.guidance_scale,
                "num_samples": len(images),
                "class_accuracy": accuracy,
                "judge_fid": fid["fid"],
                "real_vs_real_fid": fid["real_vs_real_fid"],
                "fid_samples": fid["num_samples"],
                "sampling_seconds": seconds,
                "seconds_per_image": seconds / len(images),
                "seed": args.seed,
                "threads": torch.get_num_threads(),
                "cpu": platform.processor() or platform.machine(),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
            Path(args.output).parent.mkdir(parents=True, exist_ok=True)
            with open(args.output, "a") as f:
                f.write(json.dumps(row) + "\n")
            if args.save_grid:
                first = torch.stack(
                    [
                        images[d * args.per_class + i]
                        for d in range(10)
                        for i in range(min(10, args.per_class))
                    ]
                )
                grid = make_image_grid((first + 1) / 2, nrow=min(10, args.per_class))
                suffix = "".join(f"_{k}-{v}" for k, v in overrides.items())
                grid.save(Path(model_dir) / f"samples_{sampler}_{steps}{suffix}.png")

    print(
        "\n| schedule | sampler | steps | class accuracy | judge-FID (real-vs-real) | samples | s / image |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['schedule']} | {r['sampler']} | {r['steps']} | {r['class_accuracy']:.1%} | "
            f"{r['judge_fid']:.2f} ({r['real_vs_real_fid']:.2f}) | {r['num_samples']} | {r['seconds_per_image']:.3f} |"
        )


if __name__ == "__main__":
    main()
