"""Toy-world train/test splits, batch rendering and a torch ``Dataset``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from tasks.toyworld.scenes import CANVAS, TEMPLATES, Scene, caption, render_scene, sample_scenes


@dataclass(frozen=True)
class Example:
    """One captioned scene.

    Attributes:
        scene: The scene.
        caption: Caption text.
        template_index: Index into ``TEMPLATES`` used for the caption.
    """

    scene: Scene
    caption: str
    template_index: int

    @property
    def attributes(self) -> dict[str, str]:
        """The scene's color, shape, size and position names."""
        return self.scene.attributes


def _examples(scenes: list[Scene], rng: np.random.Generator) -> list[Example]:
    templates = rng.integers(len(TEMPLATES), size=len(scenes))
    return [Example(s, caption(s, int(t)), int(t)) for s, t in zip(scenes, templates)]


def make_split(num_train: int, num_test: int, seed: int = 0) -> tuple[list[Example], list[Example]]:
    """Builds reproducible, disjoint train and test example lists.

    Train attributes are drawn independently and uniformly; test attributes
    cycle through shuffled copies of all attribute combinations, so every
    color/shape/size/position is (near-)equally represented.  The two sets use
    independent streams derived from ``seed``, so the test set depends only on
    ``(num_test, seed)``.  Caption templates are drawn uniformly per example.

    Args:
        num_train: Number of training examples.
        num_test: Number of test examples.
        seed: Random seed.

    Returns:
        ``(train, test)`` lists of ``Example``; no scene appears in both.
    """
    train_rng = np.random.default_rng([seed, 0])
    test_rng = np.random.default_rng([seed, 1])
    test = _examples(sample_scenes(num_test, test_rng, balanced=True), test_rng)
    test_scenes = {e.scene for e in test}
    train_scenes: list[Scene] = []
    while len(train_scenes) < num_train:  # collisions are practically impossible (continuous jitter)
        batch = sample_scenes(num_train - len(train_scenes), train_rng)
        train_scenes.extend(s for s in batch if s not in test_scenes)
    return _examples(train_scenes, train_rng), test


def render_batch(
    examples: list[Example] | list[Scene], resolution: int = CANVAS
) -> tuple[np.ndarray, np.ndarray]:
    """Renders images and depth maps for a list of examples (or scenes).

    Args:
        examples: ``Example`` or ``Scene`` objects.
        resolution: Output side length in pixels.

    Returns:
        ``(images, depths)``: ``(N, H, W, 3)`` uint8 and ``(N, H, W)`` float32.
    """
    n = len(examples)
    images = np.empty((n, resolution, resolution, 3), np.uint8)
    depths = np.empty((n, resolution, resolution), np.float32)
    for i, item in enumerate(examples):
        scene = item.scene if isinstance(item, Example) else item
        images[i], depths[i] = render_scene(scene, resolution)
    return images, depths


class ToyWorldImages(Dataset):
    """Torch dataset over pre-rendered toy-world examples.

    Images and depths are rendered once in ``__init__``; images are kept as a
    uint8 tensor and converted to float on access.

    Each item is a dict with ``image`` (float32 ``(3, H, W)`` in [-1, 1]),
    ``depth`` (float32 ``(1, H, W)``), ``caption`` (str), ``index`` (int) and
    the attribute strings ``color``, ``shape``, ``size``, ``position``.
    """

    def __init__(self, examples: list[Example], resolution: int = CANVAS) -> None:
        """Renders all examples.

        Args:
            examples: Examples from ``make_split``.
            resolution: Image side length in pixels.
        """
        self.examples = list(examples)
        self.resolution = resolution
        images, depths = render_batch(self.examples, resolution)
        self.images = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()  # (N, 3, H, W) uint8
        self.depths = torch.from_numpy(depths).unsqueeze(1)  # (N, 1, H, W) float32

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict[str, object]:
        example = self.examples[index]
        item: dict[str, object] = {
            "image": self.images[index].float() / 127.5 - 1.0,
            "depth": self.depths[index],
            "caption": example.caption,
            "index": index,
        }
        item.update(example.attributes)
        return item
