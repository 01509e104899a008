"""Toy-world scenes written in ImageNet's folder layout (``crossflow toy-data imagenet``)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, JpegImagePlugin

from crossflow.cli import main, toy_data_writers
from tasks.super_resolution.imagenet import ImageNetSR, list_images, sr_crop
from tasks.super_resolution.toy_imagenet import toy_wnid, write_toy_imagenet
from tasks.toyworld.scenes import PALETTE, SHAPES, render, sample_scenes

NUM, SEED, RES = 60, 3, 32
TRAIN_NAME = re.compile(r"(n\d{8})_(\d+)\.JPEG")
VAL_NAME = re.compile(r"ILSVRC2012_val_(\d{8})\.JPEG")


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy_imagenet")
    return out, write_toy_imagenet(out, num=NUM, seed=SEED, resolution=RES)


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_layout_and_names_are_imagenets(toy):
    out, summary = toy
    assert summary["train"] == 54 and summary["val"] == 6 and summary["resolution"] == RES
    assert summary["train_dir"] == str(out / "train") and summary["val_dir"] == str(out / "val")
    assert {p.name for p in out.iterdir()} == {"train", "val", "LOC_synset_mapping.txt"}  # no temporary files
    mapping = (out / "LOC_synset_mapping.txt").read_text().splitlines()
    assert len(mapping) == len(SHAPES) * len(PALETTE) and mapping[0] == f"n00000000 {next(iter(PALETTE))} {SHAPES[0]}"
    wnids = set()
    for split, pattern in (("train", TRAIN_NAME), ("val", VAL_NAME)):
        files = list_images(out / split)
        assert len(files) == summary[split] == len(_files(out / split))
        indices = []
        for path in files:
            match = pattern.fullmatch(path.name)
            assert match, path
            assert re.fullmatch(r"n\d{8}", path.parent.name) and path.parent.parent == out / split
            if split == "train":
                assert match.group(1) == path.parent.name
            indices.append(int(match.groups()[-1]))
            wnids.add(path.parent.name)
        assert sorted(indices) == list(range(1, summary[split] + 1))
    assert len(wnids) == summary["classes"] and wnids <= {line.split()[0] for line in mapping}


def test_images_are_the_scenes_with_a_few_odd_ones(toy):
    """Files hold the seeded scenes under their class's wnid; the odd ones are too small or non-square, and the
    central crop of a non-square one is the scene again."""
    out, summary = toy
    scenes = sample_scenes(NUM, np.random.default_rng(SEED))  # the writer's first draw
    kinds = {"train": [], "val": []}
    for split, offset in (("train", 0), ("val", summary["train"])):
        for path in list_images(out / split):
            scene = scenes[offset + int(re.findall(r"\d+", path.name)[-1]) - 1]
            assert path.parent.name == toy_wnid(scene)
            with Image.open(path) as im:
                assert im.format == "JPEG" and JpegImagePlugin.get_sampling(im) == 0  # 4:4:4 chroma
                picture = np.asarray(im.convert("RGB"))
            h, w = picture.shape[:2]
            kind = "small" if max(h, w) < RES else "square" if h == w == RES else "non_square"
            kinds[split].append(kind)
            if kind != "small":
                diff = np.abs(sr_crop(picture, RES).astype(int) - render(scene, RES)).mean()
                assert diff < (3 if kind == "square" else 6), (path, diff)
    for split, found in kinds.items():
        assert found.count("small") == summary[f"{split}_small"] >= 1
        assert found.count("non_square") == summary[f"{split}_non_square"] >= 2
    train = ImageNetSR(out / "train", RES, 4)
    assert train.dropped_small == summary["train_small"] and len(train) == summary["train"] - summary["train_small"]


def test_same_seed_same_bytes(tmp_path, toy):
    out, summary = toy
    again = write_toy_imagenet(tmp_path / "again", num=NUM, seed=SEED, resolution=RES)
    assert {k: v for k, v in again.items() if "dir" not in k and k != "root"} == \
        {k: v for k, v in summary.items() if "dir" not in k and k != "root"}
    a, b = _files(out), _files(tmp_path / "again")
    assert [p.relative_to(out) for p in a] == [p.relative_to(tmp_path / "again") for p in b]
    assert all(x.read_bytes() == y.read_bytes() for x, y in zip(a, b))
    write_toy_imagenet(tmp_path / "other", num=NUM, seed=SEED + 1, resolution=RES)
    assert [p.read_bytes() for p in _files(tmp_path / "other")] != [p.read_bytes() for p in a]


def test_small_splits_and_bad_arguments(tmp_path):
    summary = write_toy_imagenet(tmp_path / "tiny", num=3, num_val=0, resolution=16)
    assert summary["train"] == 3 and summary["train_small"] == summary["train_non_square"] == 0
    assert (tmp_path / "tiny" / "val").is_dir() and not list_images(tmp_path / "tiny" / "val")
    with pytest.raises(ValueError, match="num_val within"):
        write_toy_imagenet(tmp_path / "bad", num=4, num_val=5)
    with pytest.raises(ValueError, match="at least 8 pixels"):
        write_toy_imagenet(tmp_path / "bad", num=4, resolution=4)


def test_registered_as_toy_data_format(tmp_path, capsys):
    assert toy_data_writers()["imagenet"] == ("super_resolution", write_toy_imagenet)
    assert main(["toy-data", "imagenet", str(tmp_path / "rect"), "--resolution", "64x48"]) != 0
    assert "resolution must be one side" in capsys.readouterr().err


def test_cli_module_writes_the_layout(tmp_path):
    out = tmp_path / "imagenet"
    proc = subprocess.run([sys.executable, "-m", "crossflow", "toy-data", "imagenet", str(out), "--num", "40",
                           "--resolution", "64"], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["format"] == "imagenet" and summary["task"] == "super_resolution"
    assert summary["train"] + summary["val"] == 40 and summary["resolution"] == 64
    val = ImageNetSR(out / "val", 64, 4)
    assert len(val) == summary["val"] - summary["val_small"] and val.hr([0]).shape == (1, 3, 64, 64)
