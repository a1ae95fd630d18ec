"""`evaluate` and the protocols sample with the guidance scale and steps saved with the model unless told otherwise,
and say the values they used: in the protocol, in metrics.json's "sampling" and in the model card."""

import json

import pytest
import torch
import yaml
from huggingface_hub import ModelCard
from tiny_pipelines import gan_pipeline, pixel_pipeline, text_to_image_pipeline

from latentzoo.evaluation import evaluate_shapes
from latentzoo.evaluation.sampling import sampling_settings
from latentzoo.training import load_config
from latentzoo.training.cli import build_parser, main
from latentzoo.training.config import config_to_dict


@pytest.fixture(autouse=True)
def one_thread_and_own_cache(tmp_path, monkeypatch):
    """Tiny models run fastest on one thread; encoders are cached under tmp_path, never in the user's cache."""
    monkeypatch.setenv("LATENTZOO_CACHE", str(tmp_path / "cache"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_sampling_settings_are_the_given_ones_else_the_saved_ones():
    pipe = text_to_image_pipeline(default_guidance_scale=2.5, default_num_inference_steps=3)
    assert sampling_settings(pipe) == {"num_inference_steps": 3, "guidance_scale": 2.5}
    assert sampling_settings(pipe, 7, 0.0) == {"num_inference_steps": 7, "guidance_scale": 0.0}
    assert sampling_settings(pipe, None, 4.0) == {"num_inference_steps": 3, "guidance_scale": 4.0}
    unconditional = pixel_pipeline(None, default_num_inference_steps=5)
    assert sampling_settings(unconditional, guidance_scale=3.0, guided=False) == {
        "num_inference_steps": 5,
        "guidance_scale": 1.0,
    }
    assert sampling_settings(gan_pipeline()) == {}


def test_a_protocol_without_settings_samples_with_the_saved_ones_and_says_so():
    pipe = text_to_image_pipeline(default_guidance_scale=2.5, default_num_inference_steps=2)
    result = evaluate_shapes(pipe, per_family=1, seed=0)
    assert "2 DDIMScheduler steps, guidance scale 2.5" in result["protocol"]
    assert result["sampling"] == {"sampler": "DDIMScheduler", "num_inference_steps": 2, "guidance_scale": 2.5}


@pytest.mark.parametrize("command", ["evaluate", "quickstart", "generate"])
def test_sampling_options_not_given_are_none_in_every_command(command):
    argv = [command, "M"] if command != "quickstart" else [command]
    args = build_parser().parse_args(argv)
    assert args.steps is None and args.guidance_scale is None and args.sampler is None


def test_evaluate_without_settings_uses_the_saved_ones_and_records_them(tmp_path, capsys):
    model_dir = tmp_path / "ddpm"
    pixel_pipeline(10, default_guidance_scale=2.5, default_num_inference_steps=2).save_pretrained(model_dir)
    config = load_config(None, ["task=ddpm", "dataset=digits", f"output_dir={model_dir}"])
    (model_dir / "training_config.yaml").write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False))
    main(["evaluate", str(model_dir), "--num-samples", "4", "--domain-steps", "5"])
    report = json.loads((model_dir / "metrics.json").read_text())
    assert report["sampling"] == {"sampler": "DDIMScheduler", "num_inference_steps": 2, "guidance_scale": 2.5}
    assert "2 DDIMScheduler steps, guidance scale 2.5" in report["protocol"]
    assert report["dataset"] == "digits"
    card = ModelCard.load(model_dir / "README.md")
    assert "Measured with 2 DDIMScheduler steps, guidance scale 2.5." in card.text
    assert {result.dataset_name for result in card.data.eval_results} == {"digits"}

    # Given on the command line: those, everywhere.
    argv = ["evaluate", str(model_dir), "--num-samples", "4", "--domain-steps", "5"]
    main([*argv, "--steps", "3", "--guidance-scale", "1.5"])
    report = json.loads((model_dir / "metrics.json").read_text())
    assert report["sampling"]["num_inference_steps"] == 3 and report["sampling"]["guidance_scale"] == 1.5
    assert "3 DDIMScheduler steps, guidance scale 1.5" in report["protocol"]
