"""Test-time ensembling of affine-invariant depth predictions, after Marigold.

Marigold predicts N depth maps from different noise draws, aligns each member by its own scale and shift,
takes the pixel-wise median and rescales the result to [0, 1]. Its alignment minimises the pairwise RMS
between all aligned members with BFGS; here each member is aligned by closed-form least squares to the
pixel-wise median of the raw members (one pass, no iterative solver), which removes the same per-member
scale and shift differences. With one member the result is that member rescaled to [0, 1].
"""

from __future__ import annotations

import numpy as np


def ensemble_depth(members: np.ndarray) -> np.ndarray:
    """Combine ``(N, H, W)`` affine-invariant depth maps into one ``(H, W)`` map in [0, 1].

    Each member is aligned to the pixel-wise median of all members (least squares over all pixels, float64),
    the aligned members are reduced by the pixel-wise median, and the result is min-max rescaled to [0, 1]
    (a constant map gives zeros).
    """
    members = np.asarray(members, dtype=np.float64)
    if members.ndim != 3 or members.shape[0] < 1:
        raise ValueError(f"expected (N, H, W) depth maps with N >= 1, got shape {members.shape}")
    reference = np.median(members, axis=0).ravel()
    aligned = []
    for member in members:
        x = member.ravel()
        design = np.stack([x, np.ones_like(x)], axis=1)
        (scale, shift), *_ = np.linalg.lstsq(design, reference, rcond=None)
        aligned.append(scale * member + shift)
    out = np.median(np.stack(aligned), axis=0)
    lo, hi = float(out.min()), float(out.max())
    return (out - lo) / (hi - lo) if hi > lo else np.zeros_like(out)
