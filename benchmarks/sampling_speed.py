"""Text-to-image sampling speed: the quickstart model against its few-step student, fp32 against bf16 autocast
(and, with `--compile`, bf16 with the UNet compiled), and the teacher with guidance on an interval of its steps only.

For each (model, steps, guidance interval, precision): images/s of batches of `--batch-size` prompts (median of
`--repeats` timed calls after one warm-up, the precisions' calls interleaved; wall clock, all threads torch uses),
and, so that a faster setting cannot hide a worse one, prompt accuracy and judge-FID with the quickstart's protocol at `--per-digit` samples per digit. bf16 runs the
pipeline under `torch.autocast(device, torch.bfloat16)`: matmuls and convolutions in bf16, the scheduler and
everything else in fp32. A guidance interval [start, stop) (`--guidance-intervals 0:0.5 ...`, the pipeline's
`guidance_start` / `guidance_stop`) guides only those fractions of the steps and runs the conditional batch alone on
the others. `--compile` adds "bf16+compile" rows: `latentzoo.pipelines.utils.compile_denoiser` (bf16 weights,
torch.compile with freezing; its compilation is in the warm-up call, not in the timed ones). Every row also gives
the largest difference of its images (in [0, 1]) from the fp32 row's, same prompts and seeds. Measure on an idle
machine (another process on the same cores halves the numbers):

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
import sys
import time
from pathlib import Path

import torch
from train_throughput import matmul_peak  # this folder: run as `python benchmarks/sampling_speed.py`

from latentzoo.evaluation import load_judge
from latentzoo.evaluation.protocol import evaluate_text_to_image
from latentzoo.evaluation.sampling import sample_images
from latentzoo.pipelines.loading import load_pipeline
from latentzoo.pipelines.utils import compile_denoiser, guidance_enabled

RESULTS = Path(__file__).resolve().parent / "results"
PROMPT = "a bold seven slanted to the right"
# Images compared between precisions: one per digit and weight, seeds 0..N-1.
COMPARED_PROMPTS = [f"a {weight} {digit}" for weight in ("thin", "bold") for digit in range(10)]


def precision_context(precision: str, device: str):
    if precision.startswith("bf16"):
        return torch.autocast(device, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def sample(pipeline, prompts, steps, guidance, precision, device, interval) -> torch.Tensor:
    """One image per prompt in [0, 1], image i drawn with seed i (`sample_images`), under `precision`."""
    with precision_context(precision, device):
        images = sample_images(
            pipeline,
            len(prompts),
            0,
            prompt=prompts,
            num_inference_steps=steps,
            guidance_scale=guidance,
            guidance_start=interval[0],
            guidance_stop=interval[1],
        )
    return (images + 1) / 2


def images_per_second(
    pipelines: dict,
    steps: int,
    guidance: float,
    batch_size: int,
    repeats: int,
    device: str,
    interval: tuple[float, float] = (0.0, 1.0),
) -> dict[str, float]:
    """Images/s of each precision's pipeline (precision → pipeline): one warm-up call each (a compiled one compiles
    there), then `repeats` rounds that time one call of each in turn, so that a machine whose speed drifts during
    the run (shared cores) slows every precision alike; the median per precision."""

    def call(precision):
        start = time.perf_counter()
        sample(pipelines[precision], [PROMPT] * batch_size, steps, guidance, precision, device, interval)
        return time.perf_counter() - start

    for precision in pipelines:
        call(precision)  # warm-up
    times = {precision: [] for precision in pipelines}
    for _ in range(repeats):
        for precision in pipelines:
            times[precision].append(call(precision))
    return {precision: batch_size / statistics.median(t) for precision, t in times.items()}


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
    parser.add_argument(
        "--compile", action="store_true", help="also bf16 with the UNet compiled (compile_denoiser)"
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
        # fp32 and bf16 autocast share one pipeline; compile_denoiser changes its pipeline: one of its own
        fp32 = load_pipeline(path).to(args.device)
        pipelines = {"fp32": fp32, "bf16": fp32}
        if args.compile:
            pipelines["bf16+compile"] = load_pipeline(path).to(args.device)
            compile_denoiser(pipelines["bf16+compile"], torch.bfloat16)
        for pipeline in pipelines.values():
            pipeline.set_progress_bar_config(disable=True)
        for steps, interval in settings:
            speeds = images_per_second(
                pipelines, steps, args.guidance_scale, args.batch_size, args.repeats, args.device, interval
            )
            reference = None
            for precision, pipeline in pipelines.items():
                images = sample(
                    pipeline, COMPARED_PROMPTS, steps, args.guidance_scale, precision, args.device, interval
                )
                reference = images if reference is None else reference  # fp32 comes first
                row = {
                    "model": model,
                    "sampler": type(pipeline.scheduler).__name__,
                    "steps": steps,
                    "guidance_interval": list(interval),
                    "precision": precision,
                    "images_per_second": speeds[precision],
                    "max_difference_from_fp32": float((images - reference).abs().max()),
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

    peaks = (matmul_peak(torch.float32) / 1e9, matmul_peak(torch.bfloat16) / 1e9)
    machine = (
        f"{platform.machine()}, {os.cpu_count()} CPU cores visible, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, device {args.device}; matmul peaks measured after the rows: fp32 "
        f"{peaks[0]:.0f}, bf16 {peaks[1]:.0f} GFLOP/s"
    )
    RESULTS.mkdir(exist_ok=True)
    with open(RESULTS / f"{args.name}.jsonl", "w") as f:
        for row in rows:
            f.write(json.dumps({**row, "machine": machine}) + "\n")
    lines = [
        "# Text-to-image sampling speed: teacher and few-step student, fp32 and bf16 autocast",
        "",
        f"`python benchmarks/sampling_speed.py {' '.join(argv if argv is not None else sys.argv[1:])}`; {machine}; "
        f"batches of {args.batch_size} prompts, median of {args.repeats} calls after a warm-up; guidance "
        f"{args.guidance_scale}. Quality: the quickstart's protocol at "
        f"{10 * args.per_digit} samples ({rows[0].get('fid', 'no FID')}).",
        "",
        "| model | sampler | steps | guided steps | precision | images/s | max difference from fp32 | prompt accuracy "
        "| judge-FID |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        quality = (
            f"{row['prompt_accuracy']:.1%} | {row['judge_fid']:.1f}" if "prompt_accuracy" in row else "| "
        )
        lines.append(
            f"| {row['model']} | {row['sampler']} | {row['steps']} | {guided_steps(row)} | {row['precision']} | "
            f"{row['images_per_second']:.1f} | {row['max_difference_from_fp32']:.3f} | {quality} |"
        )
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
