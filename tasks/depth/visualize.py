"""Colour-mapped depth pictures."""

from __future__ import annotations

from typing import Any

import numpy as np


def colorize_depth(depth: Any, vmin: float, vmax: float, cmap: str = "magma_r") -> np.ndarray:
    """``(N, H, W)`` (or ``(H, W)``) depth → ``(N, H, W, 3)`` uint8 through a matplotlib colour map.

    Near is bright with the default reversed ``magma``; values outside ``[vmin, vmax]`` are clipped.
    """
    from matplotlib import colormaps

    if hasattr(depth, "detach"):
        depth = depth.detach().cpu().numpy()
    d = np.asarray(depth, dtype=np.float64)
    if d.ndim == 2:
        d = d[None]
    if d.ndim != 3:
        raise ValueError(f"expected (N, H, W) depth maps, got shape {d.shape}")
    scaled = np.clip((d - vmin) / max(vmax - vmin, 1e-12), 0.0, 1.0)
    rgba = colormaps[cmap](scaled)
    return np.round(rgba[..., :3] * 255).astype(np.uint8)
