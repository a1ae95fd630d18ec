"""One figure: prompt accuracy and judge-FID against sampling steps for each text-to-image method measured here.

Reads the results of `benchmarks/few_step.py` (nothing is sampled again): the v-prediction quickstart teacher
(DPM-Solver++) and its latent consistency student (`few_step_vprediction.jsonl`, the run from before flow matching
became the quickstart's objective), the flow-matching quickstart teacher (Euler) and its consistency student
(`few_step.jsonl`). All on the quickstart's judge protocol, guidance 3.

    python benchmarks/sampling_steps_figure.py

Writes benchmarks/results/sampling_steps.png.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
# (results file, model in it, sampler class) → label
METHODS = {
    (
        "few_step_vprediction.jsonl",
        "teacher",
        "DPMSolverMultistepScheduler",
    ): "v-prediction teacher, DPM-Solver++",
    ("few_step_vprediction.jsonl", "student", "LCMScheduler"): "its consistency student (LCM)",
    ("few_step.jsonl", "teacher", "FlowMatchEulerDiscreteScheduler"): "flow-matching teacher, Euler",
    ("few_step.jsonl", "student", "FlowMatchLCMScheduler"): "its consistency student (flow LCM)",
}


def main() -> None:
    figure, (accuracy_axis, fid_axis) = plt.subplots(1, 2, figsize=(11, 4))
    floor = None
    for (file, model, sampler), label in METHODS.items():
        rows = [json.loads(line) for line in (RESULTS / file).read_text().splitlines()]
        rows = sorted(
            (r for r in rows if r["kind"] == "steps" and r["model"] == model and r["sampler"] == sampler),
            key=lambda r: r["steps"],
        )
        fid_key = next(key for key in rows[0] if key.startswith("judge-FID"))
        floor = rows[0][next(key for key in rows[0] if key.startswith("real-vs-real"))]
        steps = [r["steps"] for r in rows]
        style = "--" if model == "student" else "-"
        accuracy_axis.plot(steps, [r["prompt accuracy"] for r in rows], style, marker="o", label=label)
        fid_axis.plot(steps, [r[fid_key] for r in rows], style, marker="o", label=label)
    fid_axis.axhline(floor, color="gray", linestyle=":", label=f"real vs real ({floor:.1f})")
    for axis in (accuracy_axis, fid_axis):
        axis.set_xscale("log", base=2)
        axis.set_xticks([1, 2, 4, 8, 20], ["1", "2", "4", "8", "20"])
        axis.set_xlabel("sampling steps (the teachers make 2 UNet calls per step: guidance)")
    accuracy_axis.set_ylabel("prompt accuracy (judge)")
    accuracy_axis.set_title("text to image, guidance 3, 1,000 samples")
    fid_axis.set_ylabel("judge-FID (250 samples)")
    fid_axis.set_yscale("log")
    fid_axis.set_title("lower is better")
    accuracy_axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(RESULTS / "sampling_steps.png", dpi=100)
    print(RESULTS / "sampling_steps.png")


if __name__ == "__main__":
    main()
