"""Codecs: how a modality becomes a latent and back."""

from crossflow.codecs.identity import IdentityCodec
from crossflow.codecs.sd_vae import OFFICIAL_SCALE_FACTOR, SDVAECodec, sample_latent

__all__ = ["IdentityCodec", "OFFICIAL_SCALE_FACTOR", "SDVAECodec", "sample_latent"]
