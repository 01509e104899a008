"""Loss-curve plots from metrics.jsonl: smoothing, one panel per logged loss, unusable rows skipped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from crossflow.train.plots import ema, plot_loss_curves


def test_ema() -> None:
    assert ema([1.0, 2.0, 3.0], 0.0) == [1.0, 2.0, 3.0]
    assert ema([5.0, 5.0], 0.9) == pytest.approx([5.0, 5.0])


def test_plot_loss_curves(tmp_path: Path) -> None:
    log = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"step": i, "time": 1.7e9 + i, "loss": 1.0 / (i + 1), "loss_fm": 0.5, "loss_kl": -0.1 * i,
                         "tag": "x"}) for i in range(20)]
    lines.insert(3, json.dumps({"loss": 9.0}))  # no step: ignored
    lines.append(json.dumps({"step": 20, "loss_clip": 0.3}))
    log.write_text("\n".join(lines) + '\n{"step": 21, "lo')
    out = plot_loss_curves(log, tmp_path / "plots" / "loss.png")
    assert out.exists() and out.stat().st_size > 1000
    with Image.open(out) as im:
        assert im.format == "PNG" and im.height > im.width
        assert im.height == 4 * 260  # loss, loss_fm, loss_kl, loss_clip: one 2.6-inch panel each, no wall clock
    assert plot_loss_curves(log, tmp_path / "one.png", keys=["loss", "absent"]).exists()
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"loss": 1}\n{"step": ')
    with pytest.raises(ValueError, match="no usable rows"):
        plot_loss_curves(empty, tmp_path / "never.png")


def _write_run(run: Path, scale: float) -> Path:
    run.mkdir(parents=True)
    rows = [{"step": 10 * (i + 1), "time": 1.7e9 + i, "loss": scale / (i + 1), "loss_fm": scale / (i + 2),
             "lr": 1e-3, "samples_per_s": 100.0} for i in range(15)]
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return run


def test_plot_runs_draws_the_loss_curves_of_several_runs(tmp_path: Path) -> None:
    from crossflow.train.plots import plot_runs

    a, b = _write_run(tmp_path / "runs" / "a", 1.0), _write_run(tmp_path / "runs" / "b", 2.0)
    out = plot_runs([a, b / "metrics.jsonl"], tmp_path / "cmp.png")
    with Image.open(out) as im:
        assert im.height == 2 * 260  # default: the loss terms only (loss, loss_fm), not lr or throughput
    with Image.open(plot_runs([a, b], tmp_path / "all.png", keys=["all"])) as im:
        assert im.height == 4 * 260  # every logged number but the wall clock
    with pytest.raises(FileNotFoundError, match="no metrics.jsonl"):
        plot_runs([a, tmp_path / "nowhere"], tmp_path / "x.png")


def test_plot_command(tmp_path: Path, capsys) -> None:
    from crossflow.cli import main

    a, b = _write_run(tmp_path / "a", 1.0), _write_run(tmp_path / "b", 3.0)
    assert main(["plot", str(a), str(b), "--out", str(tmp_path / "p.png"), "--keys", "loss,lr"]) == 0
    assert json.loads(capsys.readouterr().out)["plot"] == str(tmp_path / "p.png")
    with Image.open(tmp_path / "p.png") as im:
        assert im.height == 2 * 260
    assert main(["plot", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "missing" in err
