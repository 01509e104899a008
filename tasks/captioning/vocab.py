"""Word-level tokenizer of toy-world captions (a closed vocabulary from the templates and attributes)."""

from __future__ import annotations

import re
from typing import Sequence

import torch
from torch import Tensor

from tasks.toyworld.scenes import PALETTE, POSITIONS, SHAPES, SIZES, TEMPLATES

PAD, EOS, UNK = "<pad>", "<eos>", "<unk>"
_TOKEN = re.compile(r"[a-z]+|[,:]")


def split_words(text: str) -> list[str]:
    """Lower-case words and the punctuation marks ``,`` and ``:`` as separate tokens."""
    return _TOKEN.findall(text.lower())


def toy_vocabulary() -> list[str]:
    """Every word of the toy-world templates and attribute names, sorted (special tokens excluded)."""
    words: set[str] = set()
    for template in TEMPLATES:
        words.update(split_words(re.sub(r"\{\w+\}", " ", template)))
    for names in (PALETTE, SHAPES, SIZES, POSITIONS):
        for name in names:
            words.update(split_words(name))
    return sorted(words)


class CaptionTokenizer:
    """Captions ⇄ fixed-length id sequences ``words…, <eos>, <pad>…``.

    Args:
        words: the vocabulary (default: :func:`toy_vocabulary`).
        max_length: sequence length ``L``, end-of-text included; longer captions are rejected.
    """

    def __init__(self, words: Sequence[str] | None = None, max_length: int = 16) -> None:
        self.itos = [PAD, EOS, UNK] + list(words if words is not None else toy_vocabulary())
        self.stoi = {w: i for i, w in enumerate(self.itos)}
        self.max_length = max_length
        self.pad_id, self.eos_id, self.unk_id = 0, 1, 2

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, captions: Sequence[str]) -> tuple[Tensor, Tensor]:
        """Captions → ids ``(B, L)`` int64 and mask ``(B, L)`` bool (True on words and ``<eos>``)."""
        ids = torch.full((len(captions), self.max_length), self.pad_id, dtype=torch.long)
        for row, caption in enumerate(captions):
            tokens = [self.stoi.get(w, self.unk_id) for w in split_words(caption)] + [self.eos_id]
            if len(tokens) > self.max_length:
                raise ValueError(f"caption {caption!r} has {len(tokens) - 1} tokens; max_length={self.max_length} "
                                 f"allows {self.max_length - 1}")
            ids[row, :len(tokens)] = torch.tensor(tokens)
        mask = torch.zeros_like(ids, dtype=torch.bool)
        lengths = (ids != self.pad_id).sum(1)
        mask[torch.arange(self.max_length)[None] < lengths[:, None]] = True
        return ids, mask

    def decode(self, ids: Tensor) -> list[str]:
        """Ids ``(B, L)`` → captions, cut at the first ``<eos>`` (padding and unknown ids are dropped)."""
        out = []
        for row in ids.tolist():
            words = []
            for i in row:
                if i == self.eos_id:
                    break
                if i not in (self.pad_id, self.unk_id) and 0 <= i < len(self.itos):
                    words.append(self.itos[i])
            out.append(re.sub(r" ([,:])", r"\1", " ".join(words)))
        return out
