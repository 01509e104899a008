"""Codecs: how a modality becomes a latent and back."""

from crossflow.codecs.identity import IdentityCodec

__all__ = ["IdentityCodec"]
