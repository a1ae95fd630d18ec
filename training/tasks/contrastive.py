"""A CLIP-style contrastive stage for the text encoder: a small ``CLIPTextModel`` and a small convolutional image
encoder learn a shared embedding space from (image, caption) pairs (Radford et al., arXiv:2103.00020).

The saved folder holds the ``CLIPTextModel`` and its ``CLIPTokenizer`` side by side, which is the layout of a
pretrained CLIP text encoder: text2img loads it as ``model.text_encoder`` with no code change, and trains it first
when ``model.text_encoder_config`` is set and the folder is still empty. The image tower, the projections and the
temperature only serve this stage and are not saved (they stay in the checkpoints).

Positives. CLIP's loss treats the diagonal of a batch as the only positives. Our captions repeat: a batch of 256
mnist digits holds ~3 copies of "handwritten number seven", and ``digits`` has only two phrasings per class. Two
identical captions have identical embeddings, so one-hot targets ask the same row of logits to peak at two
different images: the loss cannot go below log(k) for k copies and its gradient pushes the text away from images
that match it exactly. ``targets: caption_equality`` (the default) spreads each row's target uniformly over the
images whose caption is the same string, which removes that contradiction and equals CLIP's targets when all
captions differ. Other same-digit pairs with *different* captions ("a bold seven" vs "a thin seven") stay
negatives in both modes: telling the attributes apart is what the text encoder should learn.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from transformers import CLIPTextModel, CLIPTokenizer

from ...data import load_clip_tokenizer
from ...models.contrastive import ConvImageEncoder, caption_targets, contrastive_loss
from ..config import PositiveFloat, PositiveInt, Range, Widths
from .base import TrainingTask
from .text_tower import TextTowerConfig, token_ids


@dataclass
class ContrastiveTextConfig(TextTowerConfig):
    # Text tower: text2img's sizes (TextTowerConfig). Captions are under 20 tokens; text2img-mnist uses 32 too.
    max_prompt_length: Annotated[int, Range(min=3)] = 32

    # Image tower: one stride-2 3x3 conv block per entry (32x32 → 4x4 with three), global average pool, linear.
    image_block_out_channels: Widths = (32, 64, 128)
    image_norm_num_groups: PositiveInt = 8
    # Shared embedding space (CLIP: 512); both towers project into it, without bias, as CLIP does.
    projection_dim: PositiveInt = 128

    # Learnable temperature τ, stored as log(1/τ) and clipped at 100 as in CLIP (sec. 2.5 of arXiv:2103.00020).
    initial_temperature: PositiveFloat = 0.07
    max_logit_scale: PositiveFloat = 100.0
    # "caption_equality": images whose caption is the same string share the target mass (see module docstring).
    # "clip": the diagonal only.
    targets: Literal["caption_equality", "clip"] = "caption_equality"

    # Training pairs (fixed indices) for the validation similarity matrix and the logged retrieval metrics.
    validation_pairs: PositiveInt = 256

    def __post_init__(self):
        super().__post_init__()
        if self.max_logit_scale < 1.0 / self.initial_temperature:
            raise ValueError(
                f"`model.max_logit_scale`={self.max_logit_scale} is below 1 / `model.initial_temperature` "
                f"({1.0 / self.initial_temperature:.1f}): the temperature would start clipped."
            )
        if any(c % self.image_norm_num_groups for c in self.image_block_out_channels):
            raise ValueError(
                f"Every `model.image_block_out_channels` {list(self.image_block_out_channels)} must be divisible "
                f"by `model.image_norm_num_groups`={self.image_norm_num_groups}."
            )


class DualEncoder(torch.nn.Module):
    """Both towers and the temperature in one ``forward``, so DDP synchronises all of them from one call."""

    def __init__(
        self, text_encoder: CLIPTextModel, image_encoder: ConvImageEncoder, config: ContrastiveTextConfig
    ):
        super().__init__()
        self.text_encoder = text_encoder
        self.image_encoder = image_encoder
        self.text_projection = torch.nn.Linear(config.text_hidden_size, config.projection_dim, bias=False)
        self.logit_scale = torch.nn.Parameter(torch.tensor(math.log(1.0 / config.initial_temperature)))
        self.max_log_logit_scale = math.log(config.max_logit_scale)

    def forward(self, pixel_values: torch.Tensor, input_ids: torch.Tensor):
        """Returns L2-normalised image and text embeddings (B, D) and the logit scale 1/τ (a scalar)."""
        image_embeds = F.normalize(self.image_encoder(pixel_values).float(), dim=-1)
        # CLIP's pooled output: the final hidden state at the first <|endoftext|> token, (B, hidden).
        pooled = self.text_encoder(input_ids).pooler_output
        text_embeds = F.normalize(self.text_projection(pooled).float(), dim=-1)
        return image_embeds, text_embeds, self.logit_scale.clamp(max=self.max_log_logit_scale).exp()


@dataclass
class ContrastiveTextEncoder:
    """What the stage saves: the text encoder and its tokenizer, side by side in one folder (a pretrained CLIP
    text encoder's layout). ``dual_encoder`` (both towers) serves validation only and is not saved."""

    text_encoder: CLIPTextModel
    tokenizer: CLIPTokenizer
    dual_encoder: DualEncoder | None = None

    def save_pretrained(self, save_directory, **kwargs):
        self.text_encoder.save_pretrained(save_directory, **kwargs)
        self.tokenizer.save_pretrained(save_directory)


class ContrastiveTextTask(TrainingTask):
    name = "clip_text"
    Config = ContrastiveTextConfig

    @classmethod
    def requires(cls, config: ContrastiveTextConfig) -> tuple[str, ...]:
        return ("captions",)

    def __init__(self, config: ContrastiveTextConfig, dataset):
        super().__init__(config, dataset)
        self.tokenizer = load_clip_tokenizer(config.max_prompt_length)
        example = dataset[0]["pixel_values"]
        image_encoder = ConvImageEncoder(
            example.shape[0],
            tuple(config.image_block_out_channels),
            config.image_norm_num_groups,
            config.projection_dim,
        )
        self.dual_encoder = DualEncoder(config.build_text_encoder(), image_encoder, config)

        # Fixed validation pairs: one item per class first (a readable similarity matrix), then seeded others.
        labels = getattr(dataset, "class_labels", None)
        first_of_class = [] if labels is None else [int((labels == c).nonzero()[0]) for c in labels.unique()]
        rest = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0)).tolist()
        order = list(dict.fromkeys(first_of_class + rest))[: min(config.validation_pairs, len(dataset))]
        self.num_matrix_pairs = min(len(first_of_class) or 10, len(order))
        items = [dataset[i] for i in order]
        self.validation_pixels = torch.stack([item["pixel_values"] for item in items])
        self.validation_texts = [item["text"] for item in items]

    def trainable_modules(self):
        return {"dual_encoder": self.dual_encoder}

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        # Padding to the longest caption of the batch is exact: the causal mask keeps trailing pads out of every
        # earlier position, the pooled <|endoftext|> one included.
        return token_ids(self.tokenizer, texts, padding="longest")

    def loss(self, dual_encoder, pixel_values: torch.Tensor, texts: list[str]) -> torch.Tensor:
        """The contrastive loss of one batch of (image, caption) pairs through `dual_encoder`."""
        input_ids = self.tokenize(texts).to(pixel_values.device)
        image_embeds, text_embeds, logit_scale = dual_encoder(pixel_values, input_ids)
        targets = caption_targets(texts) if self.config.targets == "caption_equality" else None
        # Negatives are the other pairs of this process's batch (CLIP gathers all ranks'; here the batch is local).
        return contrastive_loss(image_embeds, text_embeds, logit_scale, targets)

    def training_step(self, batch, modules, step):
        return {"loss": self.loss(modules["dual_encoder"], batch["pixel_values"], list(batch["text"]))}

    def make_pipeline(self, modules):
        dual_encoder = modules["dual_encoder"]
        return ContrastiveTextEncoder(dual_encoder.text_encoder, self.tokenizer, dual_encoder)

    @torch.no_grad()
    def similarity(
        self, dual_encoder: DualEncoder, pixel_values: torch.Tensor, texts: list[str]
    ) -> torch.Tensor:
        """Cosine similarities (N texts, N images) of `texts` and `pixel_values`, in batches of 256."""
        device = next(dual_encoder.parameters()).device
        image_embeds, text_embeds = [], []
        for start in range(0, len(texts), 256):
            images, text, _ = dual_encoder(
                pixel_values[start : start + 256].to(device),
                self.tokenize(texts[start : start + 256]).to(device),
            )
            image_embeds.append(images)
            text_embeds.append(text)
        return torch.cat(text_embeds) @ torch.cat(image_embeds).T

    @torch.no_grad()
    def validation_images(self, pipeline, num_images, generator):
        """One image: the validation digits in the top row and, below, row i = softmax over those images of caption
        i's similarity (one cell per image). A bright diagonal means each caption finds its own image."""
        k = self.num_matrix_pairs
        pixels = self.validation_pixels[:k]
        dual_encoder = pipeline.dual_encoder
        similarity = self.similarity(dual_encoder, pixels, self.validation_texts[:k]).cpu()
        logit_scale = dual_encoder.logit_scale.clamp(max=dual_encoder.max_log_logit_scale).exp().cpu()
        probabilities = (similarity * logit_scale).softmax(dim=1)  # (k, k)
        c, h, w = pixels.shape[1:]
        # (k, k) → (c, k*h, k*w): each probability fills an h x w cell.
        cells = probabilities.repeat_interleave(h, 0).repeat_interleave(w, 1).expand(c, -1, -1)
        top = (pixels / 2 + 0.5).clamp(0, 1).permute(1, 2, 0, 3).reshape(c, h, k * w)
        return torch.cat([top, cells], dim=1)[None]  # (1, c, (k+1)*h, k*w)

    @torch.no_grad()
    def validation_metrics(self, pipeline, generator):
        """Retrieval among the fixed validation pairs (training items with their epoch-0 captions): top-1 accuracy
        both ways (a hit is an item with the same caption) and the mean cosine similarity of matched minus
        mismatched pairs."""
        similarity = self.similarity(
            pipeline.dual_encoder, self.validation_pixels, self.validation_texts
        ).cpu()
        same = caption_targets(self.validation_texts) > 0  # (N, N) pairs whose captions are equal
        rows = torch.arange(len(same))
        text_to_image = same[rows, similarity.argmax(dim=1)].float().mean()
        image_to_text = same[similarity.argmax(dim=0), rows].float().mean()
        matched = similarity[same].mean()
        mismatched = similarity[~same].mean()
        return {
            "retrieval/text_to_image_top1": float(text_to_image),
            "retrieval/image_to_text_top1": float(image_to_text),
            "retrieval/matched_minus_mismatched_similarity": float(matched - mismatched),
        }
