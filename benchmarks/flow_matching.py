"""Flow matching against the v-prediction DDPM objective, at equal training steps, on `ddpm-mnist-classes` or the
text-to-image quickstart (`--preset text2img-mnist`).

Trains the preset twice from the same seed, once per objective (`model.objective=ddpm`, the preset's, and
`model.objective=flow_matching`), with a checkpoint every `--checkpoint-steps`; then the judge scores

- a curve: the judge's accuracy on the asked digit (class labels; for text to image, prompts with the quickstart's
  protocol, beside weight and slant accuracy) and judge-FID of each checkpoint's EMA weights against training steps, at 20 steps of
  each objective's default sampler (DPM-Solver++ for both: on the noise schedule, or on the flow's sigmas);
- a table: the final models at 4, 8 and 20 sampling steps with every sampler that fits them, with images/s.

Every FID stands beside the real-vs-real FID at the same sample count. One command, idle 2-core CPU, ~40 minutes:

    python benchmarks/flow_matching.py --output-dir outputs/flow-vs-ddpm
    python benchmarks/flow_matching.py --preset text2img-mnist --guidance-scale 3 --checkpoint-steps 275 \
        --output-dir outputs/flow-vs-ddpm-text --name flow_matching_text_to_image \
        model.vae=outputs/text2img-mnist/vae model.text_encoder=outputs/text2img-mnist/stages/text_encoder

(the last two overrides reuse the quickstart's VAE and contrastive text-encoder stages, so both runs differ only in
the UNet's objective). Writes benchmarks/results/NAME.{md,jsonl,png}; runs already trained in --output-dir are
reused.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from latentzoo.data import load_dataset  # noqa: E402
from latentzoo.evaluation import fid_report, load_judge  # noqa: E402
from latentzoo.evaluation.protocol import evaluate_text_to_image  # noqa: E402
from latentzoo.evaluation.sampling import sample_images  # noqa: E402
from latentzoo.pipelines.loading import load_pipeline  # noqa: E402
from latentzoo.pipelines.samplers import make_sampler  # noqa: E402
from latentzoo.training import Trainer, list_checkpoints, load_config, train  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
OBJECTIVES = {"ddpm": ("dpm++",), "flow_matching": ("euler", "dpm++", "heun")}


def scores(pipeline, judge, reference, per_class: int, steps: int, guidance: float, seed: int) -> dict:
    """`per_class` samples of each digit (one generator per image: seed + i): the judge's accuracy on the asked digit
    (class labels, or prompts with the quickstart's protocol for a text-to-image model) and judge-FID."""
    pipeline.set_progress_bar_config(disable=True)
    if pipeline.num_classes is None:  # text to image
        result = evaluate_text_to_image(
            pipeline,
            per_digit=per_class,
            num_inference_steps=steps,
            guidance_scale=guidance,
            seed=seed,
            judge=judge,
            reference_images=reference,
            held_out_per_digit=0,
        )["metrics"]
        fid = next(key for key in result if key.startswith("judge-FID"))
        return {
            "accuracy": result["prompt accuracy"],
            "weight_accuracy": result["weight accuracy"],
            "slant_accuracy": result["slant accuracy"],
            "judge_fid": result[fid],
            "real_vs_real_fid": result[f"real-vs-real {fid}"],
            "images_per_second": result["images/s (sampling)"],
        }
    labels = [digit for digit in range(10) for _ in range(per_class)]
    start = time.perf_counter()
    images = sample_images(
        pipeline,
        len(labels),
        seed,
        100,
        class_labels=labels,
        num_inference_steps=steps,
        guidance_scale=guidance,
    )
    seconds = time.perf_counter() - start
    fid = fid_report(judge, images, reference, seed=seed)
    return {
        "accuracy": (judge.predict(images) == torch.tensor(labels)).float().mean().item(),
        "judge_fid": fid["fid"],
        "real_vs_real_fid": fid["real_vs_real_fid"],
        "fid_samples": fid["num_samples"],
        "images_per_second": len(images) / seconds,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", type=Path, default=Path("outputs/flow-vs-ddpm"))
    parser.add_argument("--preset", default="ddpm-mnist-classes")
    parser.add_argument("--checkpoint-steps", type=int, default=750)
    parser.add_argument("--per-class", type=int, default=50)
    parser.add_argument("--guidance-scale", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default="flow_matching")
    parser.add_argument("overrides", nargs="*", help="key=value overrides for both runs")
    args = parser.parse_args(argv)

    judge = load_judge()
    reference = load_dataset("mnist", split="validation").pixel_values
    rows = []

    def record(row):
        rows.append(row)
        print(json.dumps(row), flush=True)

    for objective, samplers in OBJECTIVES.items():
        run_dir = args.output_dir / objective
        config = load_config(
            args.preset,
            [
                f"output_dir={run_dir}",
                f"model.objective={objective}",
                f"checkpointing_steps={args.checkpoint_steps}",
                "report_to=none",
                *args.overrides,
            ],
        )
        if not (run_dir / "model_index.json").is_file():
            train(config)
        minutes = json.loads((run_dir / "train_state.json").read_text())["elapsed_seconds"] / 60
        for checkpoint in list_checkpoints(run_dir / "checkpoints"):
            pipeline = Trainer(config).pipeline_from_checkpoint(checkpoint)
            step = json.loads((checkpoint / "train_state.json").read_text())["global_step"]
            pipeline.scheduler = make_sampler("dpm++", pipeline.scheduler.config)
            result = scores(pipeline, judge, reference, args.per_class, 20, args.guidance_scale, args.seed)
            record(
                {
                    "kind": "curve",
                    "objective": objective,
                    "train_step": step,
                    "sampler": "dpm++",
                    "steps": 20,
                    **result,
                }
            )
        for sampler in samplers:
            for steps in (4, 8, 20):
                pipeline = load_pipeline(run_dir)
                pipeline.scheduler = make_sampler(sampler, pipeline.scheduler.config)
                result = scores(
                    pipeline, judge, reference, args.per_class, steps, args.guidance_scale, args.seed
                )
                record(
                    {
                        "kind": "steps",
                        "objective": objective,
                        "train_minutes": round(minutes, 1),
                        "sampler": sampler,
                        "steps": steps,
                        **result,
                    }
                )

    RESULTS.mkdir(exist_ok=True)
    with open(RESULTS / f"{args.name}.jsonl", "w") as f:
        for row in rows:
            f.write(json.dumps({**row, "cpu": platform.processor() or platform.machine()}) + "\n")
    text = "weight_accuracy" in rows[0]
    accuracy = "prompt accuracy" if text else "class accuracy"
    attributes = " | weight accuracy | slant accuracy" if text else ""

    def attribute_cells(row) -> str:
        return f" | {row['weight_accuracy']:.1%} | {row['slant_accuracy']:.1%}" if text else ""

    lines = [
        f"# Flow matching against the DDPM objective ({args.preset}, equal training steps)",
        "",
        f"`python benchmarks/flow_matching.py {' '.join(sys.argv[1:] if argv is None else argv)}`; "
        f"{args.per_class} samples per digit, "
        f"guidance {args.guidance_scale}, seeds {args.seed}+i; judge-FID beside the real-vs-real FID at the same "
        "count. EMA weights.",
        "",
        "## Final models against sampling steps",
        "",
        f"| objective | sampler | steps | {accuracy}{attributes} | judge-FID (real vs real) | images/s |",
        "|---|---|---|---|---|---|" + "---|" * attributes.count("|"),
    ]
    for r in (r for r in rows if r["kind"] == "steps"):
        lines.append(
            f"| {r['objective']} | {r['sampler']} | {r['steps']} | {r['accuracy']:.1%}{attribute_cells(r)} | "
            f"{r['judge_fid']:.2f} ({r['real_vs_real_fid']:.2f}) | {r['images_per_second']:.1f} |"
        )
    lines += [
        "",
        "## Against training steps (DPM-Solver++, 20 steps)",
        "",
        f"| objective | training step | {accuracy}{attributes} | judge-FID (real vs real) |",
        "|---|---|---|---|" + "---|" * attributes.count("|"),
    ]
    for r in (r for r in rows if r["kind"] == "curve"):
        lines.append(
            f"| {r['objective']} | {r['train_step']} | {r['accuracy']:.1%}{attribute_cells(r)} | "
            f"{r['judge_fid']:.2f} ({r['real_vs_real_fid']:.2f}) |"
        )
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines) + "\n")

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for objective in OBJECTIVES:
        curve = [r for r in rows if r["kind"] == "curve" and r["objective"] == objective]
        steps = [r["train_step"] for r in curve]
        left.plot(steps, [r["accuracy"] for r in curve], marker="o", label=objective)
        right.plot(steps, [r["judge_fid"] for r in curve], marker="o", label=objective)
    left.set(xlabel="training step", ylabel=f"{accuracy} (judge)", title="DPM-Solver++, 20 steps")
    right.set(xlabel="training step", ylabel="judge-FID", yscale="log", title="lower is better")
    left.legend()
    figure.tight_layout()
    figure.savefig(RESULTS / f"{args.name}.png", dpi=100)


if __name__ == "__main__":
    main()
