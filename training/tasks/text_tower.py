"""The text encoder a task trains from scratch: a small ``CLIPTextModel`` on CLIP's BPE vocabulary.

Its sizes are declared once here, for text2img and the contrastive stage (clip_text) alike, so a folder the
contrastive stage trains drops into text2img's place. The model itself is `latentzoo.models.contrastive`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
from transformers import CLIPTextModel

from ...models.contrastive import small_clip_text_model
from ..config import PositiveInt, Range
from .base import TaskConfig


@dataclass
class TextTowerConfig(TaskConfig):
    """Sizes of the small CLIPTextModel a task trains from scratch (the ``model:`` keys ``text_*``)."""

    text_hidden_size: PositiveInt = 128
    text_num_layers: PositiveInt = 3
    text_num_heads: PositiveInt = 4
    text_intermediate_size: PositiveInt = 512
    # Captions here are under 20 tokens; a shorter context makes attention cheaper. CLIP's is 77. At least the start
    # and end tokens and one word.
    max_prompt_length: Annotated[int, Range(min=3)] = 77

    def __post_init__(self):
        super().__post_init__()
        if self.text_hidden_size % self.text_num_heads:
            raise ValueError(
                f"`model.text_hidden_size`={self.text_hidden_size} must be divisible by "
                f"`model.text_num_heads`={self.text_num_heads}."
            )

    def build_text_encoder(self) -> CLIPTextModel:
        """A freshly initialised CLIPTextModel of these sizes."""
        return small_clip_text_model(
            self.text_hidden_size,
            self.text_num_layers,
            self.text_num_heads,
            self.text_intermediate_size,
            self.max_prompt_length,
        )


def token_ids(tokenizer, texts: list[str], padding: str = "max_length") -> torch.Tensor:
    """(B, L) input ids of `texts`, truncated to the tokenizer's `model_max_length`; padded to that length
    (`"max_length"`, what the pipelines feed the text encoder at inference) or to the longest text (`"longest"`)."""
    return tokenizer(
        texts, padding=padding, max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids
