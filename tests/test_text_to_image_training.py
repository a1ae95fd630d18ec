"""Text-to-image end to end on tiny models: both stages train, the folder loads and generates, the model card
parses, `generate` and `push` work, and a Hub token never leaks into output or files."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from huggingface_hub import ModelCard
from PIL import Image

from latentzoo.pipelines import LatentTextToImagePipeline
from latentzoo.training import load_config, train
from latentzoo.training.cli import main
from latentzoo.training.tasks import Stage
from latentzoo.training.tasks.text_to_image import TextToImageTask

FAKE_TOKEN = "hf_latentzooFakeToken0123456789abcdefXYZ"

TINY_STAGE_1 = {
    "task": "autoencoder_kl",
    "dataset": "digits",
    "max_train_steps": 5,
    "train_batch_size": 32,
    "report_to": "tensorboard",
    "model": {"block_out_channels": [4, 8], "norm_num_groups": 4, "scaling_samples": 64},
}


def tiny_text2img_overrides(tmp_path):
    stage_1 = tmp_path / "vae.yaml"
    stage_1.write_text(yaml.safe_dump(TINY_STAGE_1))
    return [
        "task=text2img",
        "dataset=digits",
        f"output_dir={tmp_path / 'model'}",
        f"model.vae={tmp_path / 'model' / 'vae'}",
        f"model.vae_config={stage_1}",
        "model.text_encoder=null",  # trained jointly with the UNet
        "model.text_encoder_config=null",
        "max_train_steps=4",
        "train_batch_size=16",
        "use_ema=true",
        "validation_steps=2",
        "num_validation_images=4",
        "model.max_prompt_length=16",
        "model.text_hidden_size=16",
        "model.text_num_layers=1",
        "model.text_num_heads=2",
        "model.text_intermediate_size=32",
        "model.block_out_channels=[8, 16]",
        "model.attention_head_dim=4",
        "model.norm_num_groups=4",
        "model.validation_prompts=[a bold five, the digit 1]",
        "model.validation_num_inference_steps=2",
    ]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny two-stage run, shared by the tests below; the fake token is in the environment throughout."""
    tmp_path = tmp_path_factory.mktemp("text2img")
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    config = load_config(None, tiny_text2img_overrides(tmp_path))
    assert TextToImageTask.stages(config.model) == [
        Stage("vae", str(tmp_path / "vae.yaml"), str(tmp_path / "model" / "vae"))
    ]
    output_dir = train(config)
    yield output_dir
    monkeypatch.undo()


def test_both_stages_train_into_a_folder_that_loads_and_generates(trained):
    assert (trained / "vae" / "config.json").is_file()  # stage 1 ran first, into model.vae
    assert all(
        stage.trained for stage in TextToImageTask.stages(load_config(trained / "training_config.yaml").model)
    )
    pipe = LatentTextToImagePipeline.from_pretrained(trained)
    # the VAE inside the pipeline is stage 1's, scaling factor included
    stage_1 = json.loads((trained / "vae" / "config.json").read_text())
    assert pipe.vae.config.scaling_factor == pytest.approx(stage_1["scaling_factor"])
    assert pipe.tokenizer.model_max_length == 16
    images = pipe(
        ["a thin seven", "a bold 2"],
        num_inference_steps=3,
        guidance_scale=2.0,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    ).images
    assert images.shape == (2, 8, 8, 1) and np.isfinite(images).all()
    assert (trained / "samples" / "step-000002.png").is_file()


def test_model_card_parses_and_carries_metadata(trained):
    card = ModelCard.load(trained / "README.md")
    assert card.data.library_name == "diffusers"
    assert card.data.pipeline_tag == "text-to-image"
    assert "latentzoo" in card.data.tags and "text-to-image" in card.data.tags
    assert card.data.license == "apache-2.0"
    # a cross-attention model loads with diffusers alone (StableDiffusionPipeline)
    assert 'DiffusionPipeline.from_pretrained("' in card.text and "from latentzoo" not in card.text
    assert "max_train_steps: 4" in card.text  # the training configuration is in the card


def test_generate_command_writes_a_grid(trained, tmp_path):
    out = tmp_path / "grid.png"
    main(
        [
            "generate",
            str(trained),
            "a bold three",
            "-n",
            "4",
            "-o",
            str(out),
            "--steps",
            "2",
            "--sampler",
            "euler",
        ]
    )
    grid = Image.open(out)
    assert grid.size == (4 * 8, 8)


def test_push_uploads_folder_with_card_and_never_leaks_the_token(trained, monkeypatch, capsys, caplog):
    calls = {}

    class FakeApi:
        def create_repo(self, repo_id, private=None, exist_ok=False):
            calls["create"] = repo_id
            return f"https://huggingface.co/{repo_id}"

        def create_commit(self, repo_id, operations, commit_message, revision=None, create_pr=None):
            calls["upload"] = {op.path_in_repo: op.path_or_fileobj for op in operations}
            return SimpleNamespace(commit_url=f"https://huggingface.co/{repo_id}/commit/1", pr_url=None)

    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    monkeypatch.setattr("huggingface_hub.HfApi", FakeApi)
    main(["push", str(trained), "someone/tiny-text2img"])
    assert calls["create"] == "someone/tiny-text2img"
    uploaded = calls["upload"]
    assert "model_index.json" in uploaded and "vae/diffusion_pytorch_model.safetensors" in uploaded
    assert not any(name.startswith(("checkpoints/", "stages/", "logs/", "samples/")) for name in uploaded)
    assert not any(
        name.startswith("vae/") and not name.endswith((".json", ".safetensors")) for name in uploaded
    )
    assert "vae/train_state.json" not in uploaded and "train_state.json" not in uploaded
    card = uploaded["README.md"].decode()  # rendered for the repository, from memory
    assert card.count("someone/tiny-text2img") >= 1

    captured = capsys.readouterr()
    assert FAKE_TOKEN not in captured.out + captured.err + caplog.text
    for path in trained.rglob("*"):
        if path.is_file():
            assert FAKE_TOKEN.encode() not in path.read_bytes(), path


def test_quickstart_trains_every_stage_inside_its_output_dir(tmp_path, monkeypatch):
    seen = {}

    class Stop(Exception):
        pass

    def fake_train(config):
        seen["config"] = config
        raise Stop

    monkeypatch.setattr("latentzoo.training.trainer.train", fake_train)
    with pytest.raises(Stop):
        main(["quickstart", "--output-dir", str(tmp_path / "run"), "train_batch_size=8"])
    config = seen["config"]
    assert config.output_dir == str(tmp_path / "run") and config.train_batch_size == 8
    # The default recipe: VAE and contrastive text-encoder stages, both re-rooted under --output-dir.
    assert config.model.vae == str(tmp_path / "run" / "vae")
    assert config.model.text_encoder == str(tmp_path / "run" / "stages" / "text_encoder")
    assert config.model.text_encoder_config == "clip_text-mnist" and config.model.vae_config


def test_evaluate_passes_the_protocol_options_and_writes_metrics(trained, monkeypatch):
    seen = {}

    def fake_evaluate(pipeline, **kwargs):
        seen.update(kwargs, scheduler=type(pipeline.scheduler).__name__)
        return {"metrics": {"prompt accuracy": 0.5}, "protocol": "fake"}

    monkeypatch.setattr("latentzoo.evaluation.protocol.evaluate_text_to_image", fake_evaluate)
    main(["evaluate", str(trained), "--per-digit", "3", "--held-out-per-digit", "0", "--sampler", "ddpm"])
    assert seen["per_digit"] == 3 and seen["held_out_per_digit"] == 0
    # Steps and guidance not given: None, the protocol samples with the pipeline's saved defaults.
    assert seen["num_inference_steps"] is None and seen["guidance_scale"] is None
    assert seen["scheduler"] == "DDPMScheduler"
    assert json.loads((trained / "metrics.json").read_text())["metrics"] == {"prompt accuracy": 0.5}
    assert "| prompt accuracy | 0.500 |" in (trained / "README.md").read_text()  # the card shows the metrics


def test_push_refuses_a_folder_without_a_model(tmp_path):
    with pytest.raises(SystemExit, match="no saved pipeline"):
        main(["push", str(tmp_path), "someone/x"])


def test_text2img_task_without_a_vae_says_how_to_get_one(tmp_path):
    config = load_config(
        None,
        ["task=text2img", "dataset=digits", f"model.vae={tmp_path / 'missing'}", "model.vae_config=null"],
    )
    with pytest.raises(ValueError, match=r"(?s)model\.vae.*holds no AutoencoderKL.*latentzoo train"):
        TextToImageTask(config.model, __import__("latentzoo.data", fromlist=["x"]).load_dataset("digits"))
