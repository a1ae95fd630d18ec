"""Blockwise attention: the attention of diffusers' `Attention` layers computed a block of heads at a time, for CPU
training.

The small UNets trained here attend over short sequences with narrow heads (`unet_small.json`: 256 tokens, head
size 8). There, attention is bound by memory traffic, not arithmetic: the score tensor of a whole batch (64 images
x 8 heads x 256 x 256) does not fit in cache, and PyTorch's CPU flash-attention kernel spends its time on tiny
matrix blocks. `blockwise_attention` takes as many heads at once as keep their scores within `block_bytes`, runs
them through `baddbmm` → `softmax` → `bmm`, and recomputes the probabilities in the backward pass instead of
storing them. Under bf16 on a CPU that is faster than `F.scaled_dot_product_attention` (on par in fp32): see
benchmarks/results/train_throughput.md.

The arithmetic is that of diffusers' classic `AttnProcessor` (`baddbmm` → `softmax` → `bmm`, scores in the input
dtype, the softmax accumulated in fp32), so under bf16 autocast the scores are rounded to bf16 where the flash
kernel keeps them in fp32. For long sequences (a score row that alone outgrows the cache) and on GPUs, SDPA's
flash kernels remain the better choice.

    from latentzoo.models.attention import use_blockwise_attention
    use_blockwise_attention(unet)        # every Attention layer of the model; returns how many
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, AttnProcessor, AttnProcessor2_0
from torch import Tensor

__all__ = ["BlockwiseAttnProcessor", "blockwise_attention", "use_blockwise_attention"]

# Scores per block: the fastest of a sweep from 0.25 to 32 MiB (benchmarks/results/train_throughput.md, "Block
# size"); larger blocks lose the benefit as their scores spill out of cache.
DEFAULT_BLOCK_BYTES = 4 << 20


# One opaque operator each way (torch.library), so torch.compile traces around them instead of unrolling the loop
# over blocks, and autograd sees a single node.
@torch.library.custom_op("latentzoo::blockwise_attention", mutates_args=())
def _attention(query: Tensor, key: Tensor, value: Tensor, scale: float, heads_per_block: int) -> Tensor:
    """softmax(q kᵀ · scale) v over the flattened (batch x heads) dimension, `heads_per_block` at a time.

    (B·H, Lq, D), (B·H, Lk, D), (B·H, Lk, Dv) → (B·H, Lq, Dv); per block the scores are (heads_per_block, Lq, Lk).
    """
    output = query.new_empty(*query.shape[:-1], value.shape[-1])
    # The inputs' dtype decides, under autocast too: the backward recomputes the very same probabilities.
    with torch.autocast(query.device.type, enabled=False):
        for block in _blocks(query.shape[0], heads_per_block):
            probs = _probabilities(query[block], key[block], scale)
            torch.bmm(probs, value[block], out=output[block])
    return output


@torch.library.custom_op("latentzoo::blockwise_attention_backward", mutates_args=())
def _attention_backward(
    grad_output: Tensor, query: Tensor, key: Tensor, value: Tensor, scale: float, heads_per_block: int
) -> tuple[Tensor, Tensor, Tensor]:
    grad_output = grad_output.contiguous()
    grad_query, grad_key, grad_value = (torch.empty_like(t) for t in (query, key, value))
    with torch.autocast(query.device.type, enabled=False):
        for block in _blocks(query.shape[0], heads_per_block):
            probs = _probabilities(query[block], key[block], scale)
            torch.bmm(probs.transpose(1, 2), grad_output[block], out=grad_value[block])
            grad_probs = torch.bmm(grad_output[block], value[block].transpose(1, 2))
            # dS = P ⊙ (dP − rowsum(dP ⊙ P)), exactly as autograd differentiates `softmax` (fp32 accumulation).
            grad_scores = torch._softmax_backward_data(grad_probs, probs, -1, probs.dtype)
            torch.bmm(grad_scores, key[block], out=grad_query[block]).mul_(scale)
            torch.bmm(grad_scores.transpose(1, 2), query[block], out=grad_key[block]).mul_(scale)
    return grad_query, grad_key, grad_value


@_attention.register_fake
def _(query, key, value, scale, heads_per_block):
    return query.new_empty(*query.shape[:-1], value.shape[-1])


@_attention_backward.register_fake
def _(grad_output, query, key, value, scale, heads_per_block):
    return torch.empty_like(query), torch.empty_like(key), torch.empty_like(value)


def _save_inputs(ctx, inputs, output):
    query, key, value, ctx.scale, ctx.heads_per_block = inputs
    ctx.save_for_backward(query, key, value)


def _differentiate(ctx, grad_output):
    grads = _attention_backward(grad_output, *ctx.saved_tensors, ctx.scale, ctx.heads_per_block)
    return *grads, None, None


_attention.register_autograd(_differentiate, setup_context=_save_inputs)


def _blocks(total: int, size: int) -> list[slice]:
    return [slice(start, start + size) for start in range(0, total, size)]


def _probabilities(query: Tensor, key: Tensor, scale: float) -> Tensor:
    scores = torch.baddbmm(
        torch.empty(1, 1, 1, dtype=query.dtype, device=query.device),
        query,
        key.transpose(1, 2),
        beta=0,
        alpha=scale,
    )
    return scores.softmax(dim=-1)


def blockwise_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    scale: float | None = None,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
) -> Tensor:
    """Attention without mask or dropout, as `F.scaled_dot_product_attention(query, key, value, scale=scale)`.

    Args:
        query (`Tensor`): (batch, heads, query_length, head_dim).
        key, value (`Tensor`): (batch, heads, key_length, head_dim), the same batch, heads and dtype.
        scale (`float`, *optional*): Multiplies the scores; defaults to `head_dim ** -0.5`.
        block_bytes (`int`): Bytes of scores computed at once; at least one head's (query_length x key_length).
    """
    if query.ndim != 4 or key.shape[:2] != query.shape[:2] or value.shape[:-1] != key.shape[:-1]:
        raise ValueError(
            "`query`, `key` and `value` must be (batch, heads, length, head_dim) with the same batch and heads, "
            f"key and value of one length; got {tuple(query.shape)}, {tuple(key.shape)}, {tuple(value.shape)}."
        )
    if not query.dtype == key.dtype == value.dtype:
        raise TypeError(
            f"`query`, `key` and `value` must share one dtype, got {query.dtype}, {key.dtype}, {value.dtype}."
        )
    if block_bytes < 1:
        raise ValueError(f"`block_bytes` must be positive, got {block_bytes}.")
    batch, heads, query_length, _ = query.shape
    scores_per_head = query_length * key.shape[2] * query.element_size()
    heads_per_block = max(1, block_bytes // scores_per_head)
    scale = query.shape[-1] ** -0.5 if scale is None else scale
    output = _attention(
        *(t.flatten(0, 1).contiguous() for t in (query, key, value)), float(scale), heads_per_block
    )
    return output.view(batch, heads, query_length, value.shape[-1])


class BlockwiseAttnProcessor:
    """diffusers' `AttnProcessor2_0` with `blockwise_attention` in place of `F.scaled_dot_product_attention`.

    Same projections, norms, residual and rescaling, so it drops into any `Attention` layer (self- or
    cross-attention, 3D or 4D inputs). Layers given an attention mask still go through SDPA.
    """

    def __init__(self, block_bytes: int = DEFAULT_BLOCK_BYTES):
        self.block_bytes = block_bytes

    def __call__(
        self,
        attn: Attention,
        hidden_states: Tensor,
        encoder_hidden_states: Tensor | None = None,
        attention_mask: Tensor | None = None,
        temb: Tensor | None = None,
    ) -> Tensor:
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        # Self-attention attends to the normalised states; cross-attention to the (optionally normalised) context.
        if encoder_hidden_states is None:
            context = hidden_states
        elif attn.norm_cross:
            context = attn.norm_encoder_hidden_states(encoder_hidden_states)
        else:
            context = encoder_hidden_states
        batch_size, sequence_length, _ = context.shape
        key, value = attn.to_k(context), attn.to_v(context)

        head_dim = key.shape[-1] // attn.heads
        query, key, value = (
            t.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2) for t in (query, key, value)
        )
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        if attention_mask is None:
            hidden_states = blockwise_attention(query, key, value, attn.scale, self.block_bytes)
        else:
            attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
            attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])
            hidden_states = F.scaled_dot_product_attention(
                query, key, value, attn_mask=attention_mask, scale=attn.scale
            )

        hidden_states = (
            hidden_states.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim).to(query.dtype)
        )
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))  # linear projection, dropout
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


def use_blockwise_attention(model: torch.nn.Module, block_bytes: int = DEFAULT_BLOCK_BYTES) -> int:
    """Give every `Attention` layer of `model` that runs diffusers' default processor a `BlockwiseAttnProcessor`.

    Layers with other processors (IP-adapters, LoRA, custom ones) are left as they are. Returns the number of
    layers changed. Processors are not part of a saved model: a pipeline loaded later uses the default again.
    """
    processor = BlockwiseAttnProcessor(block_bytes)
    changed = 0
    for module in model.modules():
        if isinstance(module, Attention) and type(module.processor) in (AttnProcessor2_0, AttnProcessor):
            module.set_processor(processor)
            changed += 1
    return changed
