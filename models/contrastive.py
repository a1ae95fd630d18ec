"""Pieces of CLIP-style contrastive learning (Radford et al., arXiv:2103.00020) shared by training and evaluation:
the symmetric InfoNCE loss, "caption equality" targets for batches whose captions repeat, and a small convolutional
image tower.

The ``clip_text`` training stage (``latentzoo.training.tasks.contrastive``) trains a text encoder with them; the
domain encoder of ``latentzoo.evaluation.domain`` trains its feature space with them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import CLIPTextConfig, CLIPTextModel


def contrastive_loss(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    logit_scale: torch.Tensor | float,
    targets: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric InfoNCE of CLIP (arXiv:2103.00020, fig. 3): the mean of the image→text and text→image
    cross-entropies over the batch's cosine-similarity logits.

    Args:
        image_embeds, text_embeds: (B, D), L2-normalised.
        logit_scale: 1/τ, a scalar.
        targets: (B, B) row-stochastic and symmetric target matrix (``caption_targets``); None: the identity.

    Returns:
        The scalar loss. It is log(B) when all embeddings are equal, whatever the targets.
    """
    if image_embeds.shape != text_embeds.shape or image_embeds.ndim != 2:
        raise ValueError(
            f"`image_embeds` and `text_embeds` must both be (B, D), got {tuple(image_embeds.shape)} and "
            f"{tuple(text_embeds.shape)}."
        )
    # logits[i, j] = <image_i, text_j> / τ: (B, B)
    logits = logit_scale * image_embeds.float() @ text_embeds.float().T
    if targets is None:
        targets = torch.arange(len(logits), device=logits.device)
        return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2
    targets = targets.to(logits)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets.T)) / 2


def caption_targets(texts: list[str]) -> torch.Tensor:
    """(B, B) targets whose row i is uniform over the items whose caption equals caption i (the diagonal included).

    Symmetric; the identity when all captions differ.
    """
    index = {text: i for i, text in enumerate(dict.fromkeys(texts))}
    ids = torch.tensor([index[text] for text in texts])
    same = (ids[:, None] == ids[None, :]).float()  # (B, B)
    return same / same.sum(dim=1, keepdim=True)


class ConvImageEncoder(torch.nn.Module):
    """(B, C, H, W) pixels in [-1, 1] → (B, projection_dim): stride-2 conv blocks, global average pool, linear."""

    def __init__(
        self, in_channels: int, block_out_channels: tuple[int, ...], norm_num_groups: int, projection_dim: int
    ):
        super().__init__()
        layers, channels = [], in_channels
        for out_channels in block_out_channels:
            # (B, c, h, w) → (B, c', h/2, w/2)
            layers += [
                torch.nn.Conv2d(channels, out_channels, 3, stride=2, padding=1),
                torch.nn.GroupNorm(norm_num_groups, out_channels),
                torch.nn.SiLU(),
            ]
            channels = out_channels
        self.blocks = torch.nn.Sequential(*layers)
        self.projection = torch.nn.Linear(channels, projection_dim, bias=False)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.projection(self.blocks(pixel_values).mean(dim=(2, 3)))


def small_clip_text_model(
    hidden_size: int, num_layers: int, num_heads: int, intermediate_size: int, max_prompt_length: int
) -> CLIPTextModel:
    """A CLIPTextModel of the given sizes for CLIP's BPE vocabulary (`latentzoo.data.load_clip_tokenizer`), to train
    from scratch: text2img's and the contrastive stage's text encoder, and the domain encoder's text tower."""
    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=49408,
            hidden_size=hidden_size,
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads,
            intermediate_size=intermediate_size,
            max_position_embeddings=max_prompt_length,
            # CLIP's special tokens: the pooled output is the hidden state at the first <|endoftext|>.
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=49407,
        )
    )
