"""`crossflow extract` re-run on a grown list extracts the new records (never `complete` with records missing);
an edited or shrunk list is refused; a no-op re-run does not repeat the skip warnings; progress has an ETA."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers")
pytest.importorskip("diffusers")

from crossflow.cli import main as cli_main  # noqa: E402
from crossflow.data.feature_shards import FeatureShards  # noqa: E402
from helpers.image_folder import make_image_folder  # noqa: E402
from tasks.t2i import extract  # noqa: E402


@pytest.fixture(scope="module")
def data(tmp_path_factory, tiny_clip_text, tiny_vae):
    root = tmp_path_factory.mktemp("growth")
    jsonl, images, records = make_image_folder(root / "data", 10)  # record 3 corrupt, record 6 missing
    cfg = root / "cfg.yaml"
    cfg.write_text(f"""
task:
  name: t2i
  dataset: features
  resolution: 32
  language_model: {{name_or_path: {tiny_clip_text}, max_length: 16}}
  vae: {{name_or_path: {tiny_vae}}}
""", encoding="utf-8")
    lines = jsonl.read_text().splitlines(keepends=True)
    return {"root": root, "cfg": cfg, "images": images, "lines": lines, "records": records}


def _extract(data, jsonl: Path, out: Path) -> int:
    return cli_main(["extract", str(data["cfg"]), "--jsonl", str(jsonl), "--image-root", str(data["images"]),
                     "--out", str(out), "--shard-size", "4", "--batch-size", "3", "--num-workers", "0",
                     "--device", "cpu"])


def _report(out: Path) -> dict:
    return json.loads((out / "extraction_report.json").read_text())


def test_appended_records_are_extracted(data, tmp_path: Path, capsys) -> None:
    jsonl, out = tmp_path / "pairs.jsonl", tmp_path / "feats"
    jsonl.write_text("".join(data["lines"][:6]))  # shard 0 (records 0-3) full, shard 1 holds records 4, 5
    assert _extract(data, jsonl, out) == 0
    assert len(FeatureShards(out)) == 5 and _report(out)["complete"]
    jsonl.write_text("".join(data["lines"]))  # four more records: 6 (missing image), 7, 8, 9
    capsys.readouterr()
    assert _extract(data, jsonl, out) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["complete"] and result["samples"] == 8 and result["records_missing"] == 0
    report = _report(out)
    assert report["this_run"]["samples"] == 3  # only the new ones (7, 8, 9); 4 and 5 were kept
    assert [(s["index"], s["reason"].split(":")[0]) for s in report["skipped"]] == [(3, "corrupt"), (6, "missing")]
    fresh = tmp_path / "fresh"
    assert _extract(data, jsonl, fresh) == 0  # the whole list in one go
    grown, full = FeatureShards(out), FeatureShards(fresh)
    assert grown.prompts == full.prompts == [data["records"][i]["prompt"] for i in (0, 1, 2, 4, 5, 7, 8, 9)]
    for name in ("tokens", "moments", "input_ids"):
        a, b = grown.gather(name, np.arange(8)), full.gather(name, np.arange(8))
        np.testing.assert_allclose(a.astype(np.float32), b.astype(np.float32), rtol=2e-3, atol=2e-3, err_msg=name)


def test_edited_or_shrunk_list_is_refused_in_one_line(data, tmp_path: Path, capsys) -> None:
    jsonl, out = tmp_path / "pairs.jsonl", tmp_path / "feats"
    jsonl.write_text("".join(data["lines"][:6]))
    assert _extract(data, jsonl, out) == 0
    edited = data["lines"][:4] + [json.dumps({"img_path": "img_004.jpg", "prompt": "a new caption"}) + "\n"]
    jsonl.write_text("".join(edited + data["lines"][5:]))
    capsys.readouterr()
    assert _extract(data, jsonl, out) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("crossflow extract")]
    assert len(err) == 1 and "record 4" in err[0] and "edited" in err[0]
    jsonl.write_text("".join(data["lines"][:5]))  # one record fewer than shard 1 holds
    assert _extract(data, jsonl, out) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("crossflow extract")]
    assert len(err) == 1 and "shrank" in err[0]
    assert len(FeatureShards(out)) == 5  # nothing was touched


def test_no_op_rerun_does_not_repeat_skip_warnings(data, tmp_path: Path, caplog) -> None:
    jsonl, out = tmp_path / "pairs.jsonl", tmp_path / "feats"
    jsonl.write_text("".join(data["lines"]))
    with caplog.at_level(logging.INFO, logger="tasks.t2i.extract"):
        assert _extract(data, jsonl, out) == 0
    warned = [r for r in caplog.records if r.levelno >= logging.WARNING and "skipped" in r.getMessage()]
    assert len(warned) == 1 and "2 records skipped in this run" in warned[0].getMessage()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="tasks.t2i.extract"):
        assert _extract(data, jsonl, out) == 0
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "skipped by earlier runs" in caplog.text  # still said, once, without alarm


def test_progress_lines_estimate_the_time_left(data, tmp_path: Path, caplog, monkeypatch) -> None:
    monkeypatch.setattr(extract, "PROGRESS_EVERY_S", 0.0)  # a line per record
    jsonl = tmp_path / "pairs.jsonl"
    jsonl.write_text("".join(data["lines"]))
    with caplog.at_level(logging.INFO, logger="tasks.t2i.extract"):
        assert _extract(data, jsonl, tmp_path / "feats") == 0
    lines = [r.getMessage() for r in caplog.records if "left" in r.getMessage()]
    assert lines and all("/10 records" in line and "rec/s" in line for line in lines)


def test_format_duration() -> None:
    assert [extract.format_duration(s) for s in (4.4, 75, 3 * 3600 + 5 * 60 + 9)] == ["4s", "1m 15s", "3h 05m"]
