"""A user's own image folder, end to end: data settings flow to every stage, each family trains on the folder,
the saved files name the dataset (never the local path), and step-bounded runs give the same weights on a
busy machine as on an idle one."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import yaml
from huggingface_hub import ModelCard
from PIL import Image
from safetensors.torch import load_file

from latentzoo.pipelines.loading import load_pipeline
from latentzoo.training import load_config, train
from latentzoo.training.config import stage_configs

CAPTIONS = [
    "a red disc on white",
    "a blue square on white",
    "a green bar on white",
    "a red square on white",
    "a blue disc on white",
    "a green disc on white",
    "a red bar on white",
    "a blue bar on white",
]


def write_folder(root, size=16, labelled=False, captions=True, count=8):
    """`count` RGB images of `size` px (flat colour blocks on white); captions in metadata.jsonl, or one
    sub-folder per class when `labelled`."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    lines = []
    for i in range(count):
        array = np.full((size, size, 3), 255, np.uint8)
        x, y = rng.integers(0, size // 2, 2)
        array[y : y + size // 2, x : x + size // 2] = [(220, 30, 30), (30, 30, 220), (30, 200, 30)][i % 3]
        folder = root / ("warm" if i % 2 else "cold") if labelled else root
        folder.mkdir(exist_ok=True)
        Image.fromarray(array).save(folder / f"{i:03d}.png")
        lines.append(json.dumps({"file_name": f"{i:03d}.png", "text": CAPTIONS[i % len(CAPTIONS)]}))
    if captions and not labelled:
        (root / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return root


TINY_VAE = {
    "task": "autoencoder_kl",
    "dataset": "mnist",  # a stage preset's own dataset: the run's data settings replace it
    "output_dir": "unused",
    "max_train_steps": 2,
    "train_batch_size": 4,
    "report_to": "none",
    "model": {"block_out_channels": [4, 8], "norm_num_groups": 4, "scaling_samples": 8},
}
TINY_CLIP = {
    "task": "clip_text",
    "dataset": "mnist",
    "output_dir": "unused",
    "max_train_steps": 2,
    "train_batch_size": 4,
    "report_to": "none",
    "model": {
        "max_prompt_length": 16,
        "text_hidden_size": 16,
        "text_num_layers": 1,
        "text_num_heads": 2,
        "text_intermediate_size": 32,
        "image_block_out_channels": [8, 8],
        "image_norm_num_groups": 4,
        "projection_dim": 8,
        "validation_pairs": 4,
    },
}


def text2img_overrides(tmp_path, folder):
    (tmp_path / "vae.yaml").write_text(yaml.safe_dump(TINY_VAE))
    (tmp_path / "clip.yaml").write_text(yaml.safe_dump(TINY_CLIP))
    run = tmp_path / "run"
    return [
        "task=text2img",
        f"dataset=imagefolder:{folder}",
        "resolution=16",
        f"output_dir={run}",
        "max_train_steps=2",
        "train_batch_size=4",
        "report_to=none",
        "num_validation_images=2",
        f"model.vae={run / 'vae'}",
        f"model.vae_config={tmp_path / 'vae.yaml'}",
        f"model.text_encoder={run / 'stages' / 'text_encoder'}",
        f"model.text_encoder_config={tmp_path / 'clip.yaml'}",
        "model.max_prompt_length=16",
        "model.block_out_channels=[8, 16]",
        "model.attention_head_dim=4",
        "model.norm_num_groups=4",
        "model.validation_num_inference_steps=2",
    ]


def test_data_settings_and_stage_overrides_reach_every_stage():
    config = load_config(
        "text2img-mnist",
        [
            "dataset=shapes",
            "resolution=16",
            "seed=3",
            "stages.vae.max_train_steps=50",
            "stages.text_encoder.learning_rate=3e-4",
            "stages.vae.model.kl_weight=1e-5",
        ],
    )
    stages = {stage.name: stage_config for stage, stage_config in stage_configs(config)}
    assert list(stages) == ["vae", "text_encoder"]
    for stage_config in stages.values():
        assert (stage_config.dataset, stage_config.resolution, stage_config.seed) == ("shapes", 16, 3)
    assert stages["vae"].max_train_steps == 50 and stages["vae"].model.kl_weight == 1e-5
    assert stages["text_encoder"].learning_rate == 3e-4
    assert (
        stages["text_encoder"].max_train_steps == load_config("clip_text-mnist").max_train_steps
    )  # untouched


def test_stage_overrides_are_checked_before_training():
    with pytest.raises(ValueError, match=r"unknown stage.*\['vea'\].*\['vae', 'text_encoder'\]"):
        load_config("text2img-mnist", ["stages.vea.max_train_steps=50"])
    with pytest.raises(ValueError, match=r"Stage 'vae'.*max_trian_steps"):
        load_config("text2img-mnist", ["stages.vae.max_trian_steps=50"])
    with pytest.raises(ValueError, match=r"Stage 'vae'.*learning_rate.*positive"):
        load_config("text2img-mnist", ["stages.vae.learning_rate=-1"])
    with pytest.raises(ValueError, match=r"builds on no stages"):
        load_config("ddpm-mnist", ["stages.vae.max_train_steps=50"])


def test_text2img_trains_every_stage_on_a_tiny_folder(tmp_path):
    folder = write_folder(tmp_path / "my-pictures")
    output_dir = train(load_config(None, text2img_overrides(tmp_path, folder)))
    for path in (output_dir / "vae", output_dir / "stages" / "text_encoder", output_dir):
        saved = yaml.safe_load((path / "training_config.yaml").read_text())
        assert saved["dataset"] == "imagefolder:my-pictures", path
        assert saved["resolution"] == 16
        assert str(folder) not in (path / "training_config.yaml").read_text()  # the data's name, not its path
    state = json.loads((output_dir / "train_state.json").read_text())
    assert state["dataset"]["image_size"] == 16 and state["dataset"]["channels"] == 3

    pipe = load_pipeline(output_dir)
    images = pipe(
        CAPTIONS, num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np"
    ).images
    assert images.shape == (8, 16, 16, 3) and np.isfinite(images).all()
    # The validation prompts came from the folder's captions, not the mnist defaults.
    assert set(
        yaml.safe_load((output_dir / "training_config.yaml").read_text())["model"]["validation_prompts"]
    ) <= set(CAPTIONS)
    card = (output_dir / "README.md").read_text()
    assert "mnist" not in card.lower() and "digit" not in card.lower()
    assert str(folder) not in card and "imagefolder:my-pictures" in card
    assert "16x16 RGB" in card
    assert ModelCard.load(output_dir / "README.md").data.pipeline_tag == "text-to-image"

    # The same folders, now asked to serve a run on other data: refused before any training, naming the stage.
    other = load_config(None, [*text2img_overrides(tmp_path, folder), "dataset=digits"])
    with pytest.raises(
        ValueError,
        match=r"Stage vae: .* trained with dataset 'imagefolder:my-pictures' \(this run: 'digits'\)",
    ):
        train(other)


def test_text2img_resolution_must_fit_the_vae_and_unet(tmp_path):
    folder = write_folder(tmp_path / "pics", size=12)
    # 10 px: the tiny VAE (2 blocks) halves it once, the UNet (2 levels) once more: 10 is no multiple of 4.
    config = load_config(None, [*text2img_overrides(tmp_path, folder), "resolution=10"])
    with pytest.raises(ValueError, match=r"`resolution` must be a multiple of 4"):
        train(config)


def folder_run(task, folder, tmp_path, *model):
    """Overrides of a 2-step run of `task` on `folder` at 8 px into tmp_path/run."""
    return [
        f"task={task}",
        f"dataset=imagefolder:{folder}",
        "resolution=8",
        f"output_dir={tmp_path / 'run'}",
        "max_train_steps=2",
        "train_batch_size=4",
        "report_to=none",
        "num_validation_images=2",
        *model,
    ]


@pytest.mark.parametrize("task", ["ddpm", "gan"])
def test_a_labelled_folder_trains_class_conditional_models(tmp_path, task):
    folder = write_folder(tmp_path / "labelled", labelled=True, count=12)
    model = (
        ["model.block_out_channels=[8, 16]", "model.attention_levels=[]", "model.norm_num_groups=4"]
        if task == "ddpm"
        else [
            "model.latent_dim=8",
            "model.generator_channels=[16, 8]",
            "model.discriminator_channels=[8, 16]",
        ]
    )
    config = load_config(None, folder_run(task, folder, tmp_path, "model.class_conditional=true", *model))
    pipe = load_pipeline(train(config))
    images = pipe(class_labels=[0, 1], generator=torch.Generator().manual_seed(0), output_type="np").images
    assert images.shape == (2, 8, 8, 3) and np.isfinite(images).all()
    info = json.loads((tmp_path / "run" / "train_state.json").read_text())["dataset"]
    assert info["num_classes"] == 2 and info["class_names"] == ["cold", "warm"]


@pytest.mark.parametrize("task", ["vae", "autoencoder"])
def test_an_unlabelled_grayscale_folder_trains_the_autoencoders(tmp_path, task):
    folder = write_folder(tmp_path / "gray", captions=False)
    for path in folder.glob("*.png"):
        Image.open(path).convert("L").save(path)
    config = load_config(
        None, folder_run(task, folder, tmp_path, "model.latent_dim=2", "model.block_out_channels=[4, 8]")
    )
    pipe = load_pipeline(train(config))
    images = pipe(batch_size=2, generator=torch.Generator().manual_seed(0), output_type="np").images
    assert images.shape == (2, 8, 8, 1) and np.isfinite(images).all()
    card = (tmp_path / "run" / "README.md").read_text()
    assert "8x8 grayscale" in card and "mnist" not in card.lower()


def test_an_unlabelled_folder_asked_for_classes_fails_before_training(tmp_path):
    folder = write_folder(tmp_path / "plain", captions=False)
    config = load_config(
        None,
        [
            "task=ddpm",
            f"dataset=imagefolder:{folder}",
            f"output_dir={tmp_path / 'run'}",
            "report_to=none",
            "model.class_conditional=true",
            "model.block_out_channels=[8, 16]",
            "model.attention_levels=[]",
            "model.norm_num_groups=4",
        ],
    )
    with pytest.raises(ValueError, match=r"class labels.*sub-folder per class.*class_conditional=false"):
        train(config)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_captionless_folder_fails_before_any_stage_trains_naming_its_metadata(tmp_path):
    folder = write_folder(tmp_path / "pics", captions=False)
    (folder / "metadata.jsonl").write_text(
        "".join(json.dumps({"file_name": f"{i:03d}.png", "style": "flat"}) + "\n" for i in range(8))
    )
    config = load_config(None, text2img_overrides(tmp_path, folder))
    with pytest.raises(
        ValueError,
        match=r"(?s)The clip_text task of stage text_encoder .* needs captions, but imagefolder:pics has none\. "
        r".*pics/metadata\.jsonl has the columns \['file_name', 'style'\].*caption_column=NAME",
    ):
        train(config)
    assert not (tmp_path / "run").exists()  # not even the VAE stage trained

    # Without the contrastive stage the text2img task itself says the same, before its VAE stage trains.
    config = load_config(
        None,
        [*text2img_overrides(tmp_path, folder), "model.text_encoder=null", "model.text_encoder_config=null"],
    )
    with pytest.raises(ValueError, match=r"The text2img task needs captions.*caption_column=NAME"):
        train(config)
    assert not (tmp_path / "run").exists()


RUN = textwrap.dedent(
    """
    import sys
    from latentzoo.training import load_config, train
    train(load_config(None, sys.argv[1:]))
    """
)


def test_same_seed_gives_identical_weights_on_a_busy_machine(tmp_path):
    """A step-bounded run with the same seed, alone and while another process keeps the CPU busy. The speed settings
    are given: `auto` may choose differently on a busy machine (its choice is recorded to be given again)."""
    common = [
        "mixed_precision=no",
        "attention=sdpa",
        "task=autoencoder_kl",
        "dataset=digits",
        "max_train_steps=30",
        "train_batch_size=16",
        "report_to=none",
        "model.block_out_channels=[4, 8]",
        "model.norm_num_groups=4",
        "model.scaling_samples=64",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    subprocess.run(
        [sys.executable, "-c", RUN, *common, f"output_dir={tmp_path / 'idle'}"], check=True, env=env
    )
    burner = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import torch\ntorch.set_num_threads(1)\nwhile True: torch.randn(512, 512) @ torch.randn(512, 512)",
        ]
    )
    try:
        subprocess.run(
            [sys.executable, "-c", RUN, *common, f"output_dir={tmp_path / 'busy'}"], check=True, env=env
        )
    finally:
        burner.kill()
        burner.wait()
    idle = load_file(tmp_path / "idle" / "diffusion_pytorch_model.safetensors")
    busy = load_file(tmp_path / "busy" / "diffusion_pytorch_model.safetensors")
    assert idle.keys() == busy.keys()
    for name in idle:
        assert torch.equal(idle[name], busy[name]), name


def test_a_stage_cannot_change_mixed_precision_within_one_launch():
    with pytest.raises(ValueError, match=r"stages.vae.mixed_precision.*Accelerate fixes mixed precision"):
        load_config("text2img-mnist", ["stages.vae.mixed_precision=bf16"])


def test_text2img_latents_follow_random_flips():
    from diffusers import AutoencoderKL

    from latentzoo.data import load_dataset
    from latentzoo.training.tasks.text_to_image import LatentDataset

    torch.manual_seed(0)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(4, 8),
        norm_num_groups=4,
        latent_channels=2,
    ).eval()
    dataset = load_dataset("shapes", size=16, random_flip=True)
    latents = LatentDataset(dataset, vae)
    flipped = [i for i in range(16) if dataset.is_flipped(i)]
    assert 0 < len(flipped) < 16
    for index in (flipped[0], next(i for i in range(16) if i not in flipped)):
        item = latents[index]
        with torch.no_grad():
            expected = vae.encode(item["pixel_values"][None]).latent_dist.mean[0]  # the image the item shows
        torch.testing.assert_close(item["latent_mean"], expected, rtol=1e-4, atol=1e-5)
