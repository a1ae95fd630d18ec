"""Text-to-image quality against training time: prompt accuracy, attribute accuracy and judge-FID per checkpoint.

    python benchmarks/text_to_image_quality.py --output-dir outputs/t2i-curve --minutes 15 --checkpoint-steps 300 \
        [--per-digit 50] [key=value overrides of configs/text2img-mnist.yaml ...]

Trains `text2img-mnist` (after its VAE and text-encoder stages, not counted in the minutes) with a checkpoint every
`--checkpoint-steps` steps, then evaluates the EMA weights of every checkpoint with the protocol of
`latentzoo.evaluation.protocol` (DPM-Solver++ 20 steps, guidance 3) and writes a table and a plot of accuracy
against training minutes to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from latentzoo.evaluation.protocol import evaluate_text_to_image  # noqa: E402
from latentzoo.training import Trainer, list_checkpoints, load_config, train  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", type=Path, default=Path("outputs/t2i-curve"))
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--checkpoint-steps", type=int, default=300)
    parser.add_argument("--per-digit", type=int, default=50)
    parser.add_argument("--guidance-scale", type=float, default=3.0)
    parser.add_argument("--name", default="text_to_image_quality")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)

    config = load_config(
        "text2img-mnist",
        [
            f"output_dir={args.output_dir}",
            f"max_train_minutes={args.minutes}",
            f"checkpointing_steps={args.checkpoint_steps}",
            "use_ema=true",
            *args.overrides,
        ],
    )
    if not (args.output_dir / "model_index.json").is_file():
        train(config)

    rows = []
    for checkpoint in list_checkpoints(args.output_dir / "checkpoints"):
        state = json.loads((checkpoint / "train_state.json").read_text())
        pipeline = Trainer(config).pipeline_from_checkpoint(checkpoint)
        pipeline.set_progress_bar_config(disable=True)
        result = evaluate_text_to_image(
            pipeline, per_digit=args.per_digit, guidance_scale=args.guidance_scale, held_out_per_digit=10
        )
        rows.append(
            {"minutes": state["elapsed_seconds"] / 60, "step": state["global_step"], **result["metrics"]}
        )
        print(json.dumps(rows[-1]), flush=True)

    keys = [k for k in rows[0] if k not in ("minutes", "step")]
    lines = [
        f"# Text-to-image quality against training minutes ({args.name})",
        "",
        f"`python benchmarks/text_to_image_quality.py --minutes {args.minutes} --checkpoint-steps "
        f"{args.checkpoint_steps} --per-digit {args.per_digit} {' '.join(args.overrides)}` on 2 CPU cores; "
        f"EMA weights of each checkpoint. Protocol: {result['protocol']}",
        "",
        "| minutes | step | " + " | ".join(keys) + " |",
        "|---|---|" + "---|" * len(keys),
    ]
    for row in rows:
        lines.append(
            f"| {row['minutes']:.1f} | {row['step']} | " + " | ".join(f"{row[k]:.3f}" for k in keys) + " |"
        )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines) + "\n")

    figure, axis = plt.subplots(figsize=(6, 4))
    minutes = [row["minutes"] for row in rows]
    for key in (
        "prompt accuracy",
        "prompt accuracy, held-out phrasings",
        "weight accuracy",
        "slant accuracy",
    ):
        axis.plot(minutes, [row[key] for row in rows], marker="o", label=key)
    axis.set_xlabel("training minutes (2 CPU cores, after the VAE stage)")
    axis.set_ylabel("accuracy (judge)")
    axis.set_ylim(0, 1.02)
    axis.axhline(0.95, color="gray", linestyle=":", linewidth=1)
    axis.legend(loc="lower right", fontsize=8)
    axis.set_title("text2img-mnist: accuracy against training time")
    figure.tight_layout()
    figure.savefig(RESULTS / f"{args.name}.png", dpi=120)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
