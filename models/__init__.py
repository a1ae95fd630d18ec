"""ModelMixin + ConfigMixin modules (autoencoders, mixture density networks, ...) and latent-space tools."""

from latentzoo.models.autoencoder import (
    Autoencoder,
    AutoencoderOutput,
    GaussianPosterior,
    GaussianPrior,
    TwoStageVAEPrior,
    VariationalAutoencoder,
    kl_divergence,
)
from latentzoo.models.conditioning import PromptProjection
from latentzoo.models.contrastive import ConvImageEncoder, caption_targets, contrastive_loss
from latentzoo.models.gan import Discriminator, Generator
from latentzoo.models.latent_tools import (
    apply_attribute,
    attribute_strip,
    attribute_vector,
    interpolate,
    lerp,
    slerp,
)
from latentzoo.models.mdn import MixtureDensityNetwork, MixtureDensityOutput

__all__ = [
    "Autoencoder",
    "AutoencoderOutput",
    "ConvImageEncoder",
    "Discriminator",
    "GaussianPosterior",
    "GaussianPrior",
    "TwoStageVAEPrior",
    "Generator",
    "MixtureDensityNetwork",
    "MixtureDensityOutput",
    "PromptProjection",
    "VariationalAutoencoder",
    "apply_attribute",
    "attribute_strip",
    "attribute_vector",
    "caption_targets",
    "contrastive_loss",
    "interpolate",
    "kl_divergence",
    "lerp",
    "slerp",
]
