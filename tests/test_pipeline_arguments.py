"""Every numeric argument and every class label of every pipeline is checked before any work: a bad value raises
an error that names the argument (and, for labels, the valid range), and no model runs, no noise is drawn.

Tiny CPU pipelines: text-to-image, pixel DDPM, GAN, autoencoder with a class-conditional MDN prior.
"""

import functools
import math
import re

import numpy as np
import pytest
import torch
from tiny_pipelines import autoencoder_pipeline, gan_pipeline, pixel_pipeline, text_to_image_pipeline

from latentzoo.models import Discriminator, Generator, MixtureDensityNetwork
from latentzoo.models.checks import check_class_labels, check_number, cycle_class_labels
from latentzoo.pipelines.utils import check_num_inference_steps, check_positive_int

NAN, INF = math.nan, math.inf


# name → (builder, keyword arguments of a good call, its number of classes)
PIPELINES = {
    "text2img": (text_to_image_pipeline, {"prompt": "a bold seven", "num_inference_steps": 2}, None),
    "pixel": (pixel_pipeline, {"class_labels": [0, 1], "num_inference_steps": 2}, 2),
    "gan": (gan_pipeline, {"class_labels": [0, 2]}, 3),
    "autoencoder": (autoencoder_pipeline, {"class_labels": [3, 9]}, 10),
}


@functools.cache
def build(name):
    """(pipeline, good call arguments, num_classes); each pipeline is built once for the module."""
    builder, kwargs, num_classes = PIPELINES[name]
    return builder(), kwargs, num_classes


def expect_refusal(pipe, error, argument, **kwargs):
    """`pipe(**kwargs)` raises `error` naming `argument`, before any module runs or any noise is drawn."""
    calls = []
    hooks = [
        module.register_forward_pre_hook(lambda *_: calls.append(1))
        for module in pipe.components.values()
        if isinstance(module, torch.nn.Module)
    ]
    generator = torch.Generator().manual_seed(0)
    state = generator.get_state()
    try:
        with pytest.raises(error, match=re.escape(f"`{argument}`")) as info:
            pipe(generator=generator, **kwargs)
    finally:
        for hook in hooks:
            hook.remove()
    assert not calls, "a module ran before the argument was checked"
    assert torch.equal(generator.get_state(), state), "noise was drawn before the argument was checked"
    return str(info.value)


def output(pipe, **kwargs):
    return pipe(generator=torch.Generator().manual_seed(0), output_type="pt", **kwargs).images


# ------------------------------------------------------------------------------------------ numbers

BAD_GUIDANCE = [(NAN, ValueError), (INF, ValueError), (-INF, ValueError), (-1.0, ValueError)]
BAD_GUIDANCE += [(-1e-3, ValueError), ("3", TypeError), (True, TypeError)]  # None: the saved default


@pytest.mark.parametrize("name", ["text2img", "pixel"])
@pytest.mark.parametrize("value, error", BAD_GUIDANCE)
def test_bad_guidance_scale_is_refused(name, value, error):
    pipe, kwargs, _ = build(name)
    message = expect_refusal(pipe, error, "guidance_scale", **kwargs, guidance_scale=value)
    assert ">= 0" in message and "guidance_scale=" in message  # the range and a fix


@pytest.mark.parametrize("name", ["text2img", "pixel"])
@pytest.mark.parametrize(
    "value, error",
    [(NAN, ValueError), (INF, ValueError), (-0.5, ValueError), (1.5, ValueError), ("0", TypeError)],
)
def test_bad_eta_is_refused(name, value, error):
    pipe, kwargs, _ = build(name)
    message = expect_refusal(pipe, error, "eta", **kwargs, eta=value)
    assert "[0, 1]" in message


@pytest.mark.parametrize("name", ["text2img", "pixel"])
@pytest.mark.parametrize(
    "value, error",
    [
        (0, ValueError),
        (-2, ValueError),
        (1001, ValueError),
        (2.5, TypeError),
        (NAN, TypeError),
        (True, TypeError),
    ],
)
def test_bad_num_inference_steps_is_refused(name, value, error):
    pipe, kwargs, _ = build(name)
    expect_refusal(pipe, error, "num_inference_steps", **{**kwargs, "num_inference_steps": value})


@pytest.mark.parametrize(
    "name, argument",
    [
        ("text2img", "num_images_per_prompt"),
        ("pixel", "batch_size"),
        ("gan", "batch_size"),
        ("autoencoder", "batch_size"),
    ],
)
@pytest.mark.parametrize(
    "value, error", [(0, ValueError), (-3, ValueError), (1.5, TypeError), (NAN, TypeError), (True, TypeError)]
)
def test_bad_image_counts_are_refused(name, argument, value, error):
    pipe, kwargs, _ = build(name)
    message = expect_refusal(pipe, error, argument, **kwargs, **{argument: value})
    assert "positive int" in message


@pytest.mark.parametrize("argument", ["height", "width"])
@pytest.mark.parametrize(
    "value, error", [(NAN, TypeError), (INF, TypeError), (0, ValueError), (-8, ValueError)]
)
def test_bad_image_size_is_refused(argument, value, error):
    pipe, kwargs, _ = build("text2img")
    expect_refusal(pipe, error, argument, **kwargs, **{argument: value})


@pytest.mark.parametrize(
    "value, error",
    [(NAN, ValueError), (INF, ValueError), (-INF, ValueError), (0, ValueError), (-1.0, ValueError)]
    + [("1", TypeError), (True, TypeError)],
)
def test_bad_truncation_is_refused(value, error):
    pipe, kwargs, _ = build("gan")
    message = expect_refusal(pipe, error, "truncation", **kwargs, truncation=value)
    assert "positive" in message and "truncation=1.0" in message


@pytest.mark.parametrize("name", ["gan", "autoencoder"])
@pytest.mark.parametrize(
    "value, error", [(1, ValueError), (0, ValueError), (2.5, TypeError), (NAN, TypeError), (True, TypeError)]
)
def test_bad_num_steps_of_interpolation_is_refused(name, value, error, monkeypatch):
    pipe, _, _ = build(name)
    if name == "autoencoder":  # images, which the pipeline would encode first
        start, end, kwargs = torch.zeros(1, 1, 8, 8), torch.ones(1, 1, 8, 8), {}
    else:
        start, end, kwargs = torch.randn(1, 8), torch.randn(1, 8), {"class_labels": 0}
    calls = []
    for method in ("encode", "decode"):
        if hasattr(pipe, method):
            monkeypatch.setattr(pipe, method, lambda *args, **_: calls.append(args))
    with pytest.raises(error, match="`num_steps` must be an int >= 2"):
        pipe.interpolate(start, end, num_steps=value, **kwargs)
    assert not calls, "images were encoded or decoded before `num_steps` was checked"


@pytest.mark.parametrize("name", ["gan", "autoencoder"])
@pytest.mark.parametrize("strength", [NAN, INF, -INF, [0.0, NAN], [1.0, -INF], "1", []])
def test_bad_strength_is_refused(name, strength):
    pipe, _, _ = build(name)
    latents, vector = torch.randn(2, pipe.latent_dim), torch.randn(pipe.latent_dim)
    kwargs = {"class_labels": 0} if name == "gan" else {}
    error = TypeError if strength == "1" else ValueError
    with pytest.raises(error, match="`strength`"):
        pipe.apply_attribute(latents, vector, strength=strength, **kwargs)


# ------------------------------------------------------------------------------------------ class labels

BAD_LABELS = [
    (0.5, TypeError),
    (1.0, TypeError),
    ("1", TypeError),
    ([1.0], TypeError),
    ([0, 0.5], TypeError),
    (True, TypeError),
    ([True, False], TypeError),
    (torch.tensor([0.5, 1.0]), TypeError),
    (np.array([0.5]), TypeError),
    ([99], ValueError),
    ([-1], ValueError),
    (torch.tensor([[0, 1]]), ValueError),
    ([], ValueError),
]


@pytest.mark.parametrize("name", ["pixel", "gan", "autoencoder"])
@pytest.mark.parametrize("labels, error", BAD_LABELS)
def test_bad_class_labels_are_refused(name, labels, error):
    pipe, kwargs, num_classes = build(name)
    message = expect_refusal(pipe, error, "class_labels", **{**kwargs, "class_labels": labels})
    assert f"[0, {num_classes - 1}]" in message  # the valid range


@pytest.mark.parametrize("name", ["pixel", "gan", "autoencoder"])
def test_class_labels_disagreeing_with_batch_size_are_refused(name):
    pipe, kwargs, _ = build(name)
    expect_refusal(pipe, ValueError, "class_labels", **kwargs, batch_size=3)


@pytest.mark.parametrize("labels, error", BAD_LABELS)
def test_models_refuse_the_same_labels(labels, error):
    """The models run the same check: a float label is an error, not class 0."""
    generator = Generator(latent_dim=8, sample_size=8, block_out_channels=(8, 4), num_classes=3).eval()
    discriminator = Discriminator(sample_size=8, block_out_channels=(4, 8), num_classes=3).eval()
    mdn = MixtureDensityNetwork(4, num_components=2, num_classes=3, hidden_dims=(8,)).eval()
    batch = max(len(labels), 1) if isinstance(labels, list | torch.Tensor | np.ndarray) else 1
    calls = [
        lambda: generator(torch.randn(batch, 8), labels),
        lambda: discriminator(torch.zeros(batch, 1, 8, 8), labels),
        lambda: mdn.sample(class_labels=labels),
        lambda: mdn(class_labels=labels),
    ]
    for call in calls:
        with pytest.raises(error, match="`class_labels`.*\\[0, 2\\]"):
            call()


@pytest.mark.parametrize("name", ["pixel", "gan", "autoencoder"])
@pytest.mark.parametrize(
    "labels",
    [
        torch.tensor([1, 0]),
        torch.tensor([1, 0], dtype=torch.int32),
        np.array([1, 0]),
        (1, 0),
        [np.int64(1), 0],
    ],
)
def test_integer_labels_of_any_kind_give_the_same_images(name, labels):
    pipe, kwargs, _ = build(name)
    kwargs = {**kwargs, "class_labels": labels}
    expected = output(pipe, **{**kwargs, "class_labels": [1, 0]})
    torch.testing.assert_close(output(pipe, **kwargs), expected)


@pytest.mark.parametrize("name", ["pixel", "gan", "autoencoder"])
def test_one_int_label_with_batch_size_labels_every_image(name):
    pipe, kwargs, _ = build(name)
    torch.testing.assert_close(
        output(pipe, **{**kwargs, "class_labels": 1}, batch_size=3),
        output(pipe, **{**kwargs, "class_labels": [1, 1, 1]}),
    )


def test_mdn_prior_no_longer_rounds_float_labels_to_a_class():
    """Before: `class_labels=[0.5]` sampled class 0 silently."""
    pipe, _, _ = build("autoencoder")
    with pytest.raises(TypeError, match="`class_labels`"):
        pipe(class_labels=[0.5])
    with pytest.raises(TypeError, match="`class_labels`"):
        pipe.prior.sample(class_labels=[0.5])


# ------------------------------------------------------------------------------------------ good values still work


@pytest.mark.parametrize("name", ["text2img", "pixel"])
def test_guidance_scale_zero_and_one_both_mean_the_conditional_model_alone(name):
    pipe, kwargs, _ = build(name)
    at_zero = output(pipe, **kwargs, guidance_scale=0)
    torch.testing.assert_close(at_zero, output(pipe, **kwargs, guidance_scale=1.0))
    torch.testing.assert_close(at_zero, output(pipe, **kwargs, guidance_scale=np.float32(0.5)))
    assert not torch.allclose(at_zero, output(pipe, **kwargs, guidance_scale=3))
    assert torch.isfinite(at_zero).all()


@pytest.mark.parametrize("name", ["text2img", "pixel"])
def test_eta_at_both_ends_of_its_range_works(name):
    pipe, kwargs, _ = build(name)
    deterministic = output(pipe, **kwargs, eta=0)
    stochastic = output(pipe, **kwargs, eta=1.0)
    assert torch.isfinite(deterministic).all() and torch.isfinite(stochastic).all()
    assert not torch.allclose(deterministic, stochastic)  # eta reaches DDIM


def test_small_and_large_truncations_work():
    pipe, kwargs, _ = build("gan")
    tight = pipe(**kwargs, truncation=1e-3, output_type="latent").images
    assert tight.abs().max() <= 1e-3
    loose = pipe(**kwargs, truncation=1e6, generator=torch.Generator().manual_seed(0), output_type="latent")
    plain = pipe(**kwargs, generator=torch.Generator().manual_seed(0), output_type="latent")
    torch.testing.assert_close(loose.images, plain.images)


def test_strength_accepts_numbers_of_any_kind():
    pipe, _, _ = build("autoencoder")
    latents, vector = torch.randn(2, 4), torch.randn(4)
    strip = pipe.apply_attribute(
        latents, vector, strength=[-1, 0.0, np.float64(2)], output_type="latent"
    ).images
    assert strip.shape == (6, 4)
    torch.testing.assert_close(strip[1], latents[0])
    single = pipe.apply_attribute(latents, vector, strength=torch.tensor(0.5), output_type="latent").images
    torch.testing.assert_close(single, latents + 0.5 * vector)


# ------------------------------------------------------------------------------------------ the shared checks


def test_check_number_ranges_types_and_messages():
    assert check_number(3, "x", low=0) == 3.0 and isinstance(check_number(3, "x"), float)
    assert check_number(np.int64(4), "n", low=1, integer=True) == 4
    assert check_number(torch.tensor(0.25), "t", low=0, high=1) == 0.25
    assert check_number(0, "x", low=0) == 0.0
    with pytest.raises(ValueError, match=r"`x` must be a positive number, got 0.0; pass e.g. `x=2.0`"):
        check_number(0, "x", low=0, low_inclusive=False, example=2.0)
    with pytest.raises(ValueError, match=r"`x` must be a number in \[0, 1\), got 1.0"):
        check_number(1, "x", low=0, high=1, high_inclusive=False)
    with pytest.raises(ValueError, match=r"`x` must be finite \(a number <= 5\), got -inf"):
        check_number(-INF, "x", high=5)
    with pytest.raises(TypeError, match=r"`n` must be an int >= 2, got float 2.0"):
        check_number(2.0, "n", low=2, integer=True)
    with pytest.raises(TypeError, match=r"`x` must be a number, got bool True"):
        check_number(True, "x")
    with pytest.raises(TypeError, match=r"`x` must be a number, got Tensor"):
        check_number(torch.ones(2), "x")
    with pytest.raises(ValueError, match="a hint"):
        check_number(-1, "x", low=0, hint="a hint")


def test_public_helpers_keep_their_names_and_messages():
    check_positive_int(2, "batch_size")
    with pytest.raises(ValueError, match="`batch_size` must be a positive int, got 0"):
        check_positive_int(0, "batch_size")
    check_num_inference_steps(1000, 1000)
    with pytest.raises(ValueError, match="exceeds the 1000 timesteps.*at most 1000"):
        check_num_inference_steps(1001, 1000)


def test_check_class_labels_returns_int64_labels():
    labels = check_class_labels(torch.tensor([2, 0], dtype=torch.int32), 3)
    assert labels.dtype == torch.long and labels.tolist() == [2, 0]
    assert check_class_labels(2, 3).tolist() == [2]
    assert check_class_labels(torch.tensor(2), 3, batch_size=2).tolist() == [2, 2]
    with pytest.raises(ValueError, match=r"`len\(latents\)`=3 disagrees with the 2 `class_labels`"):
        check_class_labels([0, 1], 3, batch_size=3, batch_name="len(latents)")
    with pytest.raises(ValueError, match=r"\[0, 2\].*\[0, 3\)\), got \[-1, 3\].*null class"):
        check_class_labels([3, -1, 0], 3, hint="null class")


def test_cycle_class_labels():
    assert cycle_class_labels(7, 3) == [0, 1, 2, 0, 1, 2, 0]
    assert cycle_class_labels(0, 3) == []
    with pytest.raises(ValueError, match="`num_classes`"):
        cycle_class_labels(4, 0)


# ------------------------------------------------------------------------------ latent tools and the MDN


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "0.5", True])
def test_latent_tools_refuse_numbers_that_are_not_finite(bad):
    from latentzoo.models import apply_attribute, lerp, slerp

    start, end = torch.zeros(2, 4), torch.ones(2, 4)
    for call, name in (
        (lambda: lerp(start, end, bad), "`t`"),
        (lambda: slerp(start, end, bad), "`t`"),
        (lambda: apply_attribute(start, end[0], bad), "`strength`"),
    ):
        with pytest.raises((TypeError, ValueError), match=name):
            call()


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -0.5])
def test_mdn_sample_refuses_a_bad_temperature(bad):
    from latentzoo.models import MixtureDensityNetwork

    mdn = MixtureDensityNetwork(
        output_dim=2, num_components=2, hidden_dims=(4,), num_classes=3, class_embed_dim=4
    )
    with pytest.raises(ValueError, match="`temperature`"):
        mdn.sample(class_labels=[0, 1], temperature=bad)
    assert mdn.sample(class_labels=[0, 1], temperature=0.0).shape == (2, 2)
