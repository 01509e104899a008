"""Captioning adapter: image → (image VE) → z0 → flow → text latent → (text VAE decoder) → words.

Two stages, as in the paper: a text VAE trained on the captions defines the text latent space (stage 1,
:mod:`tasks.captioning.text_vae_stage`); CrossFlow then learns to evolve the image's latent into the text
latent (stage 2, this adapter). The text VAE stays frozen and outside the CrossFlow weights; it is loaded
from ``task.text_vae_dir`` (and trained there first from ``task.text_vae_config`` when missing) on first
use. The latent shape comes from the text VAE's config alone, so building the model needs no weights.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from crossflow.codecs.text_vae import TextVAE
from crossflow.model import CrossFlow
from crossflow.utils.images import caption_under, make_grid, save_png, to_uint8
from tasks.captioning.config import CaptioningConfig
from tasks.captioning.metrics import attribute_accuracy, caption_scores, spice_unavailable_reason
from tasks.captioning.text_vae_stage import TextVAEStage, reconstruction_accuracy
from tasks.image_source import ImageSourceTask
from tasks.toyworld.pairs import RenderedSplit, rendered_splits
from tasks.toyworld.scenes import TEMPLATES, caption, parse_caption

log = logging.getLogger(__name__)


def load_or_train_text_vae(run_dir: str | Path, train_config: Optional[str],
                           overrides: Sequence[str] = ()) -> tuple[TextVAE, TextVAEStage]:
    """The frozen text VAE of ``run_dir``; trains it there first from ``train_config`` (+ ``overrides``) when
    it is missing."""
    from crossflow.inference import load_model
    from crossflow.train.checkpoint import CheckpointError

    try:
        vae, stage, _ = load_model(run_dir)
    except (FileNotFoundError, CheckpointError):
        if train_config is None:
            raise FileNotFoundError(f"task.text_vae_dir={str(run_dir)!r} holds no trained text VAE and "
                                    f"task.text_vae_config is null; train one with `crossflow train "
                                    f"configs/captioning/toy_text_vae.yaml --run-dir {run_dir}`") from None
        from crossflow.task import load_experiment
        from crossflow.train.trainer import Trainer

        log.info("no text VAE in %s: training it first from %s", run_dir, train_config)
        cfg, stage_cls = load_experiment(train_config, list(overrides))
        with torch.enable_grad():  # first use may come from inside a no_grad region (encoding, generation)
            Trainer(cfg, stage_cls(cfg), Path(run_dir)).fit()
        vae, stage, _ = load_model(run_dir)
    if not isinstance(vae, TextVAE) or not isinstance(stage, TextVAEStage):
        raise ValueError(f"task.text_vae_dir={str(run_dir)!r} holds a {type(vae).__name__} of task "
                         f"{type(stage).__name__}, not a text VAE")
    vae.requires_grad_(False)
    return vae.eval(), stage


def captioned_tiles(images: np.ndarray, texts: Sequence[str], upscale: int = 4) -> np.ndarray:
    """``(N, H, W, 3)`` uint8 images, magnified, each with its text under it, padded to one height."""
    tiles = [caption_under(img.repeat(upscale, 0).repeat(upscale, 1), text, width_chars=24)
             for img, text in zip(images, texts)]
    height = max(t.shape[0] for t in tiles)
    return np.stack([np.pad(t, ((0, height - t.shape[0]), (0, 0), (0, 0)), constant_values=255) for t in tiles])


class ImageCaptionLatents(Dataset):
    """Batches of ``source`` images ``(B, 3, R, R)`` in [-1, 1] and the text posterior (``text_mean``,
    ``text_logvar``, ``(B, C, H, W)``) of each image's caption."""

    def __init__(self, split: RenderedSplit, means: Tensor, logvars: Tensor, caption_index: Tensor) -> None:
        self.split, self.means, self.logvars, self.caption_index = split, means, logvars, caption_index

    def __len__(self) -> int:
        return len(self.split)

    def __getitems__(self, indices: list[int]) -> dict[str, Tensor]:
        idx = torch.as_tensor(indices)
        rows = self.caption_index[idx]
        return {"source": self.split.images_float(idx), "text_mean": self.means[rows],
                "text_logvar": self.logvars[rows]}

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {k: v[0] for k, v in self.__getitems__([index]).items()}


class CaptioningTask(ImageSourceTask):
    """Image → caption. Source: the RGB image; target: the text VAE latent of the caption."""

    config_class = CaptioningConfig

    def __init__(self, config, *, cache_dir: Optional[Path] = None) -> None:
        super().__init__(config, cache_dir=cache_dir)
        self.tc: CaptioningConfig = config.task
        self._text_vae: Optional[TextVAE] = None
        self._stage: Optional[TextVAEStage] = None
        self._stage_config = None
        self._splits: Optional[tuple[RenderedSplit, RenderedSplit]] = None

    # -------------------------------------------------------------- the text VAE
    @property
    def text_vae_config(self):
        """The text VAE's experiment config: the trained one in ``text_vae_dir``, else ``text_vae_config``."""
        if self._stage_config is None:
            from crossflow.config import load_yaml
            from crossflow.task import experiment_from_dict, load_experiment

            run_dir = Path(self.tc.text_vae_dir)
            saved = [p for p in (run_dir / "export" / "config.yaml", run_dir / "config.yaml") if p.is_file()]
            if saved:
                self._stage_config = experiment_from_dict(load_yaml(saved[0]))[0]
            elif self.tc.text_vae_config is not None:
                self._stage_config = load_experiment(self.tc.text_vae_config, list(self.tc.text_vae_overrides))[0]
            else:
                raise FileNotFoundError(f"task.text_vae_dir={str(run_dir)!r} holds no text VAE config and "
                                        f"task.text_vae_config is null")
        return self._stage_config

    @property
    def text_vae(self) -> TextVAE:
        """The frozen text VAE (loaded, or trained first, on first use)."""
        if self._text_vae is None:
            self._text_vae, self._stage = load_or_train_text_vae(self.tc.text_vae_dir, self.tc.text_vae_config,
                                                                 self.tc.text_vae_overrides)
        return self._text_vae

    @property
    def tokenizer(self):
        if self._stage is None:
            _ = self.text_vae
        return self._stage.tokenizer

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return tuple(self.text_vae_config.task.text_vae.latent_shape)

    @property
    def source_shape(self) -> tuple[int, int, int]:
        r = self.tc.toyworld.resolution
        return (3, r, r)

    def splits(self) -> tuple[RenderedSplit, RenderedSplit]:
        if self._splits is None:
            self._splits = rendered_splits(self.tc.toyworld)
        return self._splits

    # -------------------------------------------------------------- data
    @torch.no_grad()
    def encode_captions(self, captions: Sequence[str]) -> tuple[Tensor, Tensor]:
        """Captions → text posterior mean and logvar ``(N, C, H, W)`` under the frozen text VAE."""
        ids, mask = self.tokenizer.encode(list(captions))
        post = self.text_vae.encode(ids, mask)
        return post.mean.float(), post.logvar.float()

    def train_dataset(self) -> ImageCaptionLatents:
        train, _ = self.splits()
        captions = [ex.caption for ex in train.examples]
        unique = sorted(set(captions))
        row = {c: i for i, c in enumerate(unique)}
        means, logvars = self.encode_captions(unique)
        log.info("captioning: %d training images, %d unique captions encoded by the text VAE", len(train), len(unique))
        return ImageCaptionLatents(train, means, logvars, torch.tensor([row[c] for c in captions]))

    def prepare_batch(self, batch: dict[str, Any], device: torch.device) -> dict[str, Tensor]:
        """Draw the flow target from the text posterior (or take its mean) on ``device``."""
        mean = batch["text_mean"].to(device, non_blocking=True)
        target = mean
        if self.tc.target == "sample":
            std = torch.exp(0.5 * batch["text_logvar"].to(device, non_blocking=True))
            target = mean + std * torch.randn_like(mean)
        return {"source": batch["source"].to(device, non_blocking=True), "target": target}

    # -------------------------------------------------------------- generation
    @torch.no_grad()
    def generate_captions(self, model: CrossFlow, images: Tensor, *, seed: int = 0, mode: str = "guided",
                          **overrides: Any) -> list[str]:
        """Images ``(B, 3, R, R)`` in [-1, 1] → captions (batched by ``sample.batch_size``)."""
        model.eval()
        device = next(model.parameters()).device
        vae = self.text_vae.to(device)
        gen = torch.Generator(device=device).manual_seed(seed)
        bs = self.config.sample.batch_size
        out: list[str] = []
        for i in range(0, images.shape[0], bs):
            z = model.generate(images[i:i + bs].to(device), sample=self.config.sample, mode=mode, generator=gen,
                               **overrides)
            out += self.tokenizer.decode(vae.decode(z).cpu())
        return out

    def _picture(self, images: Tensor, generated: list[str], truths: list[str], path: Path, per_row: int = 6) -> Path:
        """Each image (×4) with the generated caption and the true caption written under it."""
        texts = [f"> {g} | truth: {t}" for g, t in zip(generated, truths)]
        return save_png(make_grid(captioned_tiles(to_uint8(images), texts), nrow=min(per_row, len(texts))), path)

    def preview(self, model: CrossFlow, path: Path) -> None:
        _, test = self.splits()
        n = self.tc.preview_items
        generated = self.generate_captions(model, test.images_float(slice(0, n)), steps=min(self.config.sample.steps, 10))
        self._picture(test.images_float(slice(0, n)), generated, [ex.caption for ex in test.examples[:n]], path)

    # -------------------------------------------------------------- evaluation
    def references(self, example) -> list[str]:
        if self.tc.references == "own":
            return [example.caption]
        return [caption(example.scene, i) for i in range(len(TEMPLATES))]

    def evaluate(self, model: CrossFlow, out_dir: Path, *, num: Optional[int] = None, **overrides: Any) -> dict:
        """Caption the held-out images; COCO caption metrics, parsed-attribute accuracy, text-VAE reconstruction.

        Writes ``metrics.json``, ``captions.jsonl`` and ``captions.png`` under ``out_dir``. The other start
        (VE mean vs posterior sample) is reported under ``z0_mean`` / ``z0_sample``.
        """
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        _, test = self.splits()
        n = min(num or len(test), len(test))
        examples, images = test.examples[:n], test.images_float(slice(0, n))
        seed = overrides.pop("seed", self.config.sample.seed)
        s = self.config.sample
        z0 = overrides.pop("z0", s.z0)
        start = time.time()
        generated = self.generate_captions(model, images, seed=seed, z0=z0, **overrides)
        seconds = time.time() - start
        truth = [ex.attributes for ex in examples]
        metrics: dict[str, Any] = attribute_accuracy([parse_caption(c) for c in generated], truth)
        refs = {i: self.references(ex) for i, ex in enumerate(examples)}
        metrics |= caption_scores(refs, dict(enumerate(generated)))
        if metrics["SPICE"] is None:
            metrics["SPICE_unavailable"] = spice_unavailable_reason() or "SPICE failed (see the log)"
        other = "sample" if z0 == "mean" else "mean"
        other_caps = self.generate_captions(model, images, seed=seed, z0=other, **overrides)
        metrics[f"z0_{other}"] = attribute_accuracy([parse_caption(c) for c in other_caps], truth)
        metrics["text_vae_reconstruction"] = reconstruction_accuracy(self.text_vae.to(images.device), self.tokenizer,
                                                                     [ex.caption for ex in examples])
        metrics["unique_captions"] = len(set(generated))
        metrics["settings"] = {"solver": overrides.get("solver", s.solver), "steps": overrides.get("steps", s.steps),
                               "guidance": overrides.get("guidance", s.guidance), "z0": z0,
                               "temperature": overrides.get("temperature", s.temperature), "seed": seed,
                               "num_images": n, "references": self.tc.references}
        metrics["generation_seconds"] = round(seconds, 2)
        with open(out_dir / "captions.jsonl", "w", encoding="utf-8") as fh:
            for i, (ex, cap) in enumerate(zip(examples, generated)):
                fh.write(json.dumps({"index": i, "generated": cap, "truth": ex.caption, **ex.attributes}) + "\n")
        k = min(self.tc.picture_items, n)
        self._picture(images[:k], generated[:k], [ex.caption for ex in examples[:k]], out_dir / "captions.png")
        (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
        log.info("captioning: all-attribute accuracy %.3f, BLEU-4 %.3f, CIDEr %.3f", metrics["all_accuracy"],
                 metrics["BLEU-4"], metrics["CIDEr"])
        return metrics

    # -------------------------------------------------------------- crossflow sample
    def sample_inputs(self, model: CrossFlow, inputs: Sequence[str | Path], out_dir: Path, *, seed: int = 0,
                      **overrides: Any) -> dict:
        """Caption image files: ``captions.jsonl`` and ``captions.png``."""
        images = self.load_input_images(inputs)
        generated = self.generate_captions(model, images, seed=seed, **overrides)
        out_dir = Path(out_dir)
        with open(out_dir / "captions.jsonl", "w", encoding="utf-8") as fh:
            for path, cap in zip(inputs, generated):
                fh.write(json.dumps({"file": str(path), "caption": cap}) + "\n")
        save_png(make_grid(captioned_tiles(to_uint8(images), generated), nrow=min(6, len(generated))),
                 out_dir / "captions.png")
        return {"inputs": len(inputs), "captions": generated, "out": str(out_dir)}
