"""Blockwise attention: the same attention as SDPA (values and gradients), inside diffusers models.

The Trainer's `attention=blockwise` setting is tested in test_trainer.py."""

import copy

import pytest
import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel, UNet2DModel
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

from latentzoo.models.attention import (
    BlockwiseAttnProcessor,
    _attention,
    blockwise_attention,
    use_blockwise_attention,
)


def qkv(batch=2, heads=3, query_length=10, key_length=10, head_dim=4, dtype=torch.float32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    shapes = [(batch, heads, query_length, head_dim)] + [(batch, heads, key_length, head_dim)] * 2
    return [torch.randn(shape, generator=generator, dtype=dtype).requires_grad_() for shape in shapes]


def attention_and_grads(function, inputs, grad_output):
    output = function(*inputs)
    return (output, *torch.autograd.grad(output, inputs, grad_output))


@pytest.mark.parametrize("key_length", [10, 7])  # self-attention; cross-attention to a shorter context
@pytest.mark.parametrize(
    "heads_per_block", [1, 4, 6]
)  # 6 = batch x heads: one block; 4: an uneven last block
def test_blockwise_attention_equals_sdpa_in_values_and_gradients(key_length, heads_per_block):
    inputs = qkv(key_length=key_length)
    grad_output = torch.randn(2, 3, 10, 4, generator=torch.Generator().manual_seed(1))
    block_bytes = heads_per_block * 10 * key_length * 4  # fp32 scores of `heads_per_block` heads
    ours = attention_and_grads(
        lambda q, k, v: blockwise_attention(q, k, v, block_bytes=block_bytes), inputs, grad_output
    )
    sdpa = attention_and_grads(F.scaled_dot_product_attention, inputs, grad_output)
    for name, a, b in zip(["output", "grad query", "grad key", "grad value"], ours, sdpa, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5, msg=name)


def test_blockwise_attention_passes_gradcheck_and_the_custom_op_checks():
    inputs = [
        t.detach().double().requires_grad_() for t in qkv(batch=1, heads=2, query_length=5, key_length=3)
    ]
    assert torch.autograd.gradcheck(
        lambda q, k, v: blockwise_attention(q, k, v, scale=0.3, block_bytes=1), inputs
    )
    # Schema, fake (meta) kernel, autograd registration, AOT dispatch: what torch.compile relies on.
    flat = [t.detach().flatten(0, 1).requires_grad_() for t in inputs]
    results = torch.library.opcheck(_attention, (*flat, 0.3, 1))
    assert set(results.values()) == {"SUCCESS"}, results


def test_bf16_blockwise_attention_stays_close_to_fp32_and_in_bf16():
    inputs = qkv(batch=4, heads=4, query_length=64, key_length=64, head_dim=8)
    grad_output = torch.randn(4, 4, 64, 8, generator=torch.Generator().manual_seed(1))
    reference = attention_and_grads(F.scaled_dot_product_attention, inputs, grad_output)
    low = [t.detach().bfloat16().requires_grad_() for t in inputs]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = attention_and_grads(blockwise_attention, low, grad_output.bfloat16())
    for name, a, b in zip(["output", "grad query", "grad key", "grad value"], ours, reference, strict=True):
        assert a.dtype == torch.bfloat16, name
        relative_error = ((a.float() - b).norm() / b.norm()).item()
        assert relative_error < 0.03, (name, relative_error)  # bf16 keeps 8 bits: ~0.4% per rounding


def test_bad_inputs_name_the_argument():
    query, key, value = qkv()
    with pytest.raises(ValueError, match=r"`query`, `key` and `value` must be \(batch, heads"):
        blockwise_attention(query[0], key[0], value[0])
    with pytest.raises(ValueError, match=r"same batch and heads"):
        blockwise_attention(query, key[:, :2], value[:, :2])
    with pytest.raises(TypeError, match=r"share one dtype"):
        blockwise_attention(query, key.double(), value)
    with pytest.raises(ValueError, match=r"`block_bytes` must be positive"):
        blockwise_attention(query, key, value, block_bytes=0)


def tiny_unets():
    """A pixel UNet with self-attention at 4x4 and a text UNet with cross-attention, both tiny."""
    torch.manual_seed(0)
    tiny = {"sample_size": 8, "block_out_channels": (8, 16), "layers_per_block": 1, "norm_num_groups": 4}
    pixel = UNet2DModel(
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=4,
        **tiny,
    )
    text = UNet2DConditionModel(
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        attention_head_dim=2,
        cross_attention_dim=8,
        **tiny,
    )
    return pixel, text


def test_processor_in_a_unet_gives_the_same_output_and_weight_gradients():
    pixel, text = tiny_unets()
    generator = torch.Generator().manual_seed(0)
    sample = torch.randn(2, 4, 8, 8, generator=generator)
    context = torch.randn(2, 5, 8, generator=generator)
    for model, call in (
        (pixel, lambda m: m(sample[:, :3], 10).sample),
        (text, lambda m: m(sample, 10, encoder_hidden_states=context).sample),
        # A text mask takes the SDPA path inside the blockwise processor: still the same result.
        (
            text,
            lambda m: (
                m(sample, 10, context, encoder_attention_mask=torch.tensor([[1, 1, 1, 0, 0]] * 2)).sample
            ),
        ),
    ):
        blockwise = copy.deepcopy(model)
        layers = sum(isinstance(m, Attention) for m in model.modules())
        assert use_blockwise_attention(blockwise) == layers > 0
        assert all(
            isinstance(m.processor, BlockwiseAttnProcessor)
            for m in blockwise.modules()
            if isinstance(m, Attention)
        )
        outputs, grads = [], []
        for m in (model, blockwise):
            m.zero_grad()
            output = call(m)
            output.square().mean().backward()
            outputs.append(output)
            grads.append([p.grad for p in m.parameters()])
        torch.testing.assert_close(outputs[1], outputs[0], atol=1e-5, rtol=1e-4)
        for ours, theirs in zip(*grads, strict=True):
            torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-4)


def test_layers_with_other_processors_are_left_alone():
    pixel, _ = tiny_unets()
    first, *rest = [m for m in pixel.modules() if isinstance(m, Attention)]
    custom = AttnProcessor2_0.__new__(type("CustomProcessor", (AttnProcessor2_0,), {}))
    first.set_processor(custom)
    assert use_blockwise_attention(pixel) == len(rest)
    assert first.processor is custom
