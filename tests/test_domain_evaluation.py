"""The domain encoder (a feature space trained offline for any dataset), `evaluate_pipeline` for every model family,
and `latentzoo evaluate` on any dataset with one-line errors."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from diffusers import (
    AutoencoderKL,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    UNet2DConditionModel,
    UNet2DModel,
)
from PIL import Image
from transformers import CLIPTextConfig, CLIPTextModel

from latentzoo.data import load_clip_tokenizer, load_dataset
from latentzoo.data.datasets import ImageDataset
from latentzoo.evaluation import domain
from latentzoo.evaluation.domain import DomainEncoder, dataset_fingerprint, load_domain_encoder
from latentzoo.evaluation.generic import evaluate_pipeline, match_images, prompt_alignment
from latentzoo.evaluation.metrics import frechet_distance
from latentzoo.models import Autoencoder, Generator, MixtureDensityNetwork, VariationalAutoencoder
from latentzoo.pipelines import (
    AutoencoderPipeline,
    GANPipeline,
    LatentTextToImagePipeline,
    PixelDiffusionPipeline,
)
from latentzoo.training import load_config
from latentzoo.training.cli import main
from latentzoo.training.config import config_to_dict

# A tiny encoder: 150 steps of 64 take about a second on 2 CPU cores.
TINY_ENCODER = dict(block_out_channels=(8, 16), norm_num_groups=4, embed_dim=16, text_hidden_size=16)
TINY_RECIPE = dict(num_steps=150, batch_size=64, **TINY_ENCODER, text_intermediate_size=32)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread; on a shared CPU, two threads wait on each other (20x slower here)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """Every test caches encoders (and the judge) under its own tmp_path, never in the user's cache."""
    monkeypatch.setenv("LATENTZOO_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def shapes():
    return load_dataset("shapes", "train", size=64), load_dataset("shapes", "validation", size=64)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "train"), load_dataset("digits", "validation")


@pytest.fixture(scope="module")
def shapes_encoder(shapes, tmp_path_factory):
    return load_domain_encoder(*shapes, cache_dir=tmp_path_factory.mktemp("domain"), **TINY_RECIPE)


@pytest.fixture(scope="module")
def digits_encoder(digits, tmp_path_factory):
    return load_domain_encoder(*digits, cache_dir=tmp_path_factory.mktemp("domain"), **TINY_RECIPE)


# ---------------------------------------------------------------------------------------------- domain encoder
def test_domain_encoder_is_cached_by_dataset_fingerprint_and_loaded_without_retraining(
    digits, shapes, cache, monkeypatch
):
    recipe = {**TINY_RECIPE, "num_steps": 20}
    encoder = load_domain_encoder(*digits, **recipe)
    folder = cache / "domain-v1" / encoder.fingerprint
    assert (folder / "diffusion_pytorch_model.safetensors").is_file()
    saved = json.loads((folder / "domain_metrics.json").read_text())
    # digits has captions and labels: a text tower and a classifier head, scored on the validation split.
    assert saved["objectives"] == ["clip", "classifier"] and saved["num_steps"] == 20
    assert saved["validation_examples"] == len(digits[1])
    assert {"text_to_image_top1", "image_to_text_top1", "classifier_accuracy"} <= set(saved)

    def no_training(*args, **kwargs):
        raise AssertionError("the cached encoder should have been loaded")

    monkeypatch.setattr(domain, "train_domain_encoder", no_training)
    again = load_domain_encoder(*digits, **recipe)
    assert again.fingerprint == encoder.fingerprint and again.metrics == saved
    images = digits[1].pixel_values[:8]
    assert torch.equal(again.image_features(images), encoder.image_features(images))
    assert torch.equal(again.predict(images), encoder.predict(images))

    # Another dataset, other load options, other pixels or another recipe: another entry.
    fingerprints = {
        dataset_fingerprint(digits[0], recipe=recipe),
        dataset_fingerprint(shapes[0], recipe=recipe),
        dataset_fingerprint(load_dataset("shapes", "train", size=64, seed=1), recipe=recipe),
        dataset_fingerprint(digits[0], {"image_size": 8}, recipe=recipe),
        dataset_fingerprint(digits[0], recipe={**recipe, "num_steps": 21}),
    }
    assert len(fingerprints) == 5
    assert dataset_fingerprint(digits[0], recipe=recipe) == dataset_fingerprint(
        load_dataset("digits", "train"), recipe=recipe
    )
    assert encoder.fingerprint.startswith("digits-")


def test_shapes_encoder_learns_retrieval_above_chance_and_reloads_from_safetensors(shapes_encoder, tmp_path):
    metrics = shapes_encoder.metrics
    assert metrics["objectives"] == ["clip"] and not shapes_encoder.has_classifier
    assert metrics["text_to_image_top1"] > 3 * metrics["retrieval_chance"]
    shapes_encoder.save_pretrained(tmp_path / "encoder")
    loaded = DomainEncoder.from_pretrained(tmp_path / "encoder")
    texts = ["a small red circle", "a large blue square above a small green triangle"]
    torch.testing.assert_close(loaded.text_embeds(texts), shapes_encoder.text_embeds(texts))


def test_clip_score_of_real_images_with_their_own_captions_beats_mismatched_captions(shapes, shapes_encoder):
    validation = shapes[1]
    images = validation.pixel_values
    texts = [validation[i]["text"] for i in range(len(validation))]
    own = prompt_alignment(shapes_encoder, images, texts)
    mismatched = prompt_alignment(shapes_encoder, images, texts[1:] + texts[:1])
    assert own.mean() > mismatched.mean() + 0.2
    assert (own > mismatched).float().mean() > 0.8


def test_without_captions_or_labels_the_encoder_trains_simclr_on_augmented_views(shapes):
    unlabelled = ImageDataset(shapes[0].pixel_values, name="pixels-only")
    held_out = ImageDataset(shapes[1].pixel_values, name="pixels-only", split="validation")
    encoder, metrics = domain.train_domain_encoder(
        unlabelled, held_out, num_steps=150, batch_size=64, **{**TINY_ENCODER, "text_hidden_size": None}
    )
    assert metrics["objectives"] == ["simclr"] and not encoder.has_text and not encoder.has_classifier
    assert metrics["view_retrieval_top1"] > 5 * metrics["view_retrieval_chance"]


def test_real_vs_real_floor_is_below_the_fid_of_noise(digits, digits_encoder):
    train, validation = digits
    reference = digits_encoder.image_features(validation.pixel_values[:100])
    real = digits_encoder.image_features(train.pixel_values[:100])
    noise = torch.rand(100, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    floor = frechet_distance(real, reference)
    assert floor < 0.5 * frechet_distance(digits_encoder.image_features(noise), reference)


def test_match_images_converts_channels_and_size():
    rgb = torch.rand(2, 3, 16, 16) * 2 - 1
    gray = match_images(rgb, 1, 8)
    assert gray.shape == (2, 1, 8, 8) and gray.min() >= -1 and gray.max() <= 1
    assert match_images(gray, 3, 8).shape == (2, 3, 8, 8)
    assert match_images(rgb, 3, 16) is rgb


# -------------------------------------------------------------------------------------- evaluate_pipeline
# Tiny randomly initialised pipelines of every family, as in test_ddpm, test_gan, test_autoencoders and
# test_text_to_image_pipeline: 8x8 grayscale (digits) and 16x16 RGB (text-to-image).
def pixel_diffusion_pipeline(num_classes: int | None) -> PixelDiffusionPipeline:
    torch.manual_seed(0)
    unet = UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(8, 16),
        layers_per_block=1,
        attention_head_dim=4,
        norm_num_groups=4,
        num_class_embeds=None if num_classes is None else num_classes + 1,
    )
    pipeline = PixelDiffusionPipeline(unet=unet.eval(), scheduler=DDPMScheduler(num_train_timesteps=1000))
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def gan_pipeline(num_classes: int | None) -> GANPipeline:
    torch.manual_seed(0)
    generator = Generator(
        latent_dim=8, sample_size=8, block_out_channels=(16, 8), num_classes=num_classes, class_embed_dim=4
    )
    return GANPipeline(generator.eval())


def autoencoder_pipeline(model_class, prior=None) -> AutoencoderPipeline:
    torch.manual_seed(0)
    return AutoencoderPipeline(
        model_class(sample_size=8, latent_dim=4, block_out_channels=(8, 16)).eval(), prior
    )


def class_conditional_mdn_pipeline() -> AutoencoderPipeline:
    torch.manual_seed(0)
    prior = MixtureDensityNetwork(4, num_classes=10, hidden_dims=(8,)).eval()
    return autoencoder_pipeline(Autoencoder, prior)


def text_to_image_pipeline() -> LatentTextToImagePipeline:
    torch.manual_seed(0)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=4,
        latent_channels=4,
        sample_size=16,
    )
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=4,
        cross_attention_dim=16,
        attention_head_dim=2,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=49407,
        )
    )
    pipeline = LatentTextToImagePipeline(
        vae=vae.eval(),
        text_encoder=text_encoder.eval(),
        tokenizer=load_clip_tokenizer(),
        unet=unet.eval(),
        scheduler=DPMSolverMultistepScheduler(
            beta_schedule="squaredcos_cap_v2", algorithm_type="dpmsolver++"
        ),
    )
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


FAMILIES = {
    "text2img": (text_to_image_pipeline, "shapes", {"prompt alignment (samples with their prompts)"}),
    "ddpm": (lambda: pixel_diffusion_pipeline(None), "digits", set()),
    "ddpm-classes": (
        lambda: pixel_diffusion_pipeline(10),
        "digits",
        {"class accuracy (samples, requested class)"},
    ),
    "vae": (lambda: autoencoder_pipeline(VariationalAutoencoder), "digits", {"reconstruction PSNR"}),
    "mdn-prior": (
        class_conditional_mdn_pipeline,
        "digits",
        {"class accuracy (samples, requested class)", "reconstruction PSNR"},
    ),
    "gan": (lambda: gan_pipeline(None), "digits", set()),
    "gan-classes": (lambda: gan_pipeline(10), "digits", {"class accuracy (samples, requested class)"}),
}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_evaluate_pipeline_scores_every_family_with_the_floor_beside_fid(family, request):
    make, dataset, expected = FAMILIES[family]
    train, validation = request.getfixturevalue(dataset)
    encoder = request.getfixturevalue(f"{dataset}_encoder")
    pipeline = make()
    result = evaluate_pipeline(
        pipeline,
        train,
        validation,
        num_samples=10,
        num_inference_steps=2,
        batch_size=4,
        domain_encoder=encoder,
    )
    metrics = result["metrics"]
    names = list(metrics)
    assert names[0] == "domain-FID (10 samples)" and names[1] == "real-vs-real domain-FID (10 samples)"
    assert all(math.isfinite(value) for value in metrics.values()), metrics
    for name in expected:
        assert any(key.startswith(name) for key in names), (name, names)
    if "class accuracy (samples, requested class)" in expected:
        assert "class accuracy (real validation images)" in metrics
    if family == "text2img":
        assert {
            "prompt alignment (real validation images, own captions)",
            "prompt alignment (real validation images, mismatched captions)",
        } <= set(metrics)
        assert "resized to the dataset's (3, 32, 32)" in result["protocol"]  # 16x16 samples, 32x32 shapes
    assert result["images"].shape[0] == 10
    assert "10 samples" in result["protocol"] and "generator seeds 0..9" in result["protocol"]
    assert result["warnings"] and "estimation noise" in result["protocol"]  # 10 samples: FID is noise


def test_evaluate_pipeline_batching_changes_nothing(digits, digits_encoder):
    train, validation = digits
    runs = [
        evaluate_pipeline(
            pixel_diffusion_pipeline(10),
            train,
            validation,
            num_samples=6,
            num_inference_steps=2,
            batch_size=batch_size,
            domain_encoder=digits_encoder,
            seed=3,
        )
        for batch_size in (2, 6)
    ]
    torch.testing.assert_close(runs[0]["images"], runs[1]["images"], rtol=0, atol=1e-5)
    assert runs[0]["metrics"]["class accuracy (samples, requested class)"] == pytest.approx(
        runs[1]["metrics"]["class accuracy (samples, requested class)"]
    )


def test_sample_count_is_capped_at_the_validation_split_and_the_protocol_says_so(digits, digits_encoder):
    train, validation = digits
    result = evaluate_pipeline(
        gan_pipeline(None), train, validation, num_samples=10_000, domain_encoder=digits_encoder
    )
    n = len(validation)
    assert f"domain-FID ({n} samples)" in result["metrics"]
    assert f"10000 samples requested, capped at the {n} images of the validation split" in result["protocol"]
    assert not result["warnings"]

    # A folder of 8 images has 1 validation image: no FID at all, and the protocol says why.
    single = ImageDataset(validation.pixel_values[:1], name="imagefolder:eight", split="validation")
    result = evaluate_pipeline(
        gan_pipeline(None), train, single, num_samples=8, domain_encoder=digits_encoder
    )
    assert not any("FID" in name for name in result["metrics"])
    assert (
        "capped at the 1 image of the validation split" in result["protocol"]
        and "no domain-FID" in result["protocol"]
    )


def test_evaluate_pipeline_rejects_what_it_cannot_score(digits, digits_encoder):
    train, validation = digits
    with pytest.raises(TypeError, match="evaluate_pipeline knows"):
        evaluate_pipeline(object(), train, validation, domain_encoder=digits_encoder)
    with pytest.raises(ValueError, match="`num_samples` must be a positive int"):
        evaluate_pipeline(gan_pipeline(None), train, validation, num_samples=0)
    uncaptioned = ImageDataset(validation.pixel_values, name="pixels-only", split="validation")
    with pytest.raises(ValueError, match="needs prompts"):
        evaluate_pipeline(text_to_image_pipeline(), train, uncaptioned, domain_encoder=digits_encoder)


# ------------------------------------------------------------------------------------------------------ CLI
def write_image_folder(root: Path, count: int) -> Path:
    """`count` 8x8 grayscale images: a bright square at a random place on black."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        array = np.zeros((8, 8), np.uint8)
        x, y = rng.integers(0, 5, 2)
        array[y : y + 3, x : x + 3] = 255
        Image.fromarray(array).save(root / f"{i:03d}.png")
    return root


def saved_gan_run(model_dir: Path, dataset: str) -> Path:
    """A tiny GAN pipeline folder with the training_config.yaml a run on `dataset` writes."""
    gan_pipeline(None).save_pretrained(model_dir)
    overrides = ["task=gan", "report_to=none", "model.latent_dim=8", "model.generator_channels=[16,8]"]
    config = load_config(None, [*overrides, f"output_dir={model_dir}", f"dataset={dataset}"])
    (model_dir / "training_config.yaml").write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False))
    return model_dir


def one_error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def test_cli_folder_that_does_not_exist_is_one_line_and_exit_status_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", str(tmp_path / "missing")])
    assert exit_info.value.code == 2
    assert "does not exist" in one_error_line(capsys)


def test_cli_debug_flag_shows_the_traceback(tmp_path):
    for argv in (
        ["--debug", "evaluate", str(tmp_path / "missing")],
        ["evaluate", str(tmp_path / "missing"), "--debug"],
    ):
        with pytest.raises(FileNotFoundError, match="does not exist"):
            main(argv)


def test_cli_imagefolder_run_without_dataset_asks_for_its_path(tmp_path, capsys):
    model_dir = saved_gan_run(tmp_path / "run", "imagefolder:my-pictures")
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", str(model_dir)])
    assert exit_info.value.code == 2
    assert "pass --dataset imagefolder:PATH" in one_error_line(capsys)
    assert not (model_dir / "metrics.json").exists()


def test_cli_judge_options_on_another_family_are_a_user_error(tmp_path, capsys):
    model_dir = saved_gan_run(tmp_path / "run", "digits")
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", str(model_dir), "--per-digit", "3"])
    assert exit_info.value.code == 2
    assert "--per-digit" in one_error_line(capsys)


def test_cli_evaluates_a_gan_on_its_image_folder_and_writes_metrics_and_card(tmp_path, capsys):
    folder = write_image_folder(tmp_path / "my-pictures", count=40)
    model_dir = saved_gan_run(tmp_path / "run", "imagefolder:my-pictures")
    argv = ["evaluate", str(model_dir), "--dataset", f"imagefolder:{folder}", "--domain-steps", "10"]
    main(argv)
    report = json.loads((model_dir / "metrics.json").read_text())
    metrics = report["metrics"]
    assert list(metrics)[:2] == ["domain-FID (4 samples)", "real-vs-real domain-FID (4 samples)"]
    assert "capped at the 4 images of the validation split" in report["protocol"]
    assert "estimation noise" in report["protocol"]
    assert str(tmp_path) not in report["protocol"]  # the card is public: no local paths
    out = capsys.readouterr().out
    assert "domain-FID (4 samples)" in out and "real-vs-real domain-FID (4 samples)" in out
    card = (model_dir / "README.md").read_text()
    assert "domain-FID (4 samples)" in card
    # The encoder is cached: a second evaluation trains nothing.
    (encoder_dir,) = (tmp_path / "cache" / "domain-v1").iterdir()
    assert encoder_dir.name.startswith("imagefolder-my-pictures-")
    main(argv)
    again = json.loads((model_dir / "metrics.json").read_text())["metrics"]
    for name in ("domain-FID (4 samples)", "real-vs-real domain-FID (4 samples)"):
        assert again[name] == metrics[name]
