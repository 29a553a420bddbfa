"""Model backbones, time embeddings and parametrisation wrappers."""

from .affine import AffineFlowMapModel, ExactFlowMapModel
from .embeddings import FourierTimeEmbedding
from .mlp import MLP
from .parametrisation import FlowMapModel, Parametrised, build_model

__all__ = ["FourierTimeEmbedding", "MLP", "Parametrised", "FlowMapModel", "build_model",
           "AffineFlowMapModel", "ExactFlowMapModel"]
