"""Tests for crossflow.utils.images: uint8 conversion, grids, PNG/GIF writing, safe loading, captions, depth colours."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from crossflow.utils.images import (caption_under, colorize_depth, load_image, make_grid, save_gif, save_grid,
                                    save_png, to_uint8)


def test_to_uint8_mapping() -> None:
    x = torch.tensor([-1.0, 0.0, 1.0, 3.0, -7.0]).view(1, 1, 1, 5)
    out = to_uint8(x)
    assert out.shape == (1, 1, 5, 1) and out.dtype == np.uint8
    assert out[0, 0, :, 0].tolist() == [0, 128, 255, 255, 0]
    rgb = to_uint8(np.zeros((2, 3, 4, 5), dtype=np.float32))
    assert rgb.shape == (2, 4, 5, 3)
    with pytest.raises(ValueError):
        to_uint8(np.zeros((2, 2, 4, 4)))


@pytest.mark.parametrize("n,nrow,rows,cols", [(8, None, 3, 3), (8, 4, 2, 4), (3, 5, 1, 3), (1, None, 1, 1)])
def test_grid_shape(n: int, nrow: int | None, rows: int, cols: int) -> None:
    imgs = np.zeros((n, 6, 5, 3), dtype=np.uint8)
    grid = make_grid(imgs, nrow=nrow, padding=2)
    assert grid.shape == (rows * 6 + (rows + 1) * 2, cols * 5 + (cols + 1) * 2, 3)
    assert grid[0, 0, 0] == 255 and grid[2, 2, 0] == 0


def test_save_png_grid_and_upscale(tmp_path: Path) -> None:
    imgs = torch.rand(4, 3, 8, 8) * 2 - 1
    p = save_grid(imgs, tmp_path / "sub" / "grid.png", nrow=2, upscale=4)
    assert load_image(p).shape == (2 * 32 + 3 * 2, 2 * 32 + 3 * 2, 3)
    gray = to_uint8(torch.zeros(1, 1, 5, 7))[0]
    assert load_image(save_png(gray, tmp_path / "g.png")).shape == (5, 7, 3)
    u8 = to_uint8(imgs)
    assert np.array_equal(load_image(save_png(u8[0], tmp_path / "one.png")), u8[0])


def test_gif_frames(tmp_path: Path) -> None:
    frames = [np.full((8, 8, 3), 40 * i, dtype=np.uint8) for i in range(5)]
    p = save_gif(frames, tmp_path / "a.gif", duration_ms=50)
    with Image.open(p) as im:
        assert im.n_frames == 5


def test_load_image_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="missing.png"):
        load_image(tmp_path / "missing.png")
    bad = tmp_path / "garbage.png"
    bad.write_bytes(b"\x00not an image at all" * 10)
    with pytest.raises(ValueError, match="garbage.png"):
        load_image(bad)
    good = save_png(np.random.randint(0, 255, (64, 64, 3), dtype=np.uint8), tmp_path / "ok.png")
    cut = tmp_path / "truncated.png"
    cut.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ValueError, match="truncated.png"):
        load_image(cut)


def test_caption_under() -> None:
    img = np.zeros((32, 64, 3), dtype=np.uint8)
    out = caption_under(img, "a small red dog sitting on a blue mat in the sun")
    assert out.shape[1] == 64 and out.shape[0] > 32 and out.dtype == np.uint8
    assert np.array_equal(out[:32], img)
    band = out[32:]
    assert band.max() == 255 and band.min() < 128  # white band with dark text
    short = caption_under(img[:, :, :1], "cat", width_chars=40)
    assert short.shape[2] == 3 and short.shape[0] < out.shape[0]


def test_colorize_depth_on_a_fixed_range_near_is_bright():
    rgb = colorize_depth(np.array([[[1.0, 4.0]]]), 1.0, 4.0)
    assert rgb.shape == (1, 1, 2, 3) and rgb.dtype == np.uint8
    assert rgb[0, 0, 0].sum() > rgb[0, 0, 1].sum()  # near is bright
    # the range is fixed, not the batch's: values outside it clip to the end colours
    clipped = colorize_depth(torch.tensor([[[0.0, 9.0]]]), 1.0, 4.0)
    assert np.array_equal(clipped, rgb)
