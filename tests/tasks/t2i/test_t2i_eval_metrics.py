"""`crossflow eval` for text-to-image: FID and CLIP score when their files are given, a stated reason otherwise."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from crossflow.cli import main
from crossflow.metrics.fid import save_statistics
from crossflow.metrics.fid_inception import FIDInceptionV3
from crossflow.pipeline import Pipeline
from helpers.tiny_t2i import export_tiny_t2i
from tasks.t2i import evaluation


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_clip):
    root = tmp_path_factory.mktemp("evalfiles")
    torch.manual_seed(0)
    weights = root / "pt_inception-2015-12-05-6726825d.pth"
    torch.save({k: v for k, v in FIDInceptionV3().state_dict().items() if not k.endswith("num_batches_tracked")},
               weights)
    rng = np.random.default_rng(0)
    feats = rng.random((50, 2048))
    ref = save_statistics(root / "ref.npz", feats.mean(0), np.cov(feats, rowvar=False))
    return {"export": export_tiny_t2i(root), "weights": weights, "ref": ref, "clip": tiny_clip}


def _overrides(files, **extra):
    items = {"task.metrics.inception_weights": files["weights"], "task.metrics.fid_reference": files["ref"],
             "task.metrics.clip_model": files["clip"]} | extra
    return [f"{k}={v}" for k, v in items.items()]


def test_eval_without_metric_files_states_why_they_are_skipped(files, tmp_path):
    assert main(["eval", str(files["export"]), "--num", "3", "--out", str(tmp_path)]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert "inception_weights is not set" in metrics["fid"]["skipped"]
    assert "clip_model is not set" in metrics["clip_score"]["skipped"]
    assert "color_accuracy" in metrics  # the toy-world checker still runs
    # the same prompts under no guidance, the null branch alone and the other z0 start
    assert (metrics["z0_mean"]["guidance"], metrics["z0_mean"]["z0"]) == (2.0, "mean")
    assert metrics["no_guidance"]["guidance"] == 1.0 and metrics["z0_sample"]["z0"] == "sample"
    assert metrics["null_branch"]["guidance"] == 2.0 and metrics["settings"]["num_prompts"] == 3
    assert len((tmp_path / "samples" / "prompts.jsonl").read_text().splitlines()) == 3


def test_eval_with_metric_files_reports_fid_and_clip(files, tmp_path, monkeypatch):
    seen = {}

    def fake_fid(stats, reference):  # the 2048-d matrix square root is the slow test's job
        seen.update(count=stats.count, reference=str(reference), mu=stats.mu)
        return 12.5

    monkeypatch.setattr(evaluation, "fid_against_reference", fake_fid)
    out = tmp_path / "eval"
    assert main(["eval", str(files["export"]), "--num", "3", "--out", str(out), *_overrides(files)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["fid"]["value"] == 12.5 and metrics["fid"]["num_samples"] == 3 == seen["count"]
    assert seen["reference"] == str(files["ref"]) and seen["mu"].shape == (2048,)
    clip = metrics["clip_score"]
    assert clip["num_samples"] == 3 and 0.0 <= clip["value"] <= 1.0 and clip["scale"] == 1.0
    assert clip["max_tokens"] == 77 and "truncated to 77" in clip["truncation"]


def test_prompt_file_evaluation_streams_images_and_scores(files, tmp_path, monkeypatch):
    monkeypatch.setattr(evaluation, "fid_against_reference", lambda stats, ref: float(stats.count))
    prompts = tmp_path / "coco.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p, "img": i}) + "\n"
                               for i, p in enumerate(["a red circle", "a blue square", "a green star"] * 3)))
    pipe = Pipeline.from_pretrained(files["export"], device="cpu", overrides=[
        ("task.metrics.prompts_file", str(prompts)), ("task.metrics.clip_model", str(files["clip"])),
        ("task.metrics.clip_scale", 100.0), ("task.metrics.inception_weights", str(files["weights"])),
        ("task.metrics.fid_reference", str(files["ref"]))])
    evaluator = evaluation.PromptFileEvaluator(pipe.task)  # what a task trained on real data hands out
    metrics = evaluator.evaluate(pipe, tmp_path / "out", num=5)  # batches of 4: 4 + 1
    assert metrics["fid"]["value"] == 5.0 and metrics["clip_score"]["num_samples"] == 5
    assert metrics["clip_score"]["scale"] == 100.0 and 0 <= metrics["clip_score"]["value"] <= 100
    samples = tmp_path / "out" / "samples"
    rows = [json.loads(line) for line in (samples / "prompts.jsonl").read_text().splitlines()]
    assert [r["file"] for r in rows] == [f"{i:04d}.png" for i in range(5)] and rows[4]["prompt"] == "a blue square"
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert saved["settings"]["num_prompts"] == 5 and saved["settings"]["steps"] == 3
    # the PNGs are the pipeline's images of the first five prompts (written in batches of 4 + 1)
    expected = pipe([r["prompt"] for r in rows]).uint8()
    for row, image in zip(rows, expected):
        written = np.asarray(Image.open(samples / row["file"]).convert("RGB")).astype(int)
        assert np.abs(written - image.astype(int)).max() <= 1, row


@pytest.mark.slow
def test_eval_computes_a_real_frechet_distance(files, tmp_path):
    """The whole path with the real 2048-d Fréchet distance (two matrix square roots, ~50 s on one thread)."""
    out = tmp_path / "eval"
    assert main(["eval", str(files["export"]), "--num", "3", "--out", str(out), *_overrides(files)]) == 0
    fid = json.loads((out / "metrics.json").read_text())["fid"]
    assert np.isfinite(fid["value"]) and fid["value"] > 0 and fid["name"] == "FID-3"
