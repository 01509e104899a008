"""Surviving the cluster in one process: preemption signals, damaged checkpoints, failing writes.

(The same on two processes, and FSDP: tests/crossflow/train/test_fsdp.py.)
"""

from __future__ import annotations

import errno
import json
import logging
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from crossflow.cli import main
from crossflow.pipeline import load_model
from crossflow.train import checkpoint as ckpt
from crossflow.train.preemption import EXIT_PREEMPTED
from crossflow.train.trainer import Trainer
from helpers.subprocess_env import child_env
from helpers.synthetic_task import tiny_raw_config


def _config(tmp_path: Path, **train) -> str:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tiny_raw_config(**train)))
    return str(path)


def _weights(run: Path, step: int) -> dict[str, torch.Tensor]:
    d = run / "checkpoints" / ckpt.checkpoint_name(step)
    return load_file(str(d / "model.safetensors")) | {f"ema.{k}": v for k, v in
                                                      load_file(str(d / "ema.safetensors")).items()}


def _assert_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _train_cli(cfg: str, run: Path, *extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "crossflow", "train", cfg, "--run-dir", str(run), *extra]
    return subprocess.run(cmd, env=child_env(**(env or {})), capture_output=True, text=True, timeout=300)


# ------------------------------------------------------------------ preemption

def test_sigterm_mid_step_checkpoints_exits_75_and_resume_equals_an_uninterrupted_run(tiny_config, tmp_path, capsys):
    cfg = _config(tmp_path, max_steps=10, checkpoint_every=100, log_every=1)
    # the process signals itself while preparing the batch of step 7, as a cluster would mid-step
    stopped = _train_cli(cfg, tmp_path / "run", env={"SYNTHETIC_SIGTERM_AT": "7"})
    assert stopped.returncode == EXIT_PREEMPTED, stopped.stderr[-2000:]
    line = [x for x in stopped.stderr.splitlines() if x.startswith("crossflow train: preempted:")]
    assert len(line) == 1 and "SIGTERM" in line[0] and "--resume" in line[0] and "Traceback" not in stopped.stderr
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "run" / "checkpoints")] == [ckpt.checkpoint_name(7)]
    assert not (tmp_path / "run" / "export").exists()
    assert main(["train", "--resume", "--run-dir", str(tmp_path / "run")]) == 0
    assert main(["train", cfg, "--run-dir", str(tmp_path / "straight")]) == 0
    _assert_equal(_weights(tmp_path / "straight", 10), _weights(tmp_path / "run", 10))
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == list(range(1, 11))  # no step lost or repeated


def test_sigusr1_from_outside_stops_at_a_step_boundary_with_a_resumable_checkpoint(tmp_path, capsys):
    cfg = _config(tmp_path, max_steps=100_000, checkpoint_every=100_000, log_every=1)
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "crossflow", "train", cfg, "--run-dir", str(run)],
                            env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not ((run / "metrics.jsonl").is_file() and (run / "metrics.jsonl").read_text().count("\n") >= 3):
        assert proc.poll() is None and time.time() < deadline, "training did not start"
        time.sleep(0.2)
    proc.send_signal(signal.SIGUSR1)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_PREEMPTED, err[-2000:]
    assert "SIGUSR1" in err
    (last,) = ckpt.list_checkpoints(run / "checkpoints")
    state = json.loads((last / "state.json").read_text())
    assert state["step"] >= 3 and last.name == ckpt.checkpoint_name(state["step"])
    assert main(["train", "--resume", "--run-dir", str(run), f"train.max_steps={state['step'] + 2}"]) == 0
    assert json.loads((run / "train_summary.json").read_text())["steps_this_run"] == 2


# ------------------------------------------------------------------ damaged checkpoints

def _trained(tmp_path: Path, capsys, **train) -> tuple[str, Path]:
    cfg, run = _config(tmp_path, max_steps=10, checkpoint_every=5, **train), tmp_path / "run"
    assert main(["train", cfg, "--run-dir", str(run)]) == 0
    capsys.readouterr()
    return cfg, run


def test_a_truncated_newest_checkpoint_is_named_set_aside_and_the_previous_one_resumed(tmp_path, capsys, caplog):
    cfg, run = _trained(tmp_path, capsys)
    bad = run / "checkpoints" / ckpt.checkpoint_name(10) / "model.safetensors"
    bad.write_bytes(bad.read_bytes()[:100])  # truncated
    with caplog.at_level(logging.WARNING):
        assert main(["train", "--resume", "--run-dir", str(run), "train.max_steps=12"]) == 0
    warning = [r.getMessage() for r in caplog.records if "falling back" in r.getMessage()]
    assert len(warning) == 1 and str(bad) in warning[0] and ckpt.checkpoint_name(5) in warning[0]
    assert (run / "checkpoints" / f"damaged-{ckpt.checkpoint_name(10)}" / "model.safetensors").is_file()
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["step"] == 12 and summary["steps_this_run"] == 7  # from step 5
    # resuming from step 5 is exact: the same weights as 12 uninterrupted steps
    assert main(["train", cfg, "--run-dir", str(tmp_path / "straight"), "train.max_steps=12"]) == 0
    _assert_equal(_weights(tmp_path / "straight", 12), _weights(run, 12))


def test_no_checkpoint_that_loads_is_a_one_line_error(tmp_path, capsys):
    _, run = _trained(tmp_path, capsys)
    for d in ckpt.list_checkpoints(run / "checkpoints"):
        (d / "scheduler.pt").write_bytes(b"garbage")
    assert main(["train", "--resume", "--run-dir", str(run), "train.max_steps=12"]) == 2
    err = capsys.readouterr().err
    assert "scheduler.pt" in err and "no earlier complete checkpoint" in err and "Traceback" not in err


def test_sharded_checkpoint_damage_falls_back_or_is_refused(tmp_path, capsys):
    """FSDP in one process writes the sharded layout; a truncated shard file and a garbage index are named."""
    cfg, run = _trained(tmp_path, capsys, parallel="fsdp")
    newest = run / "checkpoints" / ckpt.checkpoint_name(10)
    assert json.loads((newest / "state.json").read_text())["layout"] == "sharded"
    shard = newest / "dcp" / "__0_0.distcp"
    shard.write_bytes(shard.read_bytes()[:64])
    assert main(["train", "--resume", "--no-fallback", "--run-dir", str(run), "train.max_steps=12"]) == 2
    err = capsys.readouterr().err
    assert str(newest / "dcp") in err and "--no-fallback" in err and "Traceback" not in err
    (newest / "dcp" / ".metadata").write_bytes(b"\x80\x04 not pickle")
    with pytest.raises(ckpt.CheckpointError, match=r"\.metadata"):
        ckpt.read_sharded_weights(newest)
    assert main(["train", "--resume", "--run-dir", str(run), "train.max_steps=12"]) == 0
    assert json.loads((run / "train_summary.json").read_text())["steps_this_run"] == 7


def test_sharded_metadata_allows_no_foreign_classes(tmp_path, capsys):
    _, run = _trained(tmp_path, capsys, parallel="fsdp")
    meta = run / "checkpoints" / ckpt.checkpoint_name(10) / "dcp" / ".metadata"
    import pickle

    meta.write_bytes(pickle.dumps(subprocess.Popen))  # any class outside the checkpoint's own
    with pytest.raises(ckpt.CheckpointError, match="not allowed"):
        ckpt.read_sharded_weights(meta.parent.parent)


# ------------------------------------------------------------------ failing writes

def _fail_on_call(n: int, original):
    calls = {"n": 0}

    def write(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] >= n:
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(*args, **kwargs)
    return write


def test_a_failing_write_stops_in_one_line_and_keeps_the_earlier_checkpoints(tmp_path, capsys, monkeypatch):
    cfg = _config(tmp_path, max_steps=10, checkpoint_every=5)
    run = tmp_path / "run"
    # the 1st checkpoint writes 2 safetensors files; the 2nd one fails on its first
    monkeypatch.setattr(ckpt, "save_file", _fail_on_call(3, ckpt.save_file))
    assert main(["train", cfg, "--run-dir", str(run)]) == 2
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.startswith("crossflow train: error:")]
    assert len(lines) == 1 and "No space left on device" in lines[0] and ckpt.checkpoint_name(10) in lines[0]
    assert "intact" in lines[0] and "Traceback" not in err
    assert [p.name for p in ckpt.list_checkpoints(run / "checkpoints")] == [ckpt.checkpoint_name(5)]
    assert not list((run / "checkpoints").glob(".tmp-*"))
    monkeypatch.undo()
    model, _ = load_model(run)  # the earlier checkpoint still loads (its EMA weights)
    assert main(["train", "--resume", "--run-dir", str(run)]) == 0


def test_a_failing_sharded_write_keeps_the_earlier_checkpoints(tiny_config, tmp_path, monkeypatch):
    cfg, task_cls = tiny_config(max_steps=10, checkpoint_every=5, parallel="fsdp")
    trainer = Trainer(cfg, task_cls(cfg), tmp_path)
    # the 1st checkpoint writes 3 files besides its shards (optimizer groups, scheduler, state); the 2nd fails
    monkeypatch.setattr(ckpt, "_write_file", _fail_on_call(4, ckpt._write_file))
    with pytest.raises(ckpt.CheckpointWriteError, match="intact"):
        trainer.fit()
    monkeypatch.undo()
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "checkpoints")] == [ckpt.checkpoint_name(5)]
    weights = ckpt.read_sharded_weights(tmp_path / "checkpoints" / ckpt.checkpoint_name(5), "model")
    assert weights.keys() == trainer._unwrapped().state_dict().keys()
