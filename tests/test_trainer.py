"""The one Trainer: config checks, loss falls, bit-identical resume, atomic checkpoints, two processes."""

import json
import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import yaml
from diffusers import AutoencoderKL
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from safetensors.torch import load_file

from latentzoo.models.attention import BlockwiseAttnProcessor
from latentzoo.training import Trainer, list_checkpoints, load_config
from latentzoo.training.tasks.autoencoder_kl import AutoencoderKLTask

TINY = [
    "task=autoencoder_kl",
    "dataset=digits",
    # named, not auto: the subprocess runs below are compared bit for bit, and a probe's choice follows the load
    "mixed_precision=no",
    "attention=sdpa",
    "train_batch_size=16",
    "learning_rate=3e-3",
    "report_to=none",
    "logging_steps=2",
    "num_validation_images=4",
    "model.block_out_channels=[4, 8]",
    "model.norm_num_groups=4",
    "model.scaling_samples=64",
]


def tiny_config(tmp_path, *overrides):
    return load_config(None, [*TINY, f"output_dir={tmp_path}", *overrides])


# ---------------------------------------------------------------------------------------------- config


def test_unknown_key_names_the_valid_keys():
    with pytest.raises(ValueError, match=r"Unknown config key.*learnin_rate.*valid keys.*learning_rate"):
        load_config(None, ["task=autoencoder_kl", "learnin_rate=1e-3"])
    with pytest.raises(ValueError, match=r"model\.widths.*model\.block_out_channels"):
        load_config(None, ["task=autoencoder_kl", "model.widths=[4]"])


def test_bad_values_fail_before_training_naming_the_choices():
    with pytest.raises(ValueError, match=r"mixed_precision.*\['auto', 'no', 'bf16', 'fp16'\]"):
        load_config(None, ["task=autoencoder_kl", "mixed_precision=fp8"])
    with pytest.raises(ValueError, match=r"attention.*\['auto', 'sdpa', 'blockwise'\]"):
        load_config(None, ["task=autoencoder_kl", "attention=flash"])
    with pytest.raises(ValueError, match=r"reconstruction_loss.*\['l1', 'mse'\]"):
        load_config(None, ["task=autoencoder_kl", "model.reconstruction_loss=huber"])
    with pytest.raises(ValueError, match=r"train_batch_size.*integer|train_batch_size.*int"):
        load_config(None, ["task=autoencoder_kl", "train_batch_size=big"])
    with pytest.raises(ValueError, match=r"learning_rate.*positive"):
        load_config(None, ["task=autoencoder_kl", "learning_rate=-1"])
    with pytest.raises(ValueError, match=r"Unknown task 'gpt'.*autoencoder_kl"):
        load_config(None, ["task=gpt"])
    with pytest.raises(ValueError, match=r"key=value"):
        load_config(None, ["task=autoencoder_kl", "seed"])


def test_yaml_file_and_overrides_merge(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("task: autoencoder_kl\nseed: 3\nmodel:\n  latent_channels: 2\n  kl_weight: 1.0e-4\n")
    config = load_config(path, ["model.latent_channels=8", "max_train_minutes=1.5"])
    assert config.seed == 3 and config.max_train_minutes == 1.5
    assert config.model.latent_channels == 8 and config.model.kl_weight == 1e-4


def test_moving_output_dir_moves_the_stage_folders_inside_it():
    config = load_config("text2img-mnist", ["output_dir=/data/run", "model.vae=/models/my-vae"])
    assert config.output_dir == "/data/run"
    assert config.model.text_encoder == "/data/run/stages/text_encoder"  # inside the preset's folder: moved
    assert config.model.vae == "/models/my-vae"  # overridden explicitly: kept
    preset = load_config("text2img-mnist", ["seed=1"])
    assert preset.model.text_encoder == "outputs/text2img-mnist/stages/text_encoder"


def test_decaying_lr_schedule_needs_a_step_count(tmp_path):
    config = tiny_config(tmp_path, "max_train_minutes=1", "lr_scheduler=cosine")
    with pytest.raises(ValueError, match=r"lr_scheduler.*max_train_steps"):
        Trainer(config).train()


def test_retain_cpu_memory_stops_page_faulting_freed_blocks_in_again():
    """Process-wide, so it runs in a child process: three tensors (12, 12, 4 MiB) made and freed ten times."""
    code = textwrap.dedent(
        """
        import resource, sys, torch
        from latentzoo.training.cpu_memory import retain_freed_memory
        if sys.argv[1] == "retain":
            assert retain_freed_memory()
        def faults():
            start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            for _ in range(10):
                a, b, c = torch.ones(3 << 20), torch.ones(3 << 20), torch.ones(1 << 20)
                del a, b, c
            return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start
        faults()  # the first round faults in either case
        print(faults())
        """
    )

    def faults(mode: str) -> int:
        # Baseline: glibc's mmap threshold pinned at its 128 KiB default (it otherwise drifts with the process's
        # allocation history, so an unpinned baseline may or may not fault).
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
        run = subprocess.run(
            [sys.executable, "-c", code, mode], capture_output=True, text=True, check=True, env=env
        )
        return int(run.stdout)

    counts = {mode: faults(mode) for mode in ("default", "retain")}
    # The baseline maps the 28 MiB in and out every round (~7,000 pages); retained, they are reused.
    assert counts["default"] > 10 * 5000 and counts["retain"] < 100, counts


def test_retain_cpu_memory_is_applied_by_the_trainer_on_cpu(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr("latentzoo.training.trainer.retain_freed_memory", lambda: calls.append(1) or True)
    Trainer(tiny_config(tmp_path, "max_train_steps=1")).train()
    assert calls == []
    Trainer(tiny_config(tmp_path / "retain", "max_train_steps=1", "retain_cpu_memory=true")).train()
    assert calls == [1]


def test_attention_blockwise_changes_the_trained_model_but_not_what_it_saves(tmp_path):
    trainer = Trainer(tiny_config(tmp_path, "max_train_steps=2", "attention=blockwise"))
    trainer.train()
    trained = trainer.task.trainable_modules()["vae"]
    processors = [m.processor for m in trained.modules() if isinstance(m, Attention)]
    assert processors and all(isinstance(p, BlockwiseAttnProcessor) for p in processors)

    saved = AutoencoderKL.from_pretrained(tmp_path)
    assert all(type(m.processor) is AttnProcessor2_0 for m in saved.modules() if isinstance(m, Attention))
    pixels = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(saved(pixels).sample, trained.vae(pixels).sample, atol=1e-5, rtol=1e-4)


# ---------------------------------------------------------------------------------------------- training


def reconstruction_error(vae: AutoencoderKL, pixel_values: torch.Tensor) -> float:
    with torch.no_grad():
        return torch.nn.functional.mse_loss(vae(pixel_values).sample, pixel_values).item()


def test_tiny_task_trains_and_its_loss_falls(tmp_path):
    config = tiny_config(tmp_path, "max_train_steps=60", "validation_steps=30")
    trainer = Trainer(config)
    output_dir = trainer.train()

    pixels = trainer.dataset.pixel_values[:128]
    torch.manual_seed(config.seed)
    untrained = AutoencoderKLTask(config.model, trainer.dataset).model.vae
    trained = AutoencoderKL.from_pretrained(output_dir)
    assert reconstruction_error(trained, pixels) < 0.5 * reconstruction_error(untrained, pixels)
    # scaling_factor was measured so that scaled latents have unit variance
    latents = trained.encode(pixels).latent_dist.mean * trained.config.scaling_factor
    assert abs(latents.std().item() - 1.0) < 0.1
    assert (output_dir / "samples" / "step-000030.png").is_file()
    assert json.loads((output_dir / "train_state.json").read_text())["global_step"] == 60


class InterruptedTask(AutoencoderKLTask):
    """Dies like a killed job in the middle of step `fail_at` (1-based)."""

    fail_at = 7

    def training_step(self, batch, modules, step):
        self.calls = getattr(self, "calls", 0) + 1
        if self.calls == self.fail_at:
            raise KeyboardInterrupt("simulated kill")
        return super().training_step(batch, modules, step)


def checkpoint_tensors(path: Path) -> dict[str, torch.Tensor]:
    tensors = {f"model.{k}": v for k, v in load_file(path / "model.safetensors").items()}
    tensors.update({f"ema.{k}": v for k, v in load_file(path / "ema_vae.safetensors").items()})
    optimizer = torch.load(path / "optimizer.bin", weights_only=True)
    for index, state in optimizer["state"].items():
        for key, value in state.items():
            tensors[f"optimizer.{index}.{key}"] = torch.as_tensor(value)
    return tensors


def test_resume_matches_uninterrupted_run_bit_for_bit(tmp_path):
    # `digits` has 12 batches of 128 per epoch: the run dies in step 7, resumes mid-epoch from step 5, and crosses
    # into a reshuffled second epoch, so data order, RNG streams, LR schedule and EMA all have to line up.
    common = [
        "max_train_steps=15",
        "checkpointing_steps=5",
        "use_ema=true",
        "lr_scheduler=cosine",
        "lr_warmup_steps=2",
        "train_batch_size=128",
    ]
    Trainer(tiny_config(tmp_path / "straight", *common)).train()

    interrupted = tiny_config(tmp_path / "resumed", *common)
    with pytest.raises(KeyboardInterrupt):
        Trainer(interrupted, task_class=InterruptedTask).train()
    assert [p.name for p in list_checkpoints(tmp_path / "resumed" / "checkpoints")] == ["checkpoint-5"]
    Trainer(tiny_config(tmp_path / "resumed", *common, "resume_from_checkpoint=latest")).train()

    straight = checkpoint_tensors(tmp_path / "straight" / "checkpoints" / "checkpoint-15")
    resumed = checkpoint_tensors(tmp_path / "resumed" / "checkpoints" / "checkpoint-15")
    assert straight.keys() == resumed.keys()
    assert any(k.startswith("optimizer.") for k in straight) and any(k.startswith("ema.") for k in straight)
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    state = json.loads(
        (tmp_path / "resumed" / "checkpoints" / "checkpoint-15" / "train_state.json").read_text()
    )
    assert state["global_step"] == 15


def test_interrupted_save_is_never_latest_and_pruning_keeps_last_complete(tmp_path, monkeypatch):
    config = tiny_config(tmp_path, "max_train_steps=6", "checkpointing_steps=2", "checkpoints_total_limit=1")
    trainer = Trainer(config)
    original = Trainer.save_checkpoint

    def dies_while_saving_step_4(self):
        if self.state.global_step == 4:
            # The state is half written into the temporary folder when the process dies.
            self.accelerator.save_state(str(self.checkpoint_dir / ".tmp-checkpoint-4"))
            raise KeyboardInterrupt("killed mid-save")
        return original(self)

    monkeypatch.setattr(Trainer, "save_checkpoint", dies_while_saving_step_4)
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    checkpoint_dir = tmp_path / "checkpoints"
    assert (checkpoint_dir / ".tmp-checkpoint-4").is_dir()
    assert [p.name for p in list_checkpoints(checkpoint_dir)] == ["checkpoint-2"]

    monkeypatch.setattr(Trainer, "save_checkpoint", original)
    resumed = Trainer(
        tiny_config(
            tmp_path,
            "max_train_steps=6",
            "checkpointing_steps=2",
            "checkpoints_total_limit=1",
            "resume_from_checkpoint=latest",
        )
    )
    resumed.train()
    assert [p.name for p in list_checkpoints(checkpoint_dir)] == ["checkpoint-6"]
    assert json.loads((tmp_path / "train_state.json").read_text())["global_step"] == 6


def test_resume_from_a_folder_that_is_not_a_checkpoint_is_an_error(tmp_path):
    config = tiny_config(tmp_path, "max_train_steps=2", f"resume_from_checkpoint={tmp_path / 'nope'}")
    with pytest.raises(ValueError, match="resume_from_checkpoint.*not a complete checkpoint"):
        Trainer(config).train()


def test_wall_clock_budget_stops_training(tmp_path):
    config = tiny_config(tmp_path, "max_train_minutes=0.002")  # 0.12 s: a handful of steps at most
    Trainer(config).train()
    state = json.loads((tmp_path / "train_state.json").read_text())
    assert 1 <= state["global_step"] < 100  # one epoch of digits would be 101 steps
    assert (tmp_path / "config.json").is_file()  # the model was saved all the same


TWO_PROCESS_SCRIPT = Path(__file__).parent / "two_process_train.py"


def test_two_process_cpu_launch_trains_one_model(tmp_path):
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        "29517",
        str(TWO_PROCESS_SCRIPT),
        str(tmp_path),
        *TINY,
        "max_train_steps=4",
        "use_ema=true",
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    reports = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert [r["world_size"] for r in reports] == [2, 2]
    assert reports[0]["digest"] == reports[1]["digest"]
    assert json.loads((tmp_path / "train_state.json").read_text())["world_size"] == 2
    # both ranks stepped the same 4 updates, each on half of the batch
    assert reports[0]["global_step"] == reports[1]["global_step"] == 4


# ------------------------------------------------------------------------------------------ reliability


@pytest.mark.parametrize(
    "override, message",
    [
        ("learning_rate=.nan", r"`learning_rate` must be a finite number"),
        ("learning_rate=.inf", r"`learning_rate` must be a finite number"),
        ("max_train_minutes=.nan", r"`max_train_minutes` must be a finite number"),
        ("max_grad_norm=.nan", r"`max_grad_norm` must be a finite number"),
        ("adam_epsilon=.nan", r"`adam_epsilon` must be a finite number"),
        ("adam_epsilon=0", r"`adam_epsilon` must be positive"),
        ("adam_beta2=1.0", r"`adam_beta2` must be in \[0, 1\)"),
        ("num_validation_images=-4", r"`num_validation_images` must be >= 1"),
        ("lr_warmup_steps=-1", r"`lr_warmup_steps` must be >= 0"),
        ("seed=-1", r"`seed` must be in \[0, 4294967295\]"),
        ("checkpointing_steps=0", r"`checkpointing_steps` must be >= 1"),
        ("ema_decay=1", r"`ema_decay` must be in \[0, 1\)"),
        ("model.kl_weight=-1e-6", r"`model.kl_weight` must be >= 0"),
        ("model.block_out_channels=[]", r"`model.block_out_channels` needs at least one entry"),
        ("model.block_out_channels=[4, 0]", r"`model.block_out_channels\[1\]` must be >= 1"),
        ("model.scaling_samples=0", r"`model.scaling_samples` must be >= 1"),
    ],
)
def test_every_number_is_checked_against_its_range_before_any_work(override, message):
    with pytest.raises(ValueError, match=message):
        load_config(None, [*TINY, override])


@pytest.mark.parametrize(
    "preset, override, message",
    [
        ("ddpm-mnist", "model.num_train_timesteps=0", r"`model.num_train_timesteps` must be >= 1"),
        ("ddpm-mnist", "model.label_dropout=1", r"`model.label_dropout` must be in \[0, 1\)"),
        ("gan-mnist", "model.adam_betas=[0.5, 1.5]", r"`model.adam_betas\[1\]` must be in \[0, 1\)"),
        ("gan-mnist", "model.generator_learning_rate=.nan", r"generator_learning_rate` must be a finite"),
        ("text2img-mnist", "model.validation_guidance_scale=-1", r"validation_guidance_scale` must be >= 0"),
        (
            "text2img-mnist",
            "stages.vae.model.kl_weight=.inf",
            r"Stage 'vae'.*`model.kl_weight` must be a finite",
        ),
        ("clip_text-mnist", "model.initial_temperature=0", r"`model.initial_temperature` must be positive"),
    ],
)
def test_task_numbers_are_checked_for_every_family(preset, override, message):
    with pytest.raises(ValueError, match=message):
        load_config(preset, [override])


def test_a_config_built_in_python_is_checked_like_yaml():
    from latentzoo.training.config import TrainingConfig
    from latentzoo.training.tasks.ddpm import DDPMConfig

    with pytest.raises(ValueError, match=r"`learning_rate` must be a finite number, got nan"):
        TrainingConfig(learning_rate=float("nan"))
    with pytest.raises(ValueError, match=r"`model.num_train_timesteps` must be >= 1, got 0"):
        DDPMConfig(num_train_timesteps=0)
    assert TrainingConfig(learning_rate=1).learning_rate == 1.0  # an int where a float is declared is fine


class NaNAtStep(AutoencoderKLTask):
    """Its loss turns NaN in optimizer step `step` (1-based), as an overflow or a bad batch would."""

    step = 3

    def training_step(self, batch, modules, step):
        self.calls = getattr(self, "calls", 0) + 1
        outputs = super().training_step(batch, modules, step)
        if self.calls == self.step:
            outputs["loss"] = outputs["loss"] * float("nan")
        return outputs


def saved_tensors_are_finite(folder: Path) -> int:
    """Check every tensor of every safetensors file under `folder`; return how many files were checked."""
    files = list(folder.rglob("*.safetensors"))
    for path in files:
        for name, tensor in load_file(path).items():
            assert torch.isfinite(tensor).all(), f"{path}: {name}"
    return len(files)


def test_a_nan_loss_stops_the_run_at_that_step_and_saves_nothing_from_it(tmp_path):
    from latentzoo.training.trainer import NonFiniteLossError

    config = tiny_config(tmp_path, "max_train_steps=10", "checkpointing_steps=1", "use_ema=true")
    with pytest.raises(NonFiniteLossError, match=r"(?s)diverged at step 3: loss/loss = nan.*checkpoint-2"):
        Trainer(config, task_class=NaNAtStep).train()
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == ["checkpoint-1", "checkpoint-2"]
    assert not (tmp_path / "config.json").exists() and not (tmp_path / "train_state.json").exists()
    assert saved_tensors_are_finite(tmp_path) == 4  # weights and EMA of both checkpoints


def test_a_nan_in_an_accumulated_micro_batch_stops_the_step(tmp_path):
    from latentzoo.training.trainer import NonFiniteLossError

    # Micro-batch 3 belongs to optimizer step 2 (two micro-batches per step); clipping off, so only the loss shows it.
    config = tiny_config(
        tmp_path,
        "max_train_steps=5",
        "gradient_accumulation_steps=2",
        "max_grad_norm=null",
        "checkpointing_steps=1",
    )
    with pytest.raises(NonFiniteLossError, match=r"diverged at step 2: loss/loss = nan"):
        Trainer(config, task_class=NaNAtStep).train()
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == ["checkpoint-1"]


def test_an_exploding_learning_rate_is_caught_and_nothing_non_finite_is_written(tmp_path):
    from latentzoo.training.trainer import NonFiniteLossError

    config = tiny_config(tmp_path, "max_train_steps=30", "checkpointing_steps=1", "learning_rate=1e10")
    with pytest.raises(
        NonFiniteLossError, match=r"(diverged at step \d+|weights are not finite).*learning_rate"
    ):
        Trainer(config).train()
    assert not (tmp_path / "config.json").exists()
    saved_tensors_are_finite(tmp_path)


def test_latest_skips_a_checkpoint_with_a_missing_or_truncated_file(tmp_path):
    common = ["max_train_steps=6", "checkpointing_steps=2"]
    Trainer(tiny_config(tmp_path, *common)).train()
    checkpoints = tmp_path / "checkpoints"
    assert (checkpoints / "checkpoint-6" / "manifest.json").is_file()
    (checkpoints / "checkpoint-6" / "train_state.json").unlink()  # a crash in a copy
    with open(checkpoints / "checkpoint-4" / "model.safetensors", "r+b") as f:  # a disk-full
        f.truncate(100)
    assert [p.name for p in list_checkpoints(checkpoints)] == ["checkpoint-2"]
    with pytest.raises(
        ValueError, match=r"checkpoint-6.*not a complete checkpoint folder \(train_state.json is missing"
    ):
        Trainer(
            tiny_config(tmp_path, *common, f"resume_from_checkpoint={checkpoints / 'checkpoint-6'}")
        ).train()

    resumed = Trainer(tiny_config(tmp_path, *common, "resume_from_checkpoint=latest"))
    resumed.train()
    assert json.loads((checkpoints / "checkpoint-6" / "train_state.json").read_text())["global_step"] == 6
    assert list_checkpoints(checkpoints)[-1].name == "checkpoint-6"  # rewritten, complete again


def test_a_second_run_into_a_finished_folder_is_refused_unless_asked_to_overwrite(tmp_path):
    Trainer(tiny_config(tmp_path, "max_train_steps=4", "checkpointing_steps=2")).train()
    before = (tmp_path / "diffusion_pytorch_model.safetensors").read_bytes()
    with pytest.raises(
        ValueError, match=r"already holds a finished model.*resume_from_checkpoint=latest.*overwrite"
    ):
        Trainer(tiny_config(tmp_path, "max_train_steps=3", "seed=1")).train()
    assert (tmp_path / "diffusion_pytorch_model.safetensors").read_bytes() == before  # untouched
    assert yaml.safe_load((tmp_path / "training_config.yaml").read_text())["seed"] == 0

    Trainer(
        tiny_config(
            tmp_path, "max_train_steps=3", "seed=1", "checkpointing_steps=3", "overwrite_output_dir=true"
        )
    ).train()
    # Only the new run's checkpoints: a later `latest` cannot resume the old run.
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == ["checkpoint-3"]
    assert json.loads((tmp_path / "train_state.json").read_text())["global_step"] == 3


def test_an_unfinished_run_is_refused_too_and_resume_continues_it(tmp_path):
    common = ["max_train_steps=15", "checkpointing_steps=5", "train_batch_size=128"]
    with pytest.raises(KeyboardInterrupt):
        Trainer(tiny_config(tmp_path, *common), task_class=InterruptedTask).train()
    with pytest.raises(ValueError, match=r"holds checkpoints of an earlier run \(1\)"):
        Trainer(tiny_config(tmp_path, *common)).train()
    Trainer(tiny_config(tmp_path, *common, "resume_from_checkpoint=latest")).train()
    assert json.loads((tmp_path / "train_state.json").read_text())["global_step"] == 15


SLOW_TRAIN = Path(__file__).parent / "slow_train.py"
SOAK = [
    "max_train_steps=24",
    "checkpointing_steps=1",
    "checkpoints_total_limit=2",
    "use_ema=true",
    "lr_scheduler=cosine",
    "lr_warmup_steps=2",
    "train_batch_size=64",  # 28 batches per epoch: the runs cross no epoch boundary but resume mid-epoch
]


def start_slow_run(output_dir: Path, *overrides: str) -> subprocess.Popen:
    # The thread count of this process: the runs compared bit for bit must reduce floats in the same order.
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads()), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, str(SLOW_TRAIN), *TINY, f"output_dir={output_dir}", *overrides]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_checkpoint(process: subprocess.Popen, checkpoint_dir: Path, step: int, timeout: float = 120):
    """Wait until a complete checkpoint of at least `step` exists (the run is then mid-way), or fail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        checkpoints = list_checkpoints(checkpoint_dir)
        if checkpoints and int(checkpoints[-1].name.split("-")[1]) >= step:
            return
        if process.poll() is not None:
            pytest.fail(f"the run ended before step {step}: {process.stderr.read()[-2000:]}")
        time.sleep(0.02)
    process.kill()
    pytest.fail(f"no checkpoint of step {step} within {timeout} s")


def final_weights(output_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(output_dir / "diffusion_pytorch_model.safetensors")


def test_sigterm_writes_a_checkpoint_and_resume_is_bit_identical(tmp_path):
    Trainer(tiny_config(tmp_path / "straight", *SOAK)).train()

    run = tmp_path / "interrupted"
    process = start_slow_run(run, *SOAK)
    wait_for_checkpoint(process, run / "checkpoints", 3)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    step = int(re.search(r"SIGTERM at step (\d+): checkpoint written to (\S+)\.", stderr).group(1))
    assert 3 <= step < 24
    assert list_checkpoints(run / "checkpoints")[-1].name == f"checkpoint-{step}"
    assert not (run / "diffusion_pytorch_model.safetensors").exists()

    Trainer(tiny_config(run, *SOAK, "resume_from_checkpoint=latest")).train()
    straight, resumed = final_weights(tmp_path / "straight"), final_weights(run)
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    last = checkpoint_tensors(tmp_path / "straight" / "checkpoints" / "checkpoint-24")
    for key, value in checkpoint_tensors(run / "checkpoints" / "checkpoint-24").items():
        assert torch.equal(last[key], value), key


def test_kill_and_resume_soak_ends_bit_identical(tmp_path):
    """SIGKILL at 5 random moments (mid-step or mid-save), each time resumed from `latest`."""
    Trainer(tiny_config(tmp_path / "straight", *SOAK)).train()
    run = tmp_path / "killed"
    kill_after = sorted(random.Random(0).sample(range(2, 22), 5))
    for step in kill_after:
        process = start_slow_run(run, *SOAK, "resume_from_checkpoint=latest")
        wait_for_checkpoint(process, run / "checkpoints", step)
        time.sleep(random.Random(step).uniform(0, 0.06))  # anywhere in the next step or its save
        process.kill()
        process.communicate()
    Trainer(tiny_config(run, *SOAK, "resume_from_checkpoint=latest")).train()
    straight, resumed = final_weights(tmp_path / "straight"), final_weights(run)
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    assert json.loads((run / "train_state.json").read_text())["global_step"] == 24


def launch_two_processes(output_dir: Path, *overrides: str, port: int) -> subprocess.Popen:
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(port),
        str(SLOW_TRAIN),
        *TINY,
        f"output_dir={output_dir}",
        *overrides,
    ]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_sigterm_under_accelerate_launch_checkpoints_every_rank_and_resumes_bit_identically(tmp_path):
    straight = launch_two_processes(tmp_path / "straight", *SOAK, port=29541)
    _, stderr = straight.communicate(timeout=300)
    assert straight.returncode == 0, stderr[-3000:]

    run = tmp_path / "interrupted"
    process = launch_two_processes(run, *SOAK, port=29542)
    wait_for_checkpoint(process, run / "checkpoints", 3)
    process.send_signal(signal.SIGTERM)  # to the launcher, which passes it to both ranks
    _, stderr = process.communicate(timeout=300)
    steps = {int(step) for step in re.findall(r"SIGTERM at step (\d+): checkpoint written", stderr)}
    assert len(steps) == 1, stderr[-3000:]  # both ranks stopped after the same step
    (step,) = steps
    assert 3 <= step < 24 and list_checkpoints(run / "checkpoints")[-1].name == f"checkpoint-{step}"

    resumed = launch_two_processes(run, *SOAK, "resume_from_checkpoint=latest", port=29543)
    _, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, stderr[-3000:]
    expected, got = final_weights(tmp_path / "straight"), final_weights(run)
    for key in expected:
        assert torch.equal(expected[key], got[key]), key


class CountingTask(AutoencoderKLTask):
    """Counts the images it trained on in state of its own (restored on resume) and records the steps it is given;
    dies in the middle of its 7th step when `fail_at` says so."""

    fail_at = None

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.counter = torch.nn.Module()
        self.counter.register_buffer("images", torch.zeros((), dtype=torch.int64))
        self.steps = []

    def checkpoint_state(self):
        return {"counter": self.counter}

    def training_step(self, batch, modules, step):
        if len(self.steps) + 1 == self.fail_at:
            raise KeyboardInterrupt("simulated kill")
        self.steps.append(step)
        self.counter.images += len(batch["pixel_values"])
        return super().training_step(batch, modules, step)


def test_task_state_and_the_step_survive_a_resume(tmp_path):
    common = ["max_train_steps=10", "checkpointing_steps=5", "train_batch_size=32", "use_ema=true"]
    interrupted = type("Dies", (CountingTask,), {"fail_at": 7})
    with pytest.raises(KeyboardInterrupt):
        Trainer(tiny_config(tmp_path, *common), task_class=interrupted).train()
    assert (tmp_path / "checkpoints" / "checkpoint-5" / "task_counter.safetensors").is_file()

    resumed = Trainer(
        tiny_config(tmp_path, *common, "resume_from_checkpoint=latest"), task_class=CountingTask
    )
    resumed.train()
    assert resumed.task.steps == [5, 6, 7, 8, 9]  # the global step before each batch, continuing
    assert int(resumed.task.counter.images) == 10 * 32  # 5 steps counted before the kill, restored, 5 after


def test_pipeline_from_checkpoint_carries_the_checkpoints_ema_weights(tmp_path):
    config = tiny_config(tmp_path, "max_train_steps=4", "checkpointing_steps=4", "use_ema=true")
    Trainer(config).train()
    restored = Trainer(config).pipeline_from_checkpoint(tmp_path / "checkpoints" / "checkpoint-4")
    saved = AutoencoderKL.from_pretrained(tmp_path)  # the final model is saved with the EMA weights
    for name, tensor in saved.state_dict().items():
        assert torch.equal(restored.state_dict()[name], tensor), name
    raw = Trainer(config).pipeline_from_checkpoint(tmp_path / "checkpoints" / "checkpoint-4", ema=False)
    assert not all(torch.equal(raw.state_dict()[k], v) for k, v in saved.state_dict().items())


def test_a_config_builds_on_a_base_preset_or_file(tmp_path):
    (tmp_path / "mine.yaml").write_text("base: gan-mnist-classes\nseed: 3\nmodel:\n  latent_dim: 32\n")
    (tmp_path / "child.yaml").write_text("base: mine.yaml\nmax_train_steps: 10\n")  # a path beside the file
    config = load_config(tmp_path / "child.yaml")
    gan = load_config("gan-mnist")
    assert (config.seed, config.max_train_steps, config.model.latent_dim) == (3, 10, 32)
    assert config.model.class_conditional and config.output_dir == "outputs/gan-mnist-classes"
    assert config.model.generator_channels == gan.model.generator_channels  # from gan-mnist, two bases down
    assert config.learning_rate == gan.learning_rate

    (tmp_path / "loop.yaml").write_text("base: loop.yaml\n")
    with pytest.raises(ValueError, match="is its own base"):
        load_config(tmp_path / "loop.yaml")
    (tmp_path / "missing.yaml").write_text("base: no-such-preset\n")
    with pytest.raises(ValueError, match=r"'no-such-preset' is neither a file nor a preset"):
        load_config(tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    "preset", sorted(p.stem for p in (Path(__file__).parent.parent / "configs").glob("*.yaml"))
)
def test_every_preset_has_a_model_card_whose_usage_code_compiles(preset):
    from latentzoo.training.tasks import get_task_class

    config = load_config(preset)
    fields = get_task_class(config.task).card_info(config)
    assert {"title", "pipeline_tag", "tags", "description", "usage"} <= set(fields)
    assert isinstance(fields["tags"], list) and all(" " not in tag for tag in fields["tags"])
    for key, value in fields.items():
        assert "{{" not in str(value) and "{%" not in str(value), key
        assert key == "usage" or "  " not in str(value), key  # no gap left by a template's empty branch
    compile(fields["usage"].replace("MODEL_DIR", "some/model"), f"{preset} usage", "exec")
