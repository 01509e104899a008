"""Toy-world image–caption data for text-to-image, with cached LM embeddings."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import Dataset

from tasks.toyworld.dataset import render_batch


class CaptionedImages(Dataset):
    """Images as uint8 tensors plus one cached token-embedding row per unique caption.

    ``__getitems__`` returns a whole collated batch (one tensor gather instead of per-item work):
    ``source`` ``(B, L, D)`` float32, ``source_mask`` ``(B, L)`` bool, ``target`` ``(B, 3, H, W)`` in [-1, 1].
    """

    def __init__(self, examples: list, embeddings: Tensor, mask: Tensor, caption_index: Tensor, resolution: int) -> None:
        images, _ = render_batch(examples, resolution=resolution)
        self.images = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
        self.embeddings, self.mask, self.caption_index = embeddings, mask, caption_index
        self.examples = examples

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitems__(self, indices: list[int]) -> dict[str, Tensor]:
        idx = torch.as_tensor(indices)
        rows = self.caption_index[idx]
        return {"source": self.embeddings[rows].float(), "source_mask": self.mask[rows].bool(),
                "target": self.images[idx].float() / 127.5 - 1.0}

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {k: v[0] for k, v in self.__getitems__([index]).items()}
