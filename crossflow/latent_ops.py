"""Operations on source latents ``z0`` before the ODE: linear interpolation and latent arithmetic.

CrossFlow's ``z0`` is a Gaussian latent of the source with the target's shape, so editing it edits
the generated target: interpolating between two prompts' latents morphs one image into the other,
and ``ori + add − sub`` composes concepts (paper Sec. 5.2, Fig. 6 and App. B.2; the official
``demo_t2i_arith.py``). Both functions are modality-agnostic; the caller encodes and integrates.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor


def interpolate_latents(z_a: Tensor, z_b: Tensor, frames: int) -> Tensor:
    """Evenly spaced points on the straight line from ``z_a`` to ``z_b`` (no renormalisation, as the official demo).

    Args:
        z_a: ``(...)`` latent of the first endpoint (e.g. ``(C, H, W)``).
        z_b: latent of the second endpoint, same shape.
        frames: number of points, ``>= 2``; frame ``i`` is ``z_a + (z_b − z_a)·i/(frames−1)``.

    Returns:
        ``(frames, ...)``; the first and last frames equal ``z_a`` and ``z_b`` exactly.
    """
    if z_a.shape != z_b.shape:
        raise ValueError(f"interpolation endpoints differ in shape: {tuple(z_a.shape)} vs {tuple(z_b.shape)}")
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 2:
        raise ValueError(f"frames must be an integer >= 2, got {frames!r}")
    w = torch.linspace(0.0, 1.0, frames, dtype=torch.float64).to(device=z_a.device, dtype=z_a.dtype)
    w = w.view(frames, *([1] * z_a.dim()))
    out = z_a[None] + (z_b - z_a)[None] * w
    out[0], out[-1] = z_a, z_b  # exact endpoints, free of rounding
    return out


def standardize(z: Tensor) -> Tensor:
    """``(z − mean) / std`` per sample over all its elements (scalar statistics, unbiased std).

    Args:
        z: ``(B, ...)`` latents.

    Returns:
        ``(B, ...)``, each sample with mean 0 and (unbiased) std 1.
    """
    flat = z.flatten(1)
    mean = flat.mean(dim=1, keepdim=True)
    std = flat.std(dim=1, keepdim=True)
    if bool((std == 0).any()):
        raise ValueError("cannot standardise a constant latent (zero standard deviation)")
    return ((flat - mean) / std).view_as(z)


def latent_arithmetic(ori: Tensor, add: Optional[Tensor] = None, sub: Optional[Tensor] = None, *,
                      add_scale: float = 1.0, sub_scale: float = 1.0, renormalize: bool = True) -> Tensor:
    """``ori + add_scale·add − sub_scale·sub``, re-standardised with scalar statistics as the official demo does.

    The official ``demo_t2i_arith.py`` forms ``z0 + z1`` (add), ``z0 − z1`` (subtract) or
    ``z0 + z1 − z2`` and then writes ``(z − z.mean()) / z.std()`` over all elements of that latent;
    the paper's Fig. 6 scales the added latent by ``α`` (``add_scale``).

    Args:
        ori: ``(B, ...)`` latents of the original prompts.
        add: latents to add (same shape), or None.
        sub: latents to subtract (same shape), or None. At least one of ``add``/``sub`` is required.
        add_scale: factor of ``add``.
        sub_scale: factor of ``sub``.
        renormalize: standardise each result to mean 0, std 1 (:func:`standardize`).

    Returns:
        ``(B, ...)`` combined latents.
    """
    if add is None and sub is None:
        raise ValueError("latent arithmetic needs a latent to add or to subtract (both are None)")
    z = ori
    for name, term, scale, sign in (("add", add, add_scale, 1.0), ("sub", sub, sub_scale, -1.0)):
        if term is None:
            continue
        if term.shape != ori.shape:
            raise ValueError(f"{name} latent has shape {tuple(term.shape)}, expected {tuple(ori.shape)} like ori")
        z = z + sign * scale * term
    return standardize(z) if renormalize else z
