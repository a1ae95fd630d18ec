"""Training throughput of the Trainer against a bare PyTorch loop doing the same step, in one run.

The model is the UNet2DModel of ../shared/bench/unet_small.json (the one diffusers' `train_unconditional.py`
example was measured with), trained as an unconditional DDPM (epsilon loss, linear schedule, AdamW) on `mnist`
at 32x32, batch 64, the grayscale digits repeated to the config's 3 channels as that example does.

    python benchmarks/train_throughput.py [--steps 12] [--config ../shared/bench/unet_small.json]

Reports s/step and img/s for: a bare fp32 loop; the Trainer at equal settings (fp32, no EMA); the Trainer with
its faster settings (bf16 autocast, torch.compile, `retain_cpu_memory`; the last also beside a bare loop with the
same allocator setting, since it is process-wide); the achieved FLOP/s (torch.utils.flop_counter counts one step) against this
CPU's measured matmul peak; where a step's time goes (torch.profiler, by op group); and a quality check: the loss of 60 steps fp32 vs bf16 from the same seed.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate.state import AcceleratorState, GradientState
from diffusers import DDPMScheduler, UNet2DModel
from torch.utils.flop_counter import FlopCounterMode

from latentzoo.data import load_dataset
from latentzoo.training import Trainer, TrainingConfig
from latentzoo.training.cpu_memory import retain_freed_memory
from latentzoo.training.tasks.base import TaskConfig, TrainingTask

ROOT = Path(__file__).resolve().parent
DEFAULT_UNET = ROOT.parent.parent / "shared" / "bench" / "unet_small.json"


def unet_from_json(path: Path) -> UNet2DModel:
    config = json.loads(Path(path).read_text())
    config.pop("_class_name", None)
    return UNet2DModel(**config)


def bare_setup(unet_json: Path):
    """The bare loop's seeded model, the example's linear DDPM schedule, and AdamW."""
    torch.manual_seed(0)
    unet = unet_from_json(unet_json)
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    return unet, scheduler, torch.optim.AdamW(unet.parameters(), lr=1e-4)


def ddpm_loss(unet, scheduler, pixel_values):
    """The example's step: eps-prediction MSE at a uniformly drawn timestep."""
    noise = torch.randn_like(pixel_values)
    timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (pixel_values.shape[0],))
    noisy = scheduler.add_noise(pixel_values, noise, timesteps)
    return F.mse_loss(unet(noisy, timesteps).sample.float(), noise)


@dataclass
class BenchConfig(TaskConfig):
    unet_json: str = str(DEFAULT_UNET)


class UnconditionalDDPMBenchTask(TrainingTask):
    """The benchmark's step as a Trainer task; records the wall time at every call."""

    name = "bench_ddpm"
    Config = BenchConfig
    step_times: list[float] = []
    losses: list[float] = []

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.unet = unet_from_json(Path(config.unet_json))
        self.scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
        self.channels = self.unet.config.in_channels

    def trainable_modules(self):
        return {"unet": self.unet}

    def training_step(self, batch, modules):
        type(self).step_times.append(time.perf_counter())
        pixel_values = batch["pixel_values"].expand(-1, self.channels, -1, -1)
        loss = ddpm_loss(modules["unet"], self.scheduler, pixel_values)
        type(self).losses.append(loss.item())
        return {"loss": loss}

    def make_pipeline(self, modules):
        return modules["unet"]

    def validation_images(self, pipeline, num_images, generator):
        return torch.zeros(1, 1, 32, 32)


def seconds_per_step(times: list[float], warmup: int) -> float:
    intervals = [b - a for a, b in zip(times[warmup:], times[warmup + 1 :], strict=False)]
    return statistics.median(intervals)


def bare_loop(unet_json: Path, steps: int, warmup: int, batch_size: int = 64) -> float:
    unet, scheduler, optimizer = bare_setup(unet_json)
    data = load_dataset("mnist").pixel_values
    channels = unet.config.in_channels
    times = []
    for _ in range(steps + warmup + 1):
        times.append(time.perf_counter())
        index = torch.randint(0, len(data), (batch_size,))
        loss = ddpm_loss(unet, scheduler, data[index].expand(-1, channels, -1, -1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return seconds_per_step(times, warmup)


def trainer_run(unet_json: Path, steps: int, warmup: int, output_dir: Path, **settings):
    """Train through the Trainer; returns (median s/step after warm-up, loss per step)."""
    UnconditionalDDPMBenchTask.step_times = []
    UnconditionalDDPMBenchTask.losses = []
    # Settings differ between runs in this one process: start each from a fresh (single-process) state.
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    config = TrainingConfig(
        task="bench_ddpm",
        dataset="mnist",
        output_dir=str(output_dir),
        report_to="none",
        train_batch_size=64,
        max_train_steps=steps + warmup + 1,
        logging_steps=1000,
        num_validation_images=1,
        model=BenchConfig(unet_json=str(unet_json)),
        **settings,
    )
    Trainer(config, task_class=UnconditionalDDPMBenchTask).train()
    return seconds_per_step(UnconditionalDDPMBenchTask.step_times, warmup), list(
        UnconditionalDDPMBenchTask.losses
    )


def step_flops(unet_json: Path, batch_size: int = 64) -> int:
    unet, scheduler, _ = bare_setup(unet_json)
    pixel_values = torch.randn(batch_size, unet.config.in_channels, 32, 32)
    with FlopCounterMode(display=False) as counter:
        ddpm_loss(unet, scheduler, pixel_values).backward()
    return counter.get_total_flops()


# Op groups of the time breakdown, matched against torch.profiler's aten op names.
OP_GROUPS = {
    "attention (scaled_dot_product / softmax / bmm)": ("scaled_dot_product", "softmax", "bmm"),
    "convolution": ("convolution",),
    "group norm": ("group_norm",),
    "matmul (linear layers)": ("aten::mm", "aten::addmm"),
}


def time_breakdown(unet_json: Path, bf16: bool, batch_size: int = 64, steps: int = 2) -> dict[str, float]:
    """Share of one training step's self CPU time per op group (torch.profiler, after one warm-up step)."""
    from torch.profiler import profile

    unet, scheduler, optimizer = bare_setup(unet_json)
    pixel_values = torch.randn(batch_size, unet.config.in_channels, 32, 32)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = ddpm_loss(unet, scheduler, pixel_values)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()
    with profile() as profiler:
        for _ in range(steps):
            step()
    events = profiler.key_averages()
    total = sum(event.self_cpu_time_total for event in events)
    shares = dict.fromkeys([*OP_GROUPS, "everything else"], 0.0)
    for event in events:
        group = next(
            (name for name, keys in OP_GROUPS.items() if any(key in event.key for key in keys)),
            "everything else",
        )
        shares[group] += event.self_cpu_time_total / total
    return shares


def matmul_peak(dtype: torch.dtype, n: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(2):
        a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - start)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_UNET)
    parser.add_argument("--steps", type=int, default=12, help="timed steps per setting (after warm-up)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument(
        "--quality-steps", type=int, default=60, help="steps of the fp32-vs-bf16 loss check (0: skip)"
    )
    parser.add_argument("--output", type=Path, default=ROOT / "results" / "train_throughput.md")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/latentzoo-bench"))
    args = parser.parse_args(argv)

    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}"
    )
    flops = step_flops(args.config)
    peak_fp32, peak_bf16 = matmul_peak(torch.float32), matmul_peak(torch.bfloat16)
    print(
        f"one step = {flops / 1e9:.1f} GFLOP; matmul peak fp32 {peak_fp32 / 1e9:.0f}, bf16 {peak_bf16 / 1e9:.0f} GFLOP/s"
    )

    # Bare loop and Trainer alternate, twice each, and each keeps its faster median: background load on a shared
    # machine then biases neither.
    bare = trainer_fp32 = float("inf")
    for round_ in range(2):
        bare = min(bare, bare_loop(args.config, args.steps, args.warmup))
        print(f"bare fp32: {bare:.3f} s/step", flush=True)
        seconds, _ = trainer_run(args.config, args.steps, args.warmup, args.work_dir / f"fp32-{round_}")
        trainer_fp32 = min(trainer_fp32, seconds)
        print(f"Trainer fp32: {trainer_fp32:.3f} s/step", flush=True)
    rows = [("bare PyTorch loop, fp32", bare), ("Trainer, fp32 (equal settings)", trainer_fp32)]
    for name, settings in (
        ("Trainer, bf16 autocast", {"mixed_precision": "bf16"}),
        ("Trainer, bf16 autocast + torch.compile", {"mixed_precision": "bf16", "torch_compile": True}),
    ):
        seconds, _ = trainer_run(
            args.config, args.steps, args.warmup, args.work_dir / f"fast-{len(rows)}", **settings
        )
        rows.append((name, seconds))
        print(f"{name}: {seconds:.3f} s/step", flush=True)

    # Last, because it changes this process's allocator for good: freed memory kept for reuse (retain_cpu_memory).
    retain_freed_memory()
    bare_retained = trainer_retained = float("inf")
    for round_ in range(2):
        bare_retained = min(bare_retained, bare_loop(args.config, args.steps, args.warmup))
        seconds, _ = trainer_run(
            args.config, args.steps, args.warmup, args.work_dir / f"retain-{round_}", retain_cpu_memory=True
        )
        trainer_retained = min(trainer_retained, seconds)
        print(f"retained memory: bare {bare_retained:.3f}, Trainer {trainer_retained:.3f} s/step", flush=True)
    seconds, _ = trainer_run(
        args.config,
        args.steps,
        args.warmup,
        args.work_dir / "retain-bf16",
        mixed_precision="bf16",
        retain_cpu_memory=True,
    )
    rows += [
        ("bare PyTorch loop, fp32, freed memory retained", bare_retained),
        ("Trainer, fp32 + `retain_cpu_memory`", trainer_retained),
        ("Trainer, bf16 autocast + `retain_cpu_memory`", seconds),
    ]
    print(f"Trainer bf16 + retained memory: {seconds:.3f} s/step", flush=True)

    # s/step of diffusers' train_unconditional.py on this model and data, measured on this machine
    example = 1.8
    lines = [
        "# Training throughput: Trainer vs bare PyTorch loop",
        "",
        f"`python benchmarks/train_throughput.py --steps {args.steps}` on {platform.machine()}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}. Model: `{args.config.name}` "
        f"(UNet2DModel, {sum(p.numel() for p in unet_from_json(args.config).parameters()) / 1e6:.1f} M parameters), "
        "unconditional DDPM step on `mnist` 32x32, batch 64, AdamW, grad-norm clip 1.0; median of "
        f"{args.steps} steps after {args.warmup} warm-up steps (bare loop and Trainer fp32: the better of two alternating runs). One step = {flops / 1e9:.1f} GFLOP "
        "(torch.utils.flop_counter, forward + backward). Matmul peak measured here (2048² matmul): "
        f"fp32 {peak_fp32 / 1e9:.0f} GFLOP/s, bf16 {peak_bf16 / 1e9:.0f} GFLOP/s.",
        "",
        "| setting | s/step | img/s | vs bare loop | vs diffusers example (1.8 s/step) | GFLOP/s | % of peak |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, seconds in rows:
        peak = peak_bf16 if "bf16" in name else peak_fp32
        achieved = flops / seconds
        lines.append(
            f"| {name} | {seconds:.3f} | {64 / seconds:.1f} | {bare / seconds:.2f}x | {example / seconds:.2f}x | "
            f"{achieved / 1e9:.0f} | {achieved / peak:.0%} |"
        )
    lines += [
        "",
        "Trainer overhead over the bare loop at equal settings: "
        f"{trainer_fp32 / bare - 1:+.1%} with glibc's default allocator, "
        f"{trainer_retained / bare_retained - 1:+.1%} with freed memory retained in both (target <= 5%).",
    ]

    breakdown = {
        precision: time_breakdown(args.config, precision == "bf16") for precision in ("fp32", "bf16")
    }
    lines += [
        "",
        "Where a step's time goes (torch.profiler, self CPU time of a bare step, batch 64, 2 steps after a warm-up):",
        "",
        "| op group | fp32 | bf16 autocast |",
        "|---|---|---|",
        *(
            f"| {group} | {breakdown['fp32'][group]:.0%} | {breakdown['bf16'][group]:.0%} |"
            for group in breakdown["fp32"]
        ),
    ]

    if args.quality_steps:
        _, fp32 = trainer_run(
            args.config, args.quality_steps, 0, args.work_dir / "q-fp32", learning_rate=3e-4
        )
        _, bf16 = trainer_run(
            args.config,
            args.quality_steps,
            0,
            args.work_dir / "q-bf16",
            learning_rate=3e-4,
            mixed_precision="bf16",
        )
        tail = max(1, args.quality_steps // 4)
        lines += [
            "",
            f"Quality check, same seed and data, lr 3e-4, {args.quality_steps} steps: mean loss of the last {tail} "
            f"steps fp32 {statistics.mean(fp32[-tail:]):.4f}, bf16 {statistics.mean(bf16[-tail:]):.4f} "
            f"(first step {fp32[0]:.4f} / {bf16[0]:.4f}).",
        ]
    text = "\n".join(lines) + "\n"
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(text)


if __name__ == "__main__":
    sys.exit(main())
