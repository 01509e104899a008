"""Variational encoders (source side) and target feature towers."""

from crossflow.encoders.gaussian import DiagonalGaussian
from crossflow.encoders.image_features import ConvFeatureEncoder
from crossflow.encoders.image_ve import ImageVE, NoiseSource
from crossflow.encoders.reduction_ve import ReductionTextVE
from crossflow.encoders.token_ve import TokenSequenceVE

__all__ = ["ConvFeatureEncoder", "DiagonalGaussian", "ImageVE", "NoiseSource", "ReductionTextVE", "TokenSequenceVE"]
