"""Prompts → the model's source: token states of the frozen language model, cached on disk."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import torch

from crossflow.language import resolve_model_path
from crossflow.language.cache import embed_prompts
from crossflow.language.hf import TextEmbedder, validate_prompts
from crossflow.task import Source
from tasks.t2i.config import LanguageModelConfig


class PromptEncoder:
    """``encoder(prompts, device) -> Source`` of ``(B, L, D)`` token states and the ``(B, L)`` mask.

    The language model loads on the first call; embeddings are cached under ``cache_dir`` (one row per
    prompt, keyed by the model's identity), so repeated prompts and later runs skip the model.

    Args:
        lm: the ``task.language_model`` section.
        cache_dir: embedding cache directory (None: no cache).
    """

    def __init__(self, lm: LanguageModelConfig, cache_dir: Optional[Path]) -> None:
        self.lm, self.cache_dir = lm, cache_dir
        self._embedder: Optional[TextEmbedder] = None

    def embedder(self) -> TextEmbedder:
        """The language model, loaded on first use (its width is checked against ``language_model.dim``)."""
        if self._embedder is None:
            lm = self.lm
            device = lm.device or ("cuda" if torch.cuda.is_available() else "cpu")
            self._embedder = TextEmbedder(resolve_model_path(lm.name_or_path), max_length=lm.max_length,
                                          local_files_only=lm.local_files_only, dtype=lm.dtype,
                                          output_scale=lm.output_scale, kind=lm.kind,
                                          model_attention_mask=lm.model_attention_mask, device=device)
            if lm.dim is not None and lm.dim != self._embedder.dim:
                raise ValueError(f"task.language_model.dim={lm.dim}, but {lm.name_or_path} gives "
                                 f"{self._embedder.dim}-wide token states")
        return self._embedder

    def check_texts(self, texts: Sequence[str]) -> list[str]:
        """Reject empty prompts (naming the index) before the language model loads."""
        return validate_prompts(list(texts))

    def __call__(self, inputs: Sequence[str], device: torch.device | str) -> Source:
        prompts = self.check_texts(inputs)
        emb, mask = embed_prompts(self.embedder(), prompts, cache_dir=self.cache_dir,
                                  batch_size=self.lm.batch_size)
        return Source(emb.float().to(device), mask.bool().to(device))

    def fill_cache(self, inputs: Sequence[str]) -> None:
        """Embed ``inputs`` into the cache (once, before several processes read it)."""
        unique = sorted(set(self.check_texts(inputs)))
        for i in range(0, len(unique), 1024):
            self(unique[i:i + 1024], "cpu")
