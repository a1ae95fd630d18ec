"""The one Trainer: config checks, loss falls, bit-identical resume, atomic checkpoints, two processes."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from safetensors.torch import load_file

from latentzoo.models.attention import BlockwiseAttnProcessor
from latentzoo.training import Trainer, list_checkpoints, load_config
from latentzoo.training.tasks.autoencoder_kl import AutoencoderKLTask

TINY = [
    "task=autoencoder_kl",
    "dataset=digits",
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
    with pytest.raises(ValueError, match=r"mixed_precision.*\['no', 'bf16', 'fp16'\]"):
        load_config(None, ["task=autoencoder_kl", "mixed_precision=fp8"])
    with pytest.raises(ValueError, match=r"attention.*\['sdpa', 'blockwise'\]"):
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

    def training_step(self, batch, modules):
        self.calls = getattr(self, "calls", 0) + 1
        if self.calls == self.fail_at:
            raise KeyboardInterrupt("simulated kill")
        return super().training_step(batch, modules)


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
