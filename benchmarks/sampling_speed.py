"""Text-to-image sampling speed: the quickstart model against its few-step student, fp32 against bf16 autocast,
and the teacher with guidance on an interval of its steps only.

For each (model, steps, guidance interval, precision): images/s of batches of `--batch-size` prompts (median of `--repeats` timed
calls after one warm-up; wall clock, all threads torch uses), and, so that a faster setting cannot hide a worse
one, prompt accuracy and judge-FID with the quickstart's protocol at `--per-digit` samples per digit. bf16 runs the
pipeline under `torch.autocast(device, torch.bfloat16)`: matmuls and convolutions in bf16, the scheduler and
everything else in fp32. A guidance interval [start, stop) (`--guidance-intervals 0:0.5 ...`, the pipeline's
`guidance_start` / `guidance_stop`) guides only those fractions of the steps and runs the conditional batch alone on
the others. Measure on an idle machine (another process on the same cores halves the numbers):

    python benchmarks/sampling_speed.py --teacher outputs/text2img-mnist --student outputs/text2img-mnist-fewstep

Writes benchmarks/results/sampling_speed.{md,jsonl}.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from latentzoo.evaluation import load_judge
from latentzoo.evaluation.protocol import evaluate_text_to_image
from latentzoo.pipelines.loading import load_pipeline
from latentzoo.pipelines.utils import guidance_enabled

RESULTS = Path(__file__).resolve().parent / "results"
PROMPT = "a bold seven slanted to the right"


def precision_context(precision: str, device: str):
    if precision == "bf16":
        return torch.autocast(device, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def images_per_second(
    pipeline,
    steps: int,
    guidance: float,
    batch_size: int,
    repeats: int,
    precision: str,
    device: str,
    interval: tuple[float, float] = (0.0, 1.0),
) -> float:
    def call():
        generators = [torch.Generator().manual_seed(i) for i in range(batch_size)]
        with precision_context(precision, device):
            start = time.perf_counter()
            pipeline(
                [PROMPT] * batch_size,
                num_inference_steps=steps,
                guidance_scale=guidance,
                guidance_start=interval[0],
                guidance_stop=interval[1],
                generator=generators,
                output_type="pt",
            )
            return time.perf_counter() - start

    call()  # warm-up
    return batch_size / statistics.median(call() for _ in range(repeats))


def guided_steps(row: dict) -> str:
    """Which steps of a row are guided: "all", or the interval and the count, e.g. "[0, 0.5): 10 of 20"."""
    start, stop = row["guidance_interval"]
    if (start, stop) == (0.0, 1.0) or row["model"] == "student":
        return "all" if row["model"] == "teacher" else "– (distilled)"
    count = sum(guidance_enabled(i, row["steps"], start, stop) for i in range(row["steps"]))
    return f"[{start:g}, {stop:g}): {count} of {row['steps']}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", type=Path, default=Path("outputs/text2img-mnist"))
    parser.add_argument("--student", type=Path, default=Path("outputs/text2img-mnist-fewstep"))
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--per-digit", type=int, default=20, help="quality check: samples per digit (0: none)"
    )
    parser.add_argument("--guidance-scale", type=float, default=3.0)
    parser.add_argument(
        "--guidance-intervals",
        nargs="*",
        default=[],
        metavar="START:STOP",
        help="teacher at 20 steps with guidance on these fractions of the steps only, e.g. 0:0.5",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--name", default="sampling_speed")
    args = parser.parse_args(argv)

    judge = load_judge() if args.per_digit else None
    full = (0.0, 1.0)
    intervals = [tuple(float(x) for x in item.split(":")) for item in args.guidance_intervals]
    runs = {
        "teacher": (args.teacher, [(20, full), *((20, interval) for interval in intervals), (4, full)]),
        "student": (args.student, [(4, full), (2, full), (1, full)]),
    }
    rows = []
    for model, (path, settings) in runs.items():
        pipeline = load_pipeline(path).to(args.device)
        pipeline.set_progress_bar_config(disable=True)
        for steps, interval in settings:
            for precision in ("fp32", "bf16"):
                row = {
                    "model": model,
                    "sampler": type(pipeline.scheduler).__name__,
                    "steps": steps,
                    "guidance_interval": list(interval),
                    "precision": precision,
                    "images_per_second": images_per_second(
                        pipeline,
                        steps,
                        args.guidance_scale,
                        args.batch_size,
                        args.repeats,
                        precision,
                        args.device,
                        interval,
                    ),
                }
                if args.per_digit:
                    with precision_context(precision, args.device):
                        metrics = evaluate_text_to_image(
                            pipeline,
                            per_digit=args.per_digit,
                            num_inference_steps=steps,
                            guidance_scale=args.guidance_scale,
                            judge=judge,
                            held_out_per_digit=0,
                            guidance_start=interval[0],
                            guidance_stop=interval[1],
                        )["metrics"]
                    fid = next(key for key in metrics if key.startswith("judge-FID"))
                    row.update(
                        {"prompt_accuracy": metrics["prompt accuracy"], "judge_fid": metrics[fid], "fid": fid}
                    )
                rows.append(row)
                print(json.dumps(row), flush=True)

    machine = (
        f"{platform.machine()}, {os.cpu_count()} CPU cores visible, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, device {args.device}"
    )
    RESULTS.mkdir(exist_ok=True)
    with open(RESULTS / f"{args.name}.jsonl", "w") as f:
        for row in rows:
            f.write(json.dumps({**row, "machine": machine}) + "\n")
    lines = [
        "# Text-to-image sampling speed: teacher and few-step student, fp32 and bf16 autocast",
        "",
        f"`python benchmarks/sampling_speed.py --teacher {args.teacher} --student {args.student}`; {machine}; "
        f"batches of {args.batch_size} prompts, median of {args.repeats} calls after a warm-up; guidance "
        f"{args.guidance_scale}. Quality: the quickstart's protocol at "
        f"{10 * args.per_digit} samples ({rows[0].get('fid', 'no FID')}).",
        "",
        "| model | sampler | steps | guided steps | precision | images/s | prompt accuracy | judge-FID |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        quality = (
            f"{row['prompt_accuracy']:.1%} | {row['judge_fid']:.1f}" if "prompt_accuracy" in row else "| "
        )
        lines.append(
            f"| {row['model']} | {row['sampler']} | {row['steps']} | {guided_steps(row)} | {row['precision']} | "
            f"{row['images_per_second']:.1f} | {quality} |"
        )
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
