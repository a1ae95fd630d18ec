"""Pixel-space DDPM: the forward process in closed form for both schedules, a tiny class-conditional model that
generates the class it is asked for, the pipeline against diffusers' own, save/load, seeds, samplers, errors,
the Trainer end to end and the forward-process figures."""

import math

import numpy as np
import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DDPMPipeline,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    UNet2DModel,
)
from PIL import Image

from latentzoo.data.datasets import ImageDataset
from latentzoo.pipelines import PixelDiffusionPipeline
from latentzoo.pipelines.loading import load_pipeline
from latentzoo.training import load_config, train
from latentzoo.training.cli import main
from latentzoo.training.tasks.ddpm import DDPMConfig, DDPMTask
from latentzoo.training.tasks.diffusion import make_noise_scheduler

# ------------------------------------------------------------------------------------------ forward process


def reference_alphas_cumprod(schedule: str, num_train_timesteps: int = 1000) -> torch.Tensor:
    """ᾱ_t computed from the papers' formulas in float64, independently of diffusers."""
    if schedule == "linear":  # β_t from 1e-4 to 0.02, sec. 4 of arXiv:2006.11239
        betas = torch.linspace(1e-4, 0.02, num_train_timesteps, dtype=torch.float64)
    else:  # eq. (17) of arXiv:2102.09672, s = 0.008, β_t capped at 0.999

        def f(t):
            return math.cos((t / num_train_timesteps + 0.008) / 1.008 * math.pi / 2) ** 2

        betas = torch.tensor(
            [min(1 - f(t + 1) / f(t), 0.999) for t in range(num_train_timesteps)], dtype=torch.float64
        )
    return torch.cumprod(1 - betas, dim=0)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_noised_sample_equals_closed_form(schedule):
    scheduler = make_noise_scheduler(schedule, prediction_type="v_prediction")
    generator = torch.Generator().manual_seed(0)
    x0 = torch.rand(6, 1, 8, 8, generator=generator) * 2 - 1
    noise = torch.randn(6, 1, 8, 8, generator=generator)
    timesteps = torch.tensor([0, 1, 250, 500, 750, 999])

    noisy = scheduler.add_noise(x0, noise, timesteps)

    alpha_bar = reference_alphas_cumprod(schedule)[timesteps].float().view(-1, 1, 1, 1)
    expected = alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise
    torch.testing.assert_close(noisy, expected, atol=1e-5, rtol=1e-4)


def test_cosine_schedule_starts_near_one_falls_monotonically_and_keeps_more_signal():
    cosine = make_noise_scheduler("cosine").alphas_cumprod
    linear = make_noise_scheduler("linear").alphas_cumprod
    assert cosine[0] > 0.999
    assert (cosine[1:] < cosine[:-1]).all()
    for t in (250, 500, 750):
        assert cosine[t].sqrt() > linear[t].sqrt() + 0.1, t


# ------------------------------------------------------------------------------------- tiny models, data


def tiny_unet(num_classes: int | None = 2, sample_size: int = 8) -> UNet2DModel:
    torch.manual_seed(0)
    return UNet2DModel(
        sample_size=sample_size,
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


def tiny_pipeline(num_classes: int | None = 2, scheduler_class=DDPMScheduler) -> PixelDiffusionPipeline:
    scheduler = scheduler_class.from_config(make_noise_scheduler(prediction_type="v_prediction").config)
    return PixelDiffusionPipeline(unet=tiny_unet(num_classes).eval(), scheduler=scheduler)


def two_class_dataset(n: int = 256) -> ImageDataset:
    """Class 0: bright top half; class 1: bright bottom half; plus a little noise. (N, 1, 8, 8) in [-1, 1]."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % 2
    rows = torch.arange(8).view(1, 8, 1)
    top = (rows < 4).float().expand(n, 8, 8)
    bright = torch.where(labels.view(-1, 1, 1) == 0, top, 1 - top)
    pixel_values = (bright * 2 - 1 + 0.1 * torch.randn(n, 8, 8, generator=generator)).clamp(-1, 1)
    return ImageDataset(pixel_values.unsqueeze(1), labels, num_classes=2, name="two-halves")


def predicted_class(images: torch.Tensor) -> torch.Tensor:
    """0 where the top half is brighter than the bottom half, else 1; images (N, 1, 8, 8) in [0, 1]."""
    return (images[:, :, :4].mean(dim=(1, 2, 3)) < images[:, :, 4:].mean(dim=(1, 2, 3))).long()


@pytest.fixture(scope="module")
def trained_pipeline():
    """A tiny class-conditional model trained through the task's own training_step for 300 steps."""
    dataset = two_class_dataset()
    config = DDPMConfig(
        block_out_channels=(8, 16), attention_levels=(1,), attention_head_dim=4, norm_num_groups=4
    )
    torch.manual_seed(0)
    task = DDPMTask(config, dataset)
    modules = task.trainable_modules()
    optimizer = torch.optim.AdamW(modules["unet"].parameters(), lr=3e-3)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=32, shuffle=True, drop_last=True, generator=torch.Generator().manual_seed(0)
    )
    step = 0
    while step < 300:
        for batch in loader:
            loss = task.training_step(batch, modules, step)["loss"]
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            step += 1
    modules["unet"].eval()
    pipeline = task.make_pipeline(modules)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


@pytest.mark.parametrize("guidance_scale", [1.0, 3.0])
def test_class_conditional_model_generates_requested_class(trained_pipeline, guidance_scale):
    class_labels = [0, 1] * 8
    images = trained_pipeline(
        class_labels=class_labels,
        num_inference_steps=20,
        guidance_scale=guidance_scale,
        generator=torch.Generator().manual_seed(0),
        output_type="pt",
    ).images
    accuracy = (predicted_class(images) == torch.tensor(class_labels)).float().mean().item()
    assert accuracy >= 0.9, accuracy


# ---------------------------------------------------------------------------------------------- pipeline


def test_unconditional_pipeline_matches_diffusers_ddpm_pipeline():
    pipeline = tiny_pipeline(num_classes=None)
    ours = pipeline(
        batch_size=2, num_inference_steps=10, generator=torch.Generator().manual_seed(0), output_type="np"
    ).images
    theirs = DDPMPipeline(unet=pipeline.unet, scheduler=pipeline.scheduler)(
        batch_size=2, num_inference_steps=10, generator=torch.Generator().manual_seed(0), output_type="np"
    ).images
    np.testing.assert_allclose(ours, theirs, atol=1e-6)


def test_batch_with_generator_list_matches_images_generated_one_by_one():
    pipeline = tiny_pipeline()
    kwargs = dict(num_inference_steps=5, guidance_scale=2.0, output_type="pt")
    batch = pipeline(
        class_labels=[0, 1], generator=[torch.Generator().manual_seed(s) for s in (0, 1)], **kwargs
    ).images
    singles = [
        pipeline(class_labels=[label], generator=torch.Generator().manual_seed(seed), **kwargs).images
        for label, seed in ((0, 0), (1, 1))
    ]
    torch.testing.assert_close(batch, torch.cat(singles), atol=1e-5, rtol=1e-4)


def test_same_seed_same_images_other_seed_other_images():
    pipeline = tiny_pipeline()

    def sample(seed):
        return pipeline(
            class_labels=[0, 1],
            num_inference_steps=4,
            generator=torch.Generator().manual_seed(seed),
            output_type="pt",
        ).images

    torch.testing.assert_close(sample(0), sample(0), atol=0, rtol=0)
    assert not torch.allclose(sample(0), sample(1))


def test_given_latents_replace_the_generator_noise():
    pipeline = tiny_pipeline(scheduler_class=DDIMScheduler)  # deterministic steps: x_T decides everything
    latents = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    a = pipeline(class_labels=[0, 1], latents=latents, num_inference_steps=4, output_type="pt").images
    b = pipeline(
        class_labels=[0, 1],
        latents=latents,
        num_inference_steps=4,
        generator=torch.Generator().manual_seed(99),
        output_type="pt",
    ).images
    torch.testing.assert_close(a, b)


def test_save_load_round_trip_gives_the_same_images(tmp_path):
    pipeline = tiny_pipeline(scheduler_class=DPMSolverMultistepScheduler)
    pipeline.save_pretrained(tmp_path)
    loaded = load_pipeline(tmp_path)
    assert isinstance(loaded, PixelDiffusionPipeline)
    assert isinstance(loaded.scheduler, DPMSolverMultistepScheduler)

    def sample(pipe):
        return pipe(
            class_labels=[1, 0],
            num_inference_steps=5,
            guidance_scale=2.0,
            generator=torch.Generator().manual_seed(0),
            output_type="pt",
        ).images

    torch.testing.assert_close(sample(loaded), sample(pipeline), atol=0, rtol=0)


@pytest.mark.parametrize(
    "scheduler_class", [DDPMScheduler, DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler]
)
def test_any_diffusers_scheduler_swaps_in(scheduler_class):
    pipeline = tiny_pipeline()
    pipeline.scheduler = scheduler_class.from_config(pipeline.scheduler.config)
    assert pipeline.scheduler.config.beta_schedule == "squaredcos_cap_v2"  # the trained schedule is kept
    images = pipeline(
        class_labels=[0, 1, 1],
        num_inference_steps=4,
        guidance_scale=2.0,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    ).images
    assert images.shape == (3, 8, 8, 1)
    assert np.isfinite(images).all() and images.min() >= 0 and images.max() <= 1


def test_output_types_and_return_dict():
    pipeline = tiny_pipeline()
    kwargs = dict(class_labels=[0, 1], num_inference_steps=2, generator=torch.Generator().manual_seed(0))
    pil = pipeline(**kwargs).images
    assert len(pil) == 2 and isinstance(pil[0], Image.Image) and pil[0].size == (8, 8)
    kwargs["generator"] = torch.Generator().manual_seed(0)
    (pt,) = pipeline(**kwargs, output_type="pt", return_dict=False)
    assert pt.shape == (2, 1, 8, 8) and pt.min() >= 0 and pt.max() <= 1
    kwargs["generator"] = torch.Generator().manual_seed(0)
    np_images = pipeline(**kwargs, output_type="np").images
    np.testing.assert_allclose(np_images, pt.permute(0, 2, 3, 1).numpy(), atol=1e-6)


def test_conditional_model_without_labels_samples_the_null_class():
    pipeline = tiny_pipeline()
    images = pipeline(
        batch_size=3, num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="pt"
    ).images
    assert images.shape == (3, 1, 8, 8)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(class_labels=[0, 2]), ValueError, r"\[0, 1\].*got \[2\]"),
        (dict(class_labels=[-1]), ValueError, r"got \[-1\]"),
        (dict(class_labels=[0.5]), TypeError, "ints"),
        (dict(class_labels=[0, 1], batch_size=3), ValueError, "disagrees"),
        (dict(class_labels=[0, 1], generator=[torch.Generator()]), ValueError, "list of 1 generators"),
        (dict(batch_size=2, generator=[torch.Generator()] * 3), ValueError, "list of 3 generators"),
        (dict(class_labels=[0], num_inference_steps=0), ValueError, "positive int"),
        (dict(class_labels=[0], num_inference_steps=1001), ValueError, "at most 1000"),
        (dict(batch_size=2, guidance_scale=3.0), ValueError, "class_labels"),
        (dict(class_labels=[0], output_type="jpg"), ValueError, "output_type"),
        (dict(class_labels=[0], latents=torch.randn(2, 1, 8, 8)), ValueError, "shape"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        tiny_pipeline()(**kwargs)


def test_class_labels_on_an_unconditional_model_raise():
    with pytest.raises(ValueError, match="unconditional"):
        tiny_pipeline(num_classes=None)(class_labels=[0])


# --------------------------------------------------------------------------------------- trainer and CLI


@pytest.mark.parametrize("preset", ["ddpm-mnist", "ddpm-mnist-classes", "ddpm-digits"])
def test_presets_load(preset):
    config = load_config(preset)
    assert config.task == "ddpm" and isinstance(config.model, DDPMConfig)


def test_bad_task_config_is_a_clear_error():
    with pytest.raises(ValueError, match="attention_levels"):
        load_config("ddpm-digits", ["model.attention_levels=[2]"])
    with pytest.raises(ValueError, match="label_dropout"):
        load_config("ddpm-digits", ["model.label_dropout=1.5"])


def test_trainer_trains_ddpm_digits_and_saves_a_loadable_pipeline(tmp_path):
    config = load_config(
        "ddpm-digits",
        [
            f"output_dir={tmp_path}",
            "max_train_steps=3",
            "max_train_minutes=null",
            "num_epochs=null",
            "train_batch_size=16",
            "report_to=none",
            "num_validation_images=4",
            "model.block_out_channels=[8, 16]",
            "model.norm_num_groups=4",
            "model.validation_num_inference_steps=2",
        ],
    )
    train(config)
    assert (tmp_path / "samples" / "step-000003.png").is_file()
    assert "PixelDiffusionPipeline" in (tmp_path / "README.md").read_text()
    pipeline = load_pipeline(tmp_path, sampler="ddim")
    assert pipeline.unet.config.num_class_embeds == 11  # 10 digits + the null class
    # Trained with x̂_0 clipping (pixels); DDIM drops it (it clips x̂_0 but not ε), the DDPM sampler keeps it.
    assert pipeline.scheduler.config.clip_sample is False
    assert pipeline.scheduler.config.prediction_type == "v_prediction"
    assert load_pipeline(tmp_path, sampler="ddpm").scheduler.config.clip_sample is True
    images = pipeline(
        class_labels=[3], num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np"
    ).images
    assert images.shape == (1, 8, 8, 1)


def test_forward_process_command_writes_both_figures(tmp_path, capsys):
    main(["forward-process", "--dataset", "digits", "--num-images", "1", "--output-dir", str(tmp_path)])
    for name in ("forward_process.png", "noise_schedules.png"):
        with Image.open(tmp_path / name) as image:
            assert image.width > 100 and image.height > 100
    assert "linear vs cosine" in capsys.readouterr().out
