"""`latentzoo generate` on a saved folder of every family, and the sampling defaults a diffusion pipeline is saved
with (the guidance scale and steps its model was validated with). Tiny CPU models saved with save_pretrained."""

import json
import shutil

import numpy as np
import pytest
import torch
from diffusers import (
    DPMSolverMultistepScheduler,
)
from PIL import Image
from tiny_pipelines import (
    autoencoder_pipeline,
    gan_pipeline,
    pixel_pipeline,
    text_to_image_pipeline,
    vae_pipeline,
)

from latentzoo.pipelines import (
    GANPipeline,
    LatentTextToImagePipeline,
    PixelDiffusionPipeline,
)
from latentzoo.pipelines.loading import load_pipeline
from latentzoo.training.cli import build_parser, main

SIZE = 8  # every family's images are 8x8 (tiny_pipelines)


def text_to_image(**defaults) -> LatentTextToImagePipeline:
    return text_to_image_pipeline(DPMSolverMultistepScheduler(num_train_timesteps=1000), **defaults)


def pixel(num_classes: int | None = 3, **defaults) -> PixelDiffusionPipeline:
    return pixel_pipeline(num_classes, DPMSolverMultistepScheduler(num_train_timesteps=1000), **defaults)


# What each family's folder holds: its builder and its number of real classes (None: unconditional).
FAMILIES = {
    "text2img": (lambda: text_to_image(default_guidance_scale=3.0, default_num_inference_steps=2), None),
    "ddpm-classes": (lambda: pixel(3, default_guidance_scale=2.0, default_num_inference_steps=2), 3),
    "ddpm": (lambda: pixel(None, default_num_inference_steps=2), None),
    "gan-classes": (lambda: gan_pipeline(3), 3),
    "gan": (lambda: gan_pipeline(None), None),
    "ae-mdn-classes": (lambda: autoencoder_pipeline("mdn-classes", num_classes=4), 4),
    "vae": (vae_pipeline, None),
}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    for name, (build, _) in FAMILIES.items():
        build().save_pretrained(root / name)
    return root


def grid_size(path) -> tuple[int, int]:
    with Image.open(path) as image:
        return image.size


def generate(folder, *argv) -> None:
    main(["generate", str(folder), *map(str, argv)])


# ------------------------------------------------------------------------------------------ every family


@pytest.mark.parametrize("family", FAMILIES)
def test_generate_writes_a_grid_for_every_family(capsys, folders, tmp_path, family):
    output = tmp_path / "grid.png"
    prompt = ["a thin 3"] if family == "text2img" else []
    generate(folders / family, *prompt, "-n", 6, "-o", output)
    num_classes = FAMILIES[family][1]
    if family == "text2img":
        columns, rows = 6, 1  # one row per prompt
    elif num_classes is not None:
        columns, rows = num_classes, -(-6 // num_classes)  # one column per class, cycled
    else:
        columns, rows = 3, 2  # square-ish
    assert grid_size(output) == (columns * SIZE, rows * SIZE)
    out = capsys.readouterr().out
    assert "Wrote 6 images" in out and f"to {output}" in out


def sampled_labels(monkeypatch, folder, *argv) -> list[int]:
    """The class labels `generate` samples `folder` with."""
    seen = []
    original = type(load_pipeline(folder)).__call__

    def spy(self, *args, class_labels=None, **kwargs):
        seen.extend(class_labels)
        return original(self, *args, class_labels=class_labels, **kwargs)

    monkeypatch.setattr(type(load_pipeline(folder)), "__call__", spy)
    generate(folder, *argv)
    return seen


@pytest.mark.parametrize("family", ["ddpm-classes", "gan-classes", "ae-mdn-classes"])
def test_class_labels_given_are_cycled_over_the_images(monkeypatch, folders, tmp_path, family):
    output = tmp_path / "grid.png"
    assert sampled_labels(
        monkeypatch, folders / family, "-n", 5, "--class-label", 2, "--class-label", 0, "-o", output
    ) == [2, 0, 2, 0, 2]
    assert sampled_labels(monkeypatch, folders / family, "-n", 3, "--class-label", "1,2", "-o", output) == [
        1,
        2,
        1,
    ]


@pytest.mark.parametrize("family", ["ddpm-classes", "gan-classes", "ae-mdn-classes"])
def test_without_class_labels_every_class_in_turn(monkeypatch, folders, tmp_path, family):
    num_classes = FAMILIES[family][1]
    labels = sampled_labels(monkeypatch, folders / family, "-n", 7, "-o", tmp_path / "grid.png")
    assert labels == [i % num_classes for i in range(7)]


def test_generate_draws_image_i_with_seed_plus_i(folders, tmp_path):
    """The grid's images are `sample_images`' (generator seed + i): the same as the pipeline called by hand."""
    output = tmp_path / "grid.png"
    generate(folders / "gan-classes", "-n", 3, "--seed", 5, "--truncation", 1.5, "-o", output)
    pipe = GANPipeline.from_pretrained(folders / "gan-classes")
    generators = [torch.Generator().manual_seed(5 + i) for i in range(3)]
    images = pipe(class_labels=[0, 1, 2], truncation=1.5, generator=generators, output_type="pt").images
    expected = (images.clamp(0, 1) * 255).round().to(torch.uint8)  # (3, 1, 8, 8)
    with Image.open(output) as grid:
        got = torch.from_numpy(np.asarray(grid).copy())  # (8, 24)
    assert torch.equal(got, torch.cat(list(expected[:, 0]), dim=1))


# ------------------------------------------------------------------------------------------- mistakes


def user_error(capsys, argv) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main([str(arg) for arg in argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("family", ["ddpm-classes", "ddpm", "gan", "vae"])
def test_a_prompt_for_a_pipeline_without_prompts_is_one_line_naming_what_it_takes(
    capsys, folders, tmp_path, family
):
    kind = type(load_pipeline(folders / family)).__name__
    line = user_error(capsys, ["generate", folders / family, "a 3", "-o", tmp_path / "grid.png"])
    assert f"holds a {kind}, which takes no prompt" in line and "--class-label" in line
    assert not (tmp_path / "grid.png").exists()


def test_text_to_image_needs_a_prompt(capsys, folders, tmp_path):
    line = user_error(capsys, ["generate", folders / "text2img", "-o", tmp_path / "grid.png"])
    assert "LatentTextToImagePipeline, which needs a prompt" in line


@pytest.mark.parametrize(
    "family, argv, refused",
    [
        ("gan", ["--steps", 2], "--steps"),
        ("vae", ["--guidance-scale", 2], "--guidance-scale"),
        ("vae", ["--sampler", "ddim"], "--sampler"),
        ("ddpm-classes", ["--truncation", 1], "--truncation"),
        ("text2img", ["a 3", "--class-label", 1], "--class-label"),
        ("gan", ["--negative-prompt", "blurry"], "--negative-prompt"),
        ("gan", ["--prior", "standard-normal"], "--prior"),
        ("ddpm", ["--height", 16], "--height"),
        ("vae", ["--width", 16], "--width"),
    ],
)
def test_an_option_the_pipeline_does_not_take_is_one_line(capsys, folders, family, argv, refused):
    line = user_error(capsys, ["generate", folders / family, *argv])
    assert f"which takes no {refused}" in line


@pytest.mark.parametrize("family", ["ddpm", "gan", "vae"])
def test_class_labels_for_an_unconditional_pipeline_are_one_line(capsys, folders, tmp_path, family):
    line = user_error(capsys, ["generate", folders / family, "--class-label", 1, "-o", tmp_path / "g.png"])
    assert "unconditional" in line and "--class-label" in line


def test_a_class_label_out_of_range_is_one_line(capsys, folders, tmp_path):
    line = user_error(
        capsys, ["generate", folders / "ddpm-classes", "--class-label", 3, "-o", tmp_path / "g.png"]
    )
    assert "--class-label 3" in line and "from 0 to 2" in line


def test_parser_help_version_and_description(capsys):
    parser = build_parser()
    for command in ("quickstart", "train", "generate", "evaluate", "push", "projector", "forward-process"):
        assert command in parser.description
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.startswith("latentzoo ")
    help_text = parser._subparsers._group_actions[0].choices["generate"].format_help()
    assert "required for text-to-image" in help_text and "a folder a training run" in help_text
    args = parser.parse_args(["generate", "M"])
    assert args.prompt is None and args.steps is None and args.guidance_scale is None and args.sampler is None


# --------------------------------------------------------------------------------- saved sampling defaults


def pt(pipe, **kwargs) -> torch.Tensor:
    pipe.set_progress_bar_config(disable=True)
    return pipe(**kwargs, generator=torch.Generator().manual_seed(0), output_type="pt").images


CASES = {
    # family: (folder name, saved guidance, saved steps, condition, old (pre-default) values)
    "text2img": ("text2img", 3.0, 2, {"prompt": ["a 3", "a 7"]}, (7.5, 50)),
    "ddpm-classes": ("ddpm-classes", 2.0, 2, {"class_labels": [0, 2]}, (1.0, 50)),
}


@pytest.mark.parametrize("family", CASES)
@pytest.mark.parametrize("loader", ["class", "load_pipeline"])
def test_a_call_without_guidance_or_steps_uses_the_saved_values(folders, family, loader):
    name, guidance, steps, condition, _ = CASES[family]
    folder = folders / name
    index = json.loads((folder / "model_index.json").read_text())
    assert index["default_guidance_scale"] == guidance and index["default_num_inference_steps"] == steps
    kind = type(load_pipeline(folder))
    pipe = kind.from_pretrained(folder) if loader == "class" else load_pipeline(folder)
    assert pipe.config.default_guidance_scale == guidance and pipe.default_num_inference_steps == steps
    default = pt(pipe, **condition)
    assert torch.equal(default, pt(pipe, **condition, guidance_scale=guidance, num_inference_steps=steps))
    assert not torch.equal(
        default, pt(pipe, **condition, guidance_scale=guidance + 1.5, num_inference_steps=steps)
    )
    assert not torch.equal(
        default, pt(pipe, **condition, guidance_scale=guidance, num_inference_steps=steps + 1)
    )


def test_a_saved_default_can_be_overridden_when_loading(folders):
    pipe = PixelDiffusionPipeline.from_pretrained(folders / "ddpm-classes", default_guidance_scale=4.0)
    assert pipe.default_guidance_scale == 4.0 and pipe.default_num_inference_steps == 2


@pytest.mark.parametrize("family", CASES)
def test_a_folder_saved_before_the_defaults_loads_with_the_old_ones(folders, tmp_path, family):
    name, _, _, condition, (old_guidance, old_steps) = CASES[family]
    folder = shutil.copytree(folders / name, tmp_path / name)
    index = json.loads((folder / "model_index.json").read_text())
    del index["default_guidance_scale"], index["default_num_inference_steps"]
    (folder / "model_index.json").write_text(json.dumps(index))
    pipe = load_pipeline(folder)
    assert pipe.config.default_guidance_scale is None
    assert (pipe.default_guidance_scale, pipe.default_num_inference_steps) == (old_guidance, old_steps)
    steps = 3  # the old 50 steps cost too much here; the guidance default is checked at a few
    default = pt(pipe, **condition, num_inference_steps=steps)
    assert torch.equal(default, pt(pipe, **condition, num_inference_steps=steps, guidance_scale=old_guidance))
    # and it still saves and loads (None: "no saved default")
    pipe.save_pretrained(tmp_path / "resaved")
    assert load_pipeline(tmp_path / "resaved").default_num_inference_steps == old_steps


def test_without_class_labels_a_class_conditional_pipeline_samples_unguided(folders):
    pipe = load_pipeline(folders / "ddpm-classes")
    assert torch.equal(pt(pipe, batch_size=2), pt(pipe, batch_size=2, guidance_scale=1.0))


def test_an_unconditional_pipeline_is_saved_without_guidance(folders):
    pipe = load_pipeline(folders / "ddpm")
    assert pipe.config.default_guidance_scale is None and pipe.default_guidance_scale == 1.0
    assert torch.equal(pt(pipe, batch_size=2), pt(pipe, batch_size=2, num_inference_steps=2))


@pytest.mark.parametrize(
    "defaults, message",
    [
        ({"default_guidance_scale": -1.0}, "default_guidance_scale"),
        ({"default_num_inference_steps": 0}, "default_num_inference_steps"),
        ({"default_num_inference_steps": 2.5}, "default_num_inference_steps"),
    ],
)
def test_bad_saved_defaults_are_refused(defaults, message):
    with pytest.raises((ValueError, TypeError), match=message):
        pixel(None, **defaults)


def test_generate_uses_the_saved_defaults_and_says_them(capsys, folders, tmp_path):
    generate(folders / "ddpm-classes", "-n", 2, "-o", tmp_path / "grid.png")
    assert "2 DPMSolverMultistepScheduler steps, guidance scale 2.0" in capsys.readouterr().out
    generate(folders / "ddpm-classes", "-n", 2, "--steps", 3, "--sampler", "ddim", "-o", tmp_path / "g.png")
    assert "3 DDIMScheduler steps, guidance scale 2.0" in capsys.readouterr().out


@pytest.mark.parametrize("num_classes, guidance", [(2, 2.5), (None, None)])
def test_the_ddpm_task_saves_its_validation_settings(num_classes, guidance):
    """Its make_pipeline (on a tiny UNet): an unconditional model saves no guidance, it has nothing to guide to."""
    from types import SimpleNamespace

    from latentzoo.training.tasks.ddpm import DDPMConfig, DDPMTask
    from latentzoo.training.tasks.diffusion import make_objective

    config = DDPMConfig(validation_guidance_scale=2.5, validation_num_inference_steps=7)
    task = SimpleNamespace(config=config, num_classes=num_classes, objective=make_objective(config))
    pipe = DDPMTask.make_pipeline(task, {"unet": pixel(num_classes).unet})
    assert (pipe.config.default_guidance_scale, pipe.config.default_num_inference_steps) == (guidance, 7)


def test_the_text_to_image_task_saves_its_validation_settings():
    """Its make_pipeline, on the components of a tiny pipeline (building the task trains a VAE stage)."""
    from types import SimpleNamespace

    from latentzoo.training.tasks.diffusion import make_objective
    from latentzoo.training.tasks.text_to_image import TextToImageConfig, TextToImageTask

    parts = text_to_image()
    config = TextToImageConfig(validation_guidance_scale=2.5, validation_num_inference_steps=7)
    task = SimpleNamespace(
        config=config,
        vae=parts.vae,
        tokenizer=parts.tokenizer,
        objective=make_objective(config, clip_sample=False),
    )
    denoiser = SimpleNamespace(text_encoder=parts.text_encoder, unet=parts.unet, prompt_projection=None)
    pipe = TextToImageTask.make_pipeline(task, {"denoiser": denoiser})
    assert (pipe.config.default_guidance_scale, pipe.config.default_num_inference_steps) == (2.5, 7)


def test_generate_sizes_priors_and_devices(capsys, folders, tmp_path):
    output = tmp_path / "big.png"
    main(
        [
            "generate",
            str(folders / "text2img"),
            "a 3",
            "-n",
            "2",
            "--height",
            "16",
            "--width",
            "24",
            "--device",
            "cpu",
            "-o",
            str(output),
        ]
    )
    assert Image.open(output).size == (2 * 24, 16)  # two images side by side, 24 wide and 16 high

    # An autoencoder with a fitted prior, sampled from it and from N(0, I): different latents, same decoder.
    folder = tmp_path / "ae"
    autoencoder_pipeline("gaussian").save_pretrained(folder)
    grids = {}
    for prior in ("saved", "standard-normal"):
        grids[prior] = tmp_path / f"{prior}.png"
        main(["generate", str(folder), "-n", "4", "--prior", prior, "-o", str(grids[prior])])
    saved, normal = (np.asarray(Image.open(grids[prior])) for prior in ("saved", "standard-normal"))
    assert saved.shape == normal.shape and not np.array_equal(saved, normal)
    assert "from N(0, I)" in capsys.readouterr().out


def test_generate_under_bf16_autocast_samples_what_fp32_samples(capsys, folders, tmp_path):
    grids = {}
    for precision in ("fp32", "bf16"):
        grids[precision] = tmp_path / f"{precision}.png"
        main(
            [
                "generate",
                str(folders / "text2img"),
                "a 3",
                "-n",
                "2",
                "--precision",
                precision,
                "-o",
                str(grids[precision]),
            ]
        )
    assert "under bf16 autocast" in capsys.readouterr().out
    fp32, bf16 = (np.asarray(Image.open(grids[p]), dtype=np.float64) for p in ("fp32", "bf16"))
    assert fp32.shape == bf16.shape
    # bf16 rounds the matmuls (8-bit mantissa): close to the fp32 images, and not bit-identical (it did run)
    assert np.abs(fp32 - bf16).max() > 0 and np.abs(fp32 - bf16).mean() < 8


def test_generate_with_a_compiled_unet_samples_what_eager_sampling_samples(capsys, folders, tmp_path):
    grids = {}
    for compiled in (False, True):
        grids[compiled] = tmp_path / f"{compiled}.png"
        main(
            ["generate", str(folders / "text2img"), "a 3", "-n", "2", "-o", str(grids[compiled])]
            + (["--compile"] if compiled else [])
        )
    assert "UNet compiled" in capsys.readouterr().out
    eager, compiled = (np.asarray(Image.open(grids[c]), dtype=np.float64) for c in (False, True))
    # fp32: inductor's fused kernels reorder float sums only; the PNG's 8 bits hide nearly all of it
    assert eager.shape == compiled.shape and np.abs(eager - compiled).max() <= 1
    line = user_error(
        capsys, ["generate", str(folders / "gan"), "-n", "2", "--compile", "-o", str(tmp_path / "g.png")]
    )
    assert "--compile" in line and "leave --compile out" in line
