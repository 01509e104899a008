"""Stable-Diffusion VAE codec (diffusers ``AutoencoderKL``): images ↔ scaled latents, via stored moments.

Feature extraction stores the encoder's posterior *moments* (mean ‖ log-variance, unscaled, the
``quant_conv`` output), not a latent; :func:`sample_latent` draws a fresh latent from them at every
training step, ``z = scale · (mean + exp(½·clamp(logvar, −30, 20))·ε)``, as the official pipeline
does. Decoding divides by the same scale. The official CrossFlow configs use ``scale_factor=0.23010``;
Stable Diffusion's own value is 0.18215.
"""

from __future__ import annotations

import hashlib
import logging
import os
from typing import Any, Optional

import torch
from torch import Tensor

from crossflow.language.hf import _resolve_dtype, guard_cpu_half_precision

log = logging.getLogger(__name__)

#: ``scale_factor`` of every official CrossFlow config (SD's own value is 0.18215).
OFFICIAL_SCALE_FACTOR = 0.23010
#: Log-variance clamp of the posterior (as in LDM / diffusers ``DiagonalGaussianDistribution``).
LOGVAR_RANGE = (-30.0, 20.0)


def sample_latent(moments: Tensor, scale_factor: float, generator: Optional[torch.Generator] = None) -> Tensor:
    """Draw a scaled latent from stored posterior moments.

    Args:
        moments: ``(B, 2C, h, w)``: mean in the first ``C`` channels, log-variance in the last ``C``.
        scale_factor: multiplier of the latent (0.23010 official, 0.18215 SD).
        generator: optional RNG (default: the global one).

    Returns:
        ``(B, C, h, w)`` float32 latent ``scale·(mean + std·ε)``.
    """
    if moments.dim() != 4 or moments.shape[1] % 2:
        raise ValueError(f"moments must be (B, 2C, h, w) with mean ‖ logvar channels, got {tuple(moments.shape)}")
    mean, logvar = moments.float().chunk(2, dim=1)
    std = torch.exp(0.5 * logvar.clamp(*LOGVAR_RANGE))
    eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
    return scale_factor * (mean + std * eps)


def _auto_subfolder(path: str, subfolder: Optional[str]) -> Optional[str]:
    """A whole diffusers pipeline directory keeps its VAE in ``vae/``; use it when not told otherwise."""
    if subfolder is not None:
        return subfolder or None
    if os.path.isdir(path) and not os.path.isfile(os.path.join(path, "config.json")) \
            and os.path.isfile(os.path.join(path, "vae", "config.json")):
        return "vae"
    return None


class SDVAECodec:
    """Image codec through a (frozen) diffusers ``AutoencoderKL``; the model is loaded on first use.

    Args:
        name_or_path: local directory (a VAE, or a pipeline with a ``vae/`` folder) or hub id.
        subfolder: folder of the VAE inside ``name_or_path``; ``None`` = auto, ``""`` = none.
        scale_factor: latent multiplier (official CrossFlow 0.23010; SD 0.18215).
        dtype: VAE weights dtype (``"float32"``, ``"float16"``, ``"bfloat16"``).
        device: device of the VAE (default: CUDA when visible, else CPU).
        local_files_only: never contact a model hub.
        decode_batch_size: latents decoded per VAE call (bounds decoder memory).
    """

    def __init__(self, name_or_path: str, *, subfolder: Optional[str] = None,
                 scale_factor: float = OFFICIAL_SCALE_FACTOR, dtype: torch.dtype | str = "float32",
                 device: Any = None, local_files_only: bool = True, decode_batch_size: int = 16) -> None:
        if scale_factor <= 0:
            raise ValueError(f"scale_factor must be > 0, got {scale_factor}")
        self.name_or_path = str(name_or_path)
        self.subfolder = subfolder
        self.scale_factor = float(scale_factor)
        self.dtype = _resolve_dtype(dtype)
        self._device = device
        self.local_files_only = local_files_only
        self.decode_batch_size = int(decode_batch_size)
        self._vae = None

    # ------------------------------------------------------------------ model
    @property
    def vae(self):
        """The ``AutoencoderKL`` (loaded on first access).

        Raises:
            FileNotFoundError: a local-looking path does not exist.
            OSError: diffusers could not load it (one line naming the path).
        """
        if self._vae is None:
            from diffusers import AutoencoderKL

            path = os.path.expanduser(self.name_or_path)
            if (os.path.isabs(path) or path.startswith(".")) and not os.path.exists(path):
                raise FileNotFoundError(f"VAE path does not exist: {self.name_or_path}")
            sub = _auto_subfolder(path, self.subfolder)
            try:
                vae = AutoencoderKL.from_pretrained(path, subfolder=sub, local_files_only=self.local_files_only,
                                                    torch_dtype=self.dtype)
            except (OSError, ValueError, EnvironmentError) as e:
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise OSError(f"could not load VAE {self.name_or_path!r} (subfolder={sub!r}, "
                              f"local_files_only={self.local_files_only}): {first}") from e
            device = self._device or ("cuda" if torch.cuda.is_available() else "cpu")
            guard_cpu_half_precision(self.dtype, device)
            self._vae = vae.eval().requires_grad_(False).to(device)
            log.info("loaded VAE %s (%s, %s), scale factor %g", self.name_or_path, self.dtype, device,
                     self.scale_factor)
        return self._vae

    @property
    def device(self) -> torch.device:
        return next(self.vae.parameters()).device

    @property
    def latent_channels(self) -> int:
        return int(self.vae.config.latent_channels)

    @property
    def downsample_factor(self) -> int:
        """Image side / latent side (8 for the SD kl-f8 VAE)."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def identifier(self) -> str:
        """Model basename + a short hash of a few weights (distinguishes checkpoints)."""
        h = hashlib.sha1()
        for name, p in self.vae.state_dict().items():
            h.update(name.encode())
            h.update(p.detach().flatten()[:16].float().cpu().numpy().tobytes())
        base = os.path.basename(self.name_or_path.rstrip("/\\")) or "vae"
        return f"{base}-{h.hexdigest()[:8]}"

    # ------------------------------------------------------------------ codec
    @torch.no_grad()
    def encode_moments(self, images: Tensor) -> Tensor:
        """Images in [-1, 1] ``(B, 3, H, W)`` → posterior moments ``(B, 2C, H/f, W/f)`` float32 (unclamped)."""
        x = images.to(self.device, self.dtype)
        return self.vae.encode(x).latent_dist.parameters.float()

    def sample(self, moments: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        """Stored moments → a freshly drawn scaled latent (see :func:`sample_latent`)."""
        return sample_latent(moments, self.scale_factor, generator)

    def encode(self, images: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        """Images in [-1, 1] → scaled latents ``(B, C, H/f, W/f)`` on the images' device."""
        return self.sample(self.encode_moments(images), generator).to(images.device)

    @torch.no_grad()
    def decode(self, latents: Tensor) -> Tensor:
        """Scaled latents ``(B, C, h, w)`` → images in [-1, 1] ``(B, 3, h·f, w·f)``, float32 (latents' device)."""
        out = []
        for chunk in latents.split(self.decode_batch_size):
            z = (chunk.float() / self.scale_factor).to(self.device, self.dtype)
            out.append(self.vae.decode(z).sample.float().clamp(-1, 1).to(latents.device))
        return torch.cat(out) if out else latents.new_zeros(0, 3, 0, 0)
