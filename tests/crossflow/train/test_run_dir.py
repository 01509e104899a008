"""Run directories through `crossflow train`: a used one is refused, --overwrite starts over, --resume continues the
saved config (changing only what is safe), and a failed start leaves the directory as it was."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from crossflow.cli import main
from crossflow.train import checkpoint as ckpt
from crossflow.train.run_dir import config_changes, safe_on_resume
from helpers.synthetic_task import tiny_raw_config


def _config(tmp_path: Path, **train) -> str:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tiny_raw_config(**train)))
    return str(path)


def _run(argv, capsys) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


def _snapshot(run: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``run`` with its size and modification time."""
    return {str(p.relative_to(run)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(run.rglob("*"))
            if p.is_file()}


def _error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("crossflow train: error:")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def trained(tmp_path, capsys) -> tuple[str, Path]:
    cfg, run = _config(tmp_path, max_steps=10, checkpoint_every=5), tmp_path / "run"
    assert _run(["train", cfg, "--run-dir", str(run)], capsys)[0] == 0
    return cfg, run


def test_a_used_run_directory_is_refused_and_left_unchanged(trained, capsys):
    cfg, run = trained
    before = _snapshot(run)
    code, err = _run(["train", cfg, "--run-dir", str(run), "train.max_steps=4"], capsys)
    line = _error_line(err)
    assert code == 2 and "already holds a run" in line and "--resume" in line and "--overwrite" in line
    assert _snapshot(run) == before
    rows = [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [5, 10]  # no second run appended


def test_overwrite_starts_over(trained, capsys):
    cfg, run = trained
    assert _run(["train", cfg, "--run-dir", str(run), "--overwrite", "train.max_steps=4",
                 "train.checkpoint_every=2"], capsys)[0] == 0
    assert [p.name for p in ckpt.list_checkpoints(run / "checkpoints")] == [ckpt.checkpoint_name(2),
                                                                           ckpt.checkpoint_name(4)]
    rows = [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [4]  # the old log is gone (log_every 5: the last step is logged)
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["max_steps"] == 4


def test_a_non_run_directory_is_never_deleted(tmp_path, capsys):
    cfg, run = _config(tmp_path), tmp_path / "mine"
    run.mkdir()
    (run / "notes.txt").write_text("keep me")
    code, err = _run(["train", cfg, "--run-dir", str(run), "--overwrite"], capsys)
    assert code == 2 and "holds no run" in _error_line(err) and (run / "notes.txt").read_text() == "keep me"


def test_resume_takes_the_saved_config_and_only_the_safe_overrides(trained, tmp_path, capsys, caplog):
    cfg, run = trained
    with caplog.at_level(logging.INFO):
        code, _ = _run(["train", "--resume", "--run-dir", str(run), "train.max_steps=20"], capsys)
    assert code == 0
    assert "checkpoints in" in caplog.text and "export" in caplog.text  # where things went
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["train"]["max_steps"] == 20 and saved["train"]["lr"] == tiny_raw_config()["train"]["lr"]
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["step"] == 20 and summary["steps_this_run"] == 10
    assert (run / "loss.png").is_file()
    # the same as one straight run of 20 steps: the saved config was used, not re-typed
    straight = tmp_path / "straight"
    assert _run(["train", _config(tmp_path, max_steps=20, checkpoint_every=5), "--run-dir", str(straight)],
                capsys)[0] == 0
    a = load_file(str(ckpt.latest_checkpoint(run / "checkpoints") / "ema.safetensors"))
    b = load_file(str(ckpt.latest_checkpoint(straight / "checkpoints") / "ema.safetensors"))
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


def test_resume_refuses_an_unsafe_change_in_one_line_and_changes_nothing(trained, capsys):
    cfg, run = trained
    before = _snapshot(run)
    code, err = _run(["train", "--resume", "--run-dir", str(run), "train.lr=0.5"], capsys)
    line = _error_line(err)
    assert code == 2 and "train.lr" in line and "0.5" in line and "saved config" in line
    code, err = _run(["train", cfg, "--resume", "--run-dir", str(run), "model.velocity_net.depth=3"], capsys)
    assert code == 2 and "model.velocity_net.depth" in _error_line(err)
    assert _snapshot(run) == before


def test_resume_with_the_same_config_file_is_accepted(trained, capsys):
    cfg, run = trained
    assert _run(["train", cfg, "--resume", "--run-dir", str(run), "train.max_steps=12"], capsys)[0] == 0
    assert json.loads((run / "train_summary.json").read_text())["step"] == 12


def test_a_refused_resume_leaves_the_run_directory_as_it_was(trained, capsys):
    """--no-fallback: a damaged newest checkpoint is a one-line refusal naming the file; nothing changes."""
    _, run = trained
    (ckpt.latest_checkpoint(run / "checkpoints") / "optimizer.pt").write_bytes(b"\x00 not a checkpoint")
    before = _snapshot(run)
    code, err = _run(["train", "--resume", "--no-fallback", "--run-dir", str(run), "train.max_steps=20"], capsys)
    assert code == 2 and "optimizer.pt" in _error_line(err) and "--no-fallback" in _error_line(err)
    assert "Traceback" not in err
    assert _snapshot(run) == before  # config.yaml (max_steps 10) not rewritten


def test_resume_needs_a_run_and_cannot_be_combined_with_overwrite(tmp_path, trained, capsys):
    cfg, run = trained
    code, err = _run(["train", "--resume", "--run-dir", str(tmp_path / "empty")], capsys)
    assert code == 2 and "no run to resume" in _error_line(err)
    code, err = _run(["train", cfg, "--resume", "--overwrite", "--run-dir", str(run)], capsys)
    assert code == 2 and "not both" in _error_line(err)
    code, err = _run(["train", "--resume"], capsys)
    assert code == 2 and "--run-dir" in _error_line(err)


def test_safe_keys_and_config_changes():
    assert all(safe_on_resume(k) for k in ("train.max_steps", "train.log_every", "sample.guidance",
                                           "task.language_model.name_or_path", "task.features_dir"))
    assert not any(safe_on_resume(k) for k in ("train.lr", "train.batch_size", "model.velocity_net.depth",
                                               "flow.kl_weight", "task.language_model.max_length"))
    assert config_changes({"a": {"b": 1, "c": 2}}, {"a": {"b": 1, "c": 3}}) == {"a.c": (2, 3)}
