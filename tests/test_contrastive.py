"""The CLIP-style contrastive stage (task clip_text): its loss, a tiny run that learns, and its folder as the text
encoder of text2img, trained first through `prerequisites`; any pretrained CLIP text encoder folder drops in too."""

import math

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import CLIPConfig, CLIPModel, CLIPTextModel, CLIPTokenizer

from latentzoo.data import load_clip_tokenizer, load_dataset
from latentzoo.data.captions import mnist_label_words
from latentzoo.pipelines import LatentTextToImagePipeline
from latentzoo.training import Trainer, load_config, train
from latentzoo.training.tasks import Stage
from latentzoo.training.tasks.contrastive import ContrastiveTextTask, caption_targets, contrastive_loss
from latentzoo.training.tasks.text_to_image import TextToImageTask

TINY_CLIP = {
    "task": "clip_text",
    "dataset": "digits",
    "train_batch_size": 64,
    "learning_rate": 3.0e-3,
    "lr_warmup_steps": 10,
    "report_to": "none",
    "model": {
        "max_prompt_length": 16,
        "text_hidden_size": 32,
        "text_num_layers": 2,
        "text_num_heads": 2,
        "text_intermediate_size": 64,
        "image_block_out_channels": [16, 32],
        "image_norm_num_groups": 4,
        "projection_dim": 32,
        "validation_pairs": 64,
    },
}

TINY_VAE = {
    "task": "autoencoder_kl",
    "dataset": "digits",
    "max_train_steps": 3,
    "train_batch_size": 32,
    "report_to": "none",
    "model": {"block_out_channels": [4, 8], "norm_num_groups": 4, "scaling_samples": 64},
}


def tiny_text2img_overrides(tmp_path, *extra):
    vae_config = tmp_path / "vae.yaml"
    vae_config.write_text(yaml.safe_dump(TINY_VAE))
    return [
        "task=text2img",
        "dataset=digits",
        f"output_dir={tmp_path / 'model'}",
        f"model.vae={tmp_path / 'vae'}",
        f"model.vae_config={vae_config}",
        "model.text_encoder=null",  # trained jointly, unless `extra` names one
        "model.text_encoder_config=null",
        "max_train_steps=2",
        "train_batch_size=16",
        "report_to=none",
        "num_validation_images=2",
        "model.block_out_channels=[8, 16]",
        "model.attention_head_dim=4",
        "model.norm_num_groups=4",
        "model.validation_prompts=[a bold five, the digit 1]",
        "model.validation_num_inference_steps=2",
        *extra,
    ]


def test_info_nce_is_symmetric_and_log_batch_for_identical_embeddings():
    generator = torch.Generator().manual_seed(0)
    images = torch.nn.functional.normalize(torch.randn(6, 8, generator=generator), dim=-1)
    texts = torch.nn.functional.normalize(torch.randn(6, 8, generator=generator), dim=-1)
    targets = caption_targets(["a", "b", "a", "c", "d", "b"])
    for target in (None, targets):
        assert contrastive_loss(images, texts, 10.0, target) == pytest.approx(
            contrastive_loss(texts, images, 10.0, target).item()
        )
        same = images[:1].expand(6, -1)
        assert contrastive_loss(same, same, 10.0, target) == pytest.approx(math.log(6))
    # Distinct captions: caption-equality targets are CLIP's one-hot targets.
    distinct = caption_targets(list("abcdef"))
    assert torch.equal(distinct, torch.eye(6))
    assert contrastive_loss(images, texts, 10.0, distinct) == pytest.approx(
        contrastive_loss(images, texts, 10.0).item()
    )
    # Repeated captions share the target mass; the matrix is symmetric and row-stochastic.
    assert torch.allclose(targets, targets.T) and torch.allclose(targets.sum(1), torch.ones(6))
    assert targets[0, 2] == 0.5 and targets[0, 1] == 0


def test_config_errors_name_the_key():
    with pytest.raises(ValueError, match="model.text_encoder_config.*needs `model.text_encoder`"):
        load_config(
            None, ["task=text2img", "model.text_encoder=null", "model.text_encoder_config=clip_text-mnist"]
        )
    with pytest.raises(ValueError, match="model.max_logit_scale"):
        load_config(None, ["task=clip_text", "model.max_logit_scale=5"])


@pytest.fixture(scope="module")
def trained_clip(tmp_path_factory):
    """A tiny contrastive run on `digits` (captions name the digit only), shared by the tests below."""
    tmp_path = tmp_path_factory.mktemp("clip_text")
    config = load_config(
        None, {**TINY_CLIP, "output_dir": str(tmp_path / "text_encoder"), "max_train_steps": 80}
    )
    trainer = Trainer(config)
    trainer.train()
    return trainer


def test_contrastive_loss_falls(trained_clip):
    config = trained_clip.config
    dataset = load_dataset("digits", split="validation")
    batch = [dataset[i] for i in range(64)]
    pixel_values = torch.stack([item["pixel_values"] for item in batch])
    texts = [item["text"] for item in batch]
    torch.manual_seed(
        config.seed
    )  # the Trainer seeds the same way before building the task: its initial weights
    initial = ContrastiveTextTask(config.model, dataset)
    trained = trained_clip.task
    with torch.no_grad():
        before = initial.loss(initial.dual_encoder.eval(), pixel_values, texts)
        after = trained.loss(trained.dual_encoder.eval(), pixel_values, texts)
    assert after < 0.8 * before, (before, after)


def test_matched_pairs_score_higher_than_mismatched_ones(trained_clip):
    task = trained_clip.task
    dataset = load_dataset("digits", split="validation")  # held out
    pixel_values, labels = dataset.pixel_values, dataset.class_labels
    # One class-name caption per image: similarity (N texts, N images), matched when the digits agree.
    texts = [f"handwritten number {word}" for word in mnist_label_words]
    similarity = task.similarity(
        task.dual_encoder.eval(), pixel_values, [texts[int(label)] for label in labels]
    )
    matched = labels[:, None] == labels[None, :]
    assert similarity[matched].mean() > similarity[~matched].mean() + 0.1
    # and a caption's nearest image is mostly of its digit (chance: 10%)
    assert matched[torch.arange(len(labels)), similarity.argmax(dim=1)].float().mean() > 0.5
    metrics = task.validation_metrics(task.make_pipeline(trained_clip._unwrapped_modules()), None)
    assert metrics["retrieval/matched_minus_mismatched_similarity"] > 0


def test_saved_folder_is_a_text_encoder_with_its_tokenizer(trained_clip):
    folder = trained_clip.output_dir
    text_encoder = CLIPTextModel.from_pretrained(folder).eval()
    tokenizer = CLIPTokenizer.from_pretrained(folder)
    assert tokenizer.model_max_length == 16
    input_ids = tokenizer(["the digit 7"], return_tensors="pt").input_ids
    assert (
        input_ids.tolist() == load_clip_tokenizer(16)(["the digit 7"], return_tensors="pt").input_ids.tolist()
    )
    in_memory = trained_clip.task.dual_encoder.text_encoder.eval()
    with torch.no_grad():
        assert torch.allclose(
            text_encoder(input_ids).last_hidden_state, in_memory(input_ids).last_hidden_state
        )
    assert (folder / "samples").is_dir() and (folder / "README.md").is_file()


def test_text2img_trains_the_contrastive_stage_first_and_starts_from_it(tmp_path):
    clip_config = tmp_path / "clip.yaml"
    clip_config.write_text(yaml.safe_dump({**TINY_CLIP, "max_train_steps": 3}))
    config = load_config(
        None,
        tiny_text2img_overrides(
            tmp_path,
            f"model.text_encoder={tmp_path / 'text_encoder'}",
            f"model.text_encoder_config={clip_config}",
            "model.train_text_encoder=false",  # frozen: the pipeline must hold the stage's exact weights
        ),
    )
    stages = TextToImageTask.stages(config.model)
    assert stages == [
        Stage("vae", str(tmp_path / "vae.yaml"), str(tmp_path / "vae")),
        Stage("text_encoder", str(clip_config), str(tmp_path / "text_encoder")),
    ]
    assert not any(stage.trained for stage in stages)
    output_dir = train(config)
    assert all(stage.trained for stage in stages)
    pipe = LatentTextToImagePipeline.from_pretrained(output_dir)
    stage = load_file(tmp_path / "text_encoder" / "model.safetensors")
    for name, tensor in pipe.text_encoder.state_dict().items():
        assert torch.equal(tensor, stage[name]), name
    assert pipe.tokenizer.model_max_length == 16 and pipe.unet.config.cross_attention_dim == 32
    card = (output_dir / "README.md").read_text()
    assert f"contrastive stage `{clip_config}`" in card and "frozen" in card
    images = pipe(["the digit 7"], num_inference_steps=2, generator=torch.Generator().manual_seed(0)).images
    assert len(images) == 1


def test_a_pretrained_clip_folder_drops_in_as_the_text_encoder(tmp_path):
    """The layout of a Hub CLIP (e.g. openai/clip-vit-base-patch32: a full CLIPModel with its tokenizer) loads as
    `model.text_encoder` with no code change; its sizes, not the config's text_* keys, decide the UNet's."""
    torch.manual_seed(0)
    clip = CLIPModel(
        CLIPConfig(
            text_config={
                "hidden_size": 24,
                "num_hidden_layers": 1,
                "num_attention_heads": 2,
                "intermediate_size": 48,
                "max_position_embeddings": 20,
            },
            vision_config={
                "hidden_size": 16,
                "num_hidden_layers": 1,
                "num_attention_heads": 2,
                "intermediate_size": 32,
                "image_size": 8,
                "patch_size": 4,
            },
            projection_dim=8,
        )
    )
    folder = tmp_path / "pretrained-clip"
    clip.save_pretrained(folder)
    load_clip_tokenizer(20).save_pretrained(folder)
    config = load_config(
        None,
        tiny_text2img_overrides(tmp_path, f"model.text_encoder={folder}", "model.train_text_encoder=false"),
    )
    assert TextToImageTask.stages(config.model) == [
        Stage("vae", str(tmp_path / "vae.yaml"), str(tmp_path / "vae"))
    ]
    pipe = LatentTextToImagePipeline.from_pretrained(train(config))
    assert pipe.unet.config.cross_attention_dim == 24 and pipe.tokenizer.model_max_length == 20
    # CLIP's own text weights, not a fresh model of the same shape
    text_weights = clip.text_model.state_dict()
    for name, tensor in pipe.text_encoder.state_dict().items():
        assert torch.equal(tensor, text_weights[name]), name
