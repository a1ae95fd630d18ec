"""GANs on mnist: judge-FID, class coverage (the judge's histogram of samples) and, class-conditional, label accuracy.

Measures trained `gan-mnist` / `gan-mnist-classes` runs the same way as benchmarks/autoencoders.py measures the
autoencoders: 500 samples with one generator per image (seeds 0..499), judge-FID against the held-out mnist
validation digits beside the real-vs-real FID at the same count (`fid_report`). Also the truncation trick's
trade-off (FID and coverage at truncation None / 1.5 / 1.0) and pictures of samples and slerp strips.

    OMP_NUM_THREADS=1 nice -n 19 latentzoo train gan-mnist output_dir=RUNS/gan-mnist          # train first
    OMP_NUM_THREADS=1 nice -n 19 python benchmarks/gan.py --runs RUNS

Writes benchmarks/results/gan.md and benchmarks/results/gan/*.png.
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
from latentzoo.models.checks import cycle_class_labels
from latentzoo.pipelines import GANPipeline

RUNS = ("gan-mnist", "gan-mnist-classes")
TRUNCATIONS = (None, 1.5, 1.0)
RESULTS = Path(__file__).resolve().parent / "results"


@torch.no_grad()
def sample(
    pipe: GANPipeline, count: int, seed: int, truncation=None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(count, 1, 32, 32) in [-1, 1] and the requested labels (classes 0-9 in turn when conditional, else None)."""
    labels = None if pipe.num_classes is None else torch.tensor(cycle_class_labels(count, pipe.num_classes))
    return sample_images(pipe, count, seed, class_labels=labels, truncation=truncation), labels


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", default="outputs", help="folder holding the trained runs")
    parser.add_argument("--num-samples", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    start = time.perf_counter()
    runs = Path(args.runs)
    judge = load_judge()
    validation = load_dataset("mnist", split="validation")
    reference = validation.pixel_values
    (RESULTS / "gan").mkdir(parents=True, exist_ok=True)

    rows, conditional_rows, trained = [], [], []
    for name in RUNS:
        if not (runs / name / "model_index.json").is_file():
            continue
        pipe = GANPipeline.from_pretrained(runs / name)
        pipe.set_progress_bar_config(disable=True)
        state = json.loads((runs / name / "train_state.json").read_text())
        trained.append(f"`{name}` {state['global_step']} steps in {state['elapsed_seconds'] / 60:.1f} min")
        for truncation in TRUNCATIONS:
            images, labels = sample(pipe, args.num_samples, args.seed, truncation)
            predicted = judge.predict(images)
            row = {
                "run": name,
                "truncation": truncation,
                **fid_report(judge, images, reference, seed=args.seed),
                **class_coverage(predicted),
            }
            if labels is not None:
                row["label_accuracy"] = float((predicted == labels).float().mean())
            rows.append(row)
            if truncation is None:
                make_image_grid((images[:100] + 1) / 2, nrow=10).save(RESULTS / "gan" / f"samples-{name}.png")
        # slerp strips between pairs of latents (the same label along a strip when conditional)
        z = pipe.prepare_latents(12, torch.Generator().manual_seed(args.seed))
        labels = None if pipe.num_classes is None else list(range(6))
        strips = pipe.interpolate(z[:6], z[6:], num_steps=10, class_labels=labels, output_type="pt").images
        make_image_grid(strips, nrow=10).save(RESULTS / "gan" / f"slerp-{name}.png")
        if pipe.num_classes is not None:
            conditional_rows.append(name)
        print(json.dumps(rows[-len(TRUNCATIONS) :]), flush=True)

    lines = [
        "# GANs on mnist",
        "",
        f"`OMP_NUM_THREADS=1 nice -n 19 python benchmarks/gan.py --runs {args.runs}` — {time.strftime('%Y-%m-%d')}, "
        f"{platform.machine()} (2 cores shared with other jobs), torch {torch.__version__}, 1 thread; measuring took "
        f"{(time.perf_counter() - start) / 60:.1f} min. Trained: " + "; ".join(trained) + ".",
        "",
        f"{args.num_samples} samples per row, one generator per image (seeds {args.seed}..{args.seed + args.num_samples - 1}); "
        "class-conditional runs get the classes 0-9 in turn. Judge-FID against the held-out validation digits "
        f"(`fid_report`, {rows[0]['num_samples'] if rows else '-'} vs as many); real-vs-real at that count: "
        f"**{rows[0]['real_vs_real_fid']:.2f}**. Coverage: classes holding ≥ 1% of the judge's readings; entropy of the "
        "judge's class histogram over log 10 (1 = uniform)."
        if rows
        else "No trained runs found.",
        "",
        "| run | truncation | judge-FID | classes covered | entropy | largest class share | label accuracy |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        accuracy = f"{row['label_accuracy']:.1%}" if "label_accuracy" in row else "–"
        lines.append(
            f"| `{row['run']}` | {row['truncation'] or 'none'} | {row['fid']:.2f} | {row['classes_covered']}/10 | "
            f"{row['entropy']:.3f} | {row['largest_share']:.1%} | {accuracy} |"
        )
    lines += ["", "Judge class histograms (share of samples read as 0..9):", ""]
    lines += [f"- `{r['run']}`, truncation {r['truncation'] or 'none'}: {r['histogram']}" for r in rows]
    lines.append("")
    (RESULTS / "gan.md").write_text("\n".join(lines))
    (RESULTS / "gan.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


if __name__ == "__main__":
    main()
