"""How the class-conditional GAN takes its class: what makes `gan-mnist-classes` obey without collapsing.

Trains `gan-mnist-classes` variants (missing runs only; each a few CPU minutes) and measures them with the model-zoo
protocol (`model_zoo.sample`: 500 samples, seeds 0..499, the ten digits in turn; the judge's label accuracy, classes
covered, class entropy and judge-FID against the held-out validation digits, 250 vs 250):

- the generator's conditioning: the class embedding concatenated to z (`model.class_conditioning=concat`) or
  class-conditional batch norm (`batch_norm`);
- the projection discriminator's features: flattened (`model.projection=flatten`) or summed over positions
  (`pooled`);
- an AC-GAN auxiliary classifier trained on real images (`model.auxiliary_classifier_weight=1`).

    OMP_NUM_THREADS=1 python benchmarks/gan_conditioning.py --runs RUNS     # trains what is missing under RUNS

Writes benchmarks/results/gan_conditioning.md (and .jsonl) and a 10x10 sample grid per variant under
benchmarks/results/gan_conditioning/.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import time
from pathlib import Path

import torch
from model_zoo import score, training_minutes

from latentzoo.data import load_dataset
from latentzoo.evaluation import load_judge
from latentzoo.evaluation.images import make_image_grid
from latentzoo.pipelines.loading import load_pipeline

RESULTS = Path(__file__).resolve().parent / "results"
# (run folder, description, overrides of gan-mnist-classes); validation off: the variants differ only in the recipe.
VARIANTS = (
    (
        "concat-2500",
        "z ⊕ class embedding; projection on flattened features",
        ["max_train_steps=2500", "model.class_conditioning=concat"],
    ),
    (
        "cbn-pooled-2500",
        "conditional batch norm; projection on pooled features",
        ["max_train_steps=2500", "model.projection=pooled"],
    ),
    ("cbn-2500", "conditional batch norm; projection on flattened features", ["max_train_steps=2500"]),
    (
        "cbn-ac-2500",
        "conditional batch norm; flattened projection; AC-GAN classifier (weight 1)",
        ["max_train_steps=2500", "model.auxiliary_classifier_weight=1"],
    ),
    (
        "cbn-ac-pooled-2500",
        "conditional batch norm; pooled projection; AC-GAN classifier (weight 1)",
        ["max_train_steps=2500", "model.projection=pooled", "model.auxiliary_classifier_weight=1"],
    ),
    (
        "cbn-7500",
        "conditional batch norm; projection on flattened features (the preset)",
        ["max_train_steps=7500"],
    ),
)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=Path, default=Path("outputs/gan-conditioning"))
    parser.add_argument("--no-train", action="store_true", help="measure existing runs only")
    args = parser.parse_args()

    for folder, _, overrides in VARIANTS:
        run = args.runs / folder
        if not args.no_train and not (run / "model_index.json").is_file():
            print(f"training {folder} ...", flush=True)
            subprocess.run(
                [
                    "latentzoo",
                    "train",
                    "gan-mnist-classes",
                    f"output_dir={run}",
                    "validation_steps=1000000",
                    *overrides,
                ],
                check=True,
            )

    judge = load_judge()
    reference = load_dataset("mnist", split="validation").pixel_values
    (RESULTS / "gan_conditioning").mkdir(parents=True, exist_ok=True)
    rows = []
    for folder, description, overrides in VARIANTS:
        run = args.runs / folder
        if not (run / "model_index.json").is_file():
            print(f"skipping {folder}: no pipeline in {run}")
            continue
        pipeline = load_pipeline(str(run))
        pipeline.set_progress_bar_config(disable=True)
        metrics, images = score(pipeline, judge, reference, 500, 0, 100)
        minutes, steps = training_minutes(run)
        row = {
            "run": folder,
            "recipe": description,
            "overrides": overrides,
            "steps": steps,
            "training_minutes": round(minutes, 1),
            **metrics,
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
        make_image_grid((images[:100] + 1) / 2, nrow=10).save(RESULTS / "gan_conditioning" / f"{folder}.png")

    lines = [
        "# How the class-conditional GAN takes its class",
        "",
        f"`python benchmarks/gan_conditioning.py --runs RUNS` — {time.strftime('%Y-%m-%d')}, {platform.machine()}, "
        f"torch {torch.__version__}. `gan-mnist-classes` with the overrides shown (fp32, batch 64, lr 2e-4, EMA "
        "0.999), trained at `OMP_NUM_THREADS=1` beside another job, so the minutes are slower than an idle machine's. "
        "500 samples per row, seeds 0..499, the ten digits in turn; the judge's reading against the asked digit; "
        "judge-FID against the held-out validation digits"
        + (
            f", {rows[0]['num_samples']} vs {rows[0]['num_samples']}, real vs real {rows[0]['real_vs_real_fid']:.1f}."
            if rows
            else "."
        ),
        "",
        "| recipe | steps (min) | label accuracy | judge-FID | classes covered | class entropy | samples |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['recipe']} | {row['steps']:,} ({row['training_minutes']:.1f}) | {row['label_accuracy']:.1%} | "
            f"{row['fid']:.1f} | {row['classes_covered']}/10 | {row['class_entropy']:.3f} | "
            f"![](gan_conditioning/{row['run']}.png) |"
        )
    (RESULTS / "gan_conditioning.md").write_text("\n".join(lines) + "\n")
    (RESULTS / "gan_conditioning.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
