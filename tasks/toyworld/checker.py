"""Analytic attribute checker for toy-world images.

``analyze`` recovers (color, shape, size, position) from an image without any
learned component (analysis by synthesis):

1. A rough foreground mask keeps pixels whose RGB distance from ``BACKGROUND``
   exceeds ``ROUGH_THRESHOLD``; the largest 8-connected component is the object.
2. Color is the nearest ``PALETTE`` entry to the median colour of the
   component's interior (eroded) pixels; if that median is farther than
   ``MAX_COLOR_DISTANCE`` from every palette colour, the image is rejected.
3. A coverage map ``alpha`` is obtained by projecting each pixel onto the
   background->object colour axis (linear in the pixel values, not clipped, so
   zero-mean noise averages out and blur preserves its area and centroid).
4. For every shape hypothesis the side follows from the area and the
   bounding-box centre from the centroid (a triangle's centroid sits ``side/6``
   below its box centre); the hypothesis is rendered, blurred to match the
   observed second moments, and the one with the smallest squared error wins.
   Size thresholds that side midway between ``SIZES``; position is the
   ``POSITIONS`` entry nearest the box centre.

Any failure yields all fields ``None``, which counts as wrong for every attribute.
"""

from __future__ import annotations

from typing import Any, Sequence

import cv2
import numpy as np
import torch

from tasks.toyworld.scenes import CANVAS, PALETTE, POSITIONS, SHAPES, SIZES, shape_coverage

ATTRIBUTES: tuple[str, ...] = ("color", "shape", "size", "position")
ROUGH_THRESHOLD: float = 40.0  # RGB distance from background for the rough mask
MAX_COLOR_DISTANCE: float = 100.0  # reject if the object colour matches no palette entry (noise medians sit >= 104 from all)
MIN_AREA_FRACTION: float = 0.02  # smallest plausible object area / image area
REGION_DILATION: int = 3  # dilations of the component that bound the coverage map
INTERIOR_DEPTH: float = 0.6  # colour from pixels deeper than this fraction of the max edge distance

_PALETTE_NAMES = list(PALETTE)
_PALETTE_RGB = np.asarray([PALETTE[k] for k in _PALETTE_NAMES], np.float32)
_KERNEL = np.ones((3, 3), np.uint8)


def to_uint8_hwc(image: Any) -> np.ndarray:
    """Converts an image to ``(H, W, 3)`` uint8.

    Accepted inputs: numpy arrays or torch tensors, layout ``(H, W, 3)`` or
    ``(3, H, W)`` (channel-first is detected when the first axis has size 3 and
    the last does not).  Integer dtypes are taken as [0, 255]; floating dtypes
    are assumed to be in [-1, 1] (model-output convention) and clipped.

    Args:
        image: The image.

    Returns:
        ``(H, W, 3)`` uint8 array.
    """
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu()
        image = image.float().numpy() if image.is_floating_point() else image.numpy()
    arr = np.asarray(image)
    if arr.ndim != 3:
        raise ValueError(f"expected a 3-D image, got shape {arr.shape}")
    if arr.shape[0] == 3 and arr.shape[-1] != 3:
        arr = arr.transpose(1, 2, 0)
    if np.issubdtype(arr.dtype, np.floating):
        return np.clip(np.rint((arr.astype(np.float64) + 1.0) * 127.5), 0, 255).astype(np.uint8)
    return np.clip(arr, 0, 255).astype(np.uint8)


def _moments(alpha: np.ndarray) -> tuple[float, float, float, float]:
    """Area, centroid (x, y) in pixel units and mean per-axis variance of a weight map."""
    h, w = alpha.shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5
    area = float(alpha.sum())
    if area <= 1e-6:
        return area, w / 2.0, h / 2.0, 0.0
    mx, my = float((alpha * xs).sum() / area), float((alpha * ys).sum() / area)
    var = float((alpha * ((xs - mx) ** 2 + (ys - my) ** 2)).sum() / area) / 2.0
    return area, mx, my, var


def _hypothesis(shape: str, area: float, mx: float, my: float) -> tuple[float, float, float]:
    """Side and box centre (canvas pixels) of ``shape`` with the given area and centroid."""
    side = {"square": 1.0, "circle": 2.0 / np.sqrt(np.pi), "triangle": np.sqrt(2.0)}[shape] * np.sqrt(area)
    return float(side), mx, my - (side / 6.0 if shape == "triangle" else 0.0)


def estimate_background(img: np.ndarray) -> np.ndarray:
    """Median colour of the 1-pixel frame: generated backgrounds are often slightly tinted, and an
    object never covers most of the frame, so this is a robust reference for the foreground mask."""
    frame = np.concatenate([img[0], img[-1], img[1:-1, 0], img[1:-1, -1]])
    return np.median(frame, axis=0).astype(np.float32)


def measure(image: Any) -> dict[str, Any] | None:
    """Continuous measurements of the largest foreground object.

    Args:
        image: Image in any format accepted by ``to_uint8_hwc``.

    Returns:
        Dict with ``color`` (nearest palette name), ``color_distance`` (to that
        entry), ``shape`` (best hypothesis), ``errors`` (per-shape squared
        error), ``side``, ``cx``, ``cy`` (canvas pixels, i.e. scaled to a
        ``CANVAS``-wide image) and ``blur`` (estimated Gaussian sigma, image
        pixels); ``None`` if no plausible object is found.
    """
    img = to_uint8_hwc(image).astype(np.float32)
    h, w = img.shape[:2]
    if h != w:
        raise ValueError(f"expected a square image, got {h}x{w}")
    background = estimate_background(img)
    diff = img - background
    rough = (np.linalg.norm(diff, axis=-1) > ROUGH_THRESHOLD).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(rough, connectivity=8)
    if count <= 1:
        return None
    label = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    if stats[label, cv2.CC_STAT_AREA] < MIN_AREA_FRACTION * h * w:
        return None
    comp = (labels == label).astype(np.uint8)
    # object colour from the deep interior (blur desaturates everything near the edge)
    depth = cv2.distanceTransform(comp, cv2.DIST_L2, 3)
    median = np.median(img[depth >= INTERIOR_DEPTH * depth.max()], axis=0)
    dists = np.linalg.norm(_PALETTE_RGB - median, axis=1)
    axis = median - background
    alpha = np.clip(diff @ axis / max(float(axis @ axis), 1e-6), -1.0, 2.0)
    alpha = alpha * cv2.dilate(comp, _KERNEL, iterations=REGION_DILATION)
    if float(alpha.sum()) <= 1.0:
        return None
    area, mx, my, var = _moments(alpha)
    scale = CANVAS / w
    errors: dict[str, float] = {}
    fits: dict[str, tuple[float, float, float, float]] = {}
    for shape in SHAPES:
        side, cx, cy = _hypothesis(shape, area * scale**2, mx * scale, my * scale)
        template = shape_coverage(shape, (cx, cy), side, w)
        sigma = float(np.sqrt(max(var - _moments(template)[3], 0.0)))  # blur adds sigma^2 per axis
        if sigma > 0.2:
            template = cv2.GaussianBlur(template, (0, 0), sigma)
        errors[shape] = float(((alpha - template) ** 2).sum())
        fits[shape] = (side, cx, cy, sigma)
    shape = min(errors, key=errors.__getitem__)
    side, cx, cy, blur = fits[shape]
    return {
        "color": _PALETTE_NAMES[int(np.argmin(dists))],
        "color_distance": float(dists.min()),
        "shape": shape,
        "errors": errors,
        "side": side,
        "cx": cx,
        "cy": cy,
        "blur": blur,
    }


def analyze(image: Any) -> dict[str, str | None]:
    """Recovers the attributes of the single object in a toy-world image.

    Args:
        image: Image in any format accepted by ``to_uint8_hwc`` (uint8 in
            [0, 255], or float in [-1, 1]; ``(H, W, 3)`` or ``(3, H, W)``).

    Returns:
        Dict with keys color, shape, size, position; all ``None`` when no
        plausible object is found.
    """
    m = measure(image)
    if m is None or m["color_distance"] > MAX_COLOR_DISTANCE:
        return {k: None for k in ATTRIBUTES}
    size = _classify_size(m["side"])
    shape = m["shape"]
    position = min(POSITIONS, key=lambda k: (POSITIONS[k][0] - m["cx"]) ** 2 + (POSITIONS[k][1] - m["cy"]) ** 2)
    return {"color": m["color"], "shape": shape, "size": size, "position": position}


def _classify_size(side: float) -> str:
    """Size name whose nominal side is nearest (thresholds midway between SIZES)."""
    return min(SIZES, key=lambda k: abs(SIZES[k] - side))


def check(image: Any, attributes: dict[str, str]) -> dict[str, bool]:
    """Compares ``analyze(image)`` with reference attributes.

    Args:
        image: Image (see ``analyze``).
        attributes: Reference dict with keys color, shape, size, position.

    Returns:
        Dict of booleans with keys color, shape, size, position, all.
    """
    found = analyze(image)
    result = {k: found[k] is not None and found[k] == attributes[k] for k in ATTRIBUTES}
    result["all"] = all(result[k] for k in ATTRIBUTES)
    return result


def score(images: Any, attribute_list: Sequence[dict[str, str]]) -> dict[str, float]:
    """Scores a batch of images against reference attributes.

    Args:
        images: Sequence of images, or a batched array/tensor ``(N, ...)``.
        attribute_list: Reference attributes, one dict per image.

    Returns:
        Dict with ``{attr}_accuracy`` for color, shape, size, position, all,
        and ``n`` (number of images).
    """
    n = len(attribute_list)
    if len(images) != n:
        raise ValueError(f"{len(images)} images but {n} attribute dicts")
    totals = dict.fromkeys((*ATTRIBUTES, "all"), 0)
    for image, attributes in zip(images, attribute_list):
        for key, ok in check(image, attributes).items():
            totals[key] += int(ok)
    out: dict[str, float] = {f"{k}_accuracy": v / max(n, 1) for k, v in totals.items()}
    out["n"] = n
    return out
