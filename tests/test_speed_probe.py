"""`mixed_precision=auto` / `attention=auto`: the probe's choice, its record, its reuse on resume and by stages."""

import logging
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import yaml
from accelerate.state import AcceleratorState, GradientState
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from safetensors.torch import load_file

from latentzoo.models.attention import BlockwiseAttnProcessor
from latentzoo.training import Trainer, load_config, train
from latentzoo.training import trainer as trainer_module
from latentzoo.training.trainer import PROBE_STEPS, fastest_setting, speed_candidates

TINY_DDPM = [
    "task=ddpm",
    "dataset=digits",
    "train_batch_size=16",
    "report_to=none",
    "num_validation_images=2",
    "model.block_out_channels=[8, 16]",
    "model.attention_levels=[1]",
    "model.attention_head_dim=4",
    "model.norm_num_groups=4",
    "model.validation_num_inference_steps=2",
]
NO_SDPA, BF16_SDPA, BF16_BLOCKWISE = (
    "mixed_precision=no attention=sdpa",
    "mixed_precision=bf16 attention=sdpa",
    "mixed_precision=bf16 attention=blockwise",
)


@pytest.fixture(autouse=True)
def fresh_process_state(monkeypatch):
    """Each launch here starts as a new process would (Accelerate fixes mixed precision once per process), and the
    CPU counts as one with bf16 kernels, so the three candidates are the same on any machine."""
    monkeypatch.setattr(trainer_module, "_cpu_has_bf16", lambda: True)
    new_process()
    yield
    new_process()


def new_process():
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def stub_clock(monkeypatch, *seconds_per_step: float):
    """The probe's clock: each timed step of the n-th candidate measured as `seconds_per_step[n]` (the candidates
    take turns, one step each per round)."""
    ticks = iter([t for _ in range(PROBE_STEPS) for seconds in seconds_per_step for t in (0.0, seconds)])
    monkeypatch.setattr(trainer_module, "probe_clock", lambda: next(ticks))


def count_probes(monkeypatch, refuse: bool = False) -> list:
    calls = []
    probe = trainer_module.probe_speed

    def counted(*args, **kwargs):
        calls.append(args[2])
        if refuse:
            raise AssertionError("probed although nothing was left to choose")
        return probe(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "probe_speed", counted)
    return calls


def saved(output_dir) -> dict:
    return yaml.safe_load((output_dir / "training_config.yaml").read_text())


def test_auto_takes_the_fastest_measured_setting_records_it_and_a_resume_reuses_it(
    tmp_path, monkeypatch, caplog
):
    caplog.set_level(logging.INFO)
    stub_clock(monkeypatch, 3.0, 1.0, 2.0)  # bf16 + SDPA is the fastest
    probes = count_probes(monkeypatch)
    config = load_config(
        None, [*TINY_DDPM, f"output_dir={tmp_path}", "max_train_steps=2", "checkpointing_steps=2"]
    )
    assert (config.mixed_precision, config.attention) == ("auto", "auto")  # the defaults
    trainer = Trainer(config)
    trainer.train()

    assert probes == [[("no", "sdpa"), ("bf16", "sdpa"), ("bf16", "blockwise")]]
    assert trainer.accelerator.mixed_precision == "bf16"
    processors = [
        m.processor for m in trainer.task.trainable_modules()["unet"].modules() if isinstance(m, Attention)
    ]
    assert processors and all(isinstance(p, AttnProcessor2_0) for p in processors)
    record = saved(tmp_path)
    assert (record["mixed_precision"], record["attention"]) == ("bf16", "sdpa")
    assert record["speed_probe"]["seconds_per_step"] == {NO_SDPA: 3.0, BF16_SDPA: 1.0, BF16_BLOCKWISE: 2.0}
    assert record["speed_probe"]["chosen"] == BF16_SDPA
    assert f"auto: {BF16_SDPA} (probed: the fastest of" in caplog.text
    assert config.mixed_precision == "auto"  # the caller's config is left as it was

    new_process()
    stub_clock(monkeypatch, 1.0, 3.0, 3.0)  # a probe now would choose fp32: it must not run
    probes.clear()
    resumed = Trainer(
        load_config(
            None,
            [*TINY_DDPM, f"output_dir={tmp_path}", "max_train_steps=3", "resume_from_checkpoint=latest"],
        )
    )
    resumed.train()
    assert probes == []
    assert resumed.state.global_step == 3 and resumed.accelerator.mixed_precision == "bf16"
    record = saved(tmp_path)
    assert (record["mixed_precision"], record["attention"]) == ("bf16", "sdpa")
    assert record["speed_probe"]["seconds_per_step"][BF16_SDPA] == 1.0  # the original probe's timings
    assert "not probed again" in caplog.text


def test_a_probe_leaves_the_run_as_an_explicit_setting_would_train_it(tmp_path, monkeypatch):
    stub_clock(monkeypatch, 1.0, 2.0, 3.0)  # fp32 + SDPA
    common = [*TINY_DDPM, "max_train_steps=2"]
    Trainer(load_config(None, [*common, f"output_dir={tmp_path / 'auto'}"])).train()
    assert saved(tmp_path / "auto")["speed_probe"]["chosen"] == NO_SDPA
    new_process()
    explicit = [f"output_dir={tmp_path / 'explicit'}", "mixed_precision=no", "attention=sdpa"]
    Trainer(load_config(None, [*common, *explicit])).train()
    assert saved(tmp_path / "explicit")["speed_probe"] is None
    a = load_file(tmp_path / "auto" / "unet" / "diffusion_pytorch_model.safetensors")
    b = load_file(tmp_path / "explicit" / "unet" / "diffusion_pytorch_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_close_race_keeps_fp32_and_the_blockwise_layers_are_used_when_they_win(tmp_path, monkeypatch):
    assert fastest_setting({("no", "sdpa"): 1.0, ("bf16", "sdpa"): 0.97}) == ("no", "sdpa")
    stub_clock(monkeypatch, 3.0, 2.0, 1.0)
    trainer = Trainer(load_config(None, [*TINY_DDPM, f"output_dir={tmp_path}", "max_train_steps=1"]))
    trainer.train()
    assert trainer.accelerator.mixed_precision == "bf16"
    processors = [
        m.processor for m in trainer.task.trainable_modules()["unet"].modules() if isinstance(m, Attention)
    ]
    assert processors and all(isinstance(p, BlockwiseAttnProcessor) for p in processors)


def test_explicit_settings_never_probe(tmp_path, monkeypatch):
    probes = count_probes(monkeypatch, refuse=True)
    trainer = Trainer(
        load_config(
            None,
            [
                *TINY_DDPM,
                f"output_dir={tmp_path / 'a'}",
                "max_train_steps=1",
                "mixed_precision=no",
                "attention=sdpa",
            ],
        )
    )
    trainer.train()
    assert trainer.accelerator.mixed_precision == "no" and saved(tmp_path / "a")["speed_probe"] is None
    # Explicit fp32 leaves attention=auto one candidate: blockwise pays off under bf16 only.
    new_process()
    Trainer(
        load_config(
            None, [*TINY_DDPM, f"output_dir={tmp_path / 'b'}", "max_train_steps=1", "mixed_precision=no"]
        )
    ).train()
    record = saved(tmp_path / "b")
    assert (record["mixed_precision"], record["attention"]) == ("no", "sdpa")
    assert record["speed_probe"]["how"].startswith("the only candidate")
    assert probes == []


def test_candidates_per_device():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert speed_candidates("auto", "auto", cpu) == [("no", "sdpa"), ("bf16", "sdpa"), ("bf16", "blockwise")]
    assert speed_candidates("auto", "sdpa", cpu) == [("no", "sdpa"), ("bf16", "sdpa")]
    assert speed_candidates("auto", "blockwise", cpu) == [("no", "blockwise"), ("bf16", "blockwise")]
    assert speed_candidates("bf16", "auto", cpu) == [("bf16", "sdpa"), ("bf16", "blockwise")]
    assert speed_candidates("no", "auto", cpu) == [("no", "sdpa")]
    assert speed_candidates("no", "sdpa", cpu) == [("no", "sdpa")]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(trainer_module, "_cpu_has_bf16", lambda: False)
        assert speed_candidates("auto", "auto", cpu) == [("no", "sdpa")]
        patch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
        assert speed_candidates("auto", "auto", cuda) == [("bf16", "sdpa")]
        patch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
        assert speed_candidates("auto", "auto", cuda) == [("fp16", "sdpa")]


def test_stages_train_with_the_first_models_choice_one_probe_per_launch(tmp_path, monkeypatch):
    """text2img with its VAE stage: the VAE (trained first) is probed, and the run takes its choice unprobed."""
    stub_clock(monkeypatch, 3.0, 1.0, 2.0)
    probes = count_probes(monkeypatch)
    vae_config = tmp_path / "vae.yaml"
    vae_config.write_text(
        yaml.safe_dump(
            {
                "task": "autoencoder_kl",
                "dataset": "digits",
                "max_train_steps": 1,
                "train_batch_size": 16,
                "report_to": "none",
                "model": {"block_out_channels": [4, 8], "norm_num_groups": 4, "scaling_samples": 64},
            }
        )
    )
    output_dir = tmp_path / "model"
    train(
        load_config(
            None,
            [
                "task=text2img",
                "dataset=digits",
                f"output_dir={output_dir}",
                f"model.vae={output_dir / 'vae'}",
                f"model.vae_config={vae_config}",
                "model.text_encoder=null",
                "model.text_encoder_config=null",
                "max_train_steps=1",
                "train_batch_size=16",
                "report_to=none",
                "num_validation_images=1",
                "model.max_prompt_length=16",
                "model.text_hidden_size=16",
                "model.text_num_layers=1",
                "model.text_num_heads=2",
                "model.text_intermediate_size=32",
                "model.block_out_channels=[8, 16]",
                "model.attention_head_dim=4",
                "model.norm_num_groups=4",
                "model.validation_prompts=[a bold five]",
                "model.validation_num_inference_steps=1",
            ],
        )
    )
    assert len(probes) == 1
    vae, run = saved(output_dir / "vae"), saved(output_dir)
    assert (vae["mixed_precision"], vae["attention"]) == ("bf16", "sdpa")
    assert (run["mixed_precision"], run["attention"]) == ("bf16", "sdpa")
    assert run["speed_probe"] == vae["speed_probe"] and run["speed_probe"]["run"] == str(output_dir / "vae")


TWO_RANKS = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from latentzoo.training import Trainer, load_config
    from latentzoo.training import trainer as trainer_module

    rank = int(os.environ["RANK"])
    seconds = (3.0, 1.0, 2.0) if rank == 0 else (1.0, 3.0, 3.0)  # rank 1 alone would keep fp32
    ticks = iter([t for _ in range(trainer_module.PROBE_STEPS) for s in seconds for t in (0.0, s)])
    trainer_module.probe_clock = lambda: next(ticks)
    trainer_module._cpu_has_bf16 = lambda: True
    trainer = Trainer(load_config(None, sys.argv[1:]))
    trainer.train()
    settings = f"{trainer.accelerator.num_processes} {trainer.accelerator.mixed_precision} {trainer.config.attention}"
    (Path(trainer.config.output_dir) / f"rank{rank}.txt").write_text(settings)
    """
)


def test_every_process_trains_with_rank_0s_choice(tmp_path):
    script = tmp_path / "two_ranks.py"
    script.write_text(TWO_RANKS)
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launch += ["--num_machines", "1", "--dynamo_backend", "no", "--main_process_port", "29563"]
    output_dir = tmp_path / "run"
    command = [*launch, str(script), *TINY_DDPM, f"output_dir={output_dir}", "max_train_steps=2"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [(output_dir / f"rank{rank}.txt").read_text() for rank in (0, 1)] == ["2 bf16 sdpa"] * 2
    assert saved(output_dir)["speed_probe"]["seconds_per_step"][BF16_SDPA] == 1.0


def test_every_preset_names_its_speed_settings_so_it_never_probes():
    """A preset gives the same weights on any machine: `auto` would let the probe, and so the load of the machine,
    choose the precision."""
    from pathlib import Path

    from latentzoo.training import load_config

    presets = sorted(Path(__file__).resolve().parent.parent.joinpath("configs").glob("*.yaml"))
    assert len(presets) >= 15
    for preset in presets:
        config = load_config(preset.stem)
        assert "auto" not in (config.mixed_precision, config.attention), preset.stem
