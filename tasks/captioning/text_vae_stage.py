"""Pre-stage of captioning: train the text VAE on the toy captions with the one trainer.

Run ``crossflow train configs/captioning/toy_text_vae.yaml --run-dir runs/captioning_text_vae`` (the
captioning task also runs it by itself when its ``text_vae_dir`` is empty). ``evaluate`` reports the
token and whole-caption reconstruction accuracy on the held-out captions.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from crossflow.codecs.text_vae import TextVAE, token_accuracy
from crossflow.specs import ImageSpec, TokenSpec
from crossflow.task import Task
from crossflow.utils.images import caption_under, save_png
from tasks.captioning.config import TextVAEStageConfig
from tasks.captioning.vocab import CaptionTokenizer
from tasks.toyworld.dataset import make_split

log = logging.getLogger(__name__)


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


@torch.no_grad()
def reconstruction_accuracy(vae: TextVAE, tokenizer: CaptionTokenizer, captions: list[str]) -> dict[str, float]:
    """Decode the posterior means of ``captions``: token accuracy (over words and ``<eos>``) and exact matches."""
    device = next(vae.parameters()).device
    ids, mask = tokenizer.encode(captions)
    ids, mask = ids.to(device), mask.to(device)
    pred = vae.decode(vae.encode(ids, mask).mean)
    exact = [p == c for p, c in zip(tokenizer.decode(pred.cpu()), captions)]
    return {"token_accuracy": token_accuracy(pred, ids, mask), "caption_accuracy": sum(exact) / len(exact),
            "num_captions": len(captions)}


class TextVAEEvaluator:
    """Held-out reconstruction accuracy of the text VAE; the preview lists a few reconstructions."""

    def __init__(self, task: "TextVAEStage") -> None:
        self.task = task

    def evaluate(self, pipe: Any, out_dir: Path, *, num: Optional[int] = None, options: Any = None) -> dict:
        """Token and whole-caption reconstruction accuracy of the held-out captions; writes ``metrics.json``."""
        _, test = self.task.split()
        metrics = reconstruction_accuracy(pipe.model, self.task.tokenizer, [ex.caption for ex in test[:num or len(test)]])
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / "metrics.json").write_text(json.dumps(metrics, indent=2))
        log.info("text VAE held-out token accuracy %.4f, exact captions %.3f", metrics["token_accuracy"],
                 metrics["caption_accuracy"])
        return metrics

    @torch.no_grad()
    def preview(self, pipe: Any, path: Path) -> None:
        """A picture listing ``truth -> reconstruction`` for the first eight held-out captions."""
        _, test = self.task.split()
        captions = [ex.caption for ex in test[:8]]
        vae, tokenizer = pipe.model, self.task.tokenizer
        device = next(vae.parameters()).device
        ids, mask = tokenizer.encode(captions)
        decoded = tokenizer.decode(vae.decode(vae.encode(ids.to(device), mask.to(device)).mean).cpu())
        blank = np.full((2, 640, 3), 255, dtype=np.uint8)
        save_png(np.concatenate([caption_under(blank, f"{c}  ->  {d}") for c, d in zip(captions, decoded)]), path)


class TextVAEStage(Task):
    """Trains :class:`~crossflow.codecs.text_vae.TextVAE` on the toy-world training captions.

    It does not generate: its model is a codec that the captioning task loads, frozen, from the run.
    """

    config_class = TextVAEStageConfig

    def __init__(self, config) -> None:
        super().__init__(config)
        self.tc: TextVAEStageConfig = config.task
        self.tokenizer = CaptionTokenizer(max_length=self.tc.max_length)

    def source_spec(self) -> TokenSpec:
        """Token ids of the captions (the VE embeds them itself: ``dim`` is the vocabulary size)."""
        return TokenSpec(self.tc.max_length, len(self.tokenizer))

    def target_spec(self) -> ImageSpec:
        return ImageSpec.of(self.tc.text_vae.latent_shape)

    def build_model(self) -> TextVAE:
        return TextVAE(len(self.tokenizer), self.tc.max_length, self.tc.text_vae, pad_id=self.tokenizer.pad_id)

    def split(self):
        d = self.tc.toyworld
        return make_split(d.num_train, d.num_test, d.seed)

    def train_dataset(self) -> TokenizedCaptions:
        train, _ = self.split()
        ids, mask = self.tokenizer.encode([ex.caption for ex in train])
        log.info("text VAE: %d training captions (%d unique), vocabulary %d", len(train),
                 len({ex.caption for ex in train}), len(self.tokenizer))
        return TokenizedCaptions(ids, mask)

    def evaluator(self) -> TextVAEEvaluator:
        return TextVAEEvaluator(self)
