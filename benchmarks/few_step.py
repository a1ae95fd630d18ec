"""Few-step text-to-image: the latent-consistency-distilled student against its 20-step teacher.

Scores, with the quickstart's judge protocol (`latentzoo.evaluation.protocol.evaluate_text_to_image`: prompts from
the caption templates with seeded attributes, one generator per image, judge-FID beside the real-vs-real FID at
the same count):

- the teacher at 20 steps of its saved sampler (the reference: DPM-Solver++ for a noise-schedule teacher, Euler for
  a flow-matching one) and at 1/2/4/8 steps (what fewer steps give without distillation);
- the student (`latentzoo train text2img-mnist-fewstep`) at 1/2/4/8 steps of its saved sampler (LCMScheduler, or
  FlowMatchLCMScheduler for a flow teacher's student), and, where the student takes it, at 2/4 steps of TCD's
  sampler (deterministic, η = 0);
- with `--curve`, the student's checkpoints at 4 steps, against distillation steps.

All at the same guidance scale (3, the teacher's validated one; the student takes it as an input). One command,
after both are trained, idle 2-core CPU, ~10 minutes:

    python benchmarks/few_step.py --teacher outputs/text2img-mnist --student outputs/text2img-mnist-fewstep

Writes benchmarks/results/few_step.{md,jsonl} and few_step.png (a row of samples per setting, same prompts and
seeds).
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch

from latentzoo.evaluation import load_judge
from latentzoo.evaluation.images import make_image_grid
from latentzoo.evaluation.protocol import evaluate_text_to_image
from latentzoo.evaluation.sampling import sample_images
from latentzoo.pipelines.loading import load_pipeline
from latentzoo.pipelines.samplers import make_sampler, sampler_names
from latentzoo.training import Trainer, list_checkpoints, load_config

RESULTS = Path(__file__).resolve().parent / "results"
FIGURE_PROMPTS = [
    "a bold zero",
    "a thin two slanted to the left",
    "a bold 4 slanted to the right",
    "the digit 7",
]


def score(pipeline, judge, per_digit: int, steps: int, guidance: float, seed: int) -> dict:
    pipeline.set_progress_bar_config(disable=True)
    result = evaluate_text_to_image(
        pipeline,
        per_digit=per_digit,
        num_inference_steps=steps,
        guidance_scale=guidance,
        seed=seed,
        judge=judge,
        held_out_per_digit=0,
    )
    return result["metrics"]


def figure_row(pipeline, steps: int, guidance: float, per_prompt: int = 4) -> torch.Tensor:
    prompts = [prompt for prompt in FIGURE_PROMPTS for _ in range(per_prompt)]
    images = sample_images(
        pipeline,
        len(prompts),
        0,
        len(prompts),
        prompt=prompts,
        num_inference_steps=steps,
        guidance_scale=guidance,
    )
    return (images + 1) / 2


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", type=Path, default=Path("outputs/text2img-mnist"))
    parser.add_argument("--student", type=Path, default=Path("outputs/text2img-mnist-fewstep"))
    parser.add_argument("--per-digit", type=int, default=100)
    parser.add_argument("--guidance-scale", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--curve", action="store_true", help="also score the student's checkpoints at 4 steps"
    )
    parser.add_argument("--name", default="few_step")
    args = parser.parse_args(argv)

    judge = load_judge()
    rows, figure, labels = [], [], []

    def record(row):
        rows.append(row)
        print(json.dumps(row), flush=True)

    teacher = load_pipeline(args.teacher)
    student = load_pipeline(args.student)
    state = json.loads((args.student / "train_state.json").read_text())
    for model, pipeline, sampler, steps_list in (
        ("teacher", teacher, None, (20, 8, 4, 2, 1)),
        ("student", student, None, (8, 4, 2, 1)),
        ("student", student, "tcd", (4, 2)),
    ):
        if sampler is not None:
            if sampler not in sampler_names(pipeline.scheduler.config):
                continue  # TCD has no flow-matching sampler
            pipeline.scheduler = make_sampler(sampler, pipeline.scheduler.config)
        name = type(pipeline.scheduler).__name__
        for steps in steps_list:
            metrics = score(pipeline, judge, args.per_digit, steps, args.guidance_scale, args.seed)
            record({"kind": "steps", "model": model, "sampler": name, "steps": steps, **metrics})
            if sampler is None and (model == "student" or steps in (20, 4)):
                figure.append(figure_row(pipeline, steps, args.guidance_scale))
                labels.append(f"{model} {steps}")

    if args.curve:
        config = load_config(args.student / "training_config.yaml")
        for checkpoint in list_checkpoints(args.student / "checkpoints"):
            pipeline = Trainer(config).pipeline_from_checkpoint(checkpoint)
            step = json.loads((checkpoint / "train_state.json").read_text())["global_step"]
            metrics = score(pipeline, judge, args.per_digit // 2, 4, args.guidance_scale, args.seed)
            record({"kind": "curve", "model": "student", "train_step": step, "steps": 4, **metrics})

    RESULTS.mkdir(exist_ok=True)
    with open(RESULTS / f"{args.name}.jsonl", "w") as f:
        for row in rows:
            f.write(json.dumps({**row, "cpu": platform.processor() or platform.machine()}) + "\n")
    make_image_grid(torch.cat(figure), nrow=len(figure[0])).save(RESULTS / f"{args.name}.png")

    fid_key = next(key for key in rows[0] if key.startswith("judge-FID"))
    floor_key = next(key for key in rows[0] if key.startswith("real-vs-real"))
    reference_fid = rows[0][fid_key]
    lines = [
        "# Few-step text-to-image: latent consistency distillation of the quickstart model",
        "",
        f"`python benchmarks/few_step.py --teacher {args.teacher} --student {args.student}"
        f"{' --curve' if args.curve else ''}`; student distilled for {state['global_step']:,} steps "
        f"({state['elapsed_seconds'] / 60:.1f} min). {10 * args.per_digit} samples ({args.per_digit} per digit), "
        f"guidance {args.guidance_scale}, one generator per image (seeds {args.seed}+i); {fid_key} beside the "
        f"real-vs-real FID at the same count ({rows[0][floor_key]:.1f}); images/s with batches of 100 on "
        f"{platform.processor() or platform.machine()}.",
        "",
        "| model | sampler | steps | prompt accuracy | weight accuracy | slant accuracy | judge-FID | FID / teacher-20 "
        "| images/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if row["kind"] != "steps":
            continue
        lines.append(
            f"| {row['model']} | {row['sampler']} | {row['steps']} | {row['prompt accuracy']:.1%} | "
            f"{row['weight accuracy']:.1%} | {row['slant accuracy']:.1%} | {row[fid_key]:.1f} | "
            f"{row[fid_key] / reference_fid:.2f} | {row['images/s (sampling)']:.1f} |"
        )
    curve = [row for row in rows if row["kind"] == "curve"]
    if curve:
        lines += [
            "",
            f"Student checkpoints at 4 steps ({5 * args.per_digit} samples):",
            "",
            "| distillation steps | prompt accuracy | judge-FID |",
            "|---|---|---|",
        ]
        lines += [
            f"| {row['train_step']:,} | {row['prompt accuracy']:.1%} | {row[fid_key]:.1f} |" for row in curve
        ]
    lines += ["", f"Figure rows (`{args.name}.png`), top to bottom: {', '.join(labels)} steps."]
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
