"""Model backbones, time embeddings and parametrisation wrappers."""

from .affine import AffineFlowMapModel, ExactFlowMapModel
from .embeddings import FourierTimeEmbedding
from .mlp import MLP
from .parametrisation import FlowMapModel, Parametrised, build_model
from .unet import UNET_PRESETS, UNet, build_unet, unet_stats

__all__ = ["FourierTimeEmbedding", "MLP", "Parametrised", "FlowMapModel", "build_model",
           "AffineFlowMapModel", "ExactFlowMapModel", "UNet", "UNET_PRESETS", "build_unet", "unet_stats"]
