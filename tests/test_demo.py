"""`latentzoo demo`: each tab's callback on tiny saved models of every family, bad inputs as messages, the app
through `gradio_client` on localhost, and one real headless Chromium that types a prompt and clicks Generate.

The browser test needs Playwright and a Chromium: Debian's `chromium` package (`.ci/run` installs it), or the one
$LATENTZOO_CHROMIUM names. Without one it fails, saying how to install it. Its code path also makes README's
screenshot: `python tests/test_demo.py MODEL_DIR OUTPUT.png`.
"""

import os
import shutil
import socket
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import DDIMScheduler, LCMScheduler

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402
from tiny_pipelines import (  # noqa: E402
    autoencoder_pipeline,
    gan_pipeline,
    pixel_pipeline,
    text_to_image_pipeline,
    vae_pipeline,
)

from latentzoo.demo import build_demo, callbacks, launch_demo, load_models  # noqa: E402
from latentzoo.demo.app import _samples_block, _ui  # noqa: E402
from latentzoo.models import VariationalAutoencoder  # noqa: E402
from latentzoo.pipelines import AutoencoderPipeline  # noqa: E402
from latentzoo.pipelines.samplers import CONSISTENCY_SAMPLERS, SAMPLERS  # noqa: E402
from latentzoo.training.cli import main  # noqa: E402

SIZE = 8  # every tiny model's images are 8x8
PROMPT = "a thin two slanted to the left"


def vae_2d_pipeline() -> AutoencoderPipeline:
    torch.manual_seed(0)
    return AutoencoderPipeline(
        VariationalAutoencoder(sample_size=SIZE, latent_dim=2, block_out_channels=(4, 8)).eval()
    )


TINY = {
    "t2i": lambda: text_to_image_pipeline(),
    "t2i-lcm": lambda: text_to_image_pipeline(LCMScheduler(num_train_timesteps=1000), time_cond_proj_dim=8),
    "ddpm": lambda: pixel_pipeline(2, DDIMScheduler(num_train_timesteps=1000)),
    "ddpm-uncond": lambda: pixel_pipeline(None),
    "gan": lambda: gan_pipeline(3),
    "ae": lambda: autoencoder_pipeline("mdn-classes", num_classes=10),
    "vae": vae_pipeline,
    "vae2d": vae_2d_pipeline,
}


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("demo-models")
    for name, build in TINY.items():
        build().save_pretrained(root / name)
    return {name: root / name for name in TINY}


@pytest.fixture(scope="module")
def models(model_dirs):
    return {model.name: model for model in load_models(list(model_dirs.values()))}


@pytest.fixture(scope="module")
def server(models, tmp_path_factory):
    """The demo of every tiny model, launched on a free localhost port: (Blocks, URL)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GRADIO_TEMP_DIR", str(tmp_path_factory.mktemp("gradio")))
        demo = build_demo(models=list(models.values()))
        _, url, _ = launch_demo(
            demo, port=free_port(), prevent_thread_lock=True, quiet=True, server_name="127.0.0.1"
        )
        yield demo, url
        demo.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def sizes(images) -> list[tuple[int, int]]:
    return [image.size for image in images]


# ---------------------------------------------------------------------------------------------- models and tabs
def test_each_folder_gets_the_tab_of_its_family_with_the_samplers_that_fit(models):
    labels = {name: model.label for name, model in models.items()}
    assert labels == {
        "t2i": "Text to image · t2i",
        "t2i-lcm": "Few-step text to image · t2i-lcm",
        "ddpm": "Class-conditional diffusion · ddpm",
        "ddpm-uncond": "Diffusion · ddpm-uncond",
        "gan": "Class-conditional GAN · gan",
        "ae": "Latent explorer (autoencoder) · ae",
        "vae": "Latent explorer (VAE) · vae",
        "vae2d": "Latent explorer (VAE) · vae2d",
    }
    # Folders saved under diffusers' names (LatentConsistencyModelPipeline, DDPMPipeline) load all the same.
    assert '"LatentConsistencyModelPipeline"' in (models["t2i-lcm"].path / "model_index.json").read_text()
    assert '"DDPMPipeline"' in (models["ddpm-uncond"].path / "model_index.json").read_text()
    assert models["t2i-lcm"].guidance_is_embedded and not models["t2i"].guidance_is_embedded
    assert models["t2i-lcm"].samplers == sorted(CONSISTENCY_SAMPLERS)
    assert models["t2i"].samplers == models["ddpm"].samplers == sorted(SAMPLERS)
    assert models["gan"].samplers == [] and models["vae"].samplers == []
    # Autoencoders get the stroke weight and slant directions, measured on mnist digits (no training config here).
    for name in ("ae", "vae", "vae2d"):
        vectors = models[name].attribute_vectors
        assert list(vectors) == ["stroke weight (bold − thin)", "slant (right − left)"]
        latent_dim = models[name].pipeline.latent_dim
        assert all(v.shape == (latent_dim,) and v.norm() > 0 for v in vectors.values())


def test_two_folders_of_the_same_name_get_two_names(model_dirs, tmp_path):
    copy = shutil.copytree(model_dirs["gan"], tmp_path / "gan")
    assert [model.name for model in load_models([model_dirs["gan"], copy])] == ["gan", "gan-2"]


def test_a_model_trained_on_other_data_has_no_attribute_slider_and_says_why(model_dirs, tmp_path):
    folder = shutil.copytree(model_dirs["vae"], tmp_path / "vae-shapes")
    (folder / "training_config.yaml").write_text("task: vae\ndataset: shapes\n")
    (model,) = load_models([folder])
    assert model.attribute_vectors == {} and "'shapes'" in model.attribute_note
    with pytest.raises(ValueError, match="measured on digits"):
        callbacks.attribute_edit(model, "slant (right − left)", 1.0)


# ---------------------------------------------------------------------------------------------- callbacks
def test_text_to_image_gives_images_of_the_model_size_reports_progress_and_keeps_the_saved_scheduler(models):
    model = models["t2i"]
    steps = []
    images, info = callbacks.text_to_image(
        model, PROMPT, "bold", 4, 3.0, "dpm++", 5, 3, progress=lambda fraction, desc: steps.append(fraction)
    )
    assert sizes(images) == [(SIZE, SIZE)] * 3
    assert steps == [0.25, 0.5, 0.75, 1.0]
    assert "3 images" in info and "seeds 5–7" in info and "4 DPMSolverMultistepScheduler steps" in info
    assert type(model.pipeline.scheduler) is DDIMScheduler  # the sampler was for this request only
    # Image i is seed + i, as `latentzoo generate`: the second image of seeds 5.. is the first of seeds 6..
    again, _ = callbacks.text_to_image(model, PROMPT, "bold", 4, 3.0, "dpm++", 6, 1)
    assert np.array_equal(np.asarray(images[1]), np.asarray(again[0]))


def test_few_step_model_samples_with_consistency_samplers_and_refuses_the_others(models):
    model = models["t2i-lcm"]
    images, info = callbacks.text_to_image(model, PROMPT, "", 2, 4.0, "tcd", 0, 2)
    assert sizes(images) == [(SIZE, SIZE)] * 2 and "TCDScheduler" in info
    with pytest.raises(ValueError, match=r"choose one of \['lcm', 'tcd'\]"):
        callbacks.text_to_image(model, PROMPT, "", 2, 4.0, "dpm++", 0, 1)
    with pytest.raises(ValueError, match="negative_prompt"):
        callbacks.text_to_image(model, PROMPT, "blurry", 2, 4.0, "saved", 0, 1)
    assert type(model.pipeline.scheduler) is LCMScheduler


@pytest.mark.parametrize(
    "name, class_label, settings, count",
    [
        ("ddpm", "1", {"guidance_scale": 2.0, "num_inference_steps": 3, "sampler": "ddim"}, 3),
        ("ddpm-uncond", None, {"num_inference_steps": 2, "sampler": "euler"}, 2),
        ("gan", 2, {"truncation": 1.0}, 2),
        ("ae", 7, {}, 2),
        ("vae", None, {}, 4),
    ],
)
def test_class_samples_of_each_family_have_the_model_size(models, name, class_label, settings, count):
    images, info = callbacks.class_samples(models[name], class_label, 0, count, **settings)
    assert sizes(images) == [(SIZE, SIZE)] * count and f"{count} images" in info


@pytest.mark.parametrize("name, class_label", [("gan", 1), ("ae", 3), ("vae", None)])
def test_interpolation_is_one_strip_of_num_steps_images(models, name, class_label):
    strip = callbacks.interpolation(models[name], 0, 1, 5, "slerp", class_label)
    assert strip.size == (5 * SIZE, SIZE)
    # Its ends are the two seeds' samples.
    first, _ = callbacks.class_samples(models[name], class_label, 0, 1)
    assert np.array_equal(np.asarray(strip)[:, :SIZE], np.asarray(first[0]))


def test_a_click_on_the_manifold_decodes_the_latent_drawn_there(models):
    model = models["vae2d"]
    picture = callbacks.manifold(model)
    grid = callbacks.MANIFOLD_GRID
    assert picture.size == (grid * SIZE, grid * SIZE)
    # The centre of the cell in row 2, column 9:
    row, column = 2, 9
    z1, z2 = callbacks.manifold_click((column + 0.5) * SIZE, (row + 0.5) * SIZE, *picture.size)
    assert z1 > 0 > -z2  # right of centre: z_1 > 0; above it: z_2 > 0
    point = np.asarray(callbacks.decode_point(model, z1, z2), dtype=int)
    cell = np.asarray(picture, dtype=int)[row * SIZE : (row + 1) * SIZE, column * SIZE : (column + 1) * SIZE]
    assert (
        point.shape == cell.shape and np.abs(point - cell).max() <= 2
    )  # z rounded to 3 decimals for the sliders
    assert callbacks.manifold_click(0, picture.size[1], *picture.size) == (-1.645, -1.645)  # the 5% quantiles


def test_attribute_slider_moves_a_sample_along_the_measured_direction(models):
    model = models["ae"]
    name = "stroke weight (bold − thin)"
    sample, edited = callbacks.attribute_edit(model, name, 2.0, seed=3, class_label=4)
    assert sample.size == edited.size == (SIZE, SIZE)
    # The sample is the prior's draw for class 4 and seed 3; the edit decodes its latent + 2 · direction.
    pipeline = model.pipeline
    latent = pipeline(
        class_labels=[4], generator=torch.Generator().manual_seed(3), output_type="latent"
    ).images
    expected = pipeline.decode(torch.cat([latent, latent + 2.0 * model.attribute_vectors[name]])).images
    assert [image.tobytes() for image in expected] == [sample.tobytes(), edited.tobytes()]


def test_gan_attribute_slider_moves_a_sample_along_the_direction_found_from_its_own_samples(
    models, model_dirs, monkeypatch
):
    # The tiny random GAN's samples all measure bold, so it has no directions, and says why.
    assert not models["gan"].attribute_vectors
    assert "No sample of the 1000 was measured 'thin'" in models["gan"].attribute_note
    # With a stubbed measurement that spreads every batch over all classes, loading finds both directions.
    import latentzoo.pipelines.gan

    def spread(images):
        return {
            "weight": torch.linspace(1.5, 3.0, len(images)),
            "slant": torch.linspace(-0.5, 0.5, len(images)),
        }

    monkeypatch.setattr(latentzoo.pipelines.gan, "measure_attribute_values", spread)
    (model,) = load_models([model_dirs["gan"]])
    assert list(model.attribute_vectors) == ["stroke weight (bold − thin)", "slant (right − left)"]
    name = "slant (right − left)"
    vector = model.attribute_vectors[name]
    assert vector.shape == (model.pipeline.latent_dim,) and vector.norm() > 0
    sample, edited = callbacks.attribute_edit(model, name, -2.0, seed=3, class_label="2", truncation=1.0)
    assert sample.size == edited.size == (SIZE, SIZE)
    # The sample is the GAN's (truncated) draw for class 2 and seed 3; the edit decodes z − 2 · direction, class 2.
    pipeline = model.pipeline
    z = pipeline(
        class_labels=[2], truncation=1.0, generator=torch.Generator().manual_seed(3), output_type="latent"
    ).images
    expected = pipeline.decode(torch.cat([z, z - 2.0 * vector]), class_labels=[2, 2]).images
    assert [image.tobytes() for image in expected] == [sample.tobytes(), edited.tobytes()]
    # The GAN tab wires it: a strength slider over -2..+2 and its endpoint.
    demo = build_demo(models=[model])
    assert "attribute_gan" in {function.api_name for function in demo.fns.values()}
    sliders = [b for b in demo.blocks.values() if isinstance(b, gr.Slider) and b.label == "Strength"]
    assert [(slider.minimum, slider.maximum) for slider in sliders] == [(-2, 2)]


def test_forward_process_noises_the_image_under_both_schedules_and_plots_alpha_bar():
    digit = PIL.Image.fromarray(np.tile(np.arange(0, 256, 16, dtype=np.uint8), (12, 1)))  # 16x12 grey ramp
    linear, cosine, figure, info = callbacks.forward_process(digit, 500, seed=1)
    assert linear.size == cosine.size == digit.size and linear.mode == cosine.mode == "L"
    schedulers = callbacks.noise_schedulers()
    expected = {name: float(s.alphas_cumprod[500]) for name, s in schedulers.items()}
    assert (
        f"linear ᾱ_t = {expected['linear']:.3f}" in info and f"cosine ᾱ_t = {expected['cosine']:.3f}" in info
    )
    assert expected["linear"] < expected["cosine"]  # the cosine schedule keeps more signal mid-way
    assert [line.get_xdata()[0] for line in figure.axes[0].lines[-1:]] == [500]  # t marked
    # At t = 0 both keep the image (sqrt(ᾱ_0) ≈ 1); an RGB upload stays RGB.
    start, _, _, _ = callbacks.forward_process(digit, 0)
    assert np.abs(np.asarray(start, dtype=int) - np.asarray(digit, dtype=int)).max() <= 8
    rgb, _, _, _ = callbacks.forward_process(np.zeros((20, 30, 3), dtype=np.uint8), 10)
    assert rgb.mode == "RGB" and rgb.size == (30, 20)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda m: callbacks.text_to_image(m["t2i"], "  "), "Type a prompt"),
        (lambda m: callbacks.text_to_image(m["t2i"], PROMPT, seed=-1), "`seed` must be an int >= 0"),
        (lambda m: callbacks.text_to_image(m["t2i"], PROMPT, num_images=99), r"`number of images` must be"),
        (lambda m: callbacks.text_to_image(m["t2i"], PROMPT, num_inference_steps=5000), "at most 1000"),
        (lambda m: callbacks.text_to_image(m["t2i"], PROMPT, sampler="lcm"), "consistency-distilled"),
        (lambda m: callbacks.text_to_image(m["gan"], PROMPT), "gan is a GAN model"),
        (lambda m: callbacks.class_samples(m["gan"], 3), r"`class` must be an int in \[0, 2\]"),
        (lambda m: callbacks.class_samples(m["vae"], 3), "vae is unconditional"),
        (lambda m: callbacks.class_samples(m["gan"], 0, truncation=-1), "`truncation` must be"),
        (
            lambda m: callbacks.class_samples(m["gan"], 0, sampler="ddim"),
            "takes no steps, guidance or sampler",
        ),
        (lambda m: callbacks.interpolation(m["vae"], 0, 1, method="cubic"), "`method` must be one of"),
        (lambda m: callbacks.manifold(m["vae"]), "needs a 2-D latent space"),
        (lambda m: callbacks.decode_point(m["vae"], 0, 0), "4-D latent space"),
        (lambda m: callbacks.attribute_edit(m["vae"], "colour", 1.0), "Choose an attribute"),
        (
            lambda m: callbacks.attribute_edit(m["gan"], "slant (right − left)", 1.0, 0, 1),
            "No attribute directions",
        ),
        (
            lambda m: callbacks.attribute_edit(m["vae"], "slant (right − left)", 1.0, truncation=1.0),
            "Truncation applies to GANs",
        ),
        (lambda m: callbacks.forward_process(None, 10), "Upload an image"),
        (
            lambda m: callbacks.forward_process(np.zeros((4, 4), np.uint8), 1000),
            r"`t` must be an int in \[0, 999\]",
        ),
    ],
)
def test_bad_inputs_are_value_errors_naming_the_field_and_the_page_shows_them(models, call, message):
    with pytest.raises((ValueError, TypeError), match=message) as caught:
        call(models)
    # In the app, the same error is a message in the page (gr.Error), never a traceback.
    with pytest.raises(gr.Error) as shown:
        _ui(call)(models)
    assert shown.value.message == " ".join(str(caught.value).split())


# ---------------------------------------------------------------------------------------------- the app
def test_each_model_serves_one_request_at_a_time_and_the_others_run_meanwhile(server, models):
    demo, _ = server
    limits = {}
    for function in demo.fns.values():
        limits.setdefault(function.concurrency_id, set()).add(function.concurrency_limit)
    assert limits.pop("no-model") == {4}  # the forward process touches no model
    assert set(limits) == set(models) and all(limit == {1} for limit in limits.values())


def test_the_app_answers_gradio_client_on_localhost(server, tmp_path):
    _, url = server
    client = Client(url, verbose=False, download_files=str(tmp_path))
    endpoints = set(client.view_api(return_format="dict", print_info=False)["named_endpoints"])
    assert {
        "/text_to_image_t2i",
        "/text_to_image_t2i_lcm",
        "/sample_ddpm",
        "/sample_gan",
        "/interpolate_gan",
        "/sample_ae",
        "/attribute_vae",
        "/decode_point_vae2d",
        "/forward_process",
    } <= endpoints
    gallery, info = client.predict(PROMPT, "", 3, 3.0, "euler", 0, 2, api_name="/text_to_image_t2i")
    assert [PIL.Image.open(item["image"]).size for item in gallery] == [(SIZE, SIZE)] * 2
    assert "2 images" in info and "EulerDiscreteScheduler" in info
    strip = client.predict(2, 1.5, 0, 1, 4, "lerp", api_name="/interpolate_gan")
    gallery, _ = client.predict(
        2, "saved", 0, 3, api_name="/sample_ddpm_uncond"
    )  # steps, sampler, seed, count
    assert [PIL.Image.open(item["image"]).size for item in gallery] == [(SIZE, SIZE)] * 3
    assert PIL.Image.open(strip).size == (4 * SIZE, SIZE)
    digit = tmp_path / "digit.png"
    PIL.Image.new("L", (SIZE, SIZE), 255).save(digit)
    linear, cosine, _, info = client.predict(handle_file(str(digit)), 999, 0, api_name="/forward_process")
    assert PIL.Image.open(linear).size == PIL.Image.open(cosine).size == (SIZE, SIZE) and "t = 999" in info
    # A bad input is our message, not a traceback; the app keeps serving.
    with pytest.raises(AppError, match="Type a prompt") as refused:
        client.predict("", "", 3, 3.0, "saved", 0, 1, api_name="/text_to_image_t2i")
    assert "Traceback" not in str(refused.value)
    with pytest.raises(AppError, match="guidance-distilled"):
        client.predict(PROMPT, "blurry", 2, 3.0, "lcm", 0, 1, api_name="/text_to_image_t2i_lcm")
    with pytest.raises(AppError, match="not in the list of choices"):  # Gradio's own check of a dropdown
        client.predict(PROMPT, "", 2, 3.0, "euler", 0, 1, api_name="/text_to_image_t2i_lcm")
    assert PIL.Image.open(client.predict(0.5, -0.5, api_name="/decode_point_vae2d")).size == (SIZE, SIZE)


def chromium_path() -> str:
    """The Chromium the browser test drives: $LATENTZOO_CHROMIUM, else Debian's `chromium` on the PATH."""
    path = (
        os.environ.get("LATENTZOO_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    )
    if path is None:
        pytest.fail(
            "The demo's browser test needs Chromium: `apt-get install chromium` (Debian; .ci/run does it), or set "
            "LATENTZOO_CHROMIUM to a Chromium binary."
        )
    return path


def generate_in_browser(url: str, prompt: str, screenshot: Path, tab: int = 0) -> tuple[list[int], str]:
    """Open the demo in headless Chromium, type `prompt` in the text-to-image tab `tab`, click Generate, wait for
    the gallery's first image; save a screenshot of the page. Returns that image's natural [width, height] and the
    generation-time line."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium_path(), headless=True, args=["--no-sandbox"]
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            page.goto(url, wait_until="domcontentloaded")
            page.locator(f"#model-{tab}-prompt textarea").fill(prompt)
            page.locator(f"#model-{tab}-generate").click()
            first = f"#model-{tab}-gallery img"
            page.wait_for_function(
                f"() => {{ const i = document.querySelector('{first}'); return i && i.complete && i.naturalWidth > 0; }}",
                timeout=60_000,
            )
            size = page.locator(first).first.evaluate("image => [image.naturalWidth, image.naturalHeight]")
            info = page.locator(f"#model-{tab}-info textarea").input_value()
            page.screenshot(path=str(screenshot))
        finally:
            browser.close()
    return size, info


def test_a_real_browser_types_a_prompt_clicks_generate_and_sees_the_images(server, tmp_path):
    _, url = server
    screenshot = tmp_path / "demo.png"
    size, info = generate_in_browser(url, PROMPT, screenshot)
    assert size == [SIZE, SIZE]
    assert info.startswith("4 images in") and "seeds 0–3" in info
    assert PIL.Image.open(screenshot).size == (1280, 860)


# ---------------------------------------------------------------------------------------------- the command
def one_error_line(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err and len(err.strip().splitlines()) == 1
    return err.strip()


def test_demo_without_a_folder_says_how_to_make_one(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = one_error_line(capsys, ["demo"])
    assert "outputs/text2img-mnist" in line and "latentzoo quickstart" in line


def test_demo_without_gradio_says_how_to_install_it(capsys, model_dirs, monkeypatch):
    monkeypatch.setitem(sys.modules, "gradio", None)  # `import gradio` raises ImportError
    assert 'pip install "latentzoo[demo]"' in one_error_line(capsys, ["demo", str(model_dirs["gan"])])


def test_demo_on_a_missing_folder_is_one_line(capsys, tmp_path):
    assert "does not exist" in one_error_line(capsys, ["demo", str(tmp_path / "nothing")])


def test_demo_launches_the_app_of_the_given_folders_on_the_given_port(model_dirs, monkeypatch, tmp_path):
    import latentzoo.demo

    launched = {}
    monkeypatch.setattr(
        latentzoo.demo,
        "launch_demo",
        lambda demo, port, share: launched.update(demo=demo, port=port, share=share),
    )
    # The default folder, relative to the working directory.
    (tmp_path / "outputs").mkdir()
    shutil.copytree(model_dirs["gan"], tmp_path / "outputs" / "text2img-mnist")
    monkeypatch.chdir(tmp_path)
    main(["demo", "--port", "7999"])
    assert isinstance(launched["demo"], gr.Blocks) and launched["port"] == 7999 and launched["share"] is False
    assert "Class-conditional GAN · text2img-mnist" in str(launched["demo"].config)


if __name__ == "__main__":
    # README's screenshot: the browser test's code path on a real model.
    #   python tests/test_demo.py /work/runs/quickstart benchmarks/results/demo.png
    model_dir, output = sys.argv[1:3]
    demo = build_demo([model_dir])
    _, url, _ = launch_demo(
        demo, port=free_port(), prevent_thread_lock=True, quiet=True, server_name="127.0.0.1"
    )
    try:
        print(generate_in_browser(url, "a bold seven slanted to the right", Path(output)))
    finally:
        demo.close()


def test_a_few_step_pixel_model_samples_at_its_distilled_scale_without_a_guidance_slider(tmp_path):
    pixel_pipeline(2, LCMScheduler(), distilled_guidance_scale=3.0).save_pretrained(tmp_path / "ddpm-lcm")
    (model,) = load_models([tmp_path / "ddpm-lcm"])
    assert model.guidance_is_distilled and not model.guidance_is_embedded
    images, summary = callbacks.class_samples(model, 1, seed=0, num_images=2)
    assert len(images) == 2 and "guidance scale 3" in summary
    with pytest.raises(ValueError, match="distilled at guidance scale 3.0"):
        callbacks.class_samples(model, 1, seed=0, num_images=1, guidance_scale=5.0)
    with gr.Blocks():
        options = _samples_block(model, "ddpm-lcm", gr.State(1))
    assert not any(isinstance(widget, gr.Slider) and widget.label == "Guidance scale" for widget in options)
    assert any(isinstance(widget, gr.Slider) and widget.label == "Steps" for widget in options)
