"""LatentTextToImagePipeline with tiny components, compared with diffusers' StableDiffusionPipeline, with
itself after save/load, and batched against one by one."""

import json
import logging

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    DDPMScheduler,
    DiffusionPipeline,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel

from latentzoo.data.tokenizer import load_clip_tokenizer
from latentzoo.models.conditioning import PromptProjection
from latentzoo.pipelines import LatentTextToImagePipeline

PROMPTS = ["a bold seven, slanted right", "a thin three"]
STEPS = 3
IMAGE_SIZE = 16  # UNet sample_size 8 x VAE factor 2


def make_components(prompt_channels: int = 0) -> dict:
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
        sample_size=IMAGE_SIZE,
    )
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4 + prompt_channels,
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
            vocab_size=49408,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=77,
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=49407,
        )
    ).eval()
    # steps_offset=1: the value StableDiffusionPipeline's __init__ would otherwise force into the config
    scheduler = DPMSolverMultistepScheduler(
        beta_schedule="squaredcos_cap_v2",
        num_train_timesteps=1000,
        algorithm_type="dpmsolver++",
        steps_offset=1,
    )
    components = {
        "vae": vae.eval(),
        "text_encoder": text_encoder,
        "tokenizer": load_clip_tokenizer(),
        "unet": unet.eval(),
        "scheduler": scheduler,
    }
    if prompt_channels:
        components["prompt_projection"] = PromptProjection(
            text_embed_dim=16, out_channels=prompt_channels
        ).eval()
    return components


@pytest.fixture(scope="module")
def components():
    return make_components()


@pytest.fixture
def pipe(components):
    pipe = LatentTextToImagePipeline(**components)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def generate(pipe, prompt=PROMPTS, seed=0, **kwargs):
    kwargs = {"num_inference_steps": STEPS, "guidance_scale": 4.0, "output_type": "np", **kwargs}
    if "generator" not in kwargs:
        kwargs["generator"] = torch.Generator().manual_seed(seed)
    return pipe(prompt, **kwargs).images


def max_abs_diff(a, b) -> float:
    return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).max())


# --- equal to diffusers' StableDiffusionPipeline -------------------------------------------------------------


@pytest.mark.parametrize(
    "scheduler_class", [DPMSolverMultistepScheduler, EulerDiscreteScheduler, DDIMScheduler, DDPMScheduler]
)
@pytest.mark.parametrize(
    "guidance_scale, negative_prompt",
    [(1.0, None), (4.0, None), (4.0, ["a blurry digit", "a four"])],
    ids=["no-guidance", "guidance", "guidance-negative-prompt"],
)
def test_images_equal_stable_diffusion_pipeline(components, scheduler_class, guidance_scale, negative_prompt):
    # clip_sample=False (DDPM/DDIM): as above, what StableDiffusionPipeline would force; right for latents
    scheduler = scheduler_class.from_config(components["scheduler"].config, clip_sample=False)
    ours = LatentTextToImagePipeline(**{**components, "scheduler": scheduler})
    reference = StableDiffusionPipeline(
        **{**components, "scheduler": scheduler_class.from_config(scheduler.config)},
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    for p in (ours, reference):
        p.set_progress_bar_config(disable=True)
    assert dict(reference.scheduler.config) == dict(ours.scheduler.config)
    kwargs = {
        "guidance_scale": guidance_scale,
        "negative_prompt": negative_prompt,
        "num_images_per_prompt": 2,
    }
    expected = generate(reference, **kwargs)
    actual = generate(ours, **kwargs)
    assert actual.shape == expected.shape == (4, IMAGE_SIZE, IMAGE_SIZE, 3)
    assert max_abs_diff(actual, expected) <= 1e-4


def test_prompt_embeds_give_the_same_images_as_prompt(pipe):
    device = torch.device("cpu")
    prompt_embeds, negative_prompt_embeds, _, _ = pipe.encode_prompt(
        PROMPTS, device, 1, True, "a blurry digit"
    )
    expected = generate(pipe, negative_prompt="a blurry digit")
    actual = generate(
        pipe, prompt=None, prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_prompt_embeds
    )
    assert max_abs_diff(actual, expected) <= 1e-6


# --- determinism, batching, save/load ------------------------------------------------------------------------


def test_same_seed_same_images_other_seed_different(pipe):
    first, again, other = generate(pipe, seed=0), generate(pipe, seed=0), generate(pipe, seed=1)
    assert max_abs_diff(first, again) == 0
    assert max_abs_diff(first, other) > 1e-3


@pytest.mark.parametrize("guidance_scale", [1.0, 4.0])
def test_prompt_list_with_generator_per_prompt_matches_one_by_one(pipe, guidance_scale):
    generators = [torch.Generator().manual_seed(seed) for seed in (3, 7)]
    batched = generate(pipe, generator=generators, guidance_scale=guidance_scale)
    one_by_one = [
        generate(pipe, prompt=prompt, seed=seed, guidance_scale=guidance_scale)[0]
        for prompt, seed in zip(PROMPTS, (3, 7), strict=True)
    ]
    assert max_abs_diff(batched, np.stack(one_by_one)) <= 1e-4


def test_num_images_per_prompt_gives_consecutive_images_per_prompt(pipe):
    seeds = (3, 4, 7, 8)
    generators = [torch.Generator().manual_seed(seed) for seed in seeds]
    batched = generate(pipe, generator=generators, num_images_per_prompt=2)
    assert batched.shape == (4, IMAGE_SIZE, IMAGE_SIZE, 3)
    one_by_one = [generate(pipe, prompt=PROMPTS[i // 2], seed=seed)[0] for i, seed in enumerate(seeds)]
    assert max_abs_diff(batched, np.stack(one_by_one)) <= 1e-4


def test_save_pretrained_then_from_pretrained_gives_identical_images(pipe, tmp_path):
    pipe.save_pretrained(tmp_path)
    model_index = json.loads((tmp_path / "model_index.json").read_text())
    # saved as the diffusers pipeline that computes the same (tests/test_diffusers_loading.py: diffusers alone)
    assert model_index["_class_name"] == "StableDiffusionPipeline"
    assert model_index["unet"] == ["diffusers", "UNet2DConditionModel"]
    assert model_index["tokenizer"] == ["transformers", "CLIPTokenizer"]
    assert "prompt_projection" not in model_index  # optional and absent

    loaded = LatentTextToImagePipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert loaded.prompt_projection is None
    assert isinstance(loaded.scheduler, DPMSolverMultistepScheduler)
    assert max_abs_diff(generate(loaded), generate(pipe)) == 0


def test_generic_diffusion_pipeline_loader_gives_stable_diffusion_with_identical_images(pipe, tmp_path):
    """Without `prompt_projection` the folder is saved as a StableDiffusionPipeline, which computes the same."""
    pipe.save_pretrained(tmp_path)
    loaded = DiffusionPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert type(loaded) is StableDiffusionPipeline
    assert max_abs_diff(generate(loaded), generate(pipe)) <= 1e-5


# --- guidance --------------------------------------------------------------------------------------------------


def unet_batch_sizes(pipe, **kwargs) -> list[int]:
    sizes = []
    handle = pipe.unet.register_forward_pre_hook(lambda module, args: sizes.append(args[0].shape[0]))
    try:
        generate(pipe, **kwargs)
    finally:
        handle.remove()
    return sizes


@pytest.mark.parametrize("guidance_scale", [0.0, 1.0])
def test_guidance_scale_at_most_one_runs_unet_on_conditional_batch_only(pipe, guidance_scale):
    assert unet_batch_sizes(pipe, guidance_scale=guidance_scale) == [len(PROMPTS)] * STEPS


def test_guidance_runs_unet_on_unconditional_and_conditional_batch(pipe):
    assert unet_batch_sizes(pipe, guidance_scale=1.5) == [2 * len(PROMPTS)] * STEPS


def test_guidance_without_negative_prompt_guides_away_from_empty_prompt(pipe):
    assert max_abs_diff(generate(pipe), generate(pipe, negative_prompt="")) == 0
    assert max_abs_diff(generate(pipe), generate(pipe, negative_prompt="a four")) > 1e-4


# --- errors ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"height": 15}, ValueError, "`height` must be a positive multiple of .* factor 2"),
        ({"width": 17}, ValueError, "`width` must be a positive multiple of .* factor 2"),
        ({"prompt": None}, ValueError, "exactly one of `prompt` .* and `prompt_embeds`.*neither"),
        ({"prompt_embeds": torch.zeros(2, 77, 16)}, ValueError, "exactly one of `prompt`.*both"),
        ({"prompt": 7}, TypeError, "`prompt` must be a str or a list of str"),
        (
            {"generator": [torch.Generator()]},
            ValueError,
            "`generator` is a list of 1 generators.*generates 2",
        ),
        ({"generator": "seed"}, TypeError, "`generator` must be a `torch.Generator`"),
        ({"num_inference_steps": 0}, ValueError, "`num_inference_steps` must be a positive int"),
        ({"num_inference_steps": -3}, ValueError, "`num_inference_steps` must be a positive int"),
        ({"num_inference_steps": 2.5}, TypeError, "`num_inference_steps` must be a positive int"),
        ({"negative_prompt": ["a", "b", "c"]}, ValueError, "`negative_prompt` has 3 entries .* batch size 2"),
        ({"num_images_per_prompt": 0}, ValueError, "`num_images_per_prompt` must be a positive int"),
        ({"output_type": "tensor"}, ValueError, "`output_type` must be one of"),
        (
            {"latents": torch.zeros(1, 4, 8, 8)},
            ValueError,
            r"`latents` has shape \(1, 4, 8, 8\).*\(2, 4, 8, 8\)",
        ),
        ({"callback_on_step_end_tensor_inputs": ["noise"]}, ValueError, "may only name"),
    ],
)
def test_invalid_arguments_raise_clear_errors(pipe, kwargs, error, match):
    kwargs = {"prompt": PROMPTS, **kwargs}
    with pytest.raises(error, match=match):
        pipe(**{"num_inference_steps": STEPS, **kwargs})


def test_generator_list_of_wrong_length_counts_images_per_prompt(pipe):
    generators = [torch.Generator().manual_seed(i) for i in range(2)]
    with pytest.raises(ValueError, match="generates 4 images"):
        pipe(PROMPTS, num_images_per_prompt=2, generator=generators, num_inference_steps=STEPS)


def test_prompt_over_77_tokens_is_truncated_with_warning(pipe, caplog):
    long_prompt = "a bold seven " * 40 + "slanted right"  # ~122 tokens
    truncated = load_clip_tokenizer().decode(
        load_clip_tokenizer()(long_prompt, truncation=True).input_ids, skip_special_tokens=True
    )
    with caplog.at_level(logging.WARNING):
        images = generate(pipe, prompt=long_prompt, guidance_scale=1.0)
    assert "truncated" in caplog.text and "slanted right" in caplog.text
    # the model saw the first 75 tokens (+ start and end), exactly as if the prompt had been cut by hand
    assert max_abs_diff(images, generate(pipe, prompt=truncated, guidance_scale=1.0)) == 0


# --- outputs and callbacks ---------------------------------------------------------------------------------------


def test_output_types_have_documented_shapes_and_ranges(pipe):
    pil = generate(pipe, output_type="pil")
    assert len(pil) == 2 and all(isinstance(im, PIL.Image.Image) for im in pil)
    assert pil[0].size == (IMAGE_SIZE, IMAGE_SIZE)

    np_images = generate(pipe, output_type="np")
    assert np_images.shape == (2, IMAGE_SIZE, IMAGE_SIZE, 3) and np_images.dtype == np.float32
    assert np_images.min() >= 0 and np_images.max() <= 1

    pt_images = generate(pipe, output_type="pt")
    assert isinstance(pt_images, torch.Tensor) and pt_images.shape == (2, 3, IMAGE_SIZE, IMAGE_SIZE)
    assert max_abs_diff(pt_images.permute(0, 2, 3, 1).numpy(), np_images) == 0

    latents = generate(pipe, output_type="latent")
    assert isinstance(latents, torch.Tensor) and latents.shape == (2, 4, 8, 8)
    assert np.asarray(pil[0]).tolist() == np.asarray(pipe.numpy_to_pil(np_images)[0]).tolist()

    (images,) = pipe(PROMPTS, num_inference_steps=STEPS, output_type="np", return_dict=False)
    assert images.shape == (2, IMAGE_SIZE, IMAGE_SIZE, 3)


def test_default_size_comes_from_unet_sample_size_and_can_be_overridden(pipe):
    assert generate(pipe, output_type="pt").shape[-2:] == (16, 16)
    assert generate(pipe, output_type="pt", height=24, width=32).shape[-2:] == (24, 32)


def test_latent_scaling_uses_scaling_and_shift_factor(components):
    vae = AutoencoderKL.from_config({**components["vae"].config, "scaling_factor": 0.5, "shift_factor": 0.25})
    vae.load_state_dict(components["vae"].state_dict())
    pipe = LatentTextToImagePipeline(**{**components, "vae": vae})
    pipe.set_progress_bar_config(disable=True)
    latents = generate(pipe, output_type="latent")
    with torch.no_grad():
        expected = vae.decode(latents / 0.5 + 0.25).sample
    actual = generate(pipe, output_type="pt")
    assert max_abs_diff(actual, (expected / 2 + 0.5).clamp(0, 1)) <= 1e-4


def test_callback_on_step_end_runs_every_step_and_can_replace_latents(pipe):
    calls = []

    def record(pipe, step, timestep, callback_kwargs):
        calls.append((step, int(timestep), tuple(callback_kwargs["prompt_embeds"].shape)))
        return {}

    generate(
        pipe, callback_on_step_end=record, callback_on_step_end_tensor_inputs=["latents", "prompt_embeds"]
    )
    assert [step for step, _, _ in calls] == list(range(STEPS))
    assert [t for _, t, _ in calls] == pipe.scheduler.timesteps.tolist()
    assert all(shape == (4, 77, 16) for _, _, shape in calls)  # negative and conditional embeddings

    def zero_latents(pipe, step, timestep, callback_kwargs):
        return {"latents": torch.zeros_like(callback_kwargs["latents"])}

    latents = generate(pipe, output_type="latent", callback_on_step_end=zero_latents)
    assert torch.count_nonzero(latents) == 0


# --- schedulers --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "scheduler_class", [DDPMScheduler, DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler]
)
def test_any_scheduler_swaps_in_through_from_config(pipe, scheduler_class):
    pipe.scheduler = scheduler_class.from_config(pipe.scheduler.config)
    eta = 1.0 if scheduler_class is DDIMScheduler else 0.0  # DDIM with eta > 0 draws noise at each step
    images = generate(pipe, eta=eta)
    assert np.isfinite(images).all()
    assert max_abs_diff(images, generate(pipe, eta=eta)) == 0  # deterministic given the generator


# --- conditioning by concatenation -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def concat_components():
    return make_components(prompt_channels=2)


@pytest.fixture
def concat_pipe(concat_components):
    pipe = LatentTextToImagePipeline(**concat_components)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_concatenation_feeds_projected_pooled_prompt_as_extra_channels(concat_pipe):
    inputs = []
    handle = concat_pipe.unet.register_forward_pre_hook(lambda module, args: inputs.append(args[0]))
    try:
        generate(concat_pipe)
    finally:
        handle.remove()
    assert [x.shape for x in inputs] == [torch.Size([4, 6, 8, 8])] * STEPS

    tokenizer, text_encoder = concat_pipe.tokenizer, concat_pipe.text_encoder
    ids = tokenizer([""] * 2 + PROMPTS, padding="max_length", truncation=True, return_tensors="pt").input_ids
    pooled = text_encoder(ids).pooler_output  # (4, 16): unconditional first
    expected = concat_pipe.prompt_projection.linear(pooled)[:, :, None, None].expand(-1, -1, 8, 8)
    assert max_abs_diff(inputs[0][:, 4:], expected.detach()) <= 1e-6


def test_concatenation_output_depends_on_projection(concat_pipe):
    images = generate(concat_pipe)
    projection = concat_pipe.prompt_projection
    zero = PromptProjection(**projection.config).eval()
    torch.nn.init.zeros_(zero.linear.weight)
    torch.nn.init.zeros_(zero.linear.bias)
    concat_pipe.prompt_projection = zero
    try:
        assert max_abs_diff(generate(concat_pipe), images) > 1e-4
    finally:
        concat_pipe.prompt_projection = projection


def test_concatenation_guidance_at_most_one_is_conditional_only(concat_pipe):
    assert unet_batch_sizes(concat_pipe, guidance_scale=1.0) == [len(PROMPTS)] * STEPS


def test_concatenation_pipeline_round_trips_with_its_projection(concat_pipe, tmp_path):
    concat_pipe.save_pretrained(tmp_path)
    model_index = json.loads((tmp_path / "model_index.json").read_text())
    assert model_index["_class_name"] == "LatentTextToImagePipeline"  # no diffusers pipeline concatenates
    assert model_index["prompt_projection"] == ["latentzoo.models.conditioning", "PromptProjection"]
    assert (tmp_path / "prompt_projection" / "config.json").is_file()
    # `DiffusionPipeline.from_pretrained` looks `_class_name` up in diffusers only: our class loads it
    with pytest.raises((AttributeError, ValueError), match="LatentTextToImagePipeline"):
        DiffusionPipeline.from_pretrained(tmp_path)

    loaded = LatentTextToImagePipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert isinstance(loaded.prompt_projection, PromptProjection)
    assert max_abs_diff(generate(loaded), generate(concat_pipe)) == 0


def test_concatenation_with_prompt_embeds_needs_pooled_embeds(concat_pipe):
    embeds, _, pooled, _ = concat_pipe.encode_prompt(PROMPTS, torch.device("cpu"), 1, False)
    with pytest.raises(ValueError, match="`pooled_prompt_embeds`"):
        concat_pipe(prompt_embeds=embeds, num_inference_steps=STEPS)
    images = generate(
        concat_pipe, prompt=None, prompt_embeds=embeds, pooled_prompt_embeds=pooled, guidance_scale=1
    )
    assert max_abs_diff(images, generate(concat_pipe, guidance_scale=1)) <= 1e-6


def test_unet_channels_must_match_latents_plus_projection(components):
    pipe = LatentTextToImagePipeline(**components, prompt_projection=PromptProjection(16, 2))
    with pytest.raises(ValueError, match="in_channels"):
        pipe(PROMPTS, num_inference_steps=STEPS)


def test_a_compiled_denoiser_samples_what_the_eager_one_samples():
    from diffusers import DPMSolverMultistepScheduler
    from tiny_pipelines import text_to_image_pipeline

    from latentzoo.pipelines.utils import compile_denoiser

    def images(pipe, bf16=False):
        generators = [torch.Generator().manual_seed(i) for i in range(3)]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return pipe(
                ["a 3", "a bold 7", "a 0"], num_inference_steps=3, generator=generators, output_type="np"
            )

    build = lambda: text_to_image_pipeline(DPMSolverMultistepScheduler(), default_guidance_scale=3.0)  # noqa: E731
    eager = images(build()).images
    pipe = build()
    compile_denoiser(pipe)
    # fp32: the fused kernels only reorder float sums
    assert np.abs(images(pipe).images - eager).max() <= 1e-4
    # bf16 weights, sampled under autocast: what bf16 autocast samples, up to the rounding of 8-bit mantissas
    pipe = build()
    eager_bf16 = images(pipe, bf16=True).images
    compile_denoiser(pipe, torch.bfloat16)
    assert pipe.unet.dtype == torch.bfloat16
    compiled_bf16 = images(pipe, bf16=True).images
    assert np.isfinite(compiled_bf16).all() and np.abs(compiled_bf16 - eager_bf16).max() <= 0.05
