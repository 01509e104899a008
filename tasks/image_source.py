"""Common parts of task adapters whose source is an image (depth, super-resolution, captioning)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from crossflow.task import Task
from crossflow.utils.images import load_image


class ImageSourceTask(Task):
    """A task whose source is an RGB image of ``(3, R, R)`` given by :attr:`source_shape`.

    The token-source members of :class:`~crossflow.task.Task` describe the image: ``source_dim`` is its
    channel count and ``max_tokens`` is 0 (there is no token sequence). Use ``model.source_encoder.arch:
    image`` (or ``noise`` for noise-to-target baselines).
    """

    @property
    def source_dim(self) -> int:
        return self.source_shape[0]

    @property
    def max_tokens(self) -> int:
        return 0

    def load_input_images(self, paths: Sequence[str | Path], size: int | None = None) -> Tensor:
        """Image files → ``(B, 3, size, size)`` float in [-1, 1] (bicubic resize to the task's input size).

        Raises:
            ValueError: naming a file that is missing or not an image.
        """
        size = size or self.source_shape[-1]
        out = []
        for path in paths:
            image = load_image(path)
            if image.shape[:2] != (size, size):
                image = np.asarray(Image.fromarray(image).resize((size, size), Image.BICUBIC))
            out.append(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1))
        if not out:
            raise ValueError("no input images given")
        return torch.stack(out).float() / 127.5 - 1.0
