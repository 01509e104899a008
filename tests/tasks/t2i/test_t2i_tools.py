"""Sampling tools on a tiny text-to-image export: interpolation, arithmetic, (multi-process) sample, baseline eval."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from crossflow.cli import main
from crossflow.inference import load_model

from tiny_t2i import export_tiny_t2i

A, B = "a large red circle in the top left", "a small blue square in the bottom right"


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    return export_tiny_t2i(tmp_path_factory.mktemp("t2i"))


@pytest.fixture(scope="module")
def loaded(export):
    return load_model(export)


def _png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_interpolation_frames_start_and_end_at_the_prompts(loaded):
    model, task, _ = loaded
    images, latents = task.interpolate_images(model, A, B, 6)
    assert images.shape == (6, 3, 32, 32) and latents.shape == (6, 3, 32, 32)
    z_a, z_b = task.prompt_latents(model, [A]), task.prompt_latents(model, [B])
    torch.testing.assert_close(latents[0], z_a[0], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(latents[-1], z_b[0], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(latents[2], z_a[0] + (z_b[0] - z_a[0]) * 2 / 5, atol=1e-5, rtol=1e-5)
    # the end frames are exactly what `sample` generates for each prompt (z0 = VE mean)
    ends = task.generate_images(model, [A, B])
    torch.testing.assert_close(images[[0, -1]], ends, atol=1e-5, rtol=1e-4)


def test_arithmetic_images_and_standardised_latent(loaded):
    model, task, _ = loaded
    out = task.arithmetic_images(model, A, add="a green triangle", sub=B, add_scale=2.0)
    assert set(out) == {"ori", "add", "sub", "result", "result_z0"}
    assert all(out[k].shape == (1, 3, 32, 32) for k in ("ori", "add", "sub", "result"))
    z = out["result_z0"].flatten()
    assert abs(float(z.mean())) < 1e-5 and float(z.std()) == pytest.approx(1.0, abs=1e-5)
    z0 = task.prompt_latents(model, [A, "a green triangle", B])
    raw = (z0[0] + 2 * z0[1] - z0[2]).flatten()
    torch.testing.assert_close(z, (raw - raw.mean()) / raw.std(), atol=1e-5, rtol=1e-5)
    only_sub = task.arithmetic_images(model, A, sub=B)
    assert set(only_sub) == {"ori", "sub", "result", "result_z0"}


def test_cli_interpolate_writes_frames_gif_and_strip(export, tmp_path, capsys):
    out = tmp_path / "interp"
    code = main(["interpolate", str(export), "--from", A, "--to", B, "--frames", "5", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    frames = sorted(out.glob("frame_*.png"))
    assert [f.name for f in frames] == [f"frame_{i:03d}.png" for i in range(5)]
    assert _png(frames[0]).shape == (32, 32, 3)
    with Image.open(out / "interpolation.gif") as gif:
        assert gif.size == (128, 128) and gif.n_frames >= 2  # 4x upscaled; identical frames may merge
    meta = json.loads((out / "interpolation.json").read_text())
    assert meta["from"] == A and meta["to"] == B and len(meta["frames"]) == 5
    assert (out / "strip.png").is_file()


def test_cli_interpolate_and_arithmetic_errors(export, tmp_path, capsys):
    assert main(["interpolate", str(export), "--from", A, "--to", B, "--frames", "4"]) == 2
    assert "--frames must be >= 5" in capsys.readouterr().err
    assert main(["arithmetic", str(export), "--ori", A]) == 2
    assert "--add" in capsys.readouterr().err


def test_cli_arithmetic_writes_each_term_and_a_row(export, tmp_path, capsys):
    out = tmp_path / "arith"
    code = main(["arithmetic", str(export), "--ori", A, "--add", "a green shape", "--sub", "red", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    for name in ("ori", "add", "sub", "result", "arithmetic"):
        assert (out / f"{name}.png").is_file()
    meta = json.loads((out / "arithmetic.json").read_text())
    assert meta["renormalized"] and abs(meta["result_z0_mean"]) < 1e-5 and meta["result_z0_std"] == pytest.approx(1, abs=1e-4)


def test_cli_sample_writes_every_image_prompt_index_and_grid(export, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(f"{A}\n\n{B}\n")
    out = tmp_path / "samples"
    assert main(["sample", str(export), "--prompts-file", str(prompts), "--num", "2", "--out", str(out)]) == 0
    rows = [json.loads(line) for line in (out / "prompts.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in rows] == [A, A, B, B]
    assert all((out / r["file"]).is_file() for r in rows) and (out / "grid.png").is_file()


def test_baseline_has_no_z0_for_the_latent_tools_but_evaluates(tmp_path, capsys):
    export = export_tiny_t2i(tmp_path, kind="xattn_baseline")
    code = main(["interpolate", str(export), "--from", A, "--to", B, "--frames", "5", "--out", str(tmp_path / "i")])
    assert code == 2 and "no source latent z0" in capsys.readouterr().err
    assert main(["eval", str(export), "--num", "4", "--out", str(tmp_path / "eval")]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert "color_accuracy" in metrics and "skipped" in metrics["fid"] and "skipped" in metrics["clip_score"]
    assert (tmp_path / "eval" / "trajectory.gif").is_file()


@pytest.mark.slow
def test_two_process_sample_splits_prompts_and_matches_one_process(export, tmp_path):
    """torchrun with 2 CPU processes: every image written once, identical to the single-process ones."""
    prompts = [A, B, "a medium green triangle in the centre", "a small yellow star", "a large purple circle"]
    (tmp_path / "p.txt").write_text("\n".join(prompts))
    tests_dir = Path(__file__).parent
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(tests_dir), str(tests_dir.parent),
                                                       os.environ.get("PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "crossflow", "sample",
           str(export), "--prompts-file", str(tmp_path / "p.txt"), "--out", str(tmp_path / "multi"), "--device", "cpu"]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout[result.stdout.index("{"):])["processes"] == 2
    assert main(["sample", str(export), "--prompts-file", str(tmp_path / "p.txt"), "--out", str(tmp_path / "one")]) == 0
    multi = sorted(p.name for p in (tmp_path / "multi").glob("*.png"))
    assert multi == sorted(p.name for p in (tmp_path / "one").glob("*.png")) == [f"{i:04d}.png" for i in range(5)] + ["grid.png"]
    for name in multi:
        assert np.abs(_png(tmp_path / "multi" / name).astype(int) - _png(tmp_path / "one" / name).astype(int)).max() <= 1
