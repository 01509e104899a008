"""A file that is not FID Inception weights is named in one line, which never suggests disabling the safe loader."""

from __future__ import annotations

import collections
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from crossflow.cli import main as cli_main
from crossflow.metrics.fid import save_statistics
from crossflow.metrics.fid_inception import load_fid_inception
from helpers.tiny_t2i import export_tiny_t2i


class Pickled:
    """Not a tensor: the safe loader refuses it (its message suggests weights_only=False)."""


def _bad_files(root: Path) -> list[Path]:
    text = root / "notes.pth"
    text.write_text("these are not weights\n")
    noise = root / "noise.pth"
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8).tobytes())
    archive = root / "archive.pth"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("data.txt", "a zip, but not a torch archive")
    objects = root / "objects.pth"
    torch.save({"model": Pickled()}, objects)
    return [text, noise, archive, objects]


def test_unreadable_weights_files_are_named_without_unsafe_advice(tmp_path: Path) -> None:
    for path in _bad_files(tmp_path):
        with pytest.raises(ValueError) as exc:
            load_fid_inception(path)
        msg = str(exc.value)
        assert f"{path} is not a valid FID weights file" in msg and "\n" not in msg, path.name
        assert "weights_only" not in msg and "trust" not in msg, path.name
    listed = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], listed)
    with pytest.raises(ValueError, match="not a valid FID weights file: it holds a list"):
        load_fid_inception(listed)
    empty = tmp_path / "empty.pth"
    torch.save(collections.OrderedDict(), empty)
    with pytest.raises(ValueError, match="missing"):
        load_fid_inception(empty)


def test_eval_with_a_bad_weights_file_ends_in_one_line(tmp_path: Path, capsys) -> None:
    export = export_tiny_t2i(tmp_path / "model")
    bad = _bad_files(tmp_path)[3]
    ref = save_statistics(tmp_path / "ref.npz", np.zeros(2048), np.eye(2048))
    rc = cli_main(["eval", str(export), "--num", "1", "--out", str(tmp_path / "eval"),
                   f"task.metrics.inception_weights={bad}", f"task.metrics.fid_reference={ref}"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("crossflow eval")]
    assert rc == 2 and len(err) == 1 and "is not a valid FID weights file" in err[0] and "weights_only" not in err[0]
