"""The Gradio app: one tab per saved model (by its family) and the forward process, wired to `callbacks`."""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Sequence
from pathlib import Path

import gradio as gr
import PIL.Image

from latentzoo.evaluation.images import make_image_grid
from latentzoo.evaluation.sampling import sampling_settings

from . import callbacks
from .models import GAN_ATTRIBUTE_SAMPLES, DemoModel, load_models

logger = logging.getLogger(__name__)

# Small digits drawn as blocks of pixels, not blurred, when the page scales them up; "fill" images scale up to
# their box (Gradio shows an image smaller than its box at its own size).
CSS = (
    ".pixelated img, .pixelated canvas { image-rendering: pixelated; } "
    ".fill img { width: 100%; height: 100%; object-fit: contain; }"
)
# The manifold is shown at its own size (a click's pixel is then the image's pixel), upscaled to at least this.
MANIFOLD_SIDE = 384
# System fonts: the page loads nothing from outside the machine it runs on.
THEME = gr.themes.Default(
    font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]
)
# Events that touch no model run side by side; each model serves one event at a time (its concurrency id).
LIGHT_CONCURRENCY = 4


def _ui(function):
    """`function` with the ValueErrors and TypeErrors our checks raise shown as a message in the page (`gr.Error`)
    instead of Gradio's generic "Error"."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except (ValueError, TypeError) as error:
            raise gr.Error(" ".join(str(error).split()), print_exception=False) from None

    return wrapper


def _listen(trigger, function, inputs, outputs, model: DemoModel | None, api_name: str | None = None) -> None:
    """On `trigger` (e.g. `button.click`), run `function` with its errors shown in the page (`_ui`). Each model
    serves one event at a time, in the queue's order; events of no model run `LIGHT_CONCURRENCY` side by side. An
    `api_name` documents the event in the app's API (`/api_name` for `gradio_client`); without one it stays
    callable but undocumented (a second trigger of the same computation)."""
    concurrency = (
        {"concurrency_id": model.name, "concurrency_limit": 1}
        if model is not None
        else {"concurrency_id": "no-model", "concurrency_limit": LIGHT_CONCURRENCY}
    )
    visibility = {"api_name": api_name} if api_name else {"api_visibility": "undocumented"}
    trigger(_ui(function), inputs, outputs, **concurrency, **visibility)


def _slug(name: str) -> str:
    """A model's name as part of an API endpoint name: `/text_to_image_text2img_mnist`."""
    return re.sub(r"\W+", "_", name).strip("_").lower() or "model"


def _class_input(model: DemoModel):
    """The class dropdown of a class-conditional model; a fixed None for an unconditional one."""
    if model.num_classes is None:
        return gr.State(None)
    return gr.Dropdown(list(range(model.num_classes)), value=0, label="Class")


def _sampler_input(model: DemoModel) -> gr.Dropdown:
    saved = f"saved ({type(model.pipeline.scheduler).__name__})"
    return gr.Dropdown(
        [(saved, callbacks.SAVED_SAMPLER), *((name, name) for name in model.samplers)],
        value=callbacks.SAVED_SAMPLER,
        label="Sampler",
    )


def _seed_input(label: str = "Seed", value: int = 0) -> gr.Number:
    return gr.Number(value=value, precision=0, minimum=0, label=label)


def _count_input() -> gr.Slider:
    return gr.Slider(1, callbacks.MAX_IMAGES, value=4, step=1, label="Number of images")


def _max_steps(model: DemoModel) -> int:
    return int(model.pipeline.scheduler.config.get("num_train_timesteps", 1000))


def _gallery(key: str) -> gr.Gallery:
    return gr.Gallery(
        label="Images",
        columns=4,
        format="png",
        object_fit="contain",
        elem_id=f"{key}-gallery",
        elem_classes=["pixelated"],
    )


def _image(label: str, value=None, height: int | None = 200, **kwargs) -> gr.Image:
    """An output image, scaled up to `height` pixels (None: shown at its own size)."""
    return gr.Image(
        value=value,
        label=label,
        format="png",
        interactive=False,
        height=height,
        elem_classes=["pixelated"] if height is None else ["pixelated", "fill"],
        **kwargs,
    )


def _text_to_image_tab(model: DemoModel, key: str) -> None:
    settings = sampling_settings(model.pipeline)
    with gr.Row():
        with gr.Column(scale=2):
            prompt = gr.Textbox(label="Prompt", value=callbacks.EXAMPLE_PROMPT, elem_id=f"{key}-prompt")
            # A guidance-distilled (few-step consistency) model takes the scale as an input: no negative prompt.
            negative = gr.Textbox(
                label="Negative prompt",
                placeholder="what to guide away from (optional)",
                visible=not model.guidance_is_embedded,
            )
            with gr.Row():
                steps = gr.Slider(
                    1, _max_steps(model), value=settings["num_inference_steps"], step=1, label="Steps"
                )
                guidance = gr.Slider(
                    0, 15, value=settings["guidance_scale"], step=0.1, label="Guidance scale"
                )
            with gr.Row():
                sampler = _sampler_input(model)
                seed = _seed_input()
                count = _count_input()
            button = gr.Button("Generate", variant="primary", elem_id=f"{key}-generate")
        with gr.Column(scale=3):
            gallery = _gallery(key)
            info = gr.Textbox(label="Generation time", interactive=False, elem_id=f"{key}-info")

    # `progress=gr.Progress()` is how Gradio is told to report progress (it passes each request its own).
    def text_to_image(
        prompt,
        negative_prompt,
        num_inference_steps,
        guidance_scale,
        sampler,
        seed,
        num_images,
        progress=gr.Progress(),  # noqa: B008
    ):
        return callbacks.text_to_image(
            model,
            prompt,
            negative_prompt,
            num_inference_steps,
            guidance_scale,
            sampler,
            seed,
            num_images,
            progress,
        )

    inputs = [prompt, negative, steps, guidance, sampler, seed, count]
    outputs = [gallery, info]
    _listen(button.click, text_to_image, inputs, outputs, model, f"text_to_image_{_slug(model.name)}")
    _listen(prompt.submit, text_to_image, inputs, outputs, model)


def _samples_block(model: DemoModel, key: str, class_label) -> list:
    """Samples of a pixel-diffusion model, a GAN or an autoencoder's prior: class, family settings, seed, count.
    Returns the family's setting widgets (a GAN's: its truncation slider)."""
    with gr.Row():
        with gr.Column(scale=2):
            if model.family == "pixel diffusion":
                settings = sampling_settings(model.pipeline)
                steps = gr.Slider(
                    1, _max_steps(model), value=settings["num_inference_steps"], step=1, label="Steps"
                )
                # A few-step model distilled at one scale takes that scale only: no slider.
                guidance = (
                    gr.Slider(0, 15, value=settings["guidance_scale"], step=0.1, label="Guidance scale")
                    if model.num_classes and not model.guidance_is_distilled
                    else gr.State(None)
                )
                options = [guidance, steps, _sampler_input(model)]
            elif model.family == "GAN":
                options = [gr.Slider(0, 3, value=0, step=0.1, label="Truncation (0: off)")]
            else:
                options = []
            with gr.Row():
                seed = _seed_input()
                count = _count_input()
            button = gr.Button("Sample", variant="primary", elem_id=f"{key}-sample")
        with gr.Column(scale=3):
            gallery = _gallery(key)
            info = gr.Textbox(label="Generation time", interactive=False)

    if model.family == "pixel diffusion":

        def sample(
            class_label,
            guidance_scale,
            num_inference_steps,
            sampler,
            seed,
            num_images,
            progress=gr.Progress(),  # noqa: B008
        ):
            return callbacks.class_samples(
                model,
                class_label,
                seed,
                num_images,
                guidance_scale=guidance_scale,
                num_inference_steps=num_inference_steps,
                sampler=sampler,
                progress=progress,
            )
    elif model.family == "GAN":

        def sample(class_label, truncation, seed, num_images):
            return callbacks.class_samples(model, class_label, seed, num_images, truncation=truncation)
    else:

        def sample(class_label, seed, num_images):
            return callbacks.class_samples(model, class_label, seed, num_images)

    inputs = [class_label, *options, seed, count]
    _listen(button.click, sample, inputs, [gallery, info], model, f"sample_{_slug(model.name)}")
    return options


def _interpolation_block(model: DemoModel, class_label, truncation) -> None:
    """A strip from one seed's latent to another's (slerp or lerp)."""
    with gr.Row():
        start = _seed_input("First seed", 0)
        end = _seed_input("Second seed", 1)
        steps = gr.Slider(2, 16, value=8, step=1, label="Steps")
        method = gr.Radio(["slerp", "lerp"], value="slerp", label="Path")
    button = gr.Button("Interpolate")
    strip = _image("Interpolation", height=160)

    def interpolate(class_label, truncation, seed_start, seed_end, num_steps, method):
        return callbacks.interpolation(
            model, seed_start, seed_end, num_steps, method, class_label, truncation
        )

    inputs = [class_label, truncation, start, end, steps, method]
    _listen(button.click, interpolate, inputs, strip, model, f"interpolate_{_slug(model.name)}")


def _manifold_block(model: DemoModel) -> None:
    """A 2-D latent space: its decoded manifold, and the point picked by a click or two sliders, decoded."""
    picture = callbacks.manifold(model)
    scale = max(1, -(-MANIFOLD_SIDE // max(picture.size)))
    picture = picture.resize((picture.width * scale, picture.height * scale), PIL.Image.NEAREST)
    width, height = picture.size
    with gr.Row():
        grid = _image(
            "Decoded manifold (click a point)", picture, height=None, elem_id=f"{_slug(model.name)}-manifold"
        )
        with gr.Column():
            z1 = gr.Slider(-3, 3, value=0, step=0.01, label="z₁")
            z2 = gr.Slider(-3, 3, value=0, step=0.01, label="z₂")
            point = _image("Decoded point", callbacks.decode_point(model, 0.0, 0.0), height=240)

    def pick(event: gr.SelectData):
        x, y = event.index
        return callbacks.manifold_click(x, y, width, height)

    def decode(z1, z2):
        return callbacks.decode_point(model, z1, z2)

    _listen(grid.select, pick, None, [z1, z2], model)
    _listen(z1.change, decode, [z1, z2], point, model, f"decode_point_{_slug(model.name)}")
    _listen(z2.change, decode, [z1, z2], point, model)


def _attribute_block(model: DemoModel, class_label, truncation) -> None:
    if not model.attribute_vectors:
        gr.Markdown(model.attribute_note or "No attribute directions for this model.")
        return
    names = list(model.attribute_vectors)
    if model.family == "GAN":
        gr.Markdown(
            f"Directions found from {GAN_ATTRIBUTE_SAMPLES:,} of the GAN's own samples (DCGAN's vector arithmetic): "
            "mean z of the samples measured bold (leaning right) minus that of the samples measured thin (leaning "
            "left); the class stays the same."
        )
        limit = 2  # where benchmarks/gan_attributes.py measured them
    else:
        gr.Markdown(
            "Directions measured on the model's digits: mean latent of the third of the validation digits with the "
            "most of an attribute minus that of the third with the least."
        )
        limit = 3
    with gr.Row():
        attribute = gr.Dropdown(names, value=names[0], label="Attribute")
        strength = gr.Slider(-limit, limit, value=1.5, step=0.1, label="Strength")
        seed = _seed_input()
    with gr.Row():
        sample = _image("Sample")
        edited = _image("Sample + strength · direction")

    def edit(attribute, strength, seed, class_label, truncation):
        return callbacks.attribute_edit(model, attribute, strength, seed, class_label, truncation)

    inputs, outputs = [attribute, strength, seed, class_label, truncation], [sample, edited]
    _listen(strength.release, edit, inputs, outputs, model, f"attribute_{_slug(model.name)}")
    for widget in (attribute, seed):
        _listen(widget.change, edit, inputs, outputs, model)


def _model_tab(model: DemoModel, key: str) -> None:
    if model.family == "text-to-image":
        _text_to_image_tab(model, key)
        return
    class_label = _class_input(model)
    if model.family == "autoencoder":
        gr.Markdown("### Samples from the prior")
    options = _samples_block(model, key, class_label)
    if model.family == "GAN":
        gr.Markdown("### Interpolation between two seeds")
        _interpolation_block(model, class_label, truncation=options[0])
        gr.Markdown("### Attributes")
        _attribute_block(model, class_label, truncation=options[0])
    if model.family == "autoencoder":
        if model.pipeline.latent_dim == 2:
            gr.Markdown("### The 2-D latent space")
            _manifold_block(model)
        gr.Markdown("### Interpolation between two samples")
        _interpolation_block(model, class_label, truncation=gr.State(None))
        gr.Markdown("### Attributes")
        _attribute_block(model, class_label, truncation=gr.State(None))


def example_image() -> PIL.Image.Image | None:
    """The first validation digit of mnist (the forward process's starting image), None if mnist is unavailable."""
    from latentzoo.data import load_dataset

    try:
        pixel_values = load_dataset("mnist", split="validation").pixel_values[:1]
    except (OSError, ValueError) as error:
        logger.warning("No example digit for the forward process (%s); upload an image there.", error)
        return None
    return make_image_grid((pixel_values + 1) / 2)


def _forward_process_tab() -> None:
    gr.Markdown(
        "x_t = sqrt(ᾱ_t) x_0 + sqrt(1 − ᾱ_t) ε: the same image and the same noise ε under DDPM's linear schedule and "
        "the cosine schedule (arXiv:2102.09672)."
    )
    x0 = example_image()
    initial = callbacks.forward_process(x0, 250) if x0 is not None else (None,) * 4
    with gr.Row():
        with gr.Column(scale=1):
            image = gr.Image(
                value=x0,
                type="pil",
                image_mode=None,
                label="x_0 (upload your own)",
                height=240,
                elem_classes=["pixelated", "fill"],
            )
            t = gr.Slider(0, 999, value=250, step=1, label="t")
            seed = _seed_input("Noise seed")
        with gr.Column(scale=2):
            with gr.Row():
                linear = _image("x_t, linear schedule", initial[0], height=240)
                cosine = _image("x_t, cosine schedule", initial[1], height=240)
            info = gr.Textbox(value=initial[3], label="ᾱ_t", interactive=False)
    plot = gr.Plot(value=initial[2], label="ᾱ_t against t")

    inputs, outputs = [image, t, seed], [linear, cosine, plot, info]
    _listen(t.change, callbacks.forward_process, inputs, outputs, None, "forward_process")
    for widget in (image, seed):
        _listen(widget.change, callbacks.forward_process, inputs, outputs, None)


def build_demo(
    model_dirs: Sequence[str | Path] | None = None, models: Sequence[DemoModel] | None = None
) -> gr.Blocks:
    r"""
    The demo app: a tab for each saved model, by its family, and the forward process.

    Args:
        model_dirs (`list` of paths, *optional*):
            Folders of saved pipelines, each loaded once (`load_models`).
        models (`list[DemoModel]`, *optional*):
            Already loaded models instead of `model_dirs`.

    Returns:
        `gr.Blocks`, with its queue set (one event per model at a time, in order); start it with `launch_demo`.

    Example:
        >>> demo = build_demo(["outputs/text2img-mnist"])
        >>> launch_demo(demo, port=7860)
    """
    if models is None:
        models = load_models(model_dirs or [])
    with gr.Blocks(title="latentzoo demo", analytics_enabled=False) as demo:
        gr.Markdown(
            "# latentzoo\n"
            + "\n".join(f"- **{model.label}**: `{model.path}`" for model in models)
            + "\n\nEvery model runs on this machine's CPU; requests to one model wait their turn."
        )
        with gr.Tabs():
            for index, model in enumerate(models):
                with gr.Tab(model.label, id=f"model-{index}"):
                    _model_tab(model, f"model-{index}")
            with gr.Tab("Forward process", id="forward-process"):
                _forward_process_tab()
    return demo.queue(default_concurrency_limit=1)


def launch_demo(demo: gr.Blocks, port: int | None = None, share: bool = False, **kwargs):
    """Start `demo` on localhost (`port`: Gradio's default 7860, or the next free one) with the page's theme and
    style; `share=True` also opens a public link through Gradio's servers. Blocks until stopped unless
    `prevent_thread_lock=True` is passed."""
    return demo.launch(server_port=port, share=share, theme=THEME, css=CSS, **kwargs)
