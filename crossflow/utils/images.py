"""Image helpers: tensor to uint8 conversion, PNG/GIF/grid writing, safe loading and captions.

All functions here work on numpy ``uint8`` arrays in ``(H, W, C)`` / ``(N, H, W, C)`` layout with C = 1 or 3.
"""

from __future__ import annotations

import logging
import math
import textwrap
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

logger = logging.getLogger(__name__)


def to_uint8(images: Any) -> np.ndarray:
    """Convert float images in [-1, 1] to ``uint8``.

    Args:
        images: torch tensor or numpy array, ``(N, C, H, W)`` or ``(C, H, W)``, C = 1 or 3. Values are clamped.

    Returns:
        ``(N, H, W, C)`` uint8 array (-1 maps to 0, 1 to 255).
    """
    if hasattr(images, "detach"):  # torch.Tensor, without importing torch here
        images = images.detach().float().cpu().numpy()
    x = np.asarray(images, dtype=np.float32)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"expected images of shape (N, C, H, W) with C in (1, 3), got {x.shape}")
    x = np.nan_to_num(x, nan=0.0)
    x = np.clip((x + 1.0) * 127.5, 0, 255).round().astype(np.uint8)
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def _to_pil(image: np.ndarray) -> Image.Image:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        return Image.fromarray(image)
    if image.ndim == 3 and image.shape[2] == 3:
        return Image.fromarray(image)
    raise ValueError(f"expected an (H, W, C) image with C in (1, 3), got shape {image.shape}")


def _prepare_path(path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def save_png(image: np.ndarray, path: str | Path) -> Path:
    """Write one ``(H, W, C)`` uint8 image as PNG (parent folders are created). Returns the path."""
    path = _prepare_path(path)
    _to_pil(image).save(path, format="PNG")
    return path


def make_grid(images: np.ndarray, nrow: int | None = None, padding: int = 2, pad_value: int = 255,
              upscale: int = 1) -> np.ndarray:
    """Tile ``(N, H, W, C)`` uint8 images into one image.

    Args:
        images: Images to tile, row-major.
        nrow: Images per row (default ``ceil(sqrt(N))``).
        padding: Pixels between images and around the border.
        pad_value: Fill value of the padding.
        upscale: Integer nearest-neighbour magnification of each image (e.g. 4 for 32x32 samples).

    Returns:
        With ``H, W`` after upscaling: ``(rows*H + (rows+1)*padding, nrow*W + (nrow+1)*padding, C)`` uint8 array, ``rows = ceil(N / nrow)``.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"expected a non-empty (N, H, W, C) array, got shape {images.shape}")
    if upscale > 1:
        images = images.repeat(upscale, axis=1).repeat(upscale, axis=2)
    n, h, w, c = images.shape
    nrow = min(nrow or math.ceil(math.sqrt(n)), n)
    rows = math.ceil(n / nrow)
    grid = np.full((rows * h + (rows + 1) * padding, nrow * w + (nrow + 1) * padding, c), pad_value, images.dtype)
    for i in range(n):
        r, col = divmod(i, nrow)
        y, x = padding + r * (h + padding), padding + col * (w + padding)
        grid[y:y + h, x:x + w] = images[i]
    return grid


def save_grid(images: Any, path: str | Path, nrow: int | None = None, upscale: int = 1) -> Path:
    """Save a grid of images; float inputs in [-1, 1] ``(N, C, H, W)`` are converted with :func:`to_uint8`.

    Args:
        images: ``(N, H, W, C)`` uint8 array, or float ``(N, C, H, W)`` tensor/array.
        path: Output PNG path.
        nrow: Images per row.
        upscale: Integer nearest-neighbour magnification of each image (e.g. 4 for 32x32 samples).
    """
    arr = np.asarray(images) if not hasattr(images, "detach") else None
    if arr is None or arr.dtype != np.uint8:
        arr = to_uint8(images)
    return save_png(make_grid(arr, nrow=nrow, upscale=upscale), path)


def save_gif(frames: Sequence[np.ndarray], path: str | Path, duration_ms: int = 100, loop: int = 0) -> Path:
    """Save ``(H, W, C)`` uint8 frames as an animated GIF.

    Note: GIF encoders merge identical consecutive frames, so ``n_frames`` counts distinct ones.
    """
    if not frames:
        raise ValueError("save_gif needs at least one frame")
    path = _prepare_path(path)
    pil = [_to_pil(f).convert("RGB") for f in frames]
    pil[0].save(path, format="GIF", save_all=True, append_images=pil[1:], duration=duration_ms, loop=loop)
    return path


def load_image(path: str | Path) -> np.ndarray:
    """Load an image file as ``(H, W, 3)`` uint8 RGB.

    Raises:
        ValueError: the file is missing, truncated or not an image (message names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"image file not found: {path}")
    try:
        with Image.open(path) as im:
            im.verify()
        with Image.open(path) as im:
            im.load()
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ValueError(f"cannot read image {path}: {e}") from e


def caption_under(image: np.ndarray, text: str, width_chars: int | None = None, line_spacing: int = 2,
                  margin: int = 4) -> np.ndarray:
    """Return ``image`` with ``text`` written in black in a white band below it.

    Args:
        image: ``(H, W, C)`` uint8 image (grayscale is turned into RGB).
        text: Caption; wrapped to ``width_chars`` characters per line.
        width_chars: Line length; by default as many characters as fit the image width.
        line_spacing: Extra pixels between lines.
        margin: Pixels of white around the text.

    Returns:
        ``(H + band, W, 3)`` uint8 image.
    """
    base = _to_pil(image).convert("RGB")
    font = ImageFont.load_default()
    probe = ImageDraw.Draw(base)
    left, top, right, bottom = probe.textbbox((0, 0), "M" * 10, font=font)
    char_w, line_h = max((right - left) / 10, 1.0), bottom - top + line_spacing
    if width_chars is None:
        width_chars = max(int((base.width - 2 * margin) // char_w), 1)
    lines = textwrap.wrap(text, width=width_chars) or [""]
    out = Image.new("RGB", (base.width, base.height + 2 * margin + len(lines) * line_h), "white")
    out.paste(base, (0, 0))
    draw = ImageDraw.Draw(out)
    for i, line in enumerate(lines):
        draw.text((margin, base.height + margin + i * line_h - top), line, fill="black", font=font)
    return np.asarray(out, dtype=np.uint8).copy()


def colorize_depth(depth: Any, vmin: float, vmax: float, cmap: str = "magma_r") -> np.ndarray:
    """``(N, H, W)`` (or ``(H, W)``) depth → ``(N, H, W, 3)`` uint8 through a matplotlib colour map.

    Near is bright with the default reversed ``magma``; values outside ``[vmin, vmax]`` are clipped.
    """
    from matplotlib import colormaps

    if isinstance(depth, torch.Tensor):
        depth = depth.detach().cpu().numpy()
    d = np.asarray(depth, dtype=np.float64)
    if d.ndim == 2:
        d = d[None]
    if d.ndim != 3:
        raise ValueError(f"expected (N, H, W) depth maps, got shape {d.shape}")
    scaled = np.clip((d - vmin) / max(vmax - vmin, 1e-12), 0.0, 1.0)
    rgba = colormaps[cmap](scaled)
    return np.round(rgba[..., :3] * 255).astype(np.uint8)
