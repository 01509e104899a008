"""Configurations of the captioning adapter and of its text-VAE pre-stage."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from crossflow.codecs.text_vae import TextVAEConfig
from crossflow.schema import _f
from tasks.toyworld.config import ToyWorldSplitConfig


@dataclass
class TextVAEStageConfig:
    """Stage 1: train the text VAE on the toy captions (``crossflow train configs/captioning/toy_text_vae.yaml``).

    The ``model`` and ``flow`` sections of such a config are unused; ``train`` drives the trainer as usual.
    """

    name: str = _f("captioning.text_vae_stage", "task adapter (the text-VAE pre-stage of captioning)")
    toyworld: ToyWorldSplitConfig = field(default_factory=ToyWorldSplitConfig)
    max_length: int = _f(16, "tokens per caption, end-of-text included")
    text_vae: TextVAEConfig = field(default_factory=TextVAEConfig)


@dataclass
class CaptioningConfig:
    """Stage 2: CrossFlow from the image (image VE) to the frozen text VAE's latent."""

    name: str = _f("captioning", "task adapter")
    toyworld: ToyWorldSplitConfig = field(default_factory=ToyWorldSplitConfig)
    text_vae_dir: str = _f("runs/captioning_text_vae", "run or export directory of the trained text VAE (relative "
                                                       "paths are relative to the working directory)")
    text_vae_config: Optional[str] = _f("configs/captioning/toy_text_vae.yaml",
                                        "config that trains the text VAE into text_vae_dir first when that holds "
                                        "no trained text VAE; null: require it to exist")
    text_vae_overrides: list[str] = _f([], "dotted key=value overrides applied to text_vae_config when training it "
                                           "here (e.g. train.max_steps=100)")
    target: Literal["sample", "mean"] = _f("mean", "flow target: the text posterior mean, or a fresh draw from the "
                                                   "text posterior every step (as the official code redraws image-VAE "
                                                   "latents; learned slower on the toy captions)")
    references: Literal["all_templates", "own"] = _f(
        "all_templates", "reference captions of a held-out scene: its caption under every toy template (several "
                         "references per image, as COCO's five) or only the caption it was drawn with")
    picture_items: int = _f(24, "held-out images in the evaluation picture (captions written under them)")
    preview_items: int = _f(8, "held-out images in the periodic preview picture")
