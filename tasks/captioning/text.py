"""The text side of captioning on real captions: Karpathy-style words, a word vocabulary, LM tokenizers.

Two ways for a caption to become token ids for the text VAE (``task.text.kind``):

* ``words``: :class:`WordTokenizer` over a vocabulary of the training split's words (:func:`build_vocabulary`,
  the ``count > 5`` convention of the COCO captioning literature); ids are words, ``<eos>`` ends a caption;
* ``lm``: :class:`LMTokenizer`, a ``transformers`` language model's tokenizer; the text VAE's encoder reads the
  frozen LM's token states and its decoder predicts that tokenizer's ids.

Both share the interface of the toy :class:`~tasks.captioning.vocab.CaptionTokenizer`: ``encode(captions) ->
(ids, mask)``, ``decode(ids) -> captions``, ``pad_id``, ``max_length`` and ``len()``.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from typing import Any, Iterable, Optional, Sequence

import torch
from torch import Tensor

from tasks.captioning.vocab import EOS, PAD, UNK, CaptionTokenizer
from tasks.t2i.config import LanguageModelConfig

log = logging.getLogger(__name__)

_NOT_WORD = re.compile(r"[^\w\s]|_")


def karpathy_tokens(text: str) -> list[str]:
    """Lower-case, punctuation deleted, split on whitespace: the form of Karpathy's ``tokens``.

    ``"A man's bike, parked."`` → ``["a", "mans", "bike", "parked"]``.
    """
    return _NOT_WORD.sub("", text.lower()).split()


def build_vocabulary(token_lists: Iterable[Sequence[str]], min_count: int = 5) -> list[str]:
    """Words seen more than ``min_count`` times in ``token_lists``, most frequent first, ties alphabetical.

    The special tokens ``<pad>``, ``<eos>``, ``<unk>`` are never part of it (the tokenizer adds them).
    """
    counts = Counter(word for tokens in token_lists for word in tokens)
    for special in (PAD, EOS, UNK):
        counts.pop(special, None)
    return [w for w, c in sorted(counts.items(), key=lambda wc: (-wc[1], wc[0])) if c > min_count]


def _token_list(caption: str | Sequence[str]) -> list[str]:
    """A raw caption through :func:`karpathy_tokens`; an already tokenised one as it is."""
    return karpathy_tokens(caption) if isinstance(caption, str) else list(caption)


class WordTokenizer(CaptionTokenizer):
    """Captions ⇄ fixed-length ids ``words…, <eos>, <pad>…`` over a word vocabulary (ids 0–2: pad, eos, unk).

    Unlike the toy tokenizer, long captions are truncated to ``max_length - 1`` words (plus ``<eos>``), as the
    COCO preprocessing does, and words outside the vocabulary become ``<unk>``.

    Args:
        words: the vocabulary (e.g. :func:`build_vocabulary` of the training split), without special tokens.
        max_length: sequence length ``L``, ``<eos>`` included.
    """

    def __init__(self, words: Sequence[str], max_length: int) -> None:
        words = list(words)
        if max_length < 2:
            raise ValueError(f"max_length must be >= 2 (a word and <eos>), got {max_length}")
        duplicates = sorted(w for w, c in Counter(words).items() if c > 1)
        specials = [w for w in words if w in (PAD, EOS, UNK)]
        if duplicates or specials:
            raise ValueError(f"task.text.vocabulary: duplicate words {duplicates[:5]} or special tokens {specials} "
                             "in it; give each word once, without <pad>/<eos>/<unk>")
        super().__init__(words, max_length=max_length)

    def encode(self, captions: Sequence[str | Sequence[str]]) -> tuple[Tensor, Tensor]:
        """Captions (raw strings, or token lists such as Karpathy's ``tokens``) → ids ``(B, L)`` int64 and
        mask ``(B, L)`` bool (True on words and ``<eos>``)."""
        rows, lengths = [], []
        for caption in captions:  # one tensor at the end: COCO has 566k training captions
            row = [self.stoi.get(w, self.unk_id) for w in _token_list(caption)[:self.max_length - 1]]
            row.append(self.eos_id)
            lengths.append(len(row))
            rows.append(row + [self.pad_id] * (self.max_length - len(row)))
        ids = torch.tensor(rows, dtype=torch.long).view(len(rows), self.max_length)
        mask = torch.arange(self.max_length)[None] < torch.tensor(lengths, dtype=torch.long).view(-1, 1)
        return ids, mask


class LMTokenizer:
    """Captions ⇄ a ``transformers`` tokenizer's ids, and the frozen LM's token states of those ids.

    The tokenizer (files only) loads on first use, the language model on the first :meth:`states` call.
    ``max_length`` (the text VAE's ``L``) replaces ``lm.max_length``.

    Args:
        lm: the language model (``name_or_path``, ``kind``, ``dtype``, ``output_scale``, ``dim``, ...).
        max_length: ids per caption, special tokens included (padding and truncation).
    """

    def __init__(self, lm: LanguageModelConfig, max_length: int) -> None:
        if max_length < 2:
            raise ValueError(f"max_length must be >= 2, got {max_length}")
        self.lm, self.max_length = lm, int(max_length)
        self._tokenizer: Any = None
        self._embedder: Any = None

    def __getstate__(self) -> dict[str, Any]:
        # data-loader workers get the tokenizer, never a copy of the loaded language model
        return {**self.__dict__, "_embedder": None}

    @property
    def path(self) -> str:
        """Local directory (or hub id) of the language model."""
        from crossflow.language import resolve_model_path

        return resolve_model_path(self.lm.name_or_path)

    @property
    def tokenizer(self) -> Any:
        """The ``transformers`` tokenizer (padding = end-of-text where the tokenizer has no pad token)."""
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            try:
                tok = AutoTokenizer.from_pretrained(self.path, local_files_only=self.lm.local_files_only)
            except (OSError, ValueError) as e:
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise OSError(f"task.text.language_model.name_or_path={self.lm.name_or_path!r}: cannot load its "
                              f"tokenizer ({first})") from e
            if tok.pad_token is None:  # decoder-only tokenizers (GPT-2 style), as TextEmbedder does
                tok.pad_token = tok.eos_token
            self._tokenizer = tok
        return self._tokenizer

    def __len__(self) -> int:
        return len(self.tokenizer)

    @property
    def pad_id(self) -> int:
        return int(self.tokenizer.pad_token_id)

    @property
    def end_id(self) -> Optional[int]:
        """The id that ends a caption: ``[SEP]`` for BERT-style tokenizers, else end-of-text."""
        tok = self.tokenizer
        end = tok.sep_token_id if tok.sep_token_id is not None else tok.eos_token_id
        return None if end is None else int(end)

    @property
    def dim(self) -> int:
        """Width ``D`` of the token states: ``lm.dim`` when set, else the checkpoint's ``config.json`` (no weights)."""
        if self.lm.dim is not None:
            return int(self.lm.dim)
        from tasks.t2i.features import checkpoint_dim

        try:
            return checkpoint_dim(self.lm.name_or_path, self.lm.local_files_only)
        except (OSError, ValueError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ValueError(f"task.text.language_model.dim: not set and the config of {self.lm.name_or_path!r} "
                             f"cannot be read ({first}); set the width of its token states") from e

    def encode(self, captions: Sequence[str | Sequence[str]]) -> tuple[Tensor, Tensor]:
        """Captions (strings; token lists are joined by spaces) → ids ``(B, L)`` int64 and the tokenizer's
        attention mask ``(B, L)`` bool, padded and truncated to ``L = max_length``."""
        texts = [c if isinstance(c, str) else " ".join(c) for c in captions]
        if not texts:
            return (torch.zeros(0, self.max_length, dtype=torch.long),
                    torch.zeros(0, self.max_length, dtype=torch.bool))
        batch = self.tokenizer(texts, padding="max_length", truncation=True, max_length=self.max_length,
                               return_tensors="pt")
        return batch["input_ids"].long(), batch["attention_mask"].bool()

    def decode(self, ids: Tensor) -> list[str]:
        """Ids ``(B, L)`` → captions: each row cut at its first end id (after the start), special tokens dropped."""
        tok, end = self.tokenizer, self.end_id
        starts = {t for t in (tok.bos_token_id, tok.cls_token_id) if t is not None}
        rows = []
        for row in ids.tolist():
            if end is not None:
                first = 1 if row and row[0] in starts else 0  # GPT-2 style: start and end are one token
                row = row[:next((i for i in range(first, len(row)) if row[i] == end), len(row))]
            rows.append(row)
        return [text.strip() for text in self.tokenizer.batch_decode(rows, skip_special_tokens=True)]

    def embedder(self, device: torch.device | str | None = None) -> Any:
        """The frozen LM (:class:`~crossflow.language.hf.TextEmbedder`), loaded on first use on ``lm.device`` or
        ``device``; its width is checked against ``lm.dim``."""
        if self._embedder is None:
            from crossflow.language.hf import TextEmbedder

            lm = self.lm
            self._embedder = TextEmbedder(self.path, max_length=self.max_length, local_files_only=lm.local_files_only,
                                          dtype=lm.dtype, output_scale=lm.output_scale, kind=lm.kind,
                                          model_attention_mask=lm.model_attention_mask, device=lm.device or device)
            if lm.dim is not None and lm.dim != self._embedder.dim:
                raise ValueError(f"task.text.language_model.dim={lm.dim}, but {lm.name_or_path} gives "
                                 f"{self._embedder.dim}-wide token states")
            log.info("text side: language model %s loaded (%d-wide token states)", lm.name_or_path,
                     self._embedder.dim)
        return self._embedder

    @torch.no_grad()
    def states(self, ids: Tensor, mask: Tensor, device: torch.device | str) -> Tensor:
        """Token states ``(B, L, D)`` float32 on ``device`` of ids ``(B, L)`` with attention mask ``(B, L)``
        (last hidden layer × ``lm.output_scale``)."""
        emb = self.embedder(device)
        attn = mask.to(emb.device).long()
        out = emb.model(input_ids=ids.to(emb.device), attention_mask=attn if emb.model_attention_mask else None,
                        return_dict=True)
        states = out.last_hidden_state.float()
        if emb.output_scale != 1.0:
            states = states * emb.output_scale
        return states.to(device)


__all__ = ["LMTokenizer", "WordTokenizer", "build_vocabulary", "karpathy_tokens"]
