"""Inference-only `DiffusionPipeline` subclasses; `save_pretrained` / `from_pretrained` work as in diffusers."""

from latentzoo.pipelines.autoencoder import AutoencoderPipeline
from latentzoo.pipelines.gan import GANPipeline
from latentzoo.pipelines.pixel_diffusion import PixelDiffusionPipeline
from latentzoo.pipelines.text_to_image import LatentTextToImagePipeline

__all__ = ["AutoencoderPipeline", "GANPipeline", "LatentTextToImagePipeline", "PixelDiffusionPipeline"]
