"""GAN latent arithmetic the DCGAN way, measured: does the bold − thin (right − left) vector found from a GAN's own
samples make fresh samples bolder (lean further right), and do they keep their digit?

For each trained preset (`gan-mnist`, unconditional; `gan-mnist-classes`, class-conditional):

1. `GANPipeline.attribute_vector_from_samples`: N z's (generator seeds 0..N-1, one per sample; the classes 0-9 in
   turn when conditional), generated and measured with `latentzoo.data.attributes` (stroke width, slant), mean z of
   the samples measured bold minus mean z of those measured thin (slant: right − left);
2. that vector added at strengths −2..+2 to 500 fresh z's (seeds 1,000,000 + i; when conditional, the classes 0-9 in
   turn, the same label at every strength): the attribute measured on every image, the share of samples whose value
   rises from strength 0 to +2 (falls to −2), the mean value and the share in the target class per strength, how
   often the judge reads the same digit as at strength 0 (and, conditional, the requested one);
3. the control: each z pushed along a random direction of its own, of the same norm, at ±2 — what any push of that
   size does.

    OMP_NUM_THREADS=1 nice -n 19 latentzoo train gan-mnist output_dir=RUNS/gan-mnist          # train first
    OMP_NUM_THREADS=1 nice -n 19 python benchmarks/gan_attributes.py --runs RUNS

Writes benchmarks/results/gan_attributes.md, .jsonl (one line per run and attribute) and .png (strips).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

from latentzoo.data.attributes import ATTRIBUTE_CLASSES, bin_attribute, measure_attribute_values
from latentzoo.evaluation import load_judge
from latentzoo.evaluation.images import make_image_grid
from latentzoo.models.checks import cycle_class_labels
from latentzoo.pipelines import GANPipeline

RUNS = ("gan-mnist", "gan-mnist-classes")
# attribute, the class it points to, the class it points away from, the words for the table
DIRECTIONS = (("weight", "bold", "thin", "stroke width (px)"), ("slant", "right", "left", "slant (shear)"))
STRENGTHS = (-2.0, -1.0, 0.0, 1.0, 2.0)
TEST_SEED = 1_000_000  # the fresh z's: seeds far from the N used to find the vectors
STRIP_ROWS = 5  # latents per preset in the figure
RESULTS = Path(__file__).resolve().parent / "results"


def seeded(count: int, seed: int) -> list[torch.Generator]:
    """One generator per sample: sample i is drawn with seed + i (`latentzoo.evaluation.sampling`'s convention)."""
    return [torch.Generator().manual_seed(seed + i) for i in range(count)]


@torch.no_grad()
def decode(pipe: GANPipeline, latents: torch.Tensor, labels, batch_size: int = 500) -> torch.Tensor:
    """(N, 1, H, W) in [-1, 1], in batches."""
    images = []
    for start in range(0, len(latents), batch_size):
        batch = slice(start, start + batch_size)
        chunk = None if labels is None else labels[batch]
        images.append(pipe.decode(latents[batch], chunk, output_type="pt").images * 2 - 1)
    return torch.cat(images)


def measure_strengths(pipe, judge, latents, labels, vector, attribute, high, strengths) -> dict:
    """Images of `latents + s · vector` for each strength s: the measured attribute (and the other one), the judge's
    digit. Returns per-strength lists and the per-sample values."""
    other = next(name for name in ATTRIBUTE_CLASSES if name != attribute)
    values, other_values, digits = [], [], []
    for strength in strengths:
        images = decode(pipe, latents + strength * vector, labels)
        measured = measure_attribute_values(images)
        values.append(measured[attribute])
        other_values.append(measured[other])
        digits.append(judge.predict(images).cpu())
    zero = strengths.index(0.0)
    result = {
        "strengths": list(strengths),
        "mean_value": [v.mean().item() for v in values],
        "mean_other": [v.mean().item() for v in other_values],
        "other_attribute": other,
        "target_share": [sum(c == high for c in bin_attribute(attribute, v)) / len(v) for v in values],
        "same_digit": [(d == digits[zero]).float().mean().item() for d in digits],
        "values": values,
    }
    if labels is not None:
        result["label_accuracy"] = [(d == labels.cpu()).float().mean().item() for d in digits]
    return result


def rises(values: list[torch.Tensor], strengths: tuple[float, ...], low: float, high: float) -> float:
    """Share of samples whose value is higher at strength `high` than at `low`."""
    return (values[strengths.index(high)] > values[strengths.index(low)]).float().mean().item()


def measure_run(pipe: GANPipeline, judge, name: str, args) -> tuple[list[dict], dict[str, torch.Tensor]]:
    """One row per attribute (`found: False` with the reason when a class got no sample) and the figure's strips:
    attribute → (STRIP_ROWS * S, C, H, W), or "classes" → z's per class when no vector was found."""
    n, count = args.num_samples, args.num_test
    conditional = pipe.num_classes is not None
    find_labels = cycle_class_labels(n, pipe.num_classes) if conditional else None
    test_labels = torch.tensor(cycle_class_labels(count, pipe.num_classes)) if conditional else None
    latents = pipe.prepare_latents(count, seeded(count, TEST_SEED)).cpu()
    # How far z moves each attribute at all: the spread of the measured values over the fresh z's, within a digit
    # (the requested class; unconditional: the judge's reading).
    plain = decode(pipe, latents, test_labels)
    plain_values = measure_attribute_values(plain)
    digits = test_labels if conditional else judge.predict(plain).cpu()
    spread = {}
    for attribute in ATTRIBUTE_CLASSES:
        values = plain_values[attribute]
        within = [values[digits == d].std().item() for d in digits.unique() if (digits == d).sum() >= 5]
        spread[attribute] = {"std": values.std().item(), "within_digit_std": sum(within) / len(within)}
    rows, strips = [], {}
    for attribute, high, low, _ in DIRECTIONS:
        start = time.perf_counter()
        base = {"run": name, "attribute": attribute, "direction": f"{high} − {low}", "num_samples": n}
        base.update(conditional=conditional, spread=spread[attribute])
        try:
            found = pipe.attribute_vector_from_samples(
                attribute, high, low, n, class_labels=find_labels, generator=seeded(n, args.seed)
            )
        except ValueError as error:  # a class the GAN never draws: no vector to measure
            rows.append({**base, "found": False, "error": str(error)})
            print(json.dumps(rows[-1]), flush=True)
            continue
        vector = found.vector.cpu()
        # Which digits the two groups draw (the judge's reading, % of each group): a difference the mean z's carry.
        read = judge.predict(
            decode(pipe, found.latents.cpu(), find_labels and torch.tensor(find_labels))
        ).cpu()
        digit_mix = {}
        for group in (high, low):
            member = torch.tensor([c == group for c in found.classes])
            digit_mix[group] = (torch.bincount(read[member], minlength=10) / member.sum()).tolist()
        measured = measure_strengths(pipe, judge, latents, test_labels, vector, attribute, high, STRENGTHS)
        values = measured.pop("values")
        monotone = torch.stack(values).diff(dim=0).gt(0).all(0).float().mean().item()
        # Control: each z pushed along a random direction of its own, of the vector's norm (seeded), at -2, 0, +2.
        random = torch.randn(latents.shape, generator=torch.Generator().manual_seed(args.seed + 1)).to(vector)
        random = random * vector.norm() / random.norm(dim=1, keepdim=True)
        control_strengths = (-2.0, 0.0, 2.0)
        control = measure_strengths(
            pipe, judge, latents, test_labels, random, attribute, high, control_strengths
        )
        control_values = control.pop("values")
        row = {
            **base,
            "found": True,
            "counts": found.counts,
            "vector_norm": vector.norm().item(),
            "digit_mix": digit_mix,
            "num_test": count,
            **measured,
            "rises_0_to_+2": rises(values, STRENGTHS, 0.0, 2.0),
            "falls_0_to_-2": rises(values, STRENGTHS, -2.0, 0.0),
            "monotone": monotone,
            "random_direction": {
                "rises_0_to_+2": rises(control_values, control_strengths, 0.0, 2.0),
                "falls_0_to_-2": rises(control_values, control_strengths, -2.0, 0.0),
                **{key: control[key] for key in ("strengths", "mean_value", "same_digit")},
            },
            "seconds": time.perf_counter() - start,
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
        strip_labels = None if test_labels is None else test_labels[:STRIP_ROWS]
        strips[attribute] = pipe.apply_attribute(
            latents[:STRIP_ROWS], vector, list(STRENGTHS), class_labels=strip_labels, output_type="pt"
        ).images.cpu()
    if not strips and conditional:  # nothing to add: show what z does instead, 2 * S + 1 z's per class
        z = latents[: 2 * len(STRENGTHS) + 1]
        strips["classes"] = torch.cat(
            [pipe.decode(z, [c] * len(z), output_type="pt").images.cpu() for c in range(STRIP_ROWS)]
        )
    return rows, strips


def figure(strips: dict[str, dict[str, torch.Tensor]], path: Path) -> None:
    """One picture: a block of `STRIP_ROWS` rows per run; each row is the weight strip (−2..+2), a blank, the slant
    strip of the same z (blank where no vector was found). A run without any vector shows, per row, one class drawn
    from 2 * S + 1 different z's instead."""
    width, blocks = 2 * len(STRENGTHS) + 1, []
    for run in strips.values():
        if "classes" in run:
            blocks.append(run["classes"].view(STRIP_ROWS, width, *run["classes"].shape[1:]))
        else:
            some = next(iter(run.values()))
            blank = torch.zeros(STRIP_ROWS, len(STRENGTHS), *some.shape[1:])
            weight, slant = (
                run[a].view(STRIP_ROWS, len(STRENGTHS), *some.shape[1:]) if a in run else blank
                for a in ("weight", "slant")
            )
            blocks.append(torch.cat([weight, blank[:, :1], slant], dim=1))  # (rows, 2S + 1, C, H, W)
        blocks.append(torch.zeros_like(blocks[-1][:1]))  # a blank row between runs
    grid = torch.cat(blocks[:-1]).flatten(0, 1)
    image = make_image_grid(grid, nrow=width)
    image.resize((image.width * 2, image.height * 2), 0).save(path)  # 0: NEAREST


def percent(x: float) -> str:
    return f"{x:.1%}"


def report(rows: list[dict], trained: list[str], args, minutes: float) -> list[str]:
    command = " ".join(["python", "benchmarks/gan_attributes.py", *sys.argv[1:]])
    lines = [
        "# GAN latent arithmetic, measured",
        "",
        f"`OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '1')} {command}` — "
        f"{time.strftime('%Y-%m-%d')}, {platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread(s); measuring took {minutes:.1f} min. Trained: "
        + "; ".join(trained)
        + ".",
        "",
        f"Vectors: `GANPipeline.attribute_vector_from_samples` on {args.num_samples} samples (generator seeds "
        f"{args.seed}..{args.seed + args.num_samples - 1}, one per sample; the class-conditional GAN gets the classes "
        "0-9 in turn): mean z of the samples measured bold (right) minus that of the samples measured thin (left), by "
        "`latentzoo.data.attributes` (weight: stroke-width tertiles of the mnist training digits; slant: shear "
        "beyond ±0.15). Applied to "
        f"{args.num_test} fresh z's (seeds {TEST_SEED}..{TEST_SEED + args.num_test - 1}; class-conditional: the "
        'classes 0-9 in turn, the same label at every strength). "Same digit": the judge reads the same digit as '
        "at strength 0. Control: each z pushed along a random direction of its own, of the vector's norm, at ±2.",
        "",
        "## Samples per class when finding the vectors",
        "",
        "| run | attribute | samples per class | vector norm |",
        "|---|---|---|---|",
    ]
    found = [row for row in rows if row["found"]]
    for row in rows:
        if row["found"]:
            counts = ", ".join(f"{name} {count}" for name, count in row["counts"].items())
            norm = f"{row['vector_norm']:.2f}"
        else:
            counts, norm = f"no vector: {row['error']}", "–"
        lines.append(f"| `{row['run']}` | {row['attribute']} ({row['direction']}) | {counts} | {norm} |")
    lines += [
        "",
        "Digits the judge reads in each group the vector averages (% of the group, 0..9):",
        "",
    ]
    for row in found:
        for group, shares in row["digit_mix"].items():
            mix = " ".join(f"{share:.0%}" for share in shares)
            lines.append(f"- `{row['run']}`, {row['attribute']} {group} ({row['counts'][group]}): {mix}")
    words = {attribute: unit for attribute, _, _, unit in DIRECTIONS}
    lines += [
        "",
        "## How far z moves each attribute at all",
        "",
        f"Standard deviation of the measured value over the {args.num_test} fresh z's at strength 0: over all of them, "
        "and within a digit (mean over digits; class-conditional: the requested class, unconditional: the judge's "
        "reading).",
        "",
        "| run | attribute | std over z | std over z within a digit |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| `{row['run']}` | {words[row['attribute']]} | {row['spread']['std']:.3f} | "
        f"{row['spread']['within_digit_std']:.3f} |"
        for row in rows
    ]
    lines += [
        "",
        "## Per strength",
        "",
        "| run | vector | strength | mean measured value | share measured bold / right | same digit as at 0 | "
        "judge reads the requested digit |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in found:
        for i, strength in enumerate(row["strengths"]):
            accuracy = percent(row["label_accuracy"][i]) if "label_accuracy" in row else "–"
            lines.append(
                f"| `{row['run']}` | {row['direction']} | {strength:+.0f} | {row['mean_value'][i]:.3f} "
                f"({words[row['attribute']]}) | {percent(row['target_share'][i])} | {percent(row['same_digit'][i])} | "
                f"{accuracy} |"
            )
    lines += [
        "",
        "## Does the measured value move the way the vector points?",
        "",
        "| run | vector | rises from 0 to +2 | falls from 0 to −2 | rises at every step −2..+2 | random directions "
        "of the same norm: rises 0 → +2 / falls 0 → −2 | same digit at +2 (random directions) | "
        "other attribute's mean, −2 → +2 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in found:
        control = row["random_direction"]
        lines.append(
            f"| `{row['run']}` | {row['direction']} | **{percent(row['rises_0_to_+2'])}** | "
            f"**{percent(row['falls_0_to_-2'])}** | {percent(row['monotone'])} | "
            f"{percent(control['rises_0_to_+2'])} / {percent(control['falls_0_to_-2'])} | "
            f"{percent(row['same_digit'][-1])} ({percent(control['same_digit'][-1])}) | "
            f"{row['other_attribute']} {row['mean_other'][0]:.3f} → {row['mean_other'][-1]:.3f} |"
        )
    runs = sorted({row["run"] for row in rows}, key=RUNS.index)
    without = [run for run in runs if not any(r["found"] for r in found if r["run"] == run)]
    lines += [
        "",
        "![Strips](gan_attributes.png)",
        "",
        f"`gan_attributes.png`, top to bottom: {', '.join(f'`{run}`' for run in runs)}. A run with vectors: "
        f"{STRIP_ROWS} fresh z's, each row the bold − thin strip at strengths −2..+2, a blank, then the right − left "
        "strip of the same z."
        + (
            f" {', '.join(f'`{run}`' for run in without)} (no vector found): the classes 0-{STRIP_ROWS - 1}, one per "
            f"row, each drawn from the same {2 * len(STRENGTHS) + 1} fresh z's."
            if without
            else ""
        ),
        "",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", default="outputs", help="folder holding the trained runs")
    parser.add_argument("--num-samples", type=int, default=2000, help="samples to find each vector from")
    parser.add_argument("--num-test", type=int, default=500, help="fresh z's the vectors are applied to")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", default=str(RESULTS), help="folder for gan_attributes.{md,jsonl,png}")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    start = time.perf_counter()
    runs = Path(args.runs)
    judge = load_judge()
    rows, strips, trained = [], {}, []
    for name in RUNS:
        if not (runs / name / "model_index.json").is_file():
            print(f"skipping {name}: no trained run in {runs / name}", flush=True)
            continue
        pipe = GANPipeline.from_pretrained(runs / name)
        pipe.set_progress_bar_config(disable=True)
        state_file = runs / name / "train_state.json"
        if state_file.is_file():
            state = json.loads(state_file.read_text())
            trained.append(
                f"`{name}` {state['global_step']} steps in {state['elapsed_seconds'] / 60:.1f} min"
            )
        run_rows, strips[name] = measure_run(pipe, judge, name, args)
        rows += run_rows
    if not rows:
        raise SystemExit(f"No trained run of {RUNS} under {runs}: train them first (see --help).")
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    figure(strips, results / "gan_attributes.png")
    lines = report(rows, trained, args, (time.perf_counter() - start) / 60)
    (results / "gan_attributes.md").write_text("\n".join(lines))
    (results / "gan_attributes.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
