"""CLIP score of generated images against their prompts, through ``transformers`` ``CLIPModel``.

As the official evaluation (``tools/clip_score.py``, OpenAI CLIP ViT-B/32): images in [-1, 1] are
mapped to [0, 1], resized (shorter side, bilinear with antialiasing) to the vision tower's input
size, normalised with CLIP's mean and std; prompts are tokenised without a prefix and truncated to
77 tokens (the end-of-text token kept); the score is ``scale · max(cos(image, text), 0)``. The
official scale is 1 (the paper's CLIP ≈ 0.24–0.29); ``scale=100`` gives the other common convention
(the CLIPScore paper uses 2.5). :meth:`CLIPScorer.describe` states the settings next to every result.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

log = logging.getLogger(__name__)

#: OpenAI CLIP's image normalisation.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
#: CLIP's text context length; longer prompts are truncated.
CLIP_MAX_TOKENS = 77


class CLIPScorer:
    """Cosine similarity of CLIP image and text embeddings, clipped at 0 and scaled.

    Args:
        name_or_path: local directory (or hub name, when online) of a ``CLIPModel`` with its tokenizer,
            e.g. ``openai/clip-vit-base-patch32`` (the official evaluation's ViT-B/32).
        scale: multiplier of the clipped cosine (official 1.0; 100 for the percent convention).
        device: where the model runs.
        dtype: weights dtype (the official code runs fp16 on CUDA).
        local_files_only: never touch the network when loading.
        batch_size: images per forward in :meth:`score`.
    """

    def __init__(self, name_or_path: str, *, scale: float = 1.0, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32, local_files_only: bool = True, batch_size: int = 64) -> None:
        from transformers import AutoTokenizer, CLIPModel

        try:
            self.model = CLIPModel.from_pretrained(name_or_path, local_files_only=local_files_only, dtype=dtype)
            self.tokenizer = AutoTokenizer.from_pretrained(name_or_path, local_files_only=local_files_only)
        except OSError as exc:
            raise FileNotFoundError(f"cannot load a CLIPModel and its tokenizer from {name_or_path!r}: {exc}") from exc
        self.model = self.model.to(device).eval().requires_grad_(False)
        self.name_or_path, self.scale, self.device, self.batch_size = name_or_path, float(scale), device, batch_size
        self.image_size = int(self.model.config.vision_config.image_size)
        self.max_tokens = min(CLIP_MAX_TOKENS, int(self.model.config.text_config.max_position_embeddings))

    def describe(self) -> dict[str, Any]:
        """The settings a reported score depends on."""
        return {"model": self.name_or_path, "scale": self.scale, "max_tokens": self.max_tokens,
                "truncation": f"prompts truncated to {self.max_tokens} tokens (end-of-text kept)",
                "formula": f"{self.scale:g} * max(cos(image, text), 0)", "image_size": self.image_size,
                "prefix": None}

    def preprocess(self, images: Tensor) -> Tensor:
        """``(B, 3, H, W)`` images in [-1, 1] → normalised ``(B, 3, S, S)`` pixel values (S = vision input size)."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W) in [-1, 1], got {tuple(images.shape)}")
        x = ((images.float() + 1) / 2).clamp(0, 1)
        h, w = x.shape[-2:]
        s = self.image_size
        if min(h, w) != s:  # shorter side to S (as torchvision Resize(S)), then a centre crop
            size = (s, max(s, round(w * s / h))) if h <= w else (max(s, round(h * s / w)), s)
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        top, left = (x.shape[-2] - s) // 2, (x.shape[-1] - s) // 2
        x = x[..., top:top + s, left:left + s]
        mean = torch.tensor(CLIP_MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(CLIP_STD, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    @torch.no_grad()
    def image_embeddings(self, images: Tensor) -> Tensor:
        """L2-normalised ``(B, P)`` embeddings of ``(B, 3, H, W)`` images in [-1, 1]."""
        pixels = self.preprocess(images).to(self.device, self.model.dtype)
        pooled = self.model.vision_model(pixel_values=pixels).pooler_output
        return F.normalize(self.model.visual_projection(pooled).float(), dim=-1)

    @torch.no_grad()
    def text_embeddings(self, prompts: list[str]) -> Tensor:
        """L2-normalised ``(B, P)`` embeddings of the prompts (truncated to ``max_tokens``)."""
        tokens = self.tokenizer(list(prompts), padding=True, truncation=True, max_length=self.max_tokens,
                                return_tensors="pt").to(self.device)
        pooled = self.model.text_model(input_ids=tokens["input_ids"],
                                       attention_mask=tokens["attention_mask"]).pooler_output
        return F.normalize(self.model.text_projection(pooled).float(), dim=-1)

    @torch.no_grad()
    def score(self, images: Tensor, prompts: list[str]) -> Tensor:
        """Per-pair scores ``(B,)`` = ``scale · max(cos, 0)`` of images ``(B, 3, H, W)`` in [-1, 1] and prompts."""
        if len(prompts) != images.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {len(prompts)} prompts")
        out = []
        for i in range(0, len(prompts), self.batch_size):
            img = self.image_embeddings(images[i:i + self.batch_size])
            txt = self.text_embeddings(prompts[i:i + self.batch_size])
            out.append(self.scale * (img * txt).sum(-1).clamp(min=0).cpu())
        return torch.cat(out)
