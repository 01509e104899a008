"""The shared skeleton of the tasks whose source is an image (depth, super-resolution, captioning).

* :class:`ImageSourceTask`: source spec ``(3, R, R)`` from ``task.toyworld.resolution``, the rendered toy
  splits, and the :class:`ImageProcessor` that turns files / arrays / tensors into the model's source.
* :class:`HeldOutEvaluator`: the evaluation loop written once — held-out inputs through the pipeline,
  the task's scores, settings and timing in ``metrics.json``, the task's picture — and the training
  preview; a task fills in :meth:`~HeldOutEvaluator.score` and :meth:`~HeldOutEvaluator.picture`.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
import logging
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from crossflow.config import to_dict
from crossflow.outputs import PipelineOutput
from crossflow.pipeline import Pipeline
from crossflow.schema import SampleConfig
from crossflow.specs import ImageSpec
from crossflow.task import Source, Task
from crossflow.utils.images import load_image, to_uint8
from tasks.toyworld.pairs import RenderedSplit, rendered_splits

log = logging.getLogger(__name__)


def upsample_bicubic(low_res: Tensor, size: tuple[int, int]) -> Tensor:
    """``(B, C, h, w)`` uint8 → ``(B, C, *size)`` float in [-1, 1], plain bicubic (no antialiasing)."""
    x = low_res.float() / 127.5 - 1.0
    return F.interpolate(x, size=size, mode="bicubic", align_corners=False).clamp(-1.0, 1.0)


def _as_uint8_chw(item: Any) -> Tensor:
    """One image input → ``(3, H, W)`` uint8: a path, a PIL image, an ``(H, W, 3)`` uint8 array, or a
    ``(3, H, W)`` tensor (uint8, or float in [-1, 1])."""
    if isinstance(item, (str, Path)):
        item = load_image(item)
    if isinstance(item, Image.Image):
        item = np.array(item.convert("RGB"))
    if isinstance(item, np.ndarray):
        if item.ndim != 3 or item.shape[-1] != 3 or item.dtype != np.uint8:
            raise ValueError(f"image arrays must be (H, W, 3) uint8, got {item.dtype} {item.shape}")
        return torch.from_numpy(np.ascontiguousarray(item)).permute(2, 0, 1)
    if isinstance(item, Tensor):
        if item.dim() != 3 or item.shape[0] != 3:
            raise ValueError(f"image tensors must be (3, H, W), got {tuple(item.shape)}")
        if item.dtype == torch.uint8:
            return item.cpu()
        return torch.from_numpy(to_uint8(item[None].float().cpu())[0]).permute(2, 0, 1)
    raise ValueError(f"cannot use {type(item).__name__} as an image input (give a path, a PIL image, an (H, W, 3) "
                     "uint8 array or a (3, H, W) tensor)")


def _size(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return (size, size)
    h, w = size
    return (int(h), int(w))


class ImageProcessor:
    """Image inputs → the model's source ``(B, 3, H, W)`` in [-1, 1].

    Each image is brought to ``input_size`` (PIL bicubic, only when its size differs), then, when
    ``input_size`` is smaller than ``size``, upsampled to ``size`` with plain bicubic interpolation
    (super-resolution's source is the upsampled low-res image).

    Args:
        size: ``(H, W)`` of the model's source, or one side for a square.
        input_size: size the images are taken at (default ``size``; super-resolution: the low-res size).
        resize: ``(image (H, W, 3) uint8, (h, w)) -> (h, w, 3) uint8`` used instead of PIL bicubic (a task
            resizes inference inputs as it resized its training images).
    """

    def __init__(self, size: int | Sequence[int], input_size: Optional[int | Sequence[int]] = None,
                 resize: Optional[Callable[[np.ndarray, tuple[int, int]], np.ndarray]] = None) -> None:
        self.size = _size(size)
        self.input_size = _size(input_size) if input_size is not None else self.size
        self.resize = resize

    def load_images(self, paths: Sequence[str | Path]) -> list[np.ndarray]:
        """Read image files as ``(H, W, 3)`` uint8 (a missing or corrupt file raises, naming it)."""
        return [load_image(path) for path in paths]

    def to_uint8(self, inputs: Sequence[Any]) -> Tensor:
        """Inputs → ``(B, 3, *input_size)`` uint8 (what the model is shown, before upsampling)."""
        out = []
        h, w = self.input_size
        for item in inputs:
            image = _as_uint8_chw(item)
            if tuple(image.shape[1:]) != (h, w):
                hwc = image.permute(1, 2, 0).numpy()
                hwc = self.resize(hwc, (h, w)) if self.resize else np.asarray(Image.fromarray(hwc).resize((w, h),
                                                                                                         Image.BICUBIC))
                image = torch.from_numpy(np.ascontiguousarray(hwc)).permute(2, 0, 1)
            out.append(image)
        if not out:
            raise ValueError("no input images given")
        return torch.stack(out)

    def __call__(self, inputs: Sequence[Any], device: torch.device | str) -> Source:
        images = self.to_uint8(inputs)
        if self.input_size != self.size:
            return Source(upsample_bicubic(images, self.size).to(device))
        return Source((images.float() / 127.5 - 1.0).to(device))


class ImageSourceTask(Task):
    """A task whose source is an RGB image ``(3, R, R)``, ``R = task.toyworld.resolution``.

    Subclasses give the target spec, dataset, codec and evaluator; the toy splits are rendered once.
    """

    def __init__(self, config) -> None:
        super().__init__(config)
        self.tc = config.task
        self._splits: Optional[tuple[RenderedSplit, RenderedSplit]] = None

    @property
    def resolution(self) -> int:
        return int(self.tc.toyworld.resolution)

    def source_spec(self) -> ImageSpec:
        return ImageSpec(3, self.resolution, self.resolution)

    def source_processor(self) -> ImageProcessor:
        return ImageProcessor(self.resolution)

    def splits(self) -> tuple[RenderedSplit, RenderedSplit]:
        """``(train, test)`` toy-world splits, rendered on first use."""
        if self._splits is None:
            self._splits = rendered_splits(self.tc.toyworld)
        return self._splits


class HeldOutEvaluator(ABC):
    """Evaluation on the held-out toy split, written once for the image-source tasks.

    Subclasses implement :meth:`score` and :meth:`picture` and set :attr:`picture_name`; they may override
    :meth:`inputs` (default: the held-out images) and :meth:`summary`.
    """

    picture_name = "picture.png"

    def __init__(self, task: ImageSourceTask) -> None:
        self.task = task

    def inputs(self, test: RenderedSplit, n: int) -> Tensor:
        """The first ``n`` held-out inputs as ``(n, 3, h, w)`` uint8 (what the pipeline is given)."""
        return test.images[:n]

    @abstractmethod
    def score(self, pipe: Pipeline, output: PipelineOutput, inputs: Tensor, test: RenderedSplit, n: int,
              options: SampleConfig, out_dir: Path) -> dict[str, Any]:
        """Metrics of ``output`` (for the first ``n`` held-out items); may write extra files under ``out_dir``."""

    @abstractmethod
    def picture(self, inputs: Tensor, output: PipelineOutput, test: RenderedSplit, k: int, path: Path) -> Path:
        """A picture of the first ``k`` items (inputs, predictions, truths)."""

    def summary(self, metrics: dict[str, Any]) -> str:
        """One log line of the headline numbers."""
        return ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, float))

    def evaluate(self, pipe: Pipeline, out_dir: Path, *, num: Optional[int] = None,
                 options: Optional[SampleConfig] = None) -> dict[str, Any]:
        """Generate for the held-out split, score, write ``metrics.json`` and the picture under ``out_dir``."""
        options = pipe.options(options)
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        _, test = self.task.splits()
        n = min(num or len(test), len(test))
        inputs = self.inputs(test, n)
        start = time.time()
        output = pipe(list(inputs), options=options)
        seconds = time.time() - start
        metrics = self.score(pipe, output, inputs, test, n, options, out_dir)
        metrics["settings"] = to_dict(options) | {"num_images": n}
        metrics["generation_seconds"] = round(seconds, 2)
        self.picture(inputs, output, test, min(self.task.tc.picture_items, n), out_dir / self.picture_name)
        (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
        log.info("%s: %s", self.task.name, self.summary(metrics))
        return metrics

    def preview(self, pipe: Pipeline, path: Path) -> None:
        """The picture for the first ``task.preview_items`` held-out items, with at most 10 solver steps."""
        _, test = self.task.splits()
        n = min(self.task.tc.preview_items, len(test))
        inputs = self.inputs(test, n)
        output = pipe(list(inputs), steps=min(pipe.options().steps, 10))
        self.picture(inputs, output, test, n, path)
