"""Toy-world scenes written as COCO captions in Karpathy's format (``crossflow toy-data coco``)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from PIL import Image

from crossflow.cli import main, toy_data_writers
from tasks.captioning.coco import IMAGE_KEYS, SENTENCE_KEYS, image_path, read_karpathy
from tasks.captioning.toy_coco import RESTVAL_FRACTION, toy_tokens, write_toy_coco
from tasks.toyworld.scenes import TEMPLATES, caption, parse_caption, render, sample_scenes


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy_coco")
    summary = write_toy_coco(out, num=60, seed=3, resolution=32)
    return out, summary, json.loads((out / "dataset_coco.json").read_text())


def test_structure_equals_karpathys(toy):
    out, summary, data = toy
    assert set(data) == {"images", "dataset"} and data["dataset"] == "coco"
    assert summary["dataset_json"] == str(out / "dataset_coco.json") and summary["image_root"] == str(out)
    assert summary["images"] == len(data["images"]) == 60 and summary["sentences"] == 300
    sentids, cocoids = [], []
    for imgid, record in enumerate(data["images"]):
        assert set(record) == set(IMAGE_KEYS) | {"toy_attributes"}
        assert record["imgid"] == imgid and isinstance(record["cocoid"], int) and record["cocoid"] > 0
        assert record["sentids"] == [s["sentid"] for s in record["sentences"]]
        for sentence in record["sentences"]:
            assert set(sentence) == set(SENTENCE_KEYS) and sentence["imgid"] == imgid
        folder = "train2014" if record["split"] == "train" else "val2014"
        assert record["filepath"] == folder
        assert record["filename"] == f"COCO_{folder}_{record['cocoid']:012d}.jpg"
        sentids += record["sentids"]
        cocoids.append(record["cocoid"])
    assert len(set(sentids)) == len(sentids) == 300 and len(set(cocoids)) == 60
    assert cocoids != sorted(cocoids) and cocoids != list(range(60))  # COCO-like ids, not the running index


def test_jpegs_lie_at_root_filepath_filename_and_show_the_scene(toy):
    out, _, data = toy
    scenes = sample_scenes(60, np.random.default_rng(3))  # the writer draws the scenes first from its seed
    for record, scene in zip(data["images"], scenes):
        path = out / record["filepath"] / record["filename"]
        with Image.open(path) as im:
            assert im.format == "JPEG" and im.size == (32, 32) and im.mode == "RGB"
            pixels = np.asarray(im, dtype=np.float32)
        assert record["toy_attributes"] == scene.attributes
        assert np.abs(pixels - render(scene, 32)).mean() < 3.0  # JPEG quality 95 of the rendered scene
    on_disk = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.jpg"))
    assert on_disk == sorted(f"{r['filepath']}/{r['filename']}" for r in data["images"])


def test_five_distinct_template_captions_with_karpathy_tokens(toy):
    _, _, data = toy
    used_templates = set()
    for record in data["images"]:
        raws = [s["raw"] for s in record["sentences"]]
        assert len(raws) == 5 and len(set(raws)) == 5
        for sentence in record["sentences"]:
            assert parse_caption(sentence["raw"]) == record["toy_attributes"]
            template = [t for t in range(len(TEMPLATES)) if caption_from(record, t) == sentence["raw"]]
            assert len(template) == 1  # raw is a template filled in, with its punctuation
            used_templates.add(template[0])
            assert sentence["tokens"] == re.sub(r"[,:.]", "", sentence["raw"].lower()).split()
            assert all(re.fullmatch(r"[a-z0-9]+", t) for t in sentence["tokens"])
    assert used_templates == set(range(len(TEMPLATES)))  # random choice per image covers them all
    assert toy_tokens("Top left: one Small circle, colored red.") == ["top", "left", "one", "small", "circle",
                                                                      "colored", "red"]


def caption_from(record: dict, template: int) -> str:
    class _Attrs:  # caption() only reads scene.attributes
        attributes = record["toy_attributes"]
    return caption(_Attrs(), template)  # type: ignore[arg-type]


def test_the_karpathy_reader_reads_it(toy):
    out, summary, _ = toy
    images = read_karpathy(out / "dataset_coco.json")
    counts = {s: sum(im.split == s for im in images) for s in ("train", "restval", "val", "test")}
    assert counts == {s: summary[s] for s in counts}
    assert all(image_path(summary["image_root"], im).is_file() for im in images)
    assert all(set(im.extra) == {"toy_attributes"} and len(im.raw) == len(im.tokens) == 5 for im in images)


def test_split_proportions_are_karpathy_like(tmp_path):
    summary = write_toy_coco(tmp_path / "a", num=200, seed=0, resolution=8)
    rest = 200 - 20 - 20
    assert (summary["val"], summary["test"]) == (20, 20)
    assert summary["restval"] == round(RESTVAL_FRACTION * rest) == 43 and summary["train"] == rest - 43
    splits = [r["split"] for r in json.loads((tmp_path / "a" / "dataset_coco.json").read_text())["images"]]
    assert {s: splits.count(s) for s in set(splits)} == {"train": 117, "restval": 43, "val": 20, "test": 20}
    assert len(set(splits[:20])) > 1  # interleaved in file order, as in the real file
    assert len(list((tmp_path / "a" / "train2014").iterdir())) == 117
    assert len(list((tmp_path / "a" / "val2014").iterdir())) == 83

    custom = write_toy_coco(tmp_path / "b", num=10, seed=0, resolution=8, num_val=1, num_test=3)
    assert {k: custom[k] for k in ("train", "restval", "val", "test")} == {"train": 4, "restval": 2, "val": 1,
                                                                           "test": 3}
    with pytest.raises(ValueError, match="num_val=6 and num_test=5 .* at most num=10"):
        write_toy_coco(tmp_path / "c", num=10, num_val=6, num_test=5)
    with pytest.raises(ValueError, match="num must be at least 1, got 0"):
        write_toy_coco(tmp_path / "c", num=0)
    with pytest.raises(ValueError, match="resolution must be one side"):
        write_toy_coco(tmp_path / "c", num=2, resolution=(16, 24))


def test_deterministic_with_seed(tmp_path):
    def write(name, seed):
        write_toy_coco(tmp_path / name, num=12, seed=seed, resolution=16)
        files = sorted((tmp_path / name).rglob("*.jpg"))
        return ((tmp_path / name / "dataset_coco.json").read_bytes(),
                {p.relative_to(tmp_path / name).as_posix(): p.read_bytes() for p in files})

    first, again, other = write("a", 5), write("b", 5), write("c", 6)
    assert first == again
    assert first[0] != other[0] and set(first[1]) != set(other[1])


def test_cli_toy_data_coco(tmp_path, capsys):
    assert toy_data_writers()["coco"] == ("captioning", write_toy_coco)
    assert main(["toy-data", "coco", str(tmp_path / "coco"), "--num", "20", "--seed", "1", "--resolution", "16"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["format"] == "coco" and printed["task"] == "captioning" and printed["images"] == 20
    images = read_karpathy(tmp_path / "coco" / "dataset_coco.json")
    assert len(images) == 20 and Image.open(image_path(tmp_path / "coco", images[0])).size == (16, 16)
