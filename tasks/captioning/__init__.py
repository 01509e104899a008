"""Image captioning task adapter (image → text latent of a text VAE → words) and its text-VAE pre-stage."""

from tasks.captioning.task import CaptioningTask

__all__ = ["CaptioningTask"]
