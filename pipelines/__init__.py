"""Inference-only `DiffusionPipeline` subclasses; `save_pretrained` / `from_pretrained` work as in diffusers. A
pipeline that computes what a diffusers pipeline computes is saved under that pipeline's name, so diffusers alone loads
its folder (`latentzoo.pipelines.loading.SavedAsDiffusersPipeline`)."""

from latentzoo.pipelines.autoencoder import AutoencoderPipeline
from latentzoo.pipelines.gan import GANPipeline
from latentzoo.pipelines.pixel_diffusion import PixelDiffusionPipeline
from latentzoo.pipelines.text_to_image import LatentTextToImagePipeline

__all__ = ["AutoencoderPipeline", "GANPipeline", "LatentTextToImagePipeline", "PixelDiffusionPipeline"]
