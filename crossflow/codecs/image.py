"""Image codec of the pipeline: generated latents → :class:`~crossflow.outputs.ImageOutput`.

Pixel-space tasks model the image itself (the latent *is* the image in [-1, 1]); latent-space tasks
pass a decoder (e.g. :meth:`crossflow.codecs.sd_vae.SDVAECodec.decode`) that maps latents to images.
"""

from __future__ import annotations

from typing import Callable, Optional

from torch import Tensor

from crossflow.outputs import ImageOutput


class ImageCodec:
    """``decode(latents) -> ImageOutput`` with images clamped to [-1, 1], on the CPU.

    Args:
        decoder: latents ``(B, C, h, w)`` → images ``(B, 3, H, W)`` in [-1, 1]; None: the latents are the images.
    """

    def __init__(self, decoder: Optional[Callable[[Tensor], Tensor]] = None) -> None:
        self.decoder = decoder

    def decode(self, latents: Tensor) -> ImageOutput:
        images = latents if self.decoder is None else self.decoder(latents)
        return ImageOutput(images=images.float().clamp(-1.0, 1.0).cpu())
