"""Typed pipeline outputs: concatenation, pictures (tiles) and what ``save`` writes, per output type."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from crossflow.codecs import ImageCodec
from crossflow.outputs import DepthOutput, ImageOutput, TextOutput
from crossflow.utils.images import colorize_depth


def _images(n: int, channels: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, channels, 6, 5, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_concat_joins_tensors_and_lists_and_keeps_settings():
    a = ImageOutput(images=_images(2), latents=torch.zeros(2, 4))
    b = ImageOutput(images=_images(3, seed=1), latents=torch.ones(3, 4))
    joined = ImageOutput.concat([a, b])
    assert len(joined) == 5 and torch.equal(joined.images, torch.cat([a.images, b.images]))
    assert torch.equal(joined.latents, torch.cat([a.latents, b.latents]))
    assert ImageOutput.concat([a, ImageOutput(images=_images(1))]).latents is None  # a missing part: none
    texts = TextOutput.concat([TextOutput(texts=["x"], token_ids=torch.tensor([[1, 2]])),
                               TextOutput(texts=["y", "z"], token_ids=torch.tensor([[3, 4], [5, 6]]))])
    assert texts.texts == ["x", "y", "z"] and texts.token_ids.tolist() == [[1, 2], [3, 4], [5, 6]]
    depth = DepthOutput.concat([DepthOutput(depth=torch.ones(1, 2, 2), vmin=0.5, vmax=4.5),
                                DepthOutput(depth=torch.zeros(2, 2, 2), vmin=0.5, vmax=4.5)])
    assert depth.depth.shape == (3, 2, 2) and (depth.vmin, depth.vmax) == (0.5, 4.5)
    with pytest.raises(ValueError, match="nothing to concatenate"):
        ImageOutput.concat([])


def test_image_output_pictures_and_files(tmp_path):
    out = ImageCodec().decode(_images(2) * 3)  # the codec clamps to [-1, 1] and keeps the images on the CPU
    assert float(out.images.abs().max()) == 1.0
    u8 = out.uint8()
    assert u8.shape == (2, 6, 5, 3) and u8.dtype == np.uint8 and np.array_equal(out.tiles(), u8)
    assert [im.size for im in out.pil()] == [(5, 6), (5, 6)]
    records = out.save(tmp_path, ["a", "b"])
    assert records == [{"file": "a.png"}, {"file": "b.png"}]
    assert np.array_equal(np.asarray(Image.open(tmp_path / "b.png")), u8[1])
    decoded = ImageCodec(lambda z: z.flip(-1)).decode(_images(1))  # latent-space tasks pass a decoder
    assert torch.equal(decoded.images, _images(1).flip(-1))


def test_one_channel_images_give_rgb_tiles_and_pil_images():
    out = ImageOutput(images=_images(2, channels=1))
    assert out.tiles().shape == (2, 6, 5, 3)  # PipelineOutput.tiles: (B, H, W, 3)
    assert [im.size for im in out.pil()] == [(5, 6), (5, 6)]


def test_depth_output_colours_on_its_range_and_saves_metric_depth(tmp_path):
    depth = torch.tensor([[[0.5, 1.0], [2.0, 4.5]], [[4.5, 4.5], [0.5, 0.5]]])
    out = DepthOutput(depth=depth, vmin=0.5, vmax=4.5)
    tiles = out.tiles()
    assert tiles.shape == (2, 2, 2, 3) and tiles.dtype == np.uint8
    assert np.array_equal(tiles, colorize_depth(depth, 0.5, 4.5))  # the task's fixed range, not the batch's
    records = out.save(tmp_path, ["0000", "0001"])
    assert records == [{"file": "0000.png", "depth": "0000.npy"}, {"file": "0001.png", "depth": "0001.npy"}]
    saved = np.load(tmp_path / "0001.npy")
    assert saved.dtype == np.float32 and np.array_equal(saved, depth[1].numpy())
    assert np.array_equal(np.asarray(Image.open(tmp_path / "0000.png").convert("RGB")), tiles[0])


def test_text_output_tiles_and_records(tmp_path):
    out = TextOutput(texts=["a red circle", "a much longer caption that wraps onto a second line or more"])
    tiles = out.tiles()
    assert tiles.shape[0] == 2 and tiles.shape[2:] == (128, 3) and tiles.dtype == np.uint8
    assert tiles[0, -1].min() == 255  # the shorter text is padded with white to the common height
    assert out.save(tmp_path, ["0", "1"]) == [{"text": t} for t in out.texts]
    assert not list(tmp_path.iterdir())  # texts go into the index, not into files
