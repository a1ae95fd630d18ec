"""Conditioning a denoiser on a prompt by concatenation: the pooled prompt embedding, projected and broadcast
as extra input channels of the UNet.

The other way, cross-attention to the text encoder's hidden states, needs no module of its own: it is
`UNet2DConditionModel(cross_attention_dim=...)` fed `encoder_hidden_states`. Training and inference both call
`PromptProjection` so the two agree on how the extra channels are built:

    prompt_channels = prompt_projection(pooled_prompt_embeds, height=h, width=w)     # (B, C, h, w)
    model_input = torch.cat([noisy_latents, prompt_channels], dim=1)                 # (B, 4 + C, h, w)
    unet = UNet2DConditionModel(in_channels=4 + C, out_channels=4, ...)
"""

import torch
from diffusers import ConfigMixin, ModelMixin  # imported by name: diffusers' loader looks them up here
from diffusers.configuration_utils import register_to_config
from torch import nn

__all__ = ["ConfigMixin", "ModelMixin", "PromptProjection"]


class PromptProjection(ModelMixin, ConfigMixin):
    """A linear map from the pooled prompt embedding to `out_channels` feature maps, constant over space.

    Args:
        text_embed_dim (`int`):
            Width of the pooled prompt embedding, `text_encoder.config.hidden_size` for a `CLIPTextModel`
            (its `pooler_output`, the final hidden state at the `<|endoftext|>` token).
        out_channels (`int`):
            Number of channels concatenated to the latents; the UNet's `in_channels` is
            `vae.config.latent_channels + out_channels`.
    """

    @register_to_config
    def __init__(self, text_embed_dim: int, out_channels: int):
        super().__init__()
        self.linear = nn.Linear(text_embed_dim, out_channels)

    def forward(self, pooled_prompt_embeds: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """(B, text_embed_dim) → (B, out_channels, height, width), the same vector at every position.

        The result is an expanded view (no copy); `torch.cat` with the latents materializes it.
        """
        channels = self.linear(pooled_prompt_embeds)  # (B, C)
        return channels[:, :, None, None].expand(-1, -1, height, width)
