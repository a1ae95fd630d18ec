"""Training throughput of the Trainer against diffusers' own example and a bare PyTorch loop, in one run.

The model is the UNet2DModel of ../shared/bench/unet_small.json (the one diffusers' `train_unconditional.py`
example was measured with), trained as an unconditional DDPM (epsilon loss, linear schedule, AdamW) on `mnist`
at 32x32, batch 64, the grayscale digits repeated to the config's 3 channels as that example does.

    python benchmarks/train_throughput.py [--steps 12] [--config ../shared/bench/unet_small.json]

Reports s/step and img/s, every ratio against rows of the same run: diffusers' `train_unconditional.py` loop
(`example_loop`: its data pipeline, a `datasets.Dataset` of PNG images transformed per item with PIL, and its training
step, at its default fp32 and at `--mixed_precision bf16`), a bare loop and the Trainer at equal settings, and the
Trainer's `auto` choice, all alternating over two rounds; the Trainer's other settings (bf16 autocast, torch.compile,
`attention=blockwise` in fp32, `retain_cpu_memory`, the last beside a bare loop with the same allocator setting,
since it is process-wide); the achieved FLOP/s (torch.utils.flop_counter counts one step) against this CPU's
measured matmul peaks; where a step's time goes (torch.profiler, by op group, fp32 against bf16); and a quality
check: the same seed trained fp32 vs the fastest setting, compared on training and held-out validation loss.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import torch
import torch.nn.functional as F
import yaml
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import ProjectConfiguration
from diffusers import DDPMScheduler, UNet2DModel
from diffusers.optimization import get_scheduler
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode
from tqdm.auto import tqdm

from latentzoo.data import load_dataset
from latentzoo.data.imagefolder import resize_and_center_crop
from latentzoo.models.attention import use_blockwise_attention
from latentzoo.training import Trainer, TrainingConfig
from latentzoo.training.cpu_memory import retain_freed_memory
from latentzoo.training.tasks.base import TaskConfig, TrainingTask

ROOT = Path(__file__).resolve().parent
DEFAULT_UNET = ROOT.parent.parent / "shared" / "bench" / "unet_small.json"
EXAMPLE_FP32 = "diffusers example, fp32 (its default)"
TRAINER_AUTO = "Trainer, `auto`"


def unet_from_json(path: Path) -> UNet2DModel:
    config = json.loads(Path(path).read_text())
    config.pop("_class_name", None)
    return UNet2DModel(**config)


def example_scheduler() -> DDPMScheduler:
    """The example's noise schedule: linear betas over 1,000 steps."""
    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")


def bare_setup(unet_json: Path, blockwise: bool = False):
    """The bare loop's seeded model, the example's schedule, and AdamW."""
    torch.manual_seed(0)
    unet = unet_from_json(unet_json)
    if blockwise:
        use_blockwise_attention(unet)
    return unet, example_scheduler(), torch.optim.AdamW(unet.parameters(), lr=1e-4)


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
        self.scheduler = example_scheduler()
        self.channels = self.unet.config.in_channels

    def trainable_modules(self):
        return {"unet": self.unet}

    def training_step(self, batch, modules, step):
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


def bare_loop(
    unet_json: Path,
    steps: int,
    warmup: int,
    batch_size: int = 64,
    bf16: bool = False,
    blockwise: bool = False,
) -> float:
    unet, scheduler, optimizer = bare_setup(unet_json, blockwise)
    data = load_dataset("mnist").pixel_values
    channels = unet.config.in_channels
    times = []
    for _ in range(steps + warmup + 1):
        times.append(time.perf_counter())
        index = torch.randint(0, len(data), (batch_size,))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = ddpm_loss(unet, scheduler, data[index].expand(-1, channels, -1, -1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return seconds_per_step(times, warmup)


def example_dataset(resolution: int = 32) -> datasets.Dataset:
    """The training digits as `train_unconditional.py` reads an image folder: a `datasets.Dataset` of PNG-encoded
    images, decoded and transformed item by item through `set_transform`, with the example's transforms
    (`image.convert("RGB")`, `Resize(resolution, BILINEAR)`, `CenterCrop(resolution)`, `ToTensor()`,
    `Normalize([0.5], [0.5])`). torchvision does not install beside this CPU torch, so its transforms are written
    here with PIL and numpy, rounding as torchvision does (`resize_and_center_crop`)."""
    digits = load_dataset("mnist").pixel_values[:, 0]  # the 32x32 training digits in [-1, 1]
    arrays = ((digits + 1) * 127.5).round().to(torch.uint8).numpy()
    dataset = datasets.Dataset.from_dict(
        {"image": [Image.fromarray(array) for array in arrays]},
        features=datasets.Features({"image": datasets.Image()}),
    )

    def to_tensor(image: Image.Image) -> torch.Tensor:  # torchvision's ToTensor on a PIL image
        array = torch.from_numpy(np.array(image, copy=True))
        return (
            array.view(image.size[1], image.size[0], len(image.getbands())).permute(2, 0, 1).float().div(255)
        )

    def transform_images(examples):
        return {
            "input": [
                (
                    to_tensor(
                        resize_and_center_crop(image.convert("RGB"), resolution, Image.Resampling.BILINEAR)
                    )
                    - 0.5
                )
                / 0.5
                for image in examples["image"]
            ]
        }

    dataset.set_transform(transform_images)
    return dataset


def example_loop(
    unet_json: Path,
    steps: int,
    warmup: int,
    work_dir: Path,
    batch_size: int = 64,
    mixed_precision: str = "no",
) -> tuple[float, float]:
    """diffusers' `examples/unconditional_image_generation/train_unconditional.py`, the part that runs per step, with
    its defaults: AdamW (betas 0.95 / 0.999, weight decay 1e-6, eps 1e-8), a cosine schedule with 500 warm-up steps,
    Accelerate's `accumulate` / `backward` / `clip_grad_norm_`, the tensorboard logger it logs loss and lr to at every
    step, a tqdm bar, `dataloader_num_workers=0`, no EMA; inputs and noise cast to the mixed-precision dtype as it
    casts them. Returns (median s/step after warm-up, median s of those steps spent fetching the batch)."""
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    accelerator = Accelerator(
        mixed_precision=mixed_precision,
        log_with="tensorboard",
        project_config=ProjectConfiguration(project_dir=str(work_dir), logging_dir=str(work_dir / "logs")),
    )
    torch.manual_seed(0)
    model = unet_from_json(unet_json)
    weight_dtype = torch.bfloat16 if accelerator.mixed_precision == "bf16" else torch.float32
    noise_scheduler = DDPMScheduler(
        num_train_timesteps=1000, beta_schedule="linear", prediction_type="epsilon"
    )
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=1e-4, betas=(0.95, 0.999), weight_decay=1e-6, eps=1e-8
    )
    train_dataloader = torch.utils.data.DataLoader(
        example_dataset(), batch_size=batch_size, shuffle=True, num_workers=0
    )
    num_epochs = math.ceil((steps + warmup + 1) / len(train_dataloader))
    lr_scheduler = get_scheduler(
        "cosine",
        optimizer=optimizer,
        num_warmup_steps=500,
        num_training_steps=len(train_dataloader) * num_epochs,
    )
    model, optimizer, train_dataloader, lr_scheduler = accelerator.prepare(
        model, optimizer, train_dataloader, lr_scheduler
    )
    accelerator.init_trackers("train_unconditional")
    starts, fetch_seconds, global_step = [], [], 0
    for epoch in range(num_epochs):
        model.train()
        progress_bar = tqdm(total=len(train_dataloader), disable=not accelerator.is_local_main_process)
        progress_bar.set_description(f"Epoch {epoch}")
        fetch_start = time.perf_counter()
        for batch in train_dataloader:
            starts.append(time.perf_counter())
            fetch_seconds.append(starts[-1] - fetch_start)
            if len(starts) == steps + warmup + 1:
                break
            clean_images = batch["input"].to(weight_dtype)
            noise = torch.randn(clean_images.shape, dtype=weight_dtype, device=clean_images.device)
            bsz = clean_images.shape[0]
            timesteps = torch.randint(
                0, noise_scheduler.config.num_train_timesteps, (bsz,), device=clean_images.device
            ).long()
            noisy_images = noise_scheduler.add_noise(clean_images, noise, timesteps)
            with accelerator.accumulate(model):
                model_output = model(noisy_images, timesteps).sample
                loss = F.mse_loss(model_output.float(), noise.float())
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad()
            if accelerator.sync_gradients:
                progress_bar.update(1)
                global_step += 1
            logs = {"loss": loss.detach().item(), "lr": lr_scheduler.get_last_lr()[0], "step": global_step}
            progress_bar.set_postfix(**logs)
            accelerator.log(logs, step=global_step)
            fetch_start = time.perf_counter()
        progress_bar.close()
        if len(starts) == steps + warmup + 1:
            break
    accelerator.end_training()
    return seconds_per_step(starts, warmup), statistics.median(fetch_seconds[warmup + 1 : steps + warmup + 1])


def trainer_run(unet_json: Path, steps: int, warmup: int, output_dir: Path, **settings):
    """Train through the Trainer; returns (median s/step after warm-up, loss per step). Settings not given are fp32
    and SDPA, never the Trainer's `auto` (which would probe instead of measuring the row's setting)."""
    settings = {"mixed_precision": "no", "attention": "sdpa", **settings}
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
    "attention (scaled_dot_product / softmax / bmm)": (
        "scaled_dot_product",
        "softmax",
        "bmm",
        "blockwise_attention",
    ),
    "convolution": ("convolution",),
    "group norm": ("group_norm",),
    "matmul (linear layers)": ("aten::mm", "aten::addmm"),
    # bf16 autocast casts weights and activations at every op: here is what that costs.
    "copies and dtype conversions (copy_, _to_copy)": ("aten::copy_", "aten::_to_copy"),
}


def time_breakdown(
    unet_json: Path, bf16: bool, blockwise: bool = False, batch_size: int = 64, steps: int = 2
) -> dict[str, float]:
    """Seconds per training step per op group (torch.profiler self CPU time, after one warm-up step)."""
    from torch.profiler import profile

    unet, scheduler, optimizer = bare_setup(unet_json, blockwise)
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
    seconds = dict.fromkeys([*OP_GROUPS, "everything else"], 0.0)
    for event in events:
        group = next(
            (name for name, keys in OP_GROUPS.items() if any(key in event.key for key in keys)),
            "everything else",
        )
        seconds[group] += event.self_cpu_time_total / 1e6 / steps
    return seconds


def matmul_peak(dtype: torch.dtype, n: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(2):
        a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - start)


@torch.no_grad()
def validation_loss(unet_dir: Path, repeats: int = 4, batch_size: int = 250) -> float:
    """The DDPM loss of a saved UNet on the held-out mnist validation split: fp32, SDPA, fixed noise and timesteps."""
    unet = UNet2DModel.from_pretrained(unet_dir).eval()
    scheduler = example_scheduler()
    data = load_dataset("mnist", split="validation").pixel_values.expand(-1, unet.config.in_channels, -1, -1)
    generator = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(repeats):
        for batch in data.split(batch_size):
            noise = torch.randn(batch.shape, generator=generator)
            timesteps = torch.randint(
                0, scheduler.config.num_train_timesteps, (len(batch),), generator=generator
            )
            prediction = unet(scheduler.add_noise(batch, noise, timesteps), timesteps).sample
            losses.append(F.mse_loss(prediction, noise, reduction="sum").item() / noise[0].numel())
    return sum(losses) / (repeats * len(data))


def alternate(runs: dict[str, callable], rounds: int = 2) -> dict[str, float]:
    """Best s/step of each run over `rounds` alternating rounds: background load then biases none of them."""
    best = dict.fromkeys(runs, float("inf"))
    for round_ in range(rounds):
        for name, run in runs.items():
            best[name] = min(best[name], run(round_))
            print(f"{name}: {best[name]:.3f} s/step", flush=True)
    return best


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_UNET)
    parser.add_argument("--steps", type=int, default=12, help="timed steps per setting (after warm-up)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument(
        "--quality-steps", type=int, default=200, help="steps of the fp32-vs-fastest quality check (0: skip)"
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

    def trainer(name, config=args.config, steps=args.steps, **settings):
        return lambda round_: trainer_run(
            config, steps, args.warmup, args.work_dir / f"{name}-{round_}", **settings
        )[0]

    def bare(config=args.config, steps=args.steps, **settings):
        return lambda round_: bare_loop(config, steps, args.warmup, **settings)

    def example(mixed_precision="no"):
        def run(round_):
            seconds, fetch = example_loop(
                args.config,
                args.steps,
                args.warmup,
                args.work_dir / f"example-{mixed_precision}-{round_}",
                mixed_precision=mixed_precision,
            )
            name = "bf16" if mixed_precision == "bf16" else "fp32"
            example_fetch[name] = min(fetch, example_fetch.get(name, fetch))
            return seconds

        return run

    def trainer_auto(round_):
        folder = args.work_dir / f"auto-{round_}"
        seconds = trainer_run(
            args.config, args.steps, args.warmup, folder, mixed_precision="auto", attention="auto"
        )[0]
        auto_choices.append(yaml.safe_load((folder / "training_config.yaml").read_text())["speed_probe"])
        return seconds

    example_fetch, auto_choices = {}, []
    fastest = {"mixed_precision": "bf16", "attention": "blockwise"}
    # diffusers' example, the bare loop and the Trainer at equal settings (fp32 with SDPA, and bf16 autocast with
    # blockwise attention), and the Trainer's own choice, alternating: background load biases none of them.
    timed = alternate(
        {
            EXAMPLE_FP32: example(),
            "diffusers example, `--mixed_precision bf16`": example("bf16"),
            "bare PyTorch loop, fp32": bare(),
            "Trainer, fp32 (equal settings)": trainer("fp32"),
            "bare PyTorch loop, bf16 autocast + blockwise attention": bare(bf16=True, blockwise=True),
            "Trainer, bf16 autocast + blockwise attention (equal settings)": trainer("fastest", **fastest),
            TRAINER_AUTO: trainer_auto,
        }
    )
    timed |= alternate(
        {
            "Trainer, bf16 autocast": trainer("bf16", mixed_precision="bf16"),
            "Trainer, bf16 autocast + torch.compile": trainer(
                "bf16-compile", mixed_precision="bf16", torch_compile=True
            ),
            "Trainer, fp32 + blockwise attention": trainer("fp32-blockwise", attention="blockwise"),
            "Trainer, bf16 autocast + blockwise attention + torch.compile": trainer(
                "fastest-compile", torch_compile=True, **fastest
            ),
        },
        rounds=1,
    )
    # The Trainer's own cost per step, apart from the step's ops: the same pair on a UNet of widths 4/8/8, whose fp32
    # step is ~0.16 s, so a fixed cost is not lost in the run-to-run noise of the full-size step.
    tiny = {**json.loads(args.config.read_text()), "block_out_channels": [4, 8, 8], "norm_num_groups": 4}
    tiny_json = args.work_dir / "unet_tiny.json"
    tiny_json.parent.mkdir(parents=True, exist_ok=True)
    tiny_json.write_text(json.dumps(tiny))
    fixed = alternate(
        {
            "bare": bare(tiny_json, 3 * args.steps),
            "Trainer": trainer("tiny", tiny_json, 3 * args.steps),
        },
        rounds=3,
    )

    # Last, because it changes this process's allocator for good: freed memory kept for reuse (retain_cpu_memory).
    retain_freed_memory()
    retained = alternate(
        {
            "bare PyTorch loop, fp32, freed memory retained": bare(),
            "Trainer, fp32 + `retain_cpu_memory`": trainer("retain", retain_cpu_memory=True),
        }
    )
    timed |= retained

    chosen = sorted({record["chosen"] for record in auto_choices})
    auto_name = f"Trainer, `auto` (chose {' / '.join(f'`{c}`' for c in chosen)})"
    timed = {auto_name if name == TRAINER_AUTO else name: seconds for name, seconds in timed.items()}
    example_fp32, bare_fp32 = timed[EXAMPLE_FP32], timed["bare PyTorch loop, fp32"]
    lines = [
        "# Training throughput: the Trainer, diffusers' example and a bare PyTorch loop, in one run",
        "",
        f"`python benchmarks/train_throughput.py --steps {args.steps}` on {platform.machine()}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}. "
        f"**Matmul peak measured in this run (2048² matmul): fp32 {peak_fp32 / 1e9:.0f} GFLOP/s, bf16 "
        f"{peak_bf16 / 1e9:.0f} GFLOP/s.** Model: `{args.config.name}` "
        f"(UNet2DModel, {sum(p.numel() for p in unet_from_json(args.config).parameters()) / 1e6:.1f} M parameters), "
        "unconditional DDPM step on `mnist` 32x32, batch 64, AdamW, grad-norm clip 1.0; median of "
        f"{args.steps} steps after {args.warmup} warm-up steps. The first seven rows, and the last two, alternate "
        f"over two rounds and keep their better one; the other four take one round. One step = {flops / 1e9:.1f} "
        "GFLOP (torch.utils.flop_counter, forward + backward). Every ratio is against a row of this run.",
        "",
        "diffusers example: the loop of `examples/unconditional_image_generation/train_unconditional.py` "
        "(`example_loop`): its data pipeline (a `datasets.Dataset` of PNG images decoded and transformed per item "
        "with PIL: RGB, bilinear resize, centre crop, to tensor, normalize; `dataloader_num_workers=0`), its step "
        "(Accelerate's `accumulate` / `backward` / `clip_grad_norm_`, AdamW, cosine schedule) and its per-step "
        "tensorboard log and tqdm bar. Fetching a batch through that pipeline took "
        + ", ".join(f"{seconds:.3f} s ({name})" for name, seconds in example_fetch.items())
        + " of its step.",
        "",
        "| setting | s/step | img/s | vs diffusers example (fp32, its default) | vs bare fp32 loop | GFLOP/s | "
        "% of that precision's matmul peak |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, seconds in timed.items():
        bf16 = "bf16" in (chosen[0] if name == auto_name and len(chosen) == 1 else name)
        peak = peak_bf16 if bf16 else peak_fp32
        achieved = flops / seconds
        lines.append(
            f"| {name} | {seconds:.3f} | {64 / seconds:.1f} | {example_fp32 / seconds:.2f}x | "
            f"{bare_fp32 / seconds:.2f}x | {achieved / 1e9:.0f} | {achieved / peak:.0%} |"
        )
    probe = auto_choices[0]
    lines += [
        "",
        f"`auto`'s probe in its first round ({probe['how']}): "
        + ", ".join(
            f"`{name}` {seconds:.3f} s" for name, seconds in probe.get("seconds_per_step", {}).items()
        )
        + " per forward + backward pass.",
    ]

    def overhead(trainer_name, bare_name):
        return f"{timed[trainer_name] / timed[bare_name] - 1:+.1%}"

    lines += [
        "",
        "Trainer overhead over the bare loop at equal settings (target <= 5%): "
        f"{overhead('Trainer, fp32 (equal settings)', 'bare PyTorch loop, fp32')} at fp32, "
        f"{overhead('Trainer, bf16 autocast + blockwise attention (equal settings)', 'bare PyTorch loop, bf16 autocast + blockwise attention')} "
        "at bf16 + blockwise attention, "
        f"{overhead('Trainer, fp32 + `retain_cpu_memory`', 'bare PyTorch loop, fp32, freed memory retained')} at fp32 "
        "with freed memory retained in both.",
        "",
        f"The Trainer's fixed cost per step, measured on a UNet of widths 4/8/8 (fp32, {3 * args.steps} steps, best "
        f"of three alternating rounds): bare loop {fixed['bare'] * 1000:.1f} ms/step, Trainer "
        f"{fixed['Trainer'] * 1000:.1f} ms/step, a difference of {(fixed['Trainer'] - fixed['bare']) * 1000:+.1f} ms "
        f"= {(fixed['Trainer'] - fixed['bare']) / timed['bare PyTorch loop, fp32']:+.1%} of the full-size fp32 step.",
    ]

    columns = {
        "fp32": (False, False),
        "bf16 autocast": (True, False),
        "bf16 autocast + blockwise attention": (True, True),
    }
    breakdown = {name: time_breakdown(args.config, *flags) for name, flags in columns.items()}
    lines += [
        "",
        "Where a step's time goes (torch.profiler, self CPU seconds per step of the bare loop, batch 64, 2 steps "
        "after a warm-up; the profiler adds its own overhead). Read it beside this run's matmul peaks, fp32 "
        f"{peak_fp32 / 1e9:.0f} and bf16 {peak_bf16 / 1e9:.0f} GFLOP/s: bf16 pays where its kernels are faster than "
        "fp32's by more than the conversions it adds cost.",
        "",
        f"| op group | {' | '.join(columns)} |",
        "|---|" + "---|" * len(columns),
        *(
            f"| {group} | " + " | ".join(f"{breakdown[column][group]:.3f}" for column in columns) + " |"
            for group in breakdown["fp32"]
        ),
        "| **total** | "
        + " | ".join(f"**{sum(breakdown[column].values()):.3f}**" for column in columns)
        + " |",
    ]

    if args.quality_steps:
        losses, held_out = {}, {}
        for name, settings in (("fp32", {}), ("bf16 autocast + blockwise attention", fastest)):
            folder = args.work_dir / f"quality-{name.split()[0]}"
            _, losses[name] = trainer_run(
                args.config, args.quality_steps, 0, folder, learning_rate=3e-4, **settings
            )
            held_out[name] = validation_loss(folder)
        tail = max(1, args.quality_steps // 4)
        lines += [
            "",
            f"Quality check: {args.quality_steps} steps from the same seed and data (lr 3e-4), then the DDPM loss of "
            "the saved UNet on the 500 held-out validation digits (fp32, SDPA, 4 fixed noise draws each):",
            "",
            f"| setting | first-step loss | mean loss of the last {tail} steps | held-out loss |",
            "|---|---|---|---|",
            *(
                f"| {name} | {losses[name][0]:.4f} | {statistics.mean(losses[name][-tail:]):.4f} | "
                f"{held_out[name]:.4f} |"
                for name in losses
            ),
        ]
    text = "\n".join(lines) + "\n"
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(text)


if __name__ == "__main__":
    sys.exit(main())
