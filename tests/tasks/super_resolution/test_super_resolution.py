"""Downsampling, and the super-resolution adapter: low-res inputs, data, both models, evaluation files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from crossflow.pipeline import Pipeline
from crossflow.registry import experiment_from_dict
from crossflow.specs import ImageSpec
from tasks.image_source import upsample_bicubic
from tasks.super_resolution.data import downsample


def test_antialiased_bicubic_downsampling():
    flat = torch.full((1, 3, 32, 32), 77, dtype=torch.uint8)
    assert torch.equal(downsample(flat, 4), torch.full((1, 3, 8, 8), 77, dtype=torch.uint8))
    stripes = torch.zeros(1, 1, 32, 32, dtype=torch.uint8)
    stripes[..., ::2] = 255  # the highest frequency: antialiasing must average it to grey
    small = downsample(stripes, 4).float()
    assert small.shape == (1, 1, 8, 8)
    assert float((small[..., 2:6] - 127.5).abs().max()) < 3.0  # interior (the borders see the edge replication)
    up = upsample_bicubic(small.to(torch.uint8), (32, 32))
    assert up.shape == (1, 1, 32, 32) and float(up.abs().max()) <= 1.0
    with pytest.raises(ValueError, match="not divisible"):
        downsample(torch.zeros(1, 1, 30, 30, dtype=torch.uint8), 4)


def _tiny_sr_config(baseline: bool = False):
    model = {"source_encoder": {"arch": "image", "widths": [8, 16], "input_skip": True, "head_init_scale": 0.0},
             "velocity_net": {"patch_size": 4, "hidden_size": 32, "depth": 1, "num_heads": 2},
             "contrastive": {"enabled": False}}
    sample = {"steps": 2, "guidance": 1.0, "batch_size": 4}
    if baseline:  # noise → high-res with the upsampled low-res image concatenated to x_t
        model["source_encoder"] = {"arch": "noise"}
        model["velocity_net"]["concat_source"] = True
        sample["z0"] = "sample"
    return experiment_from_dict({
        "task": {"name": "super_resolution", "toyworld": {"num_train": 64, "num_test": 6, "resolution": 16},
                 "scale": 4},
        "model": model, "flow": {"null_probability": 0.0}, "sample": sample})


@pytest.mark.parametrize("baseline", [False, True])
def test_sr_adapter_shapes_and_evaluation_files(tmp_path, baseline):
    cfg, task_cls = _tiny_sr_config(baseline)
    task = task_cls(cfg)
    assert task.target_spec() == task.source_spec() == ImageSpec(3, 16, 16)
    train, _ = task.splits()
    batch = task.train_dataset().__getitems__([0, 1])
    assert set(batch) == {"source", "target"}  # no "cond": a concatenating model is given the source itself
    assert batch["source"].shape == batch["target"].shape == (2, 3, 16, 16)
    torch.testing.assert_close(batch["source"], upsample_bicubic(downsample(train.images[:2], 4), (16, 16)))
    model = task.build_model()
    assert model.concat_source == baseline
    assert torch.isfinite(model(batch).loss)
    metrics = task.evaluator().evaluate(Pipeline(model, task), tmp_path)
    assert {"psnr", "ssim", "bicubic", "psnr_gain_over_bicubic"} <= set(metrics)
    if baseline:  # no source latent to decode
        assert "ve_mean" not in metrics
    else:  # an untrained direct model starts at the upsampled image: it *is* bicubic
        assert metrics["ve_mean"]["psnr"] == pytest.approx(metrics["bicubic"]["psnr"])
    assert json.loads((tmp_path / "metrics.json").read_text())["model"] == (
        "concat_baseline" if baseline else "crossflow")
    assert (tmp_path / "sr.png").is_file()


def test_pipeline_takes_low_res_images_and_starts_from_their_bicubic_upsampling():
    cfg, task_cls = _tiny_sr_config()
    task = task_cls(cfg)
    _, test = task.splits()
    pipe = Pipeline(task.build_model(), task)
    low = downsample(test.images[:3], 4)  # (3, 3, 4, 4) uint8
    bicubic = upsample_bicubic(low, (16, 16))
    torch.testing.assert_close(pipe.encode(list(low)).values, bicubic, rtol=0, atol=0)
    # input_skip with a zero head: z0 is the source itself
    torch.testing.assert_close(pipe.initial_latents(list(low)), bicubic, rtol=0, atol=1e-6)
    out = pipe(list(low))
    assert out.images.shape == (3, 3, 16, 16)
    # a high-res image is first brought to the low-res side (PIL bicubic), like a user's photo
    high = test.images[0].permute(1, 2, 0).numpy()
    small = torch.from_numpy(np.asarray(Image.fromarray(high).resize((4, 4), Image.BICUBIC)).copy()).permute(2, 0, 1)
    torch.testing.assert_close(pipe.encode([high]).values, upsample_bicubic(small[None], (16, 16)), rtol=0, atol=0)
