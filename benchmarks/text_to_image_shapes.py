"""Compositional text-to-image on `shapes`: GenEval-style scores of trained runs, side by side.

    python benchmarks/text_to_image_shapes.py --runs outputs/text2img-shapes outputs/text2img-shapes-concat \
        [--per-family 100] [--steps 20] [--guidance-scale 3] [--seed 0]

Each run folder is a saved `LatentTextToImagePipeline` (e.g. `latentzoo train text2img-shapes`, and the same with
`model.conditioning=concatenation`). Every run is scored by `latentzoo.evaluation.evaluate_shapes` on the same
prompts (GenEval's six families, drawn from a seed stream the training scenes never used) and the same generator
seeds; the table goes to benchmarks/results/text_to_image_shapes.md, the raw rows to text_to_image_shapes.jsonl,
and a grid of each run's first samples per family to benchmarks/results/text_to_image_shapes/.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from latentzoo.data import load_dataset
from latentzoo.evaluation import SHAPES_FAMILIES, detect_shapes, evaluate_shapes, score_shapes, shapes_prompts
from latentzoo.evaluation.images import make_image_grid
from latentzoo.evaluation.shapes import render_prompt
from latentzoo.pipelines.loading import load_pipeline

RESULTS = Path(__file__).resolve().parent / "results"


def run_facts(run: Path) -> dict:
    """Conditioning, steps (summed over stages) and training minutes of a run folder, from the files it saved."""
    config = yaml.safe_load((run / "training_config.yaml").read_text())
    state = json.loads((run / "train_state.json").read_text())
    facts = {
        "run": run.name,
        "conditioning": config["model"]["conditioning"],
        "objective": config["model"].get("objective", "ddpm"),
        "unet_steps": state["global_step"],
        "unet_minutes": state["elapsed_seconds"] / 60,
    }
    for name, folder in (
        ("vae", config["model"]["vae"]),
        ("text_encoder", config["model"].get("text_encoder")),
    ):
        stage_state = Path(folder or "") / "train_state.json"
        if folder and stage_state.is_file():
            stage = json.loads(stage_state.read_text())
            facts[f"{name}_steps"] = stage["global_step"]
            facts[f"{name}_minutes"] = stage["elapsed_seconds"] / 60
    return facts


def vae_recovery(pipeline, num_scenes: int = 200) -> float:
    """Share of the shapes in `num_scenes` validation scenes whose kind and colour the detector finds again in the
    run's VAE reconstructions: the ceiling the latent space puts on every score."""
    dataset = load_dataset("shapes", split="validation", size=num_scenes)
    vae = pipeline.vae
    reconstructions = vae.decode(vae.encode(dataset.pixel_values).latent_dist.mean).sample
    found = total = 0
    for image, scene in zip(
        (reconstructions / 2 + 0.5).clamp(0, 1), dataset.attributes["scenes"], strict=True
    ):
        detected = {(shape.kind, shape.color) for shape in detect_shapes(image)}
        found += sum((shape.kind, shape.color) in detected for shape in scene.shapes)
        total += len(scene.shapes)
    return found / total


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", nargs="+", required=True, help="saved text-to-image run folders")
    parser.add_argument("--per-family", type=int, default=100)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance-scale", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=str(RESULTS / "text_to_image_shapes"))
    args = parser.parse_args()

    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    rows = []
    for run in map(Path, args.runs):
        pipeline = load_pipeline(run)
        pipeline.set_progress_bar_config(disable=True)
        start = time.perf_counter()
        result = evaluate_shapes(
            pipeline,
            per_family=args.per_family,
            seed=args.seed,
            num_inference_steps=args.steps,
            guidance_scale=args.guidance_scale,
        )
        seconds = time.perf_counter() - start
        row = {**run_facts(run), **result["metrics"], "images_per_second": len(result["prompts"]) / seconds}
        row["vae_recovery"] = vae_recovery(pipeline)
        row["protocol"] = result["protocol"]
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "protocol"}))
        # Eight samples of each family, one row per family.
        per_family = args.per_family
        picks = [f * per_family + i for f in range(len(SHAPES_FAMILIES)) for i in range(min(8, per_family))]
        make_image_grid(result["images"][picks], nrow=min(8, per_family)).resize(
            (min(8, per_family) * 64, len(SHAPES_FAMILIES) * 64), 0
        ).save(output / f"{run.name}.png")

    # Context for the scores: the same prompts scored on real renders (the ceiling) and on uniform noise (the floor).
    prompts = shapes_prompts(args.per_family, seed=args.seed)
    size = result["images"].shape[-1]
    renders = np.stack(
        [render_prompt(p, size, np.random.default_rng([args.seed, i])) for i, p in enumerate(prompts)]
    )
    noise = torch.rand(len(prompts), 3, size, size, generator=torch.Generator().manual_seed(args.seed))
    for name, images in (("real renders (ceiling)", list(renders)), ("uniform noise (floor)", noise)):
        scores = score_shapes(images, prompts)
        rows.append(
            {
                "run": name,
                "conditioning": "",
                "unet_steps": None,
                "images_per_second": None,
                "vae_recovery": None,
            }
            | scores
        )

    with open(output.with_suffix(".jsonl"), "a") as f:
        for row in rows:
            f.write(json.dumps({k: v for k, v in row.items() if k != "correct"}) + "\n")
    header = [
        "run",
        "conditioning",
        "objective",
        "UNet steps",
        *SHAPES_FAMILIES,
        "overall",
        "images/s",
        "VAE keeps kind + colour",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["run"], row["conditioning"], row.get("objective") or ""]
        cells.append(f"{row['unet_steps']:,}" if row["unet_steps"] else "")
        cells += [f"{row[family]:.3f}" for family in (*SHAPES_FAMILIES, "overall")]
        cells.append(f"{row['images_per_second']:.1f}" if row["images_per_second"] else "")
        cells.append(f"{row['vae_recovery']:.3f}" if row["vae_recovery"] is not None else "")
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n\nProtocol: " + rows[0]["protocol"] + "\n"
    output.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
