"""Pre-stage of captioning: train the text VAE on captions with the one trainer.

Run ``crossflow train configs/captioning/toy_text_vae.yaml --run-dir runs/captioning_text_vae`` (the
captioning task also runs it by itself when its ``text_vae_dir`` is empty). The captions are the toy
world's (``task.dataset=toyworld``) or every sentence of the Karpathy training splits of COCO
(``task.dataset=coco``); ``task.text.kind`` says how they become ids (:mod:`tasks.captioning.text`).
``evaluate`` reports the token and whole-caption reconstruction accuracy on the held-out captions.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from crossflow.codecs.text_vae import TextVAE, token_accuracy
from crossflow.config import ConfigError
from crossflow.encoders.gaussian import DiagonalGaussian
from crossflow.specs import ImageSpec, TokenSpec
from crossflow.task import Task
from crossflow.utils.images import caption_under, save_png
from tasks.captioning.config import TextVAEStageConfig
from tasks.captioning.text import LMTokenizer, WordTokenizer, build_vocabulary, karpathy_tokens
from tasks.captioning.vocab import CaptionTokenizer
from tasks.toyworld.dataset import make_split

log = logging.getLogger(__name__)

#: A caption as the text side takes it: a raw string, or a list of (Karpathy) tokens.
Caption = Union[str, Sequence[str]]
AnyTokenizer = Union[CaptionTokenizer, WordTokenizer, LMTokenizer]


class TokenizedCaptions(Dataset):
    """Batches of ``ids`` ``(B, L)`` and ``mask`` ``(B, L)`` of tokenised captions."""

    def __init__(self, ids: Tensor, mask: Tensor) -> None:
        self.ids, self.mask = ids, mask

    def __len__(self) -> int:
        return self.ids.shape[0]

    def __getitems__(self, indices: list[int]) -> dict[str, Tensor]:
        idx = torch.as_tensor(indices)
        return {"ids": self.ids[idx], "mask": self.mask[idx]}

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {k: v[0] for k, v in self.__getitems__([index]).items()}


class CaptionStates(TokenizedCaptions):
    """Tokenised captions whose frozen-LM token states are computed on the device by :meth:`prepare`."""

    def __init__(self, ids: Tensor, mask: Tensor, tokenizer: LMTokenizer) -> None:
        super().__init__(ids, mask)
        self.tokenizer = tokenizer

    def prepare(self, batch: dict[str, Any], device: torch.device) -> dict[str, Tensor]:
        """``ids``, ``mask`` ``(B, L)`` on ``device`` plus the LM's ``states`` ``(B, L, D)`` of those ids."""
        ids, mask = batch["ids"].to(device, non_blocking=True), batch["mask"].to(device, non_blocking=True)
        return {"ids": ids, "mask": mask, "states": self.tokenizer.states(ids, mask, device)}


def as_text(caption: Caption) -> str:
    """A caption for display: raw strings as they are, token lists joined by spaces."""
    return caption if isinstance(caption, str) else " ".join(caption)


@torch.no_grad()
def encode_ids(vae: TextVAE, tokenizer: AnyTokenizer, ids: Tensor, mask: Tensor) -> DiagonalGaussian:
    """Posterior ``(B, C, H, W)`` of ids ``(B, L)`` with mask ``(B, L)`` on the VAE's device; a VAE that reads
    token states gets them from ``tokenizer.states`` (an :class:`LMTokenizer`)."""
    device = next(vae.parameters()).device
    ids, mask = ids.to(device), mask.to(device)
    if vae.input_dim is None:
        return vae.encode(ids, mask)
    if not hasattr(tokenizer, "states"):
        raise ValueError(f"the text VAE reads {vae.input_dim}-wide token states, but its tokenizer "
                         f"({type(tokenizer).__name__}) has no language model")
    return vae.encode(tokenizer.states(ids, mask, device), mask)


@torch.no_grad()
def reconstruction_accuracy(vae: TextVAE, tokenizer: AnyTokenizer, captions: Sequence[Caption], *,
                            batch_size: int = 256) -> dict[str, float]:
    """Decode the posterior means of ``captions``: token accuracy (over the masked positions: words and
    end-of-text) and the fraction of captions decoded exactly as the tokenizer renders the truth (after its
    truncation and ``<unk>``)."""
    correct = total = exact = 0.0
    for start in range(0, len(captions), batch_size):
        ids, mask = tokenizer.encode(list(captions[start:start + batch_size]))
        pred = vae.decode(encode_ids(vae, tokenizer, ids, mask).mean).cpu()
        weight = float(mask.sum())
        correct += token_accuracy(pred, ids, mask) * weight
        total += weight
        exact += sum(p == t for p, t in zip(tokenizer.decode(pred), tokenizer.decode(ids)))
    n = len(captions)
    return {"token_accuracy": correct / max(total, 1.0), "caption_accuracy": exact / max(n, 1), "num_captions": n}


class TextVAEEvaluator:
    """Held-out reconstruction accuracy of the text VAE; the preview lists a few reconstructions."""

    def __init__(self, task: "TextVAEStage") -> None:
        self.task = task

    def evaluate(self, pipe: Any, out_dir: Path, *, num: Optional[int] = None, options: Any = None) -> dict:
        """Token and whole-caption reconstruction accuracy of the held-out captions (the toy test split, or
        every sentence of ``task.coco.eval_split``; the first ``num``); writes ``metrics.json``."""
        captions = self.task.captions("eval")
        metrics: dict[str, Any] = reconstruction_accuracy(pipe.model, self.task.tokenizer,
                                                          captions[:num or len(captions)])
        metrics |= {"text_kind": self.task.tc.text.kind, "vocabulary_size": len(self.task.tokenizer)}
        if self.task.tc.dataset == "coco":
            metrics["split"] = self.task.tc.coco.eval_split
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / "metrics.json").write_text(json.dumps(metrics, indent=2))
        log.info("text VAE held-out token accuracy %.4f, exact captions %.3f", metrics["token_accuracy"],
                 metrics["caption_accuracy"])
        return metrics

    @torch.no_grad()
    def preview(self, pipe: Any, path: Path) -> None:
        """A picture listing ``truth -> reconstruction`` for the first eight held-out captions."""
        captions = self.task.captions("eval")[:8]
        tokenizer = self.task.tokenizer
        ids, mask = tokenizer.encode(captions)
        decoded = tokenizer.decode(pipe.model.decode(encode_ids(pipe.model, tokenizer, ids, mask).mean).cpu())
        blank = np.full((2, 640, 3), 255, dtype=np.uint8)
        lines = [caption_under(blank, f"{as_text(c)}  ->  {d}") for c, d in zip(captions, decoded)]
        save_png(np.concatenate(lines), path)


class TextVAEStage(Task):
    """Trains :class:`~crossflow.codecs.text_vae.TextVAE` on training captions (toy world or COCO).

    It does not generate: its model is a codec that the captioning task loads, frozen, from the run.
    ``task.text.kind``: ``toy`` (the toy templates' closed vocabulary, toy world only), ``words`` (a word
    vocabulary of the training split, saved in ``task.text.vocabulary``) or ``lm`` (a language model's
    tokenizer ids; the encoder reads its token states).
    """

    config_class = TextVAEStageConfig

    def __init__(self, config) -> None:
        super().__init__(config)
        self.tc: TextVAEStageConfig = config.task
        if self.tc.text.kind == "toy" and self.tc.dataset != "toyworld":
            raise ConfigError(f"task.text.kind=toy is the toy world's closed vocabulary; with "
                              f"task.dataset={self.tc.dataset} use task.text.kind=words or lm")
        self._tokenizer: Optional[AnyTokenizer] = None
        self._karpathy: Optional[list] = None

    # -------------------------------------------------------------- captions
    def split(self):
        """The toy world's (train, test) split of ``task.toyworld``."""
        d = self.tc.toyworld
        return make_split(d.num_train, d.num_test, d.seed)

    def karpathy_images(self) -> list:
        """The images of ``task.coco.train_splits`` and ``eval_split`` in ``task.coco.dataset_json`` (read once)."""
        if self._karpathy is None:
            from tasks.captioning.coco import read_karpathy

            coco = self.tc.coco
            if coco.dataset_json is None:
                raise ConfigError("task.coco.dataset_json: required for task.dataset=coco (Karpathy's "
                                  "dataset_coco.json)")
            self._karpathy = read_karpathy(coco.dataset_json, sorted({*coco.train_splits, coco.eval_split}))
        return self._karpathy

    def captions(self, which: str = "train") -> list[Caption]:
        """Training (``"train"``) or held-out (``"eval"``) captions as the tokenizer takes them.

        Toy world: the caption of every scene of the split. COCO: every sentence of the images of
        ``task.coco.train_splits`` (or ``eval_split``), as Karpathy's tokens for ``kind=words``, else raw.
        """
        if which not in ("train", "eval"):
            raise ValueError(f"captions of 'train' or 'eval', not {which!r}")
        if self.tc.dataset == "toyworld":
            train, test = self.split()
            return [ex.caption for ex in (train if which == "train" else test)]
        coco = self.tc.coco
        splits = set(coco.train_splits) if which == "train" else {coco.eval_split}
        words = self.tc.text.kind == "words"
        return [list(tokens) if words else raw.strip() for image in self.karpathy_images() if image.split in splits
                for raw, tokens in zip(image.raw, image.tokens)]

    def vocabulary(self) -> list[str]:
        """``task.text.vocabulary``; when empty, built from the training captions and stored there (so the
        config saved with the run carries it)."""
        text = self.tc.text
        if not text.vocabulary:
            captions = self.captions("train")
            tokens = [karpathy_tokens(c) if isinstance(c, str) else c for c in captions]
            words = build_vocabulary(tokens, text.min_count)
            if not words:
                raise ConfigError(f"task.text.min_count={text.min_count}: no word of the {len(captions)} training "
                                  "captions is seen more often; lower it")
            known = set(words)
            occurrences = sum(len(t) for t in tokens)
            unknown = sum(w not in known for t in tokens for w in t)
            log.info("text VAE: vocabulary of %d words (seen > %d times in %d training captions); %.2f%% of the "
                     "word occurrences become <unk>", len(words), text.min_count, len(captions),
                     100.0 * unknown / max(occurrences, 1))
            text.vocabulary = words
        return list(text.vocabulary)

    @property
    def tokenizer(self) -> AnyTokenizer:
        """Captions ⇄ ids of ``task.text.kind`` (a ``words`` tokenizer may build the vocabulary first)."""
        if self._tokenizer is None:
            kind, length = self.tc.text.kind, self.tc.max_length
            if kind == "toy":
                self._tokenizer = CaptionTokenizer(max_length=length)
            elif kind == "words":
                self._tokenizer = WordTokenizer(self.vocabulary(), length)
            else:
                self._tokenizer = LMTokenizer(self.tc.text.language_model, length)
        return self._tokenizer

    # -------------------------------------------------------------- the contract
    def source_spec(self) -> TokenSpec:
        """Token ids of the captions (``dim``: the vocabulary size; the VE embeds them itself), or for
        ``kind=lm`` the LM's token states (``dim``: their width, known without the weights)."""
        tok = self.tokenizer
        return TokenSpec(self.tc.max_length, tok.dim if isinstance(tok, LMTokenizer) else len(tok))

    def target_spec(self) -> ImageSpec:
        return ImageSpec.of(self.tc.text_vae.latent_shape)

    def build_model(self) -> TextVAE:
        """The text VAE over the tokenizer's ids; for ``kind=lm`` its encoder reads ``input_dim``-wide states."""
        tok = self.tokenizer
        input_dim = tok.dim if isinstance(tok, LMTokenizer) else None
        return TextVAE(len(tok), self.tc.max_length, self.tc.text_vae, pad_id=tok.pad_id, input_dim=input_dim)

    def train_dataset(self) -> TokenizedCaptions:
        captions = self.captions("train")
        tok = self.tokenizer
        ids, mask = tok.encode(captions)
        log.info("text VAE: %d training captions (%d unique), vocabulary %d", len(captions),
                 len({as_text(c) for c in captions}), len(tok))
        if isinstance(tok, LMTokenizer):
            return CaptionStates(ids, mask, tok)
        return TokenizedCaptions(ids, mask)

    def text_posterior(self, vae: TextVAE, captions: Sequence[Caption], device: torch.device | str) -> DiagonalGaussian:
        """Posterior ``(B, C, H, W)`` of ``captions`` (raw strings, or token lists for ``kind=words``) under
        ``vae`` (which must already be on ``device``): tokenise, the LM's token states for ``kind=lm``, encode."""
        ids, mask = self.tokenizer.encode(list(captions))
        ids, mask = ids.to(device), mask.to(device)
        with torch.no_grad():
            if vae.input_dim is None:
                return vae.encode(ids, mask)
            return vae.encode(self.tokenizer.states(ids, mask, device), mask)

    def evaluator(self) -> TextVAEEvaluator:
        return TextVAEEvaluator(self)
