"""Typed outputs of a :class:`~crossflow.pipeline.Pipeline` call: images, depth maps or texts.

Every output keeps the generated target ``latents`` beside the decoded values, concatenates with
:meth:`PipelineOutput.concat` and writes itself with :meth:`PipelineOutput.save` (one record per
sample, which ``crossflow sample`` gathers into its index, ``prompts.jsonl`` or ``inputs.jsonl``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Optional, Sequence, TypeVar

import numpy as np
import torch
from torch import Tensor

from crossflow.utils.images import caption_under, colorize_depth, save_png, to_uint8

T = TypeVar("T", bound="PipelineOutput")


@dataclass(kw_only=True)
class PipelineOutput(ABC):
    """Base of the typed outputs.

    Attributes:
        latents: ``(B, C, H, W)`` generated target latents on the CPU (float32).
    """

    latents: Optional[Tensor] = None

    @abstractmethod
    def __len__(self) -> int: ...

    @classmethod
    def concat(cls: type[T], parts: Sequence[T]) -> T:
        """Join outputs of consecutive batches (tensors along dim 0, lists end to end)."""
        if not parts:
            raise ValueError("nothing to concatenate")
        values: dict[str, Any] = {}
        for f in fields(parts[0]):
            items = [getattr(p, f.name) for p in parts]
            if any(item is None for item in items):
                values[f.name] = None
            elif isinstance(items[0], Tensor):
                values[f.name] = torch.cat(items)
            elif isinstance(items[0], list):
                values[f.name] = [x for item in items for x in item]
            else:
                values[f.name] = items[0]
        return replace(parts[0], **values)

    @abstractmethod
    def tiles(self) -> np.ndarray:
        """``(B, H, W, 3)`` uint8 pictures of the samples (for grids and GIFs)."""

    @abstractmethod
    def save(self, out_dir: str | Path, stems: Sequence[str]) -> list[dict[str, Any]]:
        """Write every sample under ``out_dir`` (file names from ``stems``); one record per sample."""


@dataclass(kw_only=True)
class ImageOutput(PipelineOutput):
    """Generated images.

    Attributes:
        images: ``(B, 3, H, W)`` float in [-1, 1] on the CPU.
    """

    images: Tensor

    def __len__(self) -> int:
        return self.images.shape[0]

    def uint8(self) -> np.ndarray:
        """``(B, H, W, C)`` uint8, as saved (C = 3, or 1 for one-channel images)."""
        return to_uint8(self.images)

    def pil(self) -> list:
        """One ``PIL.Image`` per sample (mode ``RGB``, or ``L`` for one-channel images)."""
        from PIL import Image

        return [Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img) for img in self.uint8()]

    def tiles(self) -> np.ndarray:
        """``(B, H, W, 3)`` uint8 pictures of the samples (for grids; one channel is shown as grey)."""
        images = self.uint8()
        return images.repeat(3, axis=-1) if images.shape[-1] == 1 else images

    def save(self, out_dir: str | Path, stems: Sequence[str]) -> list[dict[str, Any]]:
        out_dir = Path(out_dir)
        return [{"file": save_png(img, out_dir / f"{stem}.png").name} for img, stem in zip(self.uint8(), stems)]


@dataclass(kw_only=True)
class DepthOutput(PipelineOutput):
    """Generated depth maps.

    Attributes:
        depth: ``(B, H, W)`` float32 depth in the task's units (metric for the toy world).
        vmin, vmax: the depth range used to colour the maps (the task's valid range).
    """

    depth: Tensor
    vmin: float
    vmax: float

    def __len__(self) -> int:
        return self.depth.shape[0]

    def tiles(self) -> np.ndarray:
        """Colour-mapped depth ``(B, H, W, 3)`` uint8 on the fixed range ``[vmin, vmax]`` (near is bright)."""
        return colorize_depth(self.depth, self.vmin, self.vmax)

    def save(self, out_dir: str | Path, stems: Sequence[str]) -> list[dict[str, Any]]:
        """``STEM.png`` (colour-mapped) and ``STEM.npy`` (float32 depth) per sample."""
        out_dir = Path(out_dir)
        records = []
        for depth, tile, stem in zip(self.depth, self.tiles(), stems):
            save_png(tile, out_dir / f"{stem}.png")
            np.save(out_dir / f"{stem}.npy", depth.numpy().astype(np.float32))
            records.append({"file": f"{stem}.png", "depth": f"{stem}.npy"})
        return records


@dataclass(kw_only=True)
class TextOutput(PipelineOutput):
    """Generated texts.

    Attributes:
        texts: one string per sample.
        token_ids: ``(B, L)`` the decoded token ids.
    """

    texts: list[str]
    token_ids: Optional[Tensor] = None

    def __len__(self) -> int:
        return len(self.texts)

    def tiles(self, width: int = 128) -> np.ndarray:
        """Each text written on a white ``width``-pixel-wide tile, padded to one height."""
        blank = np.full((2, width, 3), 255, dtype=np.uint8)
        tiles = [caption_under(blank, text) for text in self.texts]
        height = max(t.shape[0] for t in tiles)
        return np.stack([np.pad(t, ((0, height - t.shape[0]), (0, 0), (0, 0)), constant_values=255) for t in tiles])

    def save(self, out_dir: str | Path, stems: Sequence[str]) -> list[dict[str, Any]]:
        """Texts are kept in the records (``crossflow sample`` writes them to its index file); no files."""
        return [{"text": text} for text in self.texts]


__all__ = ["DepthOutput", "ImageOutput", "PipelineOutput", "TextOutput"]
