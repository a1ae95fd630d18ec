"""Few-step class-conditional pixel DDPM: the consistency-distilled student against its 20-step teacher.

The teacher (`ddpm-mnist-classes`) at 20 DPM-Solver++ steps is the reference, and at 1/2/4/8 steps shows what
fewer steps give without distillation; the student (`latentzoo train ddpm-mnist-classes-fewstep`) samples at 1/2/4/8
steps of its saved LCMScheduler. Everything at guidance scale 3 (the student's distilled one). The model-zoo protocol:
`--num-samples` images, seeds 0..N-1 one generator each, the ten digits in turn; the judge's label accuracy and class
coverage, judge-FID against the held-out validation digits beside the real-vs-real FID at the same count; images/s
from the same sampling call (batch 100; measure on an idle machine).

    python benchmarks/few_step_pixel.py --teacher outputs/ddpm-mnist-classes --student outputs/ddpm-mnist-classes-fewstep

Writes benchmarks/results/few_step_pixel.{md,jsonl} and few_step_pixel.png (digits 0-9 per setting, same seeds).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from latentzoo.data import load_dataset
from latentzoo.evaluation import class_coverage, fid_report, load_judge
from latentzoo.evaluation.images import make_image_grid
from latentzoo.evaluation.sampling import sample_images
from latentzoo.pipelines.loading import load_pipeline

RESULTS = Path(__file__).resolve().parent / "results"
GUIDANCE = 3.0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", type=Path, default=Path("outputs/ddpm-mnist-classes"))
    parser.add_argument("--student", type=Path, default=Path("outputs/ddpm-mnist-classes-fewstep"))
    parser.add_argument("--num-samples", type=int, default=500, help="a multiple of 10")
    parser.add_argument("--name", default="few_step_pixel")
    args = parser.parse_args(argv)
    if args.num_samples <= 0 or args.num_samples % 10:
        parser.error(f"--num-samples must be a positive multiple of 10, got {args.num_samples}")

    judge = load_judge()
    reference = load_dataset("mnist", split="validation").pixel_values
    digits = torch.arange(args.num_samples) % 10
    settings = [("teacher", args.teacher, "dpm++", steps) for steps in (20, 1, 2, 4, 8)] + [
        ("student", args.student, None, steps) for steps in (1, 2, 4, 8)
    ]
    rows, grids = [], []
    for model, folder, sampler, steps in settings:
        pipeline = load_pipeline(str(folder), sampler=sampler)
        pipeline.set_progress_bar_config(disable=True)
        start = time.perf_counter()
        images = sample_images(
            pipeline,
            args.num_samples,
            0,
            100,
            class_labels=digits.tolist(),
            num_inference_steps=steps,
            guidance_scale=GUIDANCE,
        )
        seconds = time.perf_counter() - start
        predicted = judge.predict(images)
        coverage = class_coverage(predicted)
        row = {
            "model": model,
            "sampler": type(pipeline.scheduler).__name__,
            "steps": steps,
            "guidance_scale": GUIDANCE,
            "label_accuracy": float((predicted == digits).float().mean()),
            "classes_covered": coverage["classes_covered"],
            **fid_report(judge, images, reference, seed=0),
            "images_per_second": args.num_samples / seconds,
        }
        rows.append(row)
        grids.append((images[:10] + 1) / 2)
        print(json.dumps(row), flush=True)

    reference_row = rows[0]
    lines = [
        "# Few-step class-conditional pixel DDPM: consistency distillation against the 20-step teacher",
        "",
        f"`python benchmarks/few_step_pixel.py --num-samples {args.num_samples}` — {time.strftime('%Y-%m-%d')}, "
        f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}. Guidance scale "
        f"{GUIDANCE}; {args.num_samples} samples per row (seeds 0..{args.num_samples - 1}, one generator each, digits "
        f"0-9 in turn); judge-FID against the held-out validation digits, {reference_row['num_samples']} vs "
        f"{reference_row['num_samples']}, real vs real **{reference_row['real_vs_real_fid']:.1f}**; images/s of the "
        "sampling call (batch 100).",
        "",
        "| model | sampler | steps | label accuracy | classes covered | judge-FID | FID / teacher's 20-step | images/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['model']} | {row['sampler']} | {row['steps']} | {row['label_accuracy']:.1%} | "
            f"{row['classes_covered']}/10 | {row['fid']:.1f} | {row['fid'] / reference_row['fid']:.2f}x | "
            f"{row['images_per_second']:.1f} |"
        )
    lines += [
        "",
        f"![digits 0-9 per setting, same seeds]({args.name}.png): one row per setting, in the table's order.",
    ]
    text = "\n".join(lines) + "\n"
    (RESULTS / f"{args.name}.md").write_text(text)
    (RESULTS / f"{args.name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    make_image_grid(torch.cat(grids), nrow=10).save(RESULTS / f"{args.name}.png")
    print(text)


if __name__ == "__main__":
    main()
