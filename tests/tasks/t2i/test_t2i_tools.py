"""Prompt tools on a tiny text-to-image export: z0 of prompts through the pipeline (interpolation, arithmetic),
the CLI commands, (multi-process) sample, and the cross-attention baseline."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from crossflow.cli import main
from crossflow.latent_ops import interpolate_latents
from crossflow.outputs import ImageOutput
from crossflow.pipeline import Pipeline
from crossflow.task import CachesInputs, TakesImages, TakesText
from helpers.subprocess_env import child_env
from helpers.tiny_t2i import export_tiny_t2i

A, B = "a large red circle in the top left", "a small blue square in the bottom right"


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    return export_tiny_t2i(tmp_path_factory.mktemp("t2i"))


@pytest.fixture(scope="module")
def pipe(export) -> Pipeline:
    return Pipeline.from_pretrained(export, device="cpu")


def _png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def _assert_same_pixels(path: Path, expected: np.ndarray) -> None:
    """A written PNG equals the expected uint8 image up to one level (another batch → other float rounding)."""
    assert np.abs(_png(path).astype(int) - expected.astype(int)).max() <= 1, path


def test_prompts_are_text_inputs_checked_before_the_language_model(pipe):
    assert isinstance(pipe.processor, TakesText) and isinstance(pipe.processor, CachesInputs)
    assert not isinstance(pipe.processor, TakesImages)
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        pipe([A, "   "])


def test_prompt_latents_are_the_ve_means_whatever_the_batch(pipe):
    z = pipe.initial_latents([A, B])
    assert z.shape == (2, 3, 32, 32)
    source = pipe.encode([A, B])
    torch.testing.assert_close(z, pipe.model.encode_source(source.values, source.mask).mean, rtol=0, atol=0)
    torch.testing.assert_close(z[1:], pipe.initial_latents([B]), atol=1e-6, rtol=1e-5)


def test_interpolation_frames_start_and_end_at_the_prompts(pipe):
    z = pipe.initial_latents([A, B])
    latents = interpolate_latents(z[0], z[1], 6)
    torch.testing.assert_close(latents[2], z[0] + (z[1] - z[0]) * 2 / 5, atol=1e-5, rtol=1e-5)
    frames = pipe.from_latents(latents)  # two batches of sample.batch_size = 4
    assert isinstance(frames, ImageOutput) and frames.images.shape == (6, 3, 32, 32)
    # the end frames are exactly what `sample` generates for each prompt (z0 = VE mean)
    torch.testing.assert_close(frames.images[[0, -1]], pipe([A, B]).images, atol=1e-5, rtol=1e-4)


def test_cli_interpolate_writes_the_pipeline_frames_gif_and_strip(export, pipe, tmp_path, capsys):
    out = tmp_path / "interp"
    code = main(["interpolate", str(export), "--from", A, "--to", B, "--frames", "5", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    frames = sorted(out.glob("frame_*.png"))
    assert [f.name for f in frames] == [f"frame_{i:03d}.png" for i in range(5)]
    z = pipe.initial_latents([A, B])
    for path, expected in zip(frames, pipe.from_latents(interpolate_latents(z[0], z[1], 5)).uint8()):
        _assert_same_pixels(path, expected)
    with Image.open(out / "interpolation.gif") as gif:
        assert gif.size == (128, 128) and gif.n_frames >= 2  # 4x upscaled; identical frames may merge
    meta = json.loads((out / "interpolation.json").read_text())
    assert meta["from"] == A and meta["to"] == B and len(meta["frames"]) == 5
    assert meta["options"]["steps"] == 3 and meta["options"]["z0"] == "mean"  # the model's sample section
    assert (out / "strip.png").is_file()


def test_cli_interpolate_and_arithmetic_errors(export, tmp_path, capsys):
    assert main(["interpolate", str(export), "--from", A, "--to", B, "--frames", "4"]) == 2
    assert "--frames must be >= 5" in capsys.readouterr().err
    assert main(["arithmetic", str(export), "--ori", A]) == 2
    assert "--add" in capsys.readouterr().err


def test_cli_arithmetic_images_are_the_ode_of_the_standardised_latent(export, pipe, tmp_path, capsys):
    out = tmp_path / "arith"
    code = main(["arithmetic", str(export), "--ori", A, "--add", "a green triangle", "--sub", B, "--add-scale", "2",
                 "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    meta = json.loads((out / "arithmetic.json").read_text())
    assert meta["renormalized"] and abs(meta["result_z0_mean"]) < 1e-5
    assert meta["result_z0_std"] == pytest.approx(1, abs=1e-4)
    z = pipe.initial_latents([A, "a green triangle", B])
    raw = z[0] + 2 * z[1] - z[2]
    result = (raw - raw.mean()) / raw.std()  # the official demo re-standardises the combined latent
    expected = pipe.from_latents(torch.cat([z, result[None]])).uint8()
    for name, image in zip(("ori", "add", "sub", "result"), expected):
        _assert_same_pixels(out / f"{name}.png", image)
    assert (out / "arithmetic.png").is_file()
    only_sub = tmp_path / "only_sub"
    assert main(["arithmetic", str(export), "--ori", A, "--sub", B, "--out", str(only_sub)]) == 0
    assert sorted(p.name for p in only_sub.glob("*.png")) == ["arithmetic.png", "ori.png", "result.png", "sub.png"]


def test_cli_sample_writes_every_image_prompt_index_and_grid(export, pipe, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(f"{A}\n\n{B}\n")
    out = tmp_path / "samples"
    assert main(["sample", str(export), "--prompts-file", str(prompts), "--num", "2", "--z0", "mean",
                 "--out", str(out)]) == 0
    rows = [json.loads(line) for line in (out / "prompts.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in rows] == [A, A, B, B]
    assert [r["file"] for r in rows] == [f"{i:04d}.png" for i in range(4)] and (out / "grid.png").is_file()
    assert all(r["settings"] == rows[0]["settings"] for r in rows) and rows[0]["settings"]["guidance"] == 2.0
    for row, image in zip(rows, pipe([A, A, B, B]).uint8()):
        _assert_same_pixels(out / row["file"], image)
    # z0 = VE mean: both samples of a prompt are the same image; posterior samples are seeded per index
    assert np.array_equal(_png(out / "0000.png"), _png(out / "0001.png"))
    drawn = tmp_path / "drawn"
    assert main(["sample", str(export), "--prompt", A, "--num", "2", "--z0", "sample", "--seed", "3",
                 "--out", str(drawn)]) == 0
    assert not np.array_equal(_png(drawn / "0000.png"), _png(drawn / "0001.png"))
    assert json.loads((drawn / "prompts.jsonl").read_text().splitlines()[0])["settings"]["seed"] == 3


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
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "crossflow", "sample",
           str(export), "--prompts-file", str(tmp_path / "p.txt"), "--out", str(tmp_path / "multi"), "--device", "cpu"]
    result = subprocess.run(cmd, env=child_env(OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout[result.stdout.index("{"):])["processes"] == 2
    assert main(["sample", str(export), "--prompts-file", str(tmp_path / "p.txt"), "--out", str(tmp_path / "one")]) == 0
    multi = sorted(p.name for p in (tmp_path / "multi").glob("*.png"))
    expected = [f"{i:04d}.png" for i in range(5)] + ["grid.png"]
    assert multi == sorted(p.name for p in (tmp_path / "one").glob("*.png")) == expected
    for name in multi:
        _assert_same_pixels(tmp_path / "multi" / name, _png(tmp_path / "one" / name))
