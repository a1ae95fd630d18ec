"""Autoencoders, VAEs and MDN priors on mnist: reconstruction, sample quality by prior, conditional accuracy, and
whether the bold − thin latent vector makes digits bolder.

Trains what is missing from the presets (each a few CPU minutes), then measures:

1. reconstruction PSNR on the 500 held-out mnist validation digits (VAE: posterior mean);
2. judge-FID of prior samples against the validation digits, beside the real-vs-real FID at the same count:
   AE decoding N(0, I) vs AE + fitted Gaussian vs AE + class-conditional MDN vs VAE decoding N(0, I);
3. class accuracy of MDN-conditioned samples (the judge's digit vs the requested class);
4. the bold − thin vector (mean latent of bold training digits minus thin ones, by measured stroke width) added to
   the validation digits' latents at strengths −1, 0, +1: measured stroke width, share made bolder, share of
   digits the judge still reads as their label.

    OMP_NUM_THREADS=1 nice -n 19 python benchmarks/autoencoders.py --runs outputs   # trains missing runs there
    python benchmarks/autoencoders.py --runs outputs --no-train                    # measure existing runs only

Writes benchmarks/results/autoencoders.md and a few pictures under benchmarks/results/autoencoders/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

from latentzoo.data import load_dataset, measure_attribute_values, measure_attributes
from latentzoo.evaluation import fid_report, load_judge, psnr
from latentzoo.evaluation.images import make_image_grid
from latentzoo.evaluation.projector import attribute_strips, interpolation_strips, latent_manifold
from latentzoo.evaluation.sampling import sample_images
from latentzoo.models.checks import cycle_class_labels
from latentzoo.pipelines import AutoencoderPipeline
from latentzoo.training.tasks.autoencoder import encode_dataset

RUNS = ("autoencoder-mnist", "vae-mnist", "mdn-prior-mnist", "autoencoder-mnist-2d", "vae-mnist-2d")
RESULTS = Path(__file__).resolve().parent / "results"


def train_missing(runs: Path) -> None:
    for name in RUNS:
        if (runs / name / "model_index.json").is_file():
            continue
        overrides = [f"output_dir={runs / name}"]
        if name == "mdn-prior-mnist":
            overrides.append(f"model.autoencoder={runs / 'autoencoder-mnist'}")
        print(f"training {name} ...", flush=True)
        subprocess.run(["latentzoo", "train", name, *overrides], check=True)


@torch.no_grad()
def sample(pipe: AutoencoderPipeline, count: int, seed: int, class_labels=None, standard_normal=False):
    """(count, 1, 32, 32) in [-1, 1]; one generator per image (seed + i), all in one call."""
    if standard_normal:  # ignore any prior: decode z ~ N(0, I)
        pipe = AutoencoderPipeline(pipe.autoencoder)
    return sample_images(pipe, count, seed, class_labels=class_labels)


@torch.no_grad()
def reconstruct(pipe: AutoencoderPipeline, pixel_values: torch.Tensor) -> torch.Tensor:
    return pipe.autoencoder.decode(encode_dataset(pipe.autoencoder, pixel_values))


def save_grid(images: torch.Tensor, path: Path, nrow: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    make_image_grid((images + 1) / 2, nrow=nrow).save(path)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", default="outputs", help="folder holding (or receiving) the preset runs")
    parser.add_argument("--no-train", action="store_true", help="measure only; fail if a run is missing")
    parser.add_argument("--num-samples", type=int, default=500, help="prior samples per model (default 500)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    runs = Path(args.runs)
    if not args.no_train:
        train_missing(runs)
    start = time.perf_counter()

    pipes = {name: AutoencoderPipeline.from_pretrained(runs / name) for name in RUNS}
    for pipe in pipes.values():
        pipe.set_progress_bar_config(disable=True)
    judge = load_judge()
    train = load_dataset("mnist", split="train")
    validation = load_dataset("mnist", split="validation")
    reference, labels = validation.pixel_values, validation.class_labels
    n, seed = args.num_samples, args.seed
    balanced = cycle_class_labels(n, 10)  # the ten digits

    # 1. Reconstruction
    reconstruction = {}
    for name in ("autoencoder-mnist", "vae-mnist", "autoencoder-mnist-2d", "vae-mnist-2d"):
        reconstruction[name] = psnr(reconstruct(pipes[name], reference), reference)

    # 2-3. Samples by prior
    ae, vae, mdn = pipes["autoencoder-mnist"], pipes["vae-mnist"], pipes["mdn-prior-mnist"]
    samples = {
        "AE-16, z ~ N(0, I)": sample(ae, n, seed, standard_normal=True),
        "AE-16 + fitted Gaussian": sample(ae, n, seed),
        "AE-16 + class-conditional MDN": sample(mdn, n, seed, class_labels=balanced),
        "VAE-16, z ~ N(0, I)": sample(vae, n, seed),
        "AE-2, z ~ N(0, I)": sample(pipes["autoencoder-mnist-2d"], n, seed, standard_normal=True),
        "AE-2 + fitted Gaussian": sample(pipes["autoencoder-mnist-2d"], n, seed),
        "VAE-2, z ~ N(0, I)": sample(pipes["vae-mnist-2d"], n, seed),
    }
    fid = {name: fid_report(judge, images, reference, seed=seed) for name, images in samples.items()}
    mdn_images = samples["AE-16 + class-conditional MDN"]
    mdn_accuracy = (judge.predict(mdn_images) == torch.tensor(balanced)).float().mean().item()
    # Same accuracy for the real digits, the ceiling: how often the judge reads validation digits right.
    judge_real_accuracy = (judge.predict(reference) == labels).float().mean().item()

    # 4. Bold − thin vector, built on the training split, applied to the validation digits
    weight_classes = measure_attributes(train.pixel_values)["weight"]
    bold = train.pixel_values[[c == "bold" for c in weight_classes]]
    thin = train.pixel_values[[c == "thin" for c in weight_classes]]
    strengths = (-1.0, 0.0, 1.0)
    attribute = {}
    for name in ("autoencoder-mnist", "vae-mnist"):
        pipe = pipes[name]
        vector = pipe.attribute_vector(bold, thin)
        latents = encode_dataset(pipe.autoencoder, reference)
        widths, read_right, bold_share = [], [], []
        for strength in strengths:
            images = pipe.autoencoder.decode(latents + strength * vector)
            widths.append(measure_attribute_values(images)["weight"])
            read_right.append((judge.predict(images) == labels).float().mean().item())
            bold_share.append(sum(c == "bold" for c in measure_attributes(images)["weight"]) / len(images))
        attribute[name] = {
            "width": [w.mean().item() for w in widths],
            "bolder": (widths[2] > widths[1]).float().mean().item(),
            "read_right": read_right,
            "bold_share": bold_share,
            "vector_norm": vector.norm().item(),
        }

    # Pictures
    pictures = RESULTS / "autoencoders"
    files = {
        "AE-16, z ~ N(0, I)": "samples-ae-16-standard-normal.png",
        "AE-16 + fitted Gaussian": "samples-ae-16-gaussian.png",
        "AE-16 + class-conditional MDN": "samples-ae-16-mdn.png",
        "VAE-16, z ~ N(0, I)": "samples-vae-16.png",
    }
    for name, file in files.items():
        save_grid(samples[name][:40], pictures / file, nrow=10)
    latent_manifold(pipes["vae-mnist-2d"], grid_size=16).save(pictures / "vae-2d-manifold.png")
    latent_manifold(pipes["autoencoder-mnist-2d"], grid_size=16).save(pictures / "ae-2d-manifold.png")
    interpolation_strips(vae, reference[:6], reference[6:12], num_steps=10).save(
        pictures / "vae-16-slerp.png"
    )
    attribute_strips(vae, reference[:6], vae.attribute_vector(bold, thin), (-2, -1, 0, 1, 2)).save(
        pictures / "vae-16-bold-minus-thin.png"
    )

    # Report
    steps = {}
    for name in RUNS:
        state = json.loads((runs / name / "train_state.json").read_text())
        steps[name] = (state["global_step"], state["elapsed_seconds"] / 60)
    fid_count = next(iter(fid.values()))["num_samples"]
    real_fid = next(iter(fid.values()))["real_vs_real_fid"]
    lines = [
        "# Autoencoders, VAEs and MDN priors on mnist",
        "",
        f"`{' '.join(['python', *sys.argv])}` — {time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); measuring took "
        f"{(time.perf_counter() - start) / 60:.1f} min. Runs: the presets `configs/{{{','.join(RUNS)}}}.yaml` "
        "trained with `latentzoo train PRESET output_dir=RUNS/PRESET` (what this script runs for a missing one).",
        "",
        "Training each run got (its `train_state.json`): "
        + ", ".join(f"`{name}` {steps[name][0]} steps in {steps[name][1]:.1f} min" for name in RUNS)
        + " (batch 64, 128 for the MDN; 4,500 training digits). Each preset stops at 10 epochs (the MDN at 60) or at "
        "its wall-clock cap, whichever comes first; a run that hit the cap on a busy machine is not comparable.",
        "",
        "## Reconstruction (500 held-out validation digits; VAE: posterior mean)",
        "",
        "| model | latent | PSNR (dB) |",
        "|---|---|---|",
    ]
    for name, value in reconstruction.items():
        kind = "VAE" if name.startswith("vae") else "AE"
        lines.append(f"| {kind} (`{name}`) | {pipes[name].latent_dim} | {value:.2f} |")
    lines += [
        "",
        f"## Sampling from the prior: judge-FID ({fid_count} samples vs {fid_count} held-out validation digits)",
        "",
        f"Real-vs-real judge-FID at the same count (two disjoint halves of the validation digits): **{real_fid:.2f}** "
        f"— the floor. Samples: {n} per model, generator seeds {seed}..{seed + n - 1} (one per image); the MDN gets "
        "the classes 0-9 in turn.",
        "",
        "| model, prior | judge-FID |",
        "|---|---|",
    ]
    lines += [f"| {name} | {report['fid']:.2f} |" for name, report in fid.items()]
    lines += [
        "",
        "## Class-conditional sampling through the MDN prior",
        "",
        f"Judge accuracy on {n} MDN-conditioned samples (classes 0-9 in turn): **{mdn_accuracy:.1%}** "
        f"(the judge reads {judge_real_accuracy:.1%} of the real validation digits right; chance is 10%).",
        "",
        "## Bold − thin latent vector",
        "",
        f"Vector = mean latent of the {len(bold)} training digits measured bold minus that of the {len(thin)} measured "
        "thin (stroke-width tertiles, `latentzoo.data.attributes`), added to the latents of the 500 validation digits "
        "at each strength; stroke width measured on the decoded images.",
        "",
        "| model | strength | mean stroke width (px) | measured bold | judge reads the label |",
        "|---|---|---|---|---|",
    ]
    for name, result in attribute.items():
        for i, strength in enumerate(strengths):
            lines.append(
                f"| `{name}` | {strength:+.0f} | {result['width'][i]:.2f} | {result['bold_share'][i]:.1%} | "
                f"{result['read_right'][i]:.1%} |"
            )
    lines += [""]
    lines += [
        f"`{name}`: adding the vector (+1 vs 0) made **{result['bolder']:.1%}** of the digits measurably bolder."
        for name, result in attribute.items()
    ]
    lines += [
        "",
        "Pictures in `benchmarks/results/autoencoders/`: prior samples per model, the 2-D latent manifolds "
        "(`vae-2d-manifold.png`, `ae-2d-manifold.png`: 16x16 normal quantiles, the AE's mapped through its fitted "
        "Gaussian), slerp strips and bold − thin strips (strengths −2..+2) for the VAE.",
        "",
    ]
    path = RESULTS / "autoencoders.md"
    path.write_text("\n".join(lines))
    print("\n".join(lines))
    print(f"Wrote {path}")


if __name__ == "__main__":
    main()
