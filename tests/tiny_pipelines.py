"""Tiny randomly initialised pipelines of every family (widths 4-16, 8x8 images by default, CPU), each built from
seed 0: shared by the pipeline-argument, convention and CLI tests (conftest.py puts this folder on `sys.path`)."""

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel, UNet2DModel

from latentzoo.data.tokenizer import load_clip_tokenizer
from latentzoo.models import (
    Autoencoder,
    GaussianPrior,
    Generator,
    MixtureDensityNetwork,
    TwoStageVAEPrior,
    VariationalAutoencoder,
)
from latentzoo.models.contrastive import small_clip_text_model
from latentzoo.pipelines import (
    AutoencoderPipeline,
    GANPipeline,
    LatentTextToImagePipeline,
    PixelDiffusionPipeline,
)


def text_to_image_pipeline(
    scheduler=None, *, size: int = 8, widths=(4, 8), time_cond_proj_dim: int | None = None, **defaults
) -> LatentTextToImagePipeline:
    """Grayscale `size`x`size` images, 4-channel latents at half the size, a cross-attention UNet (guidance-distilled
    with a `time_cond_proj_dim`); DDIM unless `scheduler` is given; `defaults` are the pipeline's saved defaults
    (`default_guidance_scale`, ...)."""
    torch.manual_seed(0)
    vae = AutoencoderKL(
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=widths,
        layers_per_block=1,
        norm_num_groups=4,
        latent_channels=4,
        sample_size=size,
    )
    unet = UNet2DConditionModel(
        sample_size=size // 2,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=4,
        cross_attention_dim=16,
        attention_head_dim=2,
        time_cond_proj_dim=time_cond_proj_dim,
    )
    pipe = LatentTextToImagePipeline(
        vae=vae.eval(),
        text_encoder=small_clip_text_model(16, 1, 2, 32, 77).eval(),
        tokenizer=load_clip_tokenizer(),
        unet=unet.eval(),
        scheduler=scheduler or DDIMScheduler(num_train_timesteps=1000),
        **defaults,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def pixel_pipeline(num_classes: int | None = 2, scheduler=None, **defaults) -> PixelDiffusionPipeline:
    """8x8 grayscale; `num_classes` real classes plus the null class (None: unconditional); DDIM unless given."""
    torch.manual_seed(0)
    unet = UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        block_out_channels=(4, 8),
        layers_per_block=1,
        norm_num_groups=4,
        num_class_embeds=None if num_classes is None else num_classes + 1,
    )
    pipe = PixelDiffusionPipeline(
        unet=unet.eval(), scheduler=scheduler or DDIMScheduler(num_train_timesteps=1000), **defaults
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def gan_pipeline(num_classes: int | None = 3, widths=(8, 4)) -> GANPipeline:
    torch.manual_seed(0)
    return GANPipeline(
        Generator(latent_dim=8, sample_size=8, block_out_channels=widths, num_classes=num_classes).eval()
    )


def autoencoder_pipeline(prior: str | None = "mdn-classes", num_classes: int = 10) -> AutoencoderPipeline:
    """An autoencoder with a prior: "mdn-classes" (`num_classes`), "mdn", "gaussian", or None (N(0, I))."""
    torch.manual_seed(0)
    autoencoder = Autoencoder(sample_size=8, latent_dim=4, block_out_channels=(4, 8)).eval()
    priors = {
        None: lambda: None,
        "gaussian": lambda: GaussianPrior.from_latents(torch.randn(64, 4)),
        "mdn": lambda: MixtureDensityNetwork(4, num_components=2, hidden_dims=(8,)).eval(),
        "mdn-classes": lambda: MixtureDensityNetwork(
            4, num_components=2, num_classes=num_classes, hidden_dims=(8,)
        ).eval(),
    }
    return AutoencoderPipeline(autoencoder, priors[prior]())


def vae_pipeline() -> AutoencoderPipeline:
    torch.manual_seed(0)
    return AutoencoderPipeline(
        VariationalAutoencoder(sample_size=8, latent_dim=4, block_out_channels=(4, 8)).eval()
    )


def two_stage_vae_pipeline() -> AutoencoderPipeline:
    """A VAE with a second-stage VAE over its latents as the prior (the `two_stage_vae` task's pipeline)."""
    torch.manual_seed(0)
    return AutoencoderPipeline(
        VariationalAutoencoder(sample_size=8, latent_dim=4, block_out_channels=(4, 8)).eval(),
        TwoStageVAEPrior(4, hidden_dims=(8,)).eval(),
    )
