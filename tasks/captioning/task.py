"""Captioning adapter: image → (image VE) → z0 → flow → text latent → (text VAE decoder) → words.

Two stages, as in the paper: a text VAE trained on the captions defines the text latent space (stage 1,
:mod:`tasks.captioning.text_vae_stage`); CrossFlow then learns to evolve the image's latent into the text
latent (stage 2, this adapter). The text VAE stays frozen and outside the CrossFlow weights, in
``task.text_vae_dir``. Training this task trains stage 1 there first when it is empty (from
``task.text_vae_config``); generation and evaluation only load it. The latent shape comes from the text
VAE's config alone, so building the model needs no weights.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from crossflow.codecs.text_vae import TextVAE
from crossflow.config import load_yaml
from crossflow.outputs import TextOutput
from crossflow.pipeline import Pipeline
from crossflow.schema import ExperimentConfig, SampleConfig
from crossflow.specs import ImageSpec, Spec
from crossflow.utils.images import caption_under, make_grid, save_png
from tasks.captioning.config import CaptioningConfig
from tasks.captioning.metrics import attribute_accuracy, caption_scores, spice_unavailable_reason
from tasks.captioning.text_vae_stage import TextVAEStage, reconstruction_accuracy
from tasks.captioning.vocab import CaptionTokenizer
from tasks.image_source import HeldOutEvaluator, ImageSourceTask
from tasks.toyworld.pairs import RenderedSplit
from tasks.toyworld.scenes import TEMPLATES, caption, parse_caption

log = logging.getLogger(__name__)


def captioned_tiles(images: np.ndarray, texts: Sequence[str], upscale: int = 4) -> np.ndarray:
    """``(N, H, W, 3)`` uint8 images, magnified, each with its text under it, padded to one height."""
    tiles = [caption_under(img.repeat(upscale, 0).repeat(upscale, 1), text, width_chars=24)
             for img, text in zip(images, texts)]
    height = max(t.shape[0] for t in tiles)
    return np.stack([np.pad(t, ((0, height - t.shape[0]), (0, 0), (0, 0)), constant_values=255) for t in tiles])


def toy_caption_scores(examples: Sequence[Any], generated: Sequence[str], references: str = "all_templates") -> dict:
    """Scores of captions ``generated`` for toy scenes ``examples``: the attributes parsed back from each caption,
    and the COCO caption metrics (pycocoevalcap) against the scene's caption under every toy template
    (``references="all_templates"``, several references per image as COCO's five) or the one it was drawn with
    (``"own"``); SPICE's absence is explained in ``SPICE_unavailable``."""
    truth = [ex.attributes for ex in examples]
    metrics: dict[str, Any] = attribute_accuracy([parse_caption(c) for c in generated], truth)
    refs = {i: [ex.caption] if references == "own" else [caption(ex.scene, t) for t in range(len(TEMPLATES))]
            for i, ex in enumerate(examples)}
    metrics |= caption_scores(refs, dict(enumerate(generated)))
    if metrics["SPICE"] is None:
        metrics["SPICE_unavailable"] = spice_unavailable_reason() or "SPICE failed (see the log)"
    return metrics


def write_toy_captions(path: Path, examples: Sequence[Any], generated: Sequence[str]) -> None:
    """``captions.jsonl``: per toy scene its index, generated and true caption, and attributes."""
    with open(path, "w", encoding="utf-8") as fh:
        for i, (ex, cap) in enumerate(zip(examples, generated)):
            fh.write(json.dumps({"index": i, "generated": cap, "truth": ex.caption, **ex.attributes}) + "\n")


def toy_caption_picture(inputs: Tensor, generated: Sequence[str], examples: Sequence[Any], k: int, path: Path) -> Path:
    """The first ``k`` images ``(N, 3, H, W)`` uint8 (×4), each with its generated and true caption under it."""
    texts = [f"> {g} | truth: {ex.caption}" for g, ex in zip(generated[:k], examples[:k])]
    return save_png(make_grid(captioned_tiles(inputs[:k].permute(0, 2, 3, 1).numpy(), texts), nrow=min(6, k)), path)


class TextVAECodec:
    """Generated text latents ``(B, C, H, W)`` → words, through the frozen text VAE's decoder and the tokenizer."""

    def __init__(self, vae: TextVAE, tokenizer: CaptionTokenizer) -> None:
        self.vae, self.tokenizer = vae, tokenizer

    @torch.no_grad()
    def decode(self, latents: Tensor) -> TextOutput:
        ids = self.vae.to(latents.device).decode(latents).cpu()
        return TextOutput(texts=self.tokenizer.decode(ids), token_ids=ids)


class ImageCaptionLatents(Dataset):
    """Batches of ``source`` images ``(B, 3, R, R)`` in [-1, 1] and the text posterior (``text_mean``,
    ``text_logvar``, ``(B, C, H, W)``) of each image's caption; :meth:`prepare` turns the posterior into the
    flow ``target`` on the device (its mean, or a fresh draw every step)."""

    def __init__(self, split: RenderedSplit, means: Tensor, logvars: Tensor, caption_index: Tensor,
                 target: str = "mean") -> None:
        self.split, self.means, self.logvars, self.caption_index = split, means, logvars, caption_index
        self.target = target

    def __len__(self) -> int:
        return len(self.split)

    def __getitems__(self, indices: list[int]) -> dict[str, Tensor]:
        idx = torch.as_tensor(indices)
        rows = self.caption_index[idx]
        return {"source": self.split.images_float(idx), "text_mean": self.means[rows],
                "text_logvar": self.logvars[rows]}

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {k: v[0] for k, v in self.__getitems__([index]).items()}

    def prepare(self, batch: dict[str, Any], device: torch.device) -> dict[str, Tensor]:
        """Draw the flow target from the text posterior (or take its mean) on ``device``."""
        target = batch["text_mean"].to(device, non_blocking=True)
        if self.target == "sample":
            std = torch.exp(0.5 * batch["text_logvar"].to(device, non_blocking=True))
            target = target + std * torch.randn_like(target)
        return {"source": batch["source"].to(device, non_blocking=True), "target": target}


class CaptioningEvaluator(HeldOutEvaluator):
    """COCO caption metrics (pycocoevalcap) against the scene's references, attributes parsed back from the
    generated captions, the other z0 start, and the text VAE's reconstruction of the true captions.
    Writes ``captions.jsonl`` and ``captions.png``."""

    picture_name = "captions.png"

    def score(self, pipe: Pipeline, output: TextOutput, inputs: Tensor, test: RenderedSplit, n: int,
              options: SampleConfig, out_dir: Path) -> dict[str, Any]:
        examples, generated = test.examples[:n], output.texts
        truth = [ex.attributes for ex in examples]
        metrics = toy_caption_scores(examples, generated, self.task.tc.references)
        other = "sample" if options.z0 == "mean" else "mean"
        other_caps = pipe(list(inputs), options=options, z0=other).texts
        metrics[f"z0_{other}"] = attribute_accuracy([parse_caption(c) for c in other_caps], truth)
        codec: TextVAECodec = pipe.codec
        metrics["text_vae_reconstruction"] = reconstruction_accuracy(codec.vae, codec.tokenizer,
                                                                     [ex.caption for ex in examples])
        metrics["unique_captions"] = len(set(generated))
        metrics["references"] = self.task.tc.references
        write_toy_captions(out_dir / "captions.jsonl", examples, generated)
        return metrics

    def picture(self, inputs: Tensor, output: TextOutput, test: RenderedSplit, k: int, path: Path) -> Path:
        """Each image (×4) with the generated caption and the true caption written under it."""
        return toy_caption_picture(inputs, output.texts, test.examples, k, path)

    def summary(self, metrics: dict[str, Any]) -> str:
        return (f"all-attribute accuracy {metrics['all_accuracy']:.3f}, BLEU-4 {metrics['BLEU-4']:.3f}, "
                f"CIDEr {metrics['CIDEr']:.3f}")


class CaptioningTask(ImageSourceTask):
    """Image → caption. Source: the RGB image; target: the text VAE latent of the caption."""

    config_class = CaptioningConfig

    def __init__(self, config: ExperimentConfig) -> None:
        super().__init__(config)
        self.tc: CaptioningConfig = config.task
        self._text_vae: Optional[tuple[TextVAE, TextVAEStage]] = None

    # -------------------------------------------------------------- the text VAE (stage 1)
    def text_vae_config(self) -> ExperimentConfig:
        """The text VAE's experiment config: the trained one in ``text_vae_dir``, else ``text_vae_config``."""
        from crossflow.registry import experiment_from_dict, load_experiment

        run_dir = Path(self.tc.text_vae_dir)
        saved = [p for p in (run_dir / "export" / "config.yaml", run_dir / "config.yaml") if p.is_file()]
        if saved:
            return experiment_from_dict(load_yaml(saved[0]))[0]
        if self.tc.text_vae_config is None:
            raise FileNotFoundError(f"task.text_vae_dir={str(run_dir)!r} holds no text VAE config and "
                                    f"task.text_vae_config is null")
        return load_experiment(self.tc.text_vae_config, list(self.tc.text_vae_overrides))[0]

    def train_text_vae(self) -> Path:
        """Train stage 1 into ``task.text_vae_dir`` from ``task.text_vae_config`` (+ ``text_vae_overrides``)."""
        from crossflow.registry import load_experiment
        from crossflow.train.run_dir import run_entries
        from crossflow.train.trainer import Trainer

        if self.tc.text_vae_config is None:
            raise FileNotFoundError(f"task.text_vae_dir={self.tc.text_vae_dir!r} holds no trained text VAE and "
                                    f"task.text_vae_config is null; train one with `crossflow train "
                                    f"configs/captioning/toy_text_vae.yaml --run-dir {self.tc.text_vae_dir}`")
        log.info("no text VAE in %s: training it first from %s", self.tc.text_vae_dir, self.tc.text_vae_config)
        cfg, stage_cls = load_experiment(self.tc.text_vae_config, self._stage_overrides())
        run_dir = Path(self.tc.text_vae_dir)
        with torch.enable_grad():  # a stage-1 run cut short there is continued, not refused
            Trainer(cfg, stage_cls(cfg), run_dir, resume=bool(run_entries(run_dir))).fit()
        return Path(self.tc.text_vae_dir)

    def _stage_overrides(self) -> list[str]:
        """Stage 1 reads the captions this stage trains on: the dataset and COCO keys are passed down."""
        if self.tc.dataset != "coco":
            return list(self.tc.text_vae_overrides)
        coco = self.tc.coco
        passed = [f"task.dataset={self.tc.dataset}", f"task.coco.train_splits={json.dumps(list(coco.train_splits))}",
                  f"task.coco.eval_split={coco.eval_split}"]
        passed += [f"task.coco.{k}={v}" for k, v in (("dataset_json", coco.dataset_json),
                                                      ("image_root", coco.image_root)) if v is not None]
        return passed + list(self.tc.text_vae_overrides)

    def text_vae(self) -> tuple[TextVAE, TextVAEStage]:
        """The frozen text VAE of ``task.text_vae_dir`` and its stage (tokenizer), loaded once."""
        if self._text_vae is None:
            from crossflow.pipeline import load_model
            from crossflow.train.checkpoint import CheckpointError

            try:
                vae, stage = load_model(self.tc.text_vae_dir)
            except (FileNotFoundError, CheckpointError) as exc:
                raise FileNotFoundError(f"task.text_vae_dir={self.tc.text_vae_dir!r}: no trained text VAE ({exc}); "
                                        "train the captioning task (it trains the text VAE first) or `crossflow "
                                        "train configs/captioning/toy_text_vae.yaml --run-dir DIR`") from None
            if not isinstance(vae, TextVAE) or not isinstance(stage, TextVAEStage):
                raise ValueError(f"task.text_vae_dir={self.tc.text_vae_dir!r} holds a {type(vae).__name__} of task "
                                 f"{type(stage).__name__}, not a text VAE")
            self._text_vae = (vae.requires_grad_(False).eval(), stage)
        return self._text_vae

    # -------------------------------------------------------------- the contract
    def source_spec(self) -> Spec:
        """Toy world: the RGB image; COCO: what ``task.image`` makes of an image (pixels, SD-VAE latent, CLIP
        tokens), known from the config alone."""
        if self.tc.dataset != "coco":
            return super().source_spec()
        from tasks.captioning.images import ImageEncoder

        return ImageEncoder.from_config(self.tc.image).source_spec()

    def source_processor(self):
        if self.tc.dataset != "coco":
            return super().source_processor()
        from tasks.captioning.coco_stage import CocoImageProcessor

        return CocoImageProcessor(self.tc.image)

    def target_spec(self) -> ImageSpec:
        return ImageSpec.of(self.text_vae_config().task.text_vae.latent_shape)

    def train_dataset(self) -> ImageCaptionLatents:
        from crossflow.pipeline import resolve_weights
        from crossflow.train.checkpoint import CheckpointError

        try:
            resolve_weights(self.tc.text_vae_dir)
        except (FileNotFoundError, CheckpointError):
            self.train_text_vae()
        if self.tc.dataset == "coco":
            from tasks.captioning.coco_stage import coco_training_data

            return coco_training_data(self)
        vae, stage = self.text_vae()
        train, _ = self.splits()
        unique = sorted({ex.caption for ex in train.examples})
        row = {c: i for i, c in enumerate(unique)}
        with torch.no_grad():
            post = stage.text_posterior(vae, unique, torch.device("cpu"))
        log.info("captioning: %d training images, %d unique captions encoded by the text VAE", len(train), len(unique))
        return ImageCaptionLatents(train, post.mean.float(), post.logvar.float(),
                                   torch.tensor([row[ex.caption] for ex in train.examples]), target=self.tc.target)

    def codec(self) -> TextVAECodec:
        vae, stage = self.text_vae()
        return TextVAECodec(vae, stage.tokenizer)

    def evaluator(self):
        if self.tc.dataset == "coco":
            from tasks.captioning.coco_stage import CocoCaptionEvaluator

            return CocoCaptionEvaluator(self)
        return CaptioningEvaluator(self)

    @classmethod
    def toy_data_formats(cls) -> dict[str, Any]:
        """``crossflow toy-data coco OUT``: toy scenes as COCO images with Karpathy's ``dataset_coco.json``."""
        from tasks.captioning.toy_coco import write_toy_coco

        return {"coco": write_toy_coco}

    @classmethod
    def extract_features(cls, argv: list[str]) -> dict[str, Any]:
        """``crossflow extract CONFIG``: the COCO images of Karpathy's split as image features in shards."""
        from tasks.captioning.extract import main

        return main(argv)
