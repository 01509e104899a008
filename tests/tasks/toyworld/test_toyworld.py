"""Tests for the toy-world scenes, dataset and analytic checker."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from tasks.toyworld.checker import analyze, check, score, to_uint8_hwc
from tasks.toyworld.dataset import ToyWorldImages, make_split, render_batch
from tasks.toyworld.scenes import (
    BACKGROUND,
    PALETTE,
    POSITION_JITTER,
    POSITIONS,
    SHAPES,
    SIZE_JITTER,
    SIZES,
    TEMPLATES,
    Scene,
    caption,
    coverage,
    parse_caption,
    render,
    render_depth,
    sample_scenes,
)

ATTRS = ("color", "shape", "size", "position")


@pytest.fixture(scope="module")
def gt() -> tuple[list[dict[str, str]], np.ndarray]:
    _, test = make_split(0, 1000, seed=3)
    images, _ = render_batch(test)
    return [e.attributes for e in test], images


def test_constants() -> None:
    assert len(PALETTE) >= 6 and len(SHAPES) >= 3 and len(SIZES) == 2 and len(POSITIONS) == 5
    assert min(SIZES.values()) >= 12 and max(SIZES.values()) > min(SIZES.values())
    rgb = np.array(list(PALETTE.values()), float)
    pairwise = np.linalg.norm(rgb[:, None] - rgb[None], axis=-1) + np.eye(len(rgb)) * 1e9
    assert pairwise.min() > 80
    assert np.linalg.norm(rgb - np.array(BACKGROUND), axis=1).min() > 80


def test_split_reproducible_and_disjoint() -> None:
    a_train, a_test = make_split(200, 100, seed=1)
    b_train, b_test = make_split(200, 100, seed=1)
    c_train, c_test = make_split(200, 100, seed=2)
    assert a_train == b_train and a_test == b_test
    assert a_train != c_train and a_test != c_test
    assert len(a_train) == 200 and len(a_test) == 100
    assert not {e.scene for e in a_train} & {e.scene for e in a_test}


def test_test_split_is_balanced() -> None:
    _, test = make_split(0, 900, seed=0)
    for key, options in (("color", PALETTE), ("shape", SHAPES), ("size", SIZES), ("position", POSITIONS)):
        counts = np.array([sum(e.attributes[key] == o for e in test) for o in options])
        assert counts.min() >= 0.8 * len(test) / len(options)


def test_captions_round_trip() -> None:
    assert len(TEMPLATES) >= 6
    for template in TEMPLATES:
        assert all("{" + k + "}" in template for k in ATTRS)
    for scene in sample_scenes(200, seed=4):
        for t in range(len(TEMPLATES)):
            assert parse_caption(caption(scene, t)) == scene.attributes
    train, _ = make_split(50, 0, seed=5)
    assert all(parse_caption(e.caption) == e.attributes for e in train)
    assert len({e.template_index for e in train}) > 1


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("position", list(POSITIONS))
def test_shapes_fit_canvas(shape: str, size: str, position: str) -> None:
    for dx in (-POSITION_JITTER, POSITION_JITTER):
        for dy in (-POSITION_JITTER, POSITION_JITTER):
            scene = Scene("red", shape, size, position, dx, dy, SIZE_JITTER)
            cx, cy = scene.center
            assert cx - scene.side / 2 >= 0 and cx + scene.side / 2 <= 32
            assert cy - scene.side / 2 >= 0 and cy + scene.side / 2 <= 32
            alpha = coverage(scene)
            assert alpha.sum() == pytest.approx(
                {"square": 1.0, "circle": np.pi / 4, "triangle": 0.5}[shape] * scene.side**2, rel=0.06
            )


def test_render_and_depth() -> None:
    for scene in sample_scenes(60, seed=6):
        image, depth = render(scene), render_depth(scene)
        assert image.shape == (32, 32, 3) and image.dtype == np.uint8
        assert depth.shape == (32, 32) and depth.dtype == np.float32 and depth.min() > 0
        assert (image[0, 0] == BACKGROUND).all() or (image[-1, -1] == BACKGROUND).all()
        x, y = (int(v) for v in scene.center)
        background_depth = 4.0 - 2.0 * (y + 0.5) / 32
        assert depth[y, x] < background_depth - 0.2
    assert render(sample_scenes(1, 0)[0], resolution=64).shape == (64, 64, 3)


def test_dataset_items() -> None:
    train, _ = make_split(8, 0, seed=7)
    ds = ToyWorldImages(train)
    item = ds[3]
    assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.float32
    assert -1.0 <= item["image"].min() and item["image"].max() <= 1.0
    assert item["depth"].shape == (1, 32, 32) and item["index"] == 3
    assert item["caption"] == train[3].caption
    assert all(item[k] == train[3].attributes[k] for k in ATTRS)
    assert ds.images.dtype == torch.uint8 and len(ds) == 8


def test_checker_ground_truth(gt: tuple[list[dict[str, str]], np.ndarray]) -> None:
    attrs, images = gt
    result = score(images, attrs)
    assert result["n"] == 1000
    for key in ATTRS:
        assert result[f"{key}_accuracy"] >= 0.98, result


def test_checker_blurred_noisy(gt: tuple[list[dict[str, str]], np.ndarray]) -> None:
    attrs, images = gt
    rng = np.random.default_rng(0)
    degraded = []
    for image in images:
        x = cv2.GaussianBlur(image.astype(np.float32), (0, 0), 0.7) + rng.normal(0, 8, image.shape)
        degraded.append(np.clip(np.rint(x), 0, 255).astype(np.uint8))
    result = score(degraded, attrs)
    for key in ATTRS:
        assert result[f"{key}_accuracy"] >= 0.95, result


def test_checker_noise_near_chance(gt: tuple[list[dict[str, str]], np.ndarray]) -> None:
    attrs, _ = gt
    g = torch.Generator().manual_seed(0)
    noises = [
        torch.rand(1000, 3, 32, 32, generator=g) * 2 - 1,
        (torch.randn(1000, 3, 32, 32, generator=g) * 0.5).clamp(-1, 1),
    ]
    options = {"color": PALETTE, "shape": SHAPES, "size": SIZES, "position": POSITIONS}
    chance = {key: 1 / len(values) for key, values in options.items()}
    for noise in noises:
        result = score(noise, attrs)
        for key in ATTRS:
            assert result[f"{key}_accuracy"] <= chance[key] + 0.15, result


def test_checker_blank_is_wrong() -> None:
    blank = np.broadcast_to(np.array(BACKGROUND, np.uint8), (32, 32, 3)).copy()
    assert analyze(blank) == {k: None for k in ATTRS}
    result = check(blank, sample_scenes(1, 0)[0].attributes)
    assert not any(result.values())


def test_checker_input_formats() -> None:
    for scene in sample_scenes(20, seed=8):
        image = render(scene)
        as_float = torch.from_numpy(image).permute(2, 0, 1).float() / 127.5 - 1.0
        assert (to_uint8_hwc(as_float) == image).all()
        expected = analyze(image)
        assert expected == scene.attributes
        assert analyze(as_float) == expected
        assert analyze(as_float.permute(1, 2, 0).numpy()) == expected
        assert analyze(torch.from_numpy(image).permute(2, 0, 1)) == expected
    batch = torch.stack([torch.from_numpy(render(s)).permute(2, 0, 1).float() / 127.5 - 1 for s in sample_scenes(5, 9)])
    assert score(batch, [s.attributes for s in sample_scenes(5, 9)])["all_accuracy"] == 1.0


def test_checker_other_resolution() -> None:
    scenes = sample_scenes(30, seed=10)
    result = score([render(s, resolution=64) for s in scenes], [s.attributes for s in scenes])
    assert result["all_accuracy"] >= 0.95
