"""Interpolation and attribute arithmetic in latent space (one implementation for every model)."""

import pytest
import torch

from latentzoo.models import apply_attribute, attribute_strip, attribute_vector, interpolate, lerp, slerp

# A batch of vectors (AE / VAE), a single vector, and diffusion-style (B, C, h, w) latents.
SHAPES = [(3, 16), (16,), (2, 4, 8, 8)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("function", [lerp, slerp])
def test_interpolation_returns_the_endpoints_exactly_at_0_and_1(function, shape):
    generator = torch.Generator().manual_seed(0)
    start, end = torch.randn(shape, generator=generator), torch.randn(shape, generator=generator)
    assert torch.equal(function(start, end, 0.0), start)
    assert torch.equal(function(start, end, 1.0), end)
    assert function(start, end, 0.5).shape == start.shape


def test_slerp_keeps_the_norm_where_lerp_shrinks_it():
    start, end = torch.tensor([[3.0, 0.0]]), torch.tensor([[0.0, 3.0]])
    torch.testing.assert_close(slerp(start, end, 0.5).norm(), torch.tensor(3.0))
    torch.testing.assert_close(slerp(start, end, 0.5), torch.tensor([[3 / 2**0.5, 3 / 2**0.5]]))
    assert lerp(start, end, 0.5).norm() < 2.2


def test_slerp_is_computed_per_batch_element():
    start = torch.tensor([[1.0, 0.0], [2.0, 0.0]])
    end = torch.tensor([[0.0, 1.0], [0.0, -2.0]])
    torch.testing.assert_close(slerp(start, end, 0.5)[0], slerp(start[0], end[0], 0.5))
    torch.testing.assert_close(slerp(start, end, 0.5)[1], slerp(start[1:], end[1:], 0.5)[0])


def test_slerp_of_parallel_latents_falls_back_to_lerp():
    start = torch.tensor([[1.0, 2.0]])
    result = slerp(start, 2 * start, 0.5)
    assert torch.isfinite(result).all()
    torch.testing.assert_close(result, lerp(start, 2 * start, 0.5))


@pytest.mark.parametrize("method", ["lerp", "slerp"])
def test_interpolate_lays_out_one_strip_per_pair(method):
    generator = torch.Generator().manual_seed(0)
    start, end = torch.randn(3, 5, generator=generator), torch.randn(3, 5, generator=generator)
    strips = interpolate(start, end, num_steps=4, method=method)
    assert strips.shape == (12, 5)
    strips = strips.view(3, 4, 5)
    assert torch.equal(strips[:, 0], start) and torch.equal(strips[:, -1], end)
    function = lerp if method == "lerp" else slerp
    torch.testing.assert_close(strips[:, 1], function(start, end, 1 / 3))
    assert interpolate(start[0], end[0], num_steps=4, method=method).shape == (4, 5)


def test_attribute_vector_is_the_difference_of_the_means_and_applies_with_a_strength():
    with_attribute = torch.tensor([[2.0, 1.0], [4.0, 3.0]])
    without = torch.tensor([[0.0, 1.0], [0.0, 1.0], [0.0, 4.0]])
    vector = attribute_vector(with_attribute, without)
    torch.testing.assert_close(vector, torch.tensor([3.0, 0.0]))
    latents = torch.zeros(2, 2)
    torch.testing.assert_close(apply_attribute(latents, vector, 0.5), torch.tensor([[1.5, 0.0]] * 2))
    strips = attribute_strip(latents, vector, [-1, 0, 1])
    assert strips.shape == (6, 2)
    torch.testing.assert_close(strips[:3, 0], torch.tensor([-3.0, 0.0, 3.0]))


def test_bad_arguments_raise_clear_errors():
    a = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="same shape"):
        lerp(a, torch.zeros(2, 4), 0.5)
    with pytest.raises(ValueError, match="`method` must be one of"):
        interpolate(a, a, method="cubic")
    with pytest.raises(ValueError, match="`num_steps` must be an int >= 2"):
        interpolate(a, a, num_steps=1)
    with pytest.raises(ValueError, match="same shape"):
        attribute_vector(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="shape of one latent"):
        apply_attribute(a, torch.zeros(4))
