"""The image-source skeleton: every accepted image input gives the same source; errors name the bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from crossflow.task import Source, SourceProcessor, TakesImages, TakesText
from tasks.image_source import ImageProcessor, upsample_bicubic


def _image(h: int = 8, w: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_paths_pil_arrays_and_tensors_give_the_same_source(tmp_path):
    image = _image()
    Image.fromarray(image).save(tmp_path / "a.png")
    processor = ImageProcessor(8)
    assert isinstance(processor, SourceProcessor) and isinstance(processor, TakesImages)
    assert not isinstance(processor, TakesText)
    chw = torch.from_numpy(image).permute(2, 0, 1)
    inputs = [str(tmp_path / "a.png"), tmp_path / "a.png", Image.fromarray(image), image, chw, chw.float() / 127.5 - 1]
    source = processor(inputs, "cpu")
    assert isinstance(source, Source) and source.mask is None and source.values.shape == (6, 3, 8, 8)
    expected = chw.float() / 127.5 - 1
    for row in source.values:
        torch.testing.assert_close(row, expected, rtol=0, atol=1e-6)
    assert np.array_equal(processor.load_images([tmp_path / "a.png"])[0], image)


def test_other_sizes_are_resized_then_upsampled_to_the_model_side():
    image = _image(12, 12)
    low = torch.from_numpy(np.asarray(Image.fromarray(image).resize((4, 4), Image.BICUBIC)).copy()).permute(2, 0, 1)
    processor = ImageProcessor(16, input_size=4)  # super-resolution: inputs are 4 px, the model sees 16 px
    assert torch.equal(processor.to_uint8([image]), low[None])
    torch.testing.assert_close(processor([image], "cpu").values, upsample_bicubic(low[None], (16, 16)), rtol=0, atol=0)
    flat = torch.full((1, 3, 4, 4), 255, dtype=torch.uint8)
    assert torch.equal(upsample_bicubic(flat, (8, 8)), torch.ones(1, 3, 8, 8))  # [-1, 1], clamped


def test_bad_image_inputs_are_named(tmp_path):
    processor = ImageProcessor(8)
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8, got float64 \(8, 8, 3\)"):
        processor([np.zeros((8, 8, 3))], "cpu")
    with pytest.raises(ValueError, match=r"\(3, H, W\), got \(8, 8\)"):
        processor([torch.zeros(8, 8)], "cpu")
    with pytest.raises(ValueError, match="cannot use int as an image input"):
        processor([3], "cpu")
    with pytest.raises(ValueError, match="no input images"):
        processor([], "cpu")
    with pytest.raises(ValueError, match="missing.png"):
        processor.load_images([tmp_path / "missing.png"])
