"""The real-data depth path end to end on toy scenes in the real formats: toy-data → train → eval --benchmark."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from crossflow.cli import main
from helpers.paths import REPO_ROOT

ZERO_SHOT = str(REPO_ROOT / "configs" / "depth" / "toy_zero_shot.yaml")
TINY = ["train.batch_size=4", "train.max_steps=3", "train.warmup_steps=1", "train.log_every=1",
        "train.checkpoint_every=3", "model.velocity_net.hidden_size=32", "model.velocity_net.depth=1",
        "model.velocity_net.num_heads=2", "model.source_encoder.widths=[8,16]", "task.resolution=[24,32]",
        "task.preview_items=2"]


def _run(argv, capsys) -> tuple[int, dict, str]:
    code = main(argv)
    out = capsys.readouterr()
    return code, (json.loads(out.out) if code == 0 and out.out.strip().startswith("{") else {}), out.err


@pytest.fixture(scope="module")
def toy_sets(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("toy_depth")
    assert main(["toy-data", "hypersim", str(root / "hypersim"), "--num", "8", "--resolution", "48x64"]) == 0
    assert main(["toy-data", "nyu", str(root / "nyu"), "--num", "4"]) == 0
    assert main(["toy-data", "kitti_train", str(root / "kitti_train"), "--num", "4"]) == 0  # KITTI-sized frames
    assert main(["toy-data", "kitti", str(root / "kitti"), "--num", "3"]) == 0
    return {"root": root}


def test_toy_data_lists_formats_and_rejects_unknown_ones(capsys):
    code, listed, _ = _run(["toy-data", "--list"], capsys)
    assert code == 0 and {"nyu", "kitti", "hypersim", "vkitti", "kitti_train", "nyu_mat", "nyu_sync"} <= set(listed)
    code, _, err = _run(["toy-data", "nosuch", "x"], capsys)
    assert code == 2 and "unknown toy-data format 'nosuch'" in err and "hypersim" in err


def test_zero_shot_train_then_benchmark_eval(toy_sets, tmp_path, capsys):
    root, run = toy_sets["root"], tmp_path / "run"
    code, summary, err = _run(["train", ZERO_SHOT, "--run-dir", str(run), *TINY,
                               f"task.data.hypersim_root={root / 'hypersim' / 'train'}",
                               f"task.data.hypersim_list={root / 'hypersim' / 'train' / 'filename_list_train.txt'}"],
                              capsys)
    assert code == 0, err
    assert (run / "previews" / "step-0000003.png").is_file()  # input | prediction | truth of training pairs
    code, _, err = _run(["eval", str(run)], capsys)  # real-data models are scored on a benchmark
    assert code == 2 and "--benchmark" in err
    out = tmp_path / "eval"
    code, metrics, err = _run(["eval", str(run), "--out", str(out), "--benchmark", "nyu_v2",
                               "--data", str(root / "nyu" / "nyu_labeled_extracted"),
                               "--filenames", str(root / "nyu" / "filename_list_test.txt"), "--ensemble", "2"], capsys)
    assert code == 0, err
    assert metrics["count"] == 4 and 0 < metrics["abs_rel"] < 10 and 0 <= metrics["delta1"] <= 1
    assert metrics["settings"]["alignment"] == "least_square" and metrics["settings"]["ensemble"] == 2
    assert metrics["mean_depth_baseline"]["count"] == 4  # the training set's mean map, scored the same way
    saved = json.loads((out / "nyu_v2" / "metrics.json").read_text())
    assert saved["abs_rel"] == metrics["abs_rel"]
    with open(out / "nyu_v2" / "per_sample_metrics.csv") as fh:
        assert len(list(csv.DictReader(fh))) == 4
    assert len(list((out / "nyu_v2" / "predictions").glob("*.png"))) == 4


def test_in_domain_kitti_is_metric_and_scored_without_alignment(toy_sets, tmp_path, capsys):
    root, run = toy_sets["root"], tmp_path / "run"
    kitti = root / "kitti_train"  # KITTI's own layout: raw images, annotated depth, the BTS list
    code, _, err = _run(["train", ZERO_SHOT, "--run-dir", str(run), *TINY, "task.dataset=kitti",
                         "task.resolution=[16,48]", f"task.data.kitti_root={kitti / 'kitti_raw'}",
                         f"task.data.kitti_depth_root={kitti / 'data_depth_annotated'}",
                         f"task.data.kitti_list={kitti / 'eigen_train_files_with_gt.txt'}",
                         "task.data.hypersim_root=null", "task.data.hypersim_list=null"], capsys)
    assert code == 0, err
    code, metrics, err = _run(["eval", str(run), "--out", str(tmp_path / "eval"), "--benchmark", "kitti",
                               "--data", str(root / "kitti" / "kitti_eigen_split_test"),
                               "--filenames", str(next((root / "kitti").glob("*.txt")))], capsys)
    assert code == 0, err
    assert metrics["settings"]["alignment"] is None and metrics["skipped"] >= 1  # the None lines
    assert metrics["count"] == 3


def test_benchmark_flags_are_checked_in_one_line(toy_sets, capsys):
    code, _, err = _run(["eval", "nowhere", "--benchmark", "nyu_v2"], capsys)
    assert code == 2 and len([line for line in err.splitlines() if line.strip()]) == 1


def test_paper_configs_have_the_papers_size():
    from crossflow.registry import load_experiment
    from crossflow.utils.params import build_on_meta

    for name in ("zero_shot", "nyu", "kitti"):
        cfg, task_cls = load_experiment(str(REPO_ROOT / "configs" / "depth" / f"{name}.yaml"))
        total = sum(p.numel() for p in build_on_meta(cfg, task_cls).parameters())
        assert abs(total - 527e6) / 527e6 < 0.05, (name, total)  # paper: 527M


@pytest.mark.slow
def test_zero_shot_learns_on_toy_hypersim_and_beats_the_mean_map_on_toy_nyu(tmp_path, capsys):
    data = tmp_path / "data"
    assert main(["toy-data", "hypersim", str(data / "hypersim"), "--num", "400", "--resolution", "60x80"]) == 0
    assert main(["toy-data", "nyu", str(data / "nyu"), "--num", "24", "--seed", "1"]) == 0
    capsys.readouterr()
    run = tmp_path / "run"
    code, _, err = _run(["train", ZERO_SHOT, "--run-dir", str(run), "task.resolution=[24,32]", "train.batch_size=16",
                         "train.max_steps=200", "train.max_minutes=null", "train.log_every=50",
                         f"task.data.hypersim_root={data / 'hypersim' / 'train'}",
                         f"task.data.hypersim_list={data / 'hypersim' / 'train' / 'filename_list_train.txt'}"],
                        capsys)
    assert code == 0, err
    code, metrics, err = _run(["eval", str(run), "--out", str(tmp_path / "eval"), "--benchmark", "nyu_v2",
                               "--data", str(data / "nyu" / "nyu_labeled_extracted"),
                               "--filenames", str(data / "nyu" / "filename_list_test.txt")], capsys)
    assert code == 0, err
    # the bar: AbsRel at most half the mean depth map's, δ1 >= 0.90 (measured 0.04× / 0.98 at full size)
    assert metrics["abs_rel"] <= 0.5 * metrics["mean_depth_baseline"]["abs_rel"], metrics
    assert metrics["delta1"] >= 0.90, metrics
