"""Inception Score (Salimans et al., 2016) from classifier logits.

``IS = exp(E_x[KL(p(y|x) ‖ p(y))])`` with ``p(y)`` the mean of ``p(y|x)`` over the split, computed on
consecutive equal splits and reported as mean and standard deviation over the splits. The standard
input is the FID Inception's 1008 logits without the bias
(:meth:`~crossflow.metrics.fid_inception.FIDInceptionV3.features_and_logits`).

Conventions (protocol notes §3.4): the splits are consecutive and the samples are *not* shuffled
(as the OpenAI evaluator; torch-fidelity permutes with seed 2020 first); every split holds
``N // splits`` samples, so the last ``N % splits`` rows are left out (a warning says how many); the
standard deviation is the population one (``ddof = 0``, as the original code and torch-fidelity).
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
from torch import Tensor

log = logging.getLogger(__name__)


def inception_score(logits: Tensor | np.ndarray, splits: int = 10) -> tuple[float, float]:
    """Inception Score of ``(N, C)`` logits over ``splits`` consecutive equal splits.

    Computed in float64 from ``log_softmax`` (no underflow for large logits; ``-inf`` logits mean a
    probability of exactly 0).

    Args:
        logits: ``(N, C)`` class logits (for the standard IS: ``C = 1008``, unbiased Inception logits).
        splits: number of splits; split ``i`` holds rows ``[i·s, (i+1)·s)`` with ``s = N // splits``.

    Returns:
        ``(mean, std)`` of the per-split scores (``std`` with ``ddof = 0``; 0 for one split).

    Raises:
        ValueError: ``logits`` is not 2-D, holds NaN or ``+inf``, or has fewer rows than ``splits``;
            ``splits`` < 1.
    """
    x = torch.as_tensor(logits).detach().to("cpu", torch.float64)
    if x.dim() != 2 or x.shape[1] < 1:
        raise ValueError(f"inception_score expects (N, C) logits, got shape {tuple(x.shape)}")
    if not isinstance(splits, int) or splits < 1:
        raise ValueError(f"inception_score: splits must be a positive integer, got {splits!r}")
    n = x.shape[0]
    if n < splits:
        raise ValueError(f"inception_score: splits={splits} needs at least {splits} samples, got {n} "
                         f"(use fewer splits or more images)")
    if torch.isnan(x).any() or torch.isposinf(x).any():
        raise ValueError("inception_score: the logits hold NaN or +inf values")
    size = n // splits
    if n % splits:
        log.warning("inception_score: %d samples in %d splits of %d; the last %d are left out",
                    n, splits, size, n % splits)
    log_p = torch.log_softmax(x[: size * splits], dim=1).view(splits, size, -1)  # (splits, s, C)
    log_marginal = torch.logsumexp(log_p, dim=1, keepdim=True) - math.log(size)  # log of the mean p(y) per split
    p = log_p.exp()
    kl_terms = torch.where(p > 0, p * (log_p - log_marginal), torch.zeros_like(p))  # 0·log 0 = 0
    scores = kl_terms.sum(dim=2).mean(dim=1).exp().numpy()  # (splits,)
    return float(scores.mean()), float(scores.std())
