"""Shared layers: attention, MLPs, embeddings."""

from crossflow.nn.attention import SelfAttention
from crossflow.nn.embeddings import TimestepEmbedder, sincos_2d_position_embedding, sinusoidal_embedding
from crossflow.nn.mlp import Mlp

__all__ = ["Mlp", "SelfAttention", "TimestepEmbedder", "sincos_2d_position_embedding", "sinusoidal_embedding"]
