"""Codecs: how a modality becomes a latent and back."""

from crossflow.codecs.image import ImageCodec
from crossflow.codecs.sd_vae import OFFICIAL_SCALE_FACTOR, SDVAECodec, sample_latent

__all__ = ["ImageCodec", "OFFICIAL_SCALE_FACTOR", "SDVAECodec", "sample_latent"]
