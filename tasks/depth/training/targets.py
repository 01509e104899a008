"""From a reader's sample to the model's training pair: working resolution and depth → [-1, 1].

Two target encodings:

* :class:`QuantileNormalizer` (zero-shot, affine-invariant; Marigold's ``ScaleShiftDepthNormalizer``): per image,
  d2 / d98 = the 2 % / 98 % quantiles (linear interpolation) of depth over ``valid ∧ d > 0``;
  ``z = 2·(d − d2)/(d98 − d2) − 1`` clipped to [-1, 1].
* :class:`MetricDepthMapping` (in-domain, metric; decodable): a fixed map of ``[d_min, d_max]`` onto [-1, 1], in
  log depth by default. Why log: the benchmarks score relative error (AbsRel, δ1 = max(p/g, g/p) < 1.25), and an
  error of ε in log depth is the same relative error at 2 m and at 60 m, so the flow's MSE weighs near and far
  pixels as the metrics do; a linear map spends most of [-1, 1] on far range (KITTI: 1–10 m would get 11 % of it).
  Defaults per dataset in ``IN_DOMAIN_MAPPINGS``: the lower bound is BTS's training-mask threshold (KITTI d > 1 m,
  NYUv2 d > 0.1 m; ``pytorch/bts_main.py``), the upper bound the evaluation cap (80 m, 10 m). Valid depths
  outside are clipped to ±1 and stay in the loss.

In both, pixels outside ``valid`` get ``invalid_value`` (+1, the far plane, as Marigold fills its maps) and are
masked out of the loss through ``target_mask``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Protocol, Union

import numpy as np
import torch
from torch import Tensor

from tasks.depth.training.geometry import center_crop_window, resize_nearest, resize_rgb
from tasks.depth.training.io import SampleError


class DepthEncoder(Protocol):
    """Maps ``(H, W)`` metric depth and its valid mask to ``(H, W)`` float32 values in [-1, 1]."""

    def encode(self, depth: np.ndarray, valid: np.ndarray, name: str = "") -> np.ndarray: ...


@dataclass(frozen=True)
class QuantileNormalizer:
    """Per-image affine normalisation by depth quantiles (zero-shot training, Marigold's recipe).

    Args:
        low: lower quantile (Marigold ``min_max_quantile`` 0.02); the upper one is ``1 − low``.
        clip: clip the result to [-1, 1] (Marigold ``clip: true``).
    """

    low: float = 0.02
    clip: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.low < 0.5:
            raise ValueError(f"quantile low must lie in [0, 0.5), got {self.low}")

    def quantiles(self, depth: np.ndarray, valid: np.ndarray, name: str = "") -> tuple[float, float]:
        """``(d_low, d_high)`` over ``valid ∧ depth > 0``; :class:`SampleError` when they can't span a range."""
        values = depth[valid & (depth > 0)].astype(np.float64)
        if values.size == 0:
            raise SampleError(name, "no valid depth pixel to normalise by")
        lo, hi = np.quantile(values, [self.low, 1.0 - self.low])  # linear interpolation, as torch.quantile
        if not hi > lo:
            raise SampleError(name, f"depth quantiles coincide ({lo:.6g} m): a flat map has no affine-invariant "
                                    f"target")
        return float(lo), float(hi)

    def encode(self, depth: np.ndarray, valid: np.ndarray, name: str = "") -> np.ndarray:
        lo, hi = self.quantiles(depth, valid, name)
        z = (depth.astype(np.float64) - lo) / (hi - lo) * 2.0 - 1.0
        return (np.clip(z, -1.0, 1.0) if self.clip else z).astype(np.float32)


@dataclass(frozen=True)
class MetricDepthMapping:
    """Fixed, invertible map of metric depth ``[d_min, d_max]`` onto [-1, 1] (in-domain training).

    Args:
        d_min, d_max: metres mapped to -1 and +1.
        scale: ``"log"`` (default; see the module docstring) or ``"linear"``.
    """

    d_min: float
    d_max: float
    scale: str = "log"

    def __post_init__(self) -> None:
        if not 0.0 < self.d_min < self.d_max:
            raise ValueError(f"need 0 < d_min < d_max, got {self.d_min} and {self.d_max}")
        if self.scale not in ("log", "linear"):
            raise ValueError(f"unknown depth scale {self.scale!r}; valid: 'log', 'linear'")

    def _bounds(self) -> tuple[float, float]:
        return (math.log(self.d_min), math.log(self.d_max)) if self.scale == "log" else (self.d_min, self.d_max)

    def encode(self, depth: np.ndarray, valid: Optional[np.ndarray] = None, name: str = "") -> np.ndarray:
        """``(H, W)`` metres → [-1, 1] (values outside ``[d_min, d_max]`` clipped; non-positive → -1)."""
        lo, hi = self._bounds()
        d = np.clip(depth.astype(np.float64), self.d_min, self.d_max)
        u = np.log(d) if self.scale == "log" else d
        return np.clip((u - lo) / (hi - lo) * 2.0 - 1.0, -1.0, 1.0).astype(np.float32)

    def decode(self, z: Tensor) -> Tensor:
        """[-1, 1] (clamped first) → metres in ``[d_min, d_max]``, any shape."""
        lo, hi = self._bounds()
        u = (z.clamp(-1.0, 1.0) + 1.0) * 0.5 * (hi - lo) + lo
        return u.exp() if self.scale == "log" else u


IN_DOMAIN_MAPPINGS: dict[str, MetricDepthMapping] = {
    "kitti": MetricDepthMapping(1.0, 80.0, "log"),
    "nyu": MetricDepthMapping(0.1, 10.0, "log"),
}
FIT_MODES = ("stretch", "center_crop")


@dataclass(frozen=True)
class TrainingTransform:
    """Reader sample → ``source`` ``(3, H, W)`` float32 in [-1, 1], ``target`` ``(1, H, W)`` float32 in [-1, 1],
    ``target_mask`` ``(1, H, W)`` bool, at the working resolution ``size``.

    Steps: (1) ``fit``: ``"stretch"`` keeps the whole picture and lets the resize change the aspect ratio (an
    evaluator resizes its prediction back to the ground truth's size the same way); ``"center_crop"`` first cuts
    the largest centred window with the working aspect ratio. (2) The target is encoded at the sample's own
    resolution, so the quantiles see every valid pixel (as Marigold normalises before its resize); invalid pixels
    get ``invalid_value``. (3) Resize: RGB by area (shrinking) or bilinear, target and mask nearest-exact, so a
    masked pixel never leaks into a valid one. RGB ``x`` → ``x / 127.5 − 1``.

    Args:
        size: working ``(H, W)``.
        encoder: :class:`QuantileNormalizer` or :class:`MetricDepthMapping`.
        fit: one of ``FIT_MODES``.
        invalid_value: target value at invalid pixels (+1: the far plane).
    """

    size: tuple[int, int]
    encoder: Union[QuantileNormalizer, MetricDepthMapping]
    fit: str = "stretch"
    invalid_value: float = 1.0

    def __post_init__(self) -> None:
        if len(self.size) != 2 or min(self.size) < 1:
            raise ValueError(f"working size must be (H, W) with positive sides, got {self.size}")
        if self.fit not in FIT_MODES:
            raise ValueError(f"unknown fit {self.fit!r}; valid: {list(FIT_MODES)}")

    def __call__(self, sample: dict[str, Any]) -> dict[str, Tensor]:
        rgb = sample["rgb"].permute(1, 2, 0).numpy()  # (H, W, 3) uint8
        depth, valid = sample["depth"][0].numpy(), sample["valid"][0].numpy()
        if self.fit == "center_crop":
            window = center_crop_window(depth.shape, self.size[1] / self.size[0])
            rgb, depth, valid = rgb[window], depth[window], valid[window]
        target = self.encoder.encode(depth, valid, str(sample.get("name", "")))
        target = np.where(valid, target, np.float32(self.invalid_value)).astype(np.float32)
        rgb = resize_rgb(np.ascontiguousarray(rgb), self.size)
        target, valid = resize_nearest(target, self.size), resize_nearest(valid, self.size)
        source = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))).float() / 127.5 - 1.0
        return {"source": source, "target": torch.from_numpy(np.ascontiguousarray(target))[None],
                "target_mask": torch.from_numpy(np.ascontiguousarray(valid))[None]}
