"""Captioning on COCO-format data end to end through the CLI: toy scenes in Karpathy's format → extract → train
(stage 1 then stage 2) → eval --split, and captions of image files through `crossflow sample`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from crossflow.cli import main
from helpers.paths import REPO_ROOT
from tasks.captioning.coco import read_karpathy, read_results

TINY = ["train.max_steps=4", "train.batch_size=16", "train.checkpoint_every=4", "train.log_every=2", "train.max_minutes=null",
        "model.velocity_net.hidden_size=32", "model.velocity_net.depth=1", "model.velocity_net.num_heads=2",
        "model.source_encoder.widths=[8,16]", "task.picture_items=6", "task.preview_items=2"]


@pytest.fixture(scope="module")
def coco_run(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("coco")
    data, features, run, text_vae = root / "toy_coco", root / "features", root / "run", root / "text_vae"
    assert main(["toy-data", "coco", str(data), "--num", "60", "--resolution", "32"]) == 0
    paths = [f"task.coco.dataset_json={data / 'dataset_coco.json'}", f"task.coco.image_root={data}",
             f"task.coco.features_dir={features}", f"task.text_vae_dir={text_vae}",
             'task.text_vae_overrides=["train.max_steps=4", "train.checkpoint_every=4", "train.max_minutes=null"]']
    config = str(REPO_ROOT / "configs/captioning/coco_toy.yaml")
    assert main(["extract", config, *paths, "--num-workers", "0"]) == 0
    assert main(["train", config, "--run-dir", str(run), *paths, *TINY]) == 0
    return {"data": data, "run": run, "text_vae": text_vae, "config": Path(config)}


def test_train_trains_the_text_vae_first_on_the_coco_captions(coco_run):
    saved = (coco_run["text_vae"] / "config.yaml").read_text()
    assert "dataset: coco" in saved and "vocabulary:" in saved  # the word vocabulary travels with the run
    assert (coco_run["run"] / "export" / "model.safetensors").is_file()


def test_eval_split_writes_the_standard_results_file_and_scores_the_whole_split(coco_run, capsys):
    assert main(["eval", str(coco_run["run"]), "--split", "val", "--steps", "2"]) == 0
    out = coco_run["run"] / "eval_val"
    results = read_results(out / "results_val.json")
    val_ids = {im.cocoid for im in read_karpathy(coco_run["data"] / "dataset_coco.json", ["val"])}
    assert {r["image_id"] for r in results} == val_ids  # every image of the split, once
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["split"] == "val" and metrics["complete"] is True and metrics["num_images"] == len(val_ids)
    for key in ("BLEU-1", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr"):
        assert isinstance(metrics[key], float)
    assert metrics["SPICE"] is None or isinstance(metrics["SPICE"], float)
    assert set(metrics["toy"]) >= {"color_accuracy", "all_accuracy"}  # the toy scenes' attributes are known
    assert (out / "captions.png").is_file()


def test_sample_captions_image_files_as_extraction_saw_them(coco_run, tmp_path):
    image = next((coco_run["data"] / "val2014").glob("*.jpg"))
    out = tmp_path / "captions"
    assert main(["sample", str(coco_run["run"]), "--input", str(image), "--out", str(out), "--steps", "2"]) == 0
    rows = [json.loads(line) for line in (out / "inputs.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and isinstance(rows[0]["text"], str)


def test_training_refuses_features_of_another_image_setting(coco_run, tmp_path, capsys):
    data = coco_run["data"]
    code = main(["train", str(coco_run["config"]), "--run-dir", str(tmp_path / "r"),
                 f"task.coco.dataset_json={data / 'dataset_coco.json'}", f"task.coco.image_root={data}",
                 f"task.coco.features_dir={coco_run['run'].parent / 'features'}",
                 f"task.text_vae_dir={coco_run['text_vae']}", "task.image.resolution=16", *TINY])
    err = capsys.readouterr().err
    assert code == 2 and "task.image" in err and "resolution" in err
