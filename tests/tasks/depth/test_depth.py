"""The depth adapter: depth scaling, specs, data, codec, evaluation files and `crossflow sample --input`."""

from __future__ import annotations

import json

import numpy as np
import torch
from PIL import Image

from crossflow.cli import main
from crossflow.outputs import DepthOutput
from crossflow.pipeline import Pipeline
from crossflow.registry import experiment_from_dict
from crossflow.specs import ImageSpec
from crossflow.task import PreparesBatches
from crossflow.train.trainer import export_model
from tasks.depth.data import denormalize_depth, normalize_depth
from tasks.depth.metrics import METRIC_KEYS
from tasks.depth.task import DepthCodec


def test_normalisation_round_trip_and_clamp():
    d = torch.tensor([0.5, 1.0, 4.5])
    z = normalize_depth(d, 0.5, 4.5)
    torch.testing.assert_close(z, torch.tensor([-1.0, -0.75, 1.0]))
    torch.testing.assert_close(denormalize_depth(z, 0.5, 4.5), d)
    assert float(denormalize_depth(torch.tensor(3.0), 0.5, 4.5)) == 4.5  # clamped


def test_codec_maps_latents_to_clamped_metric_depth():
    out = DepthCodec(0.5, 4.5).decode(torch.tensor([[[[-1.0, 0.0, 1.0, 3.0]]]]))
    assert isinstance(out, DepthOutput) and (out.vmin, out.vmax) == (0.5, 4.5)
    torch.testing.assert_close(out.depth, torch.tensor([[[0.5, 2.5, 4.5, 4.5]]]))  # (B, H, W)


def _tiny_depth_config(**task):
    return experiment_from_dict({
        "task": {"name": "depth", "toyworld": {"num_train": 64, "num_test": 6, "resolution": 16}, **task},
        "model": {"source_encoder": {"arch": "image", "widths": [8, 16]},
                  "velocity_net": {"patch_size": 4, "hidden_size": 32, "depth": 1, "num_heads": 2},
                  "contrastive": {"enabled": False}},
        "flow": {"source_recon_weight": 1.0, "null_probability": 0.0},
        "sample": {"steps": 2, "guidance": 1.0, "batch_size": 4},
    })


def test_depth_adapter_shapes_and_evaluation_files(tmp_path):
    cfg, task_cls = _tiny_depth_config()
    task = task_cls(cfg)
    assert task.target_spec() == ImageSpec(1, 16, 16) and task.source_spec() == ImageSpec(3, 16, 16)
    data = task.train_dataset()
    assert not isinstance(data, PreparesBatches)  # batches are complete: the trainer only moves them
    batch = data.__getitems__([0, 1, 2])
    assert batch["source"].shape == (3, 3, 16, 16) and batch["target"].shape == (3, 1, 16, 16)
    assert -1.0 <= float(batch["source"].min()) and float(batch["target"].max()) <= 1.0
    model = task.build_model()
    assert torch.isfinite(model(batch).loss)
    pipe = Pipeline(model, task)
    metrics = task.evaluator().evaluate(pipe, tmp_path)
    assert set(METRIC_KEYS) <= set(metrics) and metrics["num_images"] == 6
    assert metrics["mean_depth_baseline"]["abs_rel"] > 0
    assert json.loads((tmp_path / "metrics.json").read_text())["settings"]["steps"] == 2
    assert (tmp_path / "depth.png").is_file()
    # predictions.npy holds the pipeline's metric depth of the held-out images
    _, test = task.splits()
    expected = pipe(list(test.images[:6])).depth.numpy()
    np.testing.assert_array_equal(np.load(tmp_path / "predictions.npy"), expected)


def test_sample_command_takes_image_files_and_writes_depth_maps(tmp_path, capsys):
    cfg, task_cls = _tiny_depth_config()
    task = task_cls(cfg)
    torch.manual_seed(0)
    export = export_model(task.build_model().state_dict(), cfg, tmp_path / "export")
    _, test = task.splits()
    files = []
    for i, size in enumerate((16, 24)):  # another size is resized to the model's 16 px first
        path = tmp_path / f"in{i}.png"
        Image.fromarray(test.images[i].permute(1, 2, 0).numpy()).resize((size, size), Image.BICUBIC).save(path)
        files.append(str(path))
    out = tmp_path / "samples"
    argv = ["sample", str(export), "--input", files[0], "--input", files[1], "--out", str(out), "--steps", "3"]
    assert main(argv) == 0, capsys.readouterr().err
    rows = [json.loads(line) for line in (out / "inputs.jsonl").read_text().splitlines()]
    assert [(r["input"], r["file"], r["depth"]) for r in rows] == [(files[0], "0000.png", "0000.npy"),
                                                                  (files[1], "0001.png", "0001.npy")]
    assert all(r["settings"]["steps"] == 3 and r["settings"]["solver"] == "euler" for r in rows)
    assert (out / "grid.png").is_file() and Image.open(out / "0000.png").size == (16, 16)
    expected = Pipeline.from_pretrained(export, device="cpu")(files, steps=3).depth.numpy()
    saved = np.stack([np.load(out / r["depth"]) for r in rows])
    assert saved.dtype == np.float32
    np.testing.assert_allclose(saved, expected, rtol=0, atol=1e-6)
