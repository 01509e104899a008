"""Image preprocessing of the feature extractor: ADM and COCO centre crops against PIL by hand, model input range."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from crossflow.data.transforms import center_crop_adm, center_crop_lanczos, to_model_input


def test_center_crops_hand_computed() -> None:
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (60, 100, 3), dtype=np.uint8))  # 100 wide, 60 tall
    # ADM: 60 >= 2·16 → BOX-halve to 50×30; 30 < 32 stops; BICUBIC to round(50·16/30)=27 × 16; crop x from 5.
    ref = np.asarray(img.resize((50, 30), Image.BOX).resize((27, 16), Image.BICUBIC))[:, 5:21]
    assert np.array_equal(center_crop_adm(img, 16), ref)
    # COCO: centre 60×60 square from x=20, LANCZOS to 16×16.
    ref = np.asarray(Image.fromarray(np.asarray(img)[:, 20:80]).resize((16, 16), Image.LANCZOS))
    assert np.array_equal(center_crop_lanczos(img, 16), ref)
    flat = Image.new("RGB", (77, 41), (10, 200, 30))
    assert (center_crop_adm(flat, 16) == [10, 200, 30]).all() and center_crop_adm(flat, 16).shape == (16, 16, 3)
    x = to_model_input(np.stack([center_crop_adm(flat, 16)]))
    assert x.shape == (1, 3, 16, 16) and torch.allclose(x[0, :, 0, 0], torch.tensor([10, 200, 30]) / 127.5 - 1)
