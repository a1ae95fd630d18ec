"""Every model family of latentzoo on mnist, trained within the same CPU budget and judged the same way: one table.

For each trained preset run under ``--runs`` (a folder of ``RUNS/<preset>`` pipelines), ``--num-samples`` images
are drawn with one seeded generator per image (seeds 0..N-1), so batching changes nothing. Models that take a
condition get the ten digits in turn: a class label (MDN prior, class-conditional GAN, class-conditional DDPM) or
a prompt from the text-to-image evaluation protocol (``text_to_image_prompts``: 1/10 of them per digit,
phrasings and attributes drawn with seed 0). The judge of ``latentzoo.evaluation`` then gives, for every row:

- judge-FID against the held-out mnist validation digits, beside the real-vs-real FID at the same count
  (``fid_report``: with 500 validation digits, at most 250 samples count);
- class coverage: the digits holding >= 1% of the judge's readings, and the entropy of that histogram / log 10;
- label accuracy where the model was asked for a digit (the judge reads the requested digit);
- training minutes summed over every stage the run needed (its ``train_state.json`` and those of the stage
  folders inside it, or of the autoencoder a prior was fitted on), and sampling seconds per image.

Diffusion models sample with 20 DPM-Solver++ steps and guidance scale 3, as in their own protocols.

    latentzoo quickstart --output-dir RUNS/text2img-mnist            # and `latentzoo train PRESET output_dir=RUNS/PRESET`
    python benchmarks/model_zoo.py --runs RUNS                       # for the presets below

Writes benchmarks/results/model_zoo.md (and .jsonl) and a 10x10 grid of samples per run under
benchmarks/results/model_zoo/.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
import yaml

from latentzoo.data import load_dataset, parse_digit
from latentzoo.evaluation import class_coverage, fid_report, load_judge
from latentzoo.evaluation.images import make_image_grid
from latentzoo.evaluation.protocol import text_to_image_prompts
from latentzoo.evaluation.sampling import sample_images
from latentzoo.pipelines import AutoencoderPipeline, LatentTextToImagePipeline, PixelDiffusionPipeline
from latentzoo.pipelines.loading import load_pipeline

RESULTS = Path(__file__).resolve().parent / "results"
# (preset folder under --runs, the row's name, whether to drop the pipeline's prior and decode z ~ N(0, I))
ZOO = (
    ("autoencoder-mnist", "AE, N(0, I)", True),
    ("autoencoder-mnist", "AE + fitted Gaussian prior", False),
    ("vae-mnist", "VAE, N(0, I) decoded directly", True),
    ("vae-mnist", "VAE + its saved prior (the preset's samples)", False),
    ("mdn-prior-mnist", "AE + class-conditional MDN prior", False),
    ("gan-mnist", "DCGAN", False),
    ("gan-mnist-classes", "DCGAN, class-conditional", False),
    ("ddpm-mnist-classes", "pixel DDPM, class-conditional", False),
    ("text2img-mnist", "latent text-to-image (quickstart)", False),
)
DIFFUSION_KWARGS = {"num_inference_steps": 20, "guidance_scale": 3.0}


def requested_digits(pipeline, num_samples: int) -> torch.Tensor | None:
    """The digit each sample is asked for (0..9 in turn), or None for an unconditional model."""
    return None if pipeline.num_classes is None else torch.arange(num_samples) % 10


@torch.no_grad()
def sample(
    pipeline, num_samples: int, seed: int, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(N, 1, 32, 32) samples in [-1, 1] and the digits they were asked for (None: unconditional)."""
    if isinstance(pipeline, LatentTextToImagePipeline):
        # Balanced prompts, ordered by digit by the protocol; interleave them so any prefix is balanced too.
        per_digit = num_samples // 10
        prompts = text_to_image_prompts(per_digit, seed=0)
        prompts = [prompts[digit * per_digit + i] for i in range(per_digit) for digit in range(10)]
        digits = torch.tensor([parse_digit(prompt) for prompt in prompts])
        images = sample_images(pipeline, len(prompts), seed, batch_size, prompt=prompts, **DIFFUSION_KWARGS)
        return images, digits
    digits = requested_digits(pipeline, num_samples)
    extra = DIFFUSION_KWARGS if isinstance(pipeline, PixelDiffusionPipeline) else {}
    class_labels = None if digits is None else digits.tolist()
    return sample_images(pipeline, num_samples, seed, batch_size, class_labels=class_labels, **extra), digits


def score(pipeline, judge, reference: torch.Tensor, num_samples: int, seed: int, batch_size: int):
    """The zoo's measurements of one pipeline, and its (N, 1, 32, 32) samples in [-1, 1]: judge-FID beside the
    real-vs-real floor, class coverage and entropy, label accuracy where a digit was asked for, s per image."""
    start = time.perf_counter()
    images, digits = sample(pipeline, num_samples, seed, batch_size)
    seconds = time.perf_counter() - start
    predicted = judge.predict(images)
    coverage = class_coverage(predicted)
    metrics = {
        **fid_report(judge, images, reference, seed=seed),
        "classes_covered": coverage["classes_covered"],
        "class_entropy": coverage["entropy"],
        "largest_class_share": coverage["largest_share"],
        "class_histogram": coverage["histogram"],
        "label_accuracy": None if digits is None else float((predicted == digits).float().mean()),
        "seconds_per_image": seconds / len(images),
        "num_generated": len(images),
    }
    return metrics, images


def training_minutes(run: Path) -> tuple[float, int]:
    """Minutes and steps of the run plus every stage it needed (stage folders inside it, the autoencoder a prior
    was fitted on)."""
    states = [
        run / "train_state.json",
        *run.glob("*/train_state.json"),
        *run.glob("stages/*/train_state.json"),
    ]
    config = yaml.safe_load((run / "training_config.yaml").read_text())
    autoencoder = (config.get("model") or {}).get("autoencoder")
    if autoencoder and (Path(autoencoder) / "train_state.json").is_file():
        states.append(Path(autoencoder) / "train_state.json")
    loaded = [json.loads(path.read_text()) for path in dict.fromkeys(states) if path.is_file()]
    return sum(s["elapsed_seconds"] for s in loaded) / 60, sum(s["global_step"] for s in loaded)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--runs", type=Path, default=Path("outputs"), help="folder of RUNS/<preset> pipelines"
    )
    parser.add_argument("--num-samples", type=int, default=500, help="a multiple of 10 (default 500)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=100)
    args = parser.parse_args()
    if args.num_samples <= 0 or args.num_samples % 10:
        parser.error(f"--num-samples must be a positive multiple of 10, got {args.num_samples}")

    judge = load_judge()
    reference = load_dataset("mnist", split="validation").pixel_values
    (RESULTS / "model_zoo").mkdir(parents=True, exist_ok=True)
    rows = []
    for preset, name, standard_normal in ZOO:
        run = args.runs / preset
        if not (run / "model_index.json").is_file():
            print(f"skipping {preset}: no pipeline in {run}")
            continue
        # Diffusion pipelines sample with DPM-Solver++; the others have no scheduler.
        pipeline = load_pipeline(str(run), sampler="dpm++" if (run / "scheduler").is_dir() else None)
        if standard_normal:
            if pipeline.prior is None:  # nothing to drop: the saved pipeline decodes N(0, I) already
                continue
            pipeline = AutoencoderPipeline(pipeline.autoencoder)
        pipeline.set_progress_bar_config(disable=True)
        metrics, images = score(pipeline, judge, reference, args.num_samples, args.seed, args.batch_size)
        minutes, steps = training_minutes(run)
        row = {
            "preset": preset,
            "model": name,
            "training_minutes": round(minutes, 1),
            "training_steps": steps,
            **metrics,
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
        grid = f"{preset}{'-standard-normal' if standard_normal else ''}.png"
        row["samples"] = f"model_zoo/{grid}"
        make_image_grid((images[:100] + 1) / 2, nrow=10).save(RESULTS / "model_zoo" / grid)

    lines = [
        "# The model zoo on mnist: one budget, one judge",
        "",
        f"`python benchmarks/model_zoo.py --runs RUNS --num-samples {args.num_samples}` — {time.strftime('%Y-%m-%d')}, "
        f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}. Each preset trained with "
        "its own step budget (`max_train_steps` or `num_epochs`: the same model on any machine) on this 2-core CPU; "
        "minutes and steps are the runs' own `train_state.json`, summed over every stage the model needed (minutes "
        f"depend on what else the machine ran meanwhile; steps do not). {args.num_samples} samples per row, seeds "
        f"{args.seed}..{args.seed + args.num_samples - 1}, "
        "one generator per image; conditional models are asked for the ten digits in turn. Diffusion: 20 "
        "DPM-Solver++ steps, guidance 3. judge-FID against held-out validation digits"
        + (
            f", {rows[0]['num_samples']} vs {rows[0]['num_samples']}; real-vs-real at that count **{rows[0]['real_vs_real_fid']:.1f}**."
            if rows
            else "."
        ),
        "",
        "| model | preset | training min (steps) | judge-FID | classes covered (≥ 1%) | class entropy | label accuracy | sampling s / image | samples |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        accuracy = "–" if row["label_accuracy"] is None else f"{row['label_accuracy']:.1%}"
        lines.append(
            f"| {row['model']} | `{row['preset']}` | {row['training_minutes']:.1f} ({row['training_steps']:,}) | "
            f"{row['fid']:.1f} | {row['classes_covered']}/10 | {row['class_entropy']:.3f} | {accuracy} | "
            f"{row['seconds_per_image']:.4f} | [grid]({row['samples']}) |"
        )
    lines += [
        "",
        "Samples (first 100, digits 0..9 across each row where conditional): `benchmarks/results/model_zoo/`.",
    ]
    (RESULTS / "model_zoo.md").write_text("\n".join(lines) + "\n")
    (RESULTS / "model_zoo.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
