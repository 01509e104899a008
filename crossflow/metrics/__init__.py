"""Evaluation metrics: FID (``fid``, ``fid_inception``), Inception Score, CLIP score."""

from crossflow.metrics.inception_score import inception_score

__all__ = ["inception_score"]
