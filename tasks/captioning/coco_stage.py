"""Captioning stage 2 on COCO (Karpathy split): extracted image features → CrossFlow → the text VAE's latent.

Training reads the image features written by ``crossflow extract`` (``task.coco.features_dir``) and, for
every image, draws one of its 5–7 captions each step; the frozen text VAE's posterior of every training
caption is computed once when training starts. Evaluation captions every image of a Karpathy split, writes
the standard results file and scores it with :func:`tasks.captioning.coco.score_karpathy` (the whole
split: CIDEr depends on which images are scored together).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from crossflow.config import to_dict
from crossflow.schema import SampleConfig
from crossflow.task import Source
from crossflow.utils.images import make_grid, save_png
from tasks.captioning.config import ImageFeatureConfig

if TYPE_CHECKING:
    from crossflow.pipeline import Pipeline
    from tasks.captioning.coco import KarpathyImage
    from tasks.captioning.task import CaptioningTask

log = logging.getLogger(__name__)
#: Side of the images in the evaluation picture.
PICTURE_SIDE = 128


@dataclass
class Extracted:
    """One image's features as ``crossflow extract`` stored them: a pipeline input instead of an image."""

    features: Tensor


class CocoImageProcessor:
    """Images (paths, PIL, ``(H, W, 3)`` uint8) or :class:`Extracted` features → the model's source.

    Images go through the same encoder as extraction (central square crop, resize; SD-VAE or CLIP
    vision when configured), so a caption of a new photo sees what training saw.
    """

    def __init__(self, cfg: ImageFeatureConfig) -> None:
        self.cfg = cfg
        self._encoder = None

    @property
    def encoder(self):
        if self._encoder is None:
            from tasks.captioning.images import ImageEncoder

            self._encoder = ImageEncoder.from_config(self.cfg)
        return self._encoder

    def load_images(self, paths: Sequence[str | Path]) -> list[np.ndarray]:
        """Read image files as ``(H, W, 3)`` uint8 (a missing or corrupt file raises, naming it)."""
        from tasks.image_source import load_image

        return [load_image(path) for path in paths]

    def stored(self, inputs: Sequence[Any]) -> Tensor:
        """Inputs → stored features ``(B, ...)`` (images are encoded as extraction does)."""
        if not inputs:
            raise ValueError("no input images given")
        if all(isinstance(x, Extracted) for x in inputs):
            return torch.stack([torch.as_tensor(x.features) for x in inputs])
        if any(isinstance(x, Extracted) for x in inputs):
            raise ValueError("give either images or extracted features, not both in one call")
        images = [np.asarray(self.load_images([x])[0] if isinstance(x, (str, Path)) else _hwc_uint8(x))
                  for x in inputs]
        return torch.from_numpy(np.stack(self.encoder.encode(images)))

    def __call__(self, inputs: Sequence[Any], device: torch.device | str) -> Source:
        return Source(self.encoder.to_source(self.stored(list(inputs)).to(device)))


def _hwc_uint8(item: Any) -> np.ndarray:
    from PIL import Image

    if isinstance(item, Image.Image):
        return np.asarray(item.convert("RGB"))
    array = np.asarray(item)
    if array.ndim != 3 or array.shape[-1] != 3 or array.dtype != np.uint8:
        raise ValueError(f"cannot use an array of shape {array.shape} and dtype {array.dtype} as an image; give "
                         "(H, W, 3) uint8, a PIL image or a path")
    return array


class CocoCaptionLatents(Dataset):
    """Training pairs of COCO: an image's stored features and, drawn each step in :meth:`prepare`, one of its
    captions' text posterior (its mean, or a draw with ``target="sample"``) as the flow target.

    Args:
        features: the extracted features of the training images (``CocoImageFeatures``).
        caption_rows: ``(N, K)`` rows of each image's captions in ``means``/``logvars``, padded with -1.
        means, logvars: ``(M, C, H, W)`` text posteriors of every training caption.
        to_source: stored features (on the device) → the model's source.
        target: ``"mean"`` or ``"sample"``.
    """

    def __init__(self, features, caption_rows: Tensor, means: Tensor, logvars: Tensor, to_source,
                 target: str = "mean") -> None:
        self.features, self.caption_rows, self.means, self.logvars = features, caption_rows, means, logvars
        self.counts = (caption_rows >= 0).sum(1)
        self.to_source, self.target = to_source, target

    def __len__(self) -> int:
        return int(self.caption_rows.shape[0])

    def __getitems__(self, indices: list[int]) -> dict[str, Tensor]:
        idx = torch.as_tensor(indices)
        return {"image": self.features.features(np.asarray(indices)), "index": idx}

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {k: v[0] for k, v in self.__getitems__([index]).items()}

    def prepare(self, batch: dict[str, Any], device: torch.device) -> dict[str, Tensor]:
        """One caption per image, drawn uniformly with the training RNG (restored on resume), as the target."""
        idx = batch["index"].cpu()
        pick = (torch.rand(idx.shape[0]) * self.counts[idx]).long()
        rows = self.caption_rows[idx, pick]
        target = self.means[rows].to(device, non_blocking=True)
        if self.target == "sample":
            std = torch.exp(0.5 * self.logvars[rows].to(device, non_blocking=True))
            target = target + std * torch.randn_like(target)
        return {"source": self.to_source(batch["image"].to(device, non_blocking=True)), "target": target.float()}


def coco_training_data(task: "CaptioningTask") -> CocoCaptionLatents:
    """The training pairs of ``task.coco.train_splits`` (features from ``task.coco.features_dir``)."""
    from tasks.captioning.coco import read_karpathy
    from tasks.captioning.images import CocoImageFeatures, ImageEncoder

    coco = task.tc.coco
    features = CocoImageFeatures(_required(coco.features_dir, "task.coco.features_dir"), list(coco.train_splits))
    features.check(task.tc.image)
    images = {im.cocoid: im for im in read_karpathy(_required(coco.dataset_json, "task.coco.dataset_json"),
                                                    list(coco.train_splits))}
    vae, stage = task.text_vae()
    texts, rows = [], []
    for cocoid in features.cocoids.tolist():
        image = images.get(int(cocoid))
        if image is None:
            raise ValueError(f"task.coco.features_dir={coco.features_dir!r} holds cocoid {cocoid}, which is not in "
                             f"the splits {list(coco.train_splits)} of {coco.dataset_json}")
        rows.append(list(range(len(texts), len(texts) + len(image.raw))))
        texts.extend(caption_texts(stage, image))
    width = max(len(r) for r in rows)
    caption_rows = torch.tensor([r + [-1] * (width - len(r)) for r in rows])
    means, logvars = _text_posteriors(task, texts)
    log.info("captioning on COCO: %d training images, %d captions encoded by the text VAE", len(rows), len(texts))
    encoder = ImageEncoder.from_config(task.tc.image)
    return CocoCaptionLatents(features, caption_rows, means, logvars, encoder.to_source, target=task.tc.target)


def caption_texts(stage, image: "KarpathyImage") -> list:
    """An image's captions as the text side takes them: Karpathy's tokens for a word vocabulary, else the raw
    sentences."""
    if stage.tc.text.kind == "words":
        return [list(tokens) for tokens in image.tokens]
    return [raw.strip() for raw in image.raw]


@torch.no_grad()
def _text_posteriors(task: "CaptioningTask", texts: list, batch_size: int = 1024) -> tuple[Tensor, Tensor]:
    vae, stage = task.text_vae()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    vae.to(device)
    means, logvars = [], []
    for start in tqdm(range(0, len(texts), batch_size), desc="text posteriors", disable=len(texts) <= 4 * batch_size):
        post = stage.text_posterior(vae, texts[start:start + batch_size], device)
        means.append(post.mean.float().cpu())
        logvars.append(post.logvar.float().cpu())
    vae.cpu()
    return torch.cat(means), torch.cat(logvars)


def _required(value: Optional[str], key: str) -> str:
    if value is None:
        raise ValueError(f"{key}: required for task.dataset=coco")
    return value


class CocoCaptionEvaluator:
    """Captions every image of a Karpathy split (``task.coco.eval_split``, ``crossflow eval --split``), writes
    ``results_<split>.json`` (``[{"image_id", "caption"}]``), scores it with pycocoevalcap against the split's
    raw sentences and draws ``captions.png`` (images with generated and reference captions)."""

    def __init__(self, task: "CaptioningTask") -> None:
        self.task = task

    def _split(self, split: str):
        from tasks.captioning.coco import read_karpathy
        from tasks.captioning.images import CocoImageFeatures

        coco = self.task.tc.coco
        images = read_karpathy(_required(coco.dataset_json, "task.coco.dataset_json"), [split])
        features = CocoImageFeatures(_required(coco.features_dir, "task.coco.features_dir"), [split])
        features.check(self.task.tc.image)
        return images, features

    def evaluate(self, pipe: "Pipeline", out_dir: Path, *, num: Optional[int] = None,
                 options: Optional[SampleConfig] = None) -> dict[str, Any]:
        """Caption the split (or its first ``num`` extracted images), score, write the files under ``out_dir``."""
        from tasks.captioning.coco import score_karpathy, write_results

        options, split = pipe.options(options), self.task.tc.coco.eval_split
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        images, features = self._split(split)
        n = min(num or len(features), len(features))
        start, captions = time.time(), []
        for lo in tqdm(range(0, n, options.batch_size), desc=f"captioning {split}", disable=n <= options.batch_size):
            hi = min(lo + options.batch_size, n)
            stored = features.features(np.arange(lo, hi))
            captions += pipe([Extracted(f) for f in stored], options=options, first_index=lo).texts
        seconds = time.time() - start
        ids = [int(c) for c in features.cocoids[:n]]
        results = write_results(out_dir / f"results_{split}.json", ids, captions)
        metrics: dict[str, Any] = score_karpathy(images, [{"image_id": i, "caption": c} for i, c in zip(ids, captions)],
                                                 split=split)
        by_id = {im.cocoid: im for im in images}
        truth = [by_id[i].extra.get("toy_attributes") for i in ids]
        if all(t is not None for t in truth):  # toy scenes in COCO format: the attributes are known
            from tasks.captioning.metrics import attribute_accuracy
            from tasks.toyworld.scenes import parse_caption

            metrics["toy"] = attribute_accuracy([parse_caption(c) for c in captions], truth)
        metrics |= {"results_file": str(results), "images_without_features": len(images) - len(features),
                    "unique_captions": len(set(captions)), "settings": to_dict(options) | {"num_images": n},
                    "generation_seconds": round(seconds, 2), "captions_per_s": round(n / max(seconds, 1e-9), 2)}
        self.picture([by_id[i] for i in ids[:self.task.tc.picture_items]], captions, out_dir / "captions.png")
        (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
        log.info("captioning %s (%d images): BLEU-4 %.3f, METEOR %.3f, ROUGE-L %.3f, CIDEr %.3f", split, n,
                 metrics["BLEU-4"], metrics["METEOR"], metrics["ROUGE-L"], metrics["CIDEr"])
        return metrics

    def picture(self, images: Sequence["KarpathyImage"], captions: Sequence[str], path: Path) -> Optional[Path]:
        """The images (from ``task.coco.image_root``; unreadable ones grey) with the generated caption and the
        first reference under each."""
        from tasks.captioning.coco import image_path
        from tasks.captioning.task import captioned_tiles

        if not images:
            return None
        root, tiles = self.task.tc.coco.image_root, []
        for image in images:
            try:
                tile = _square(self._read(image_path(root, image)) if root else None)
            except (OSError, ValueError):
                tile = _square(None)
            tiles.append(tile)
        texts = [f"> {c} | ref: {im.raw[0].strip()}" for c, im in zip(captions, images)]
        return save_png(make_grid(captioned_tiles(np.stack(tiles), texts, upscale=1), nrow=min(6, len(tiles))), path)

    @staticmethod
    def _read(path: Path) -> np.ndarray:
        from tasks.image_source import load_image

        return load_image(path)

    def preview(self, pipe: "Pipeline", path: Path) -> None:
        """Captions of the first ``task.preview_items`` images of the evaluation split, at most 10 solver steps."""
        images, features = self._split(self.task.tc.coco.eval_split)
        n = min(self.task.tc.preview_items, len(features))
        stored = features.features(np.arange(n))
        captions = pipe([Extracted(f) for f in stored], steps=min(pipe.options().steps, 10)).texts
        by_id = {im.cocoid: im for im in images}
        self.picture([by_id[int(i)] for i in features.cocoids[:n]], captions, path)


def _square(image: Optional[np.ndarray], side: int = PICTURE_SIDE) -> np.ndarray:
    """Central square crop resized to ``side`` (grey when ``image`` is None)."""
    from PIL import Image

    if image is None:
        return np.full((side, side, 3), 128, dtype=np.uint8)
    h, w = image.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    crop = Image.fromarray(image[top:top + s, left:left + s])
    return np.asarray(crop.resize((side, side), Image.BICUBIC))


__all__ = ["CocoCaptionEvaluator", "CocoCaptionLatents", "CocoImageProcessor", "Extracted", "coco_training_data"]
