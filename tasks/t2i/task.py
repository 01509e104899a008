"""Text-to-image task adapter: LM token states → (VE) → z0 → flow → image.

Two data sources, picked by ``task.dataset``: the built-in toy world (pixel space, scored by an analytic
checker), or real images as features extracted by ``crossflow extract`` (SD-VAE latent space, FID and
CLIP score). The model, trainer and pipeline are the same for both.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from crossflow.codecs import ImageCodec
from crossflow.specs import ImageSpec, TokenSpec
from crossflow.task import Task
from crossflow.utils.cache import user_cache_dir
from tasks.t2i import features as real_data
from tasks.t2i.config import TextToImageConfig
from tasks.t2i.data import CaptionedImages
from tasks.t2i.evaluation import PromptFileEvaluator, ToyWorldEvaluator
from tasks.t2i.prompts import PromptEncoder
from tasks.toyworld.dataset import Example, make_split

log = logging.getLogger(__name__)


class TextToImageTask(Task):
    """Text → image. The source is the frozen LM's token states; the target is the image (toy world) or its
    SD-VAE latent (real data)."""

    config_class = TextToImageConfig

    def __init__(self, config) -> None:
        super().__init__(config)
        self.tc: TextToImageConfig = config.task
        self.real = self.tc.dataset != "toyworld"
        self._prompt_encoder: PromptEncoder | None = None

    # -------------------------------------------------------------- specs
    def source_spec(self) -> TokenSpec:
        """``(max_length, width)`` of the LM token states; the width is read without loading the LM."""
        return TokenSpec(self.tc.language_model.max_length, real_data.language_model_dim(self.tc))

    def target_spec(self) -> ImageSpec:
        if self.real:
            return ImageSpec.of(real_data.latent_shape(self.tc))
        r = self.tc.toyworld.resolution
        return ImageSpec(3, r, r)

    # -------------------------------------------------------------- parts
    def source_processor(self) -> PromptEncoder:
        """The prompt encoder (one per task: the training data and the previews share its language model)."""
        if self._prompt_encoder is None:
            cache = (Path(self.tc.cache_dir).expanduser() if self.tc.cache_dir is not None
                     else user_cache_dir("embeddings"))  # one cache per user, whatever the working directory
            self._prompt_encoder = PromptEncoder(self.tc.language_model, cache)
        return self._prompt_encoder

    def codec(self) -> ImageCodec:
        if not self.real:
            return ImageCodec()
        vae = real_data.build_codec(self.tc)

        def decode(latents: torch.Tensor) -> torch.Tensor:
            real_data.check_codec(vae, self.tc)
            return vae.decode(latents.float())
        return ImageCodec(decode)

    def evaluator(self) -> ToyWorldEvaluator | PromptFileEvaluator:
        return PromptFileEvaluator(self) if self.real else ToyWorldEvaluator(self)

    # -------------------------------------------------------------- data
    def toy_split(self) -> tuple[list[Example], list[Example]]:
        """``(train, test)`` toy-world scenes of ``task.toyworld``."""
        d = self.tc.toyworld
        return make_split(d.num_train, d.num_test, d.seed)

    def train_dataset(self) -> Dataset:
        if self.real:
            spec = self.source_spec()
            return real_data.open_dataset(self.tc, source_dim=spec.dim, max_tokens=spec.max_tokens)
        train, _ = self.toy_split()
        captions = [ex.caption for ex in train]
        unique = sorted(set(captions))
        row = {c: i for i, c in enumerate(unique)}
        source = self.source_processor()(unique, "cpu")
        index = torch.tensor([row[c] for c in captions])
        log.info("toy world: %d training scenes, %d unique captions", len(train), len(unique))
        return CaptionedImages(train, source.values.half(), source.mask, index, self.tc.toyworld.resolution)

    def preview_prompts(self) -> list[str]:
        """Prompts of the preview grid: held-out toy captions, or the first prompts of the training features."""
        n = self.tc.preview_prompts
        if not self.real:
            return [ex.caption for ex in self.toy_split()[1][:n]]
        if self.tc.metrics.prompts_file:
            from tasks.t2i.evaluation import read_prompts

            return read_prompts(self.tc.metrics.prompts_file)[:n]
        spec = self.source_spec()
        return real_data.open_dataset(self.tc, source_dim=spec.dim, max_tokens=spec.max_tokens).head_prompts(n)

    @classmethod
    def extract_features(cls, argv: list[str]) -> dict[str, Any]:
        """``crossflow extract``: LM token states + VAE moments into memory-mapped shards."""
        from tasks.t2i.extract import main

        return main(argv)
