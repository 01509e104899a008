"""Karpathy's dataset_coco.json reader, results files and score_karpathy on a small file in the real format."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from tasks.captioning import coco
from tasks.captioning.coco import (KarpathyImage, image_path, read_karpathy, read_results, score_karpathy,
                                   split_references, write_results)

TOPICS = {  # 7 sentences each: images take the first 5-7 of their topic
    "surf": ["A man riding a wave on top of a surfboard.", "A surfer rides a large wave in the ocean ",
             "Person on a surfboard riding a wave.", "a man is surfing on a blue wave",
             "A surfer in the water on a board.", "A man on a surf board in the sea.", "Surfing a big wave."],
    "dogs": ["Two dogs play with a red frisbee in the park.", "Dogs running on the grass after a frisbee",
             "a brown dog and a black dog in a field", "Two dogs chasing a toy outside.", "Dogs playing in a park.",
             "Two dogs on the grass.", "A dog catches a frisbee."],
    "food": ["A plate of food with broccoli and rice.", "a dinner plate with vegetables and meat",
             "Food on a white plate on a table.", "Broccoli, rice and chicken on a plate.",
             "A healthy meal on a dish.", "A plate with rice and broccoli.", "Dinner on a white plate."],
    "bus": ["A bus parked on the side of the street.", "A red double decker bus on a city street.",
            "A city bus driving down the road.", "a bus at a bus stop", "A large bus on a street.",
            "The bus is red.", "A bus in the city."],
}


def _tokens(raw: str) -> list[str]:
    return raw.lower().replace(".", "").replace(",", "").split()


def _record(imgid: int, cocoid: int, split: str, topic: str, n_sentences: int, first_sentid: int,
            **extra) -> dict:
    folder = "train2014" if split == "train" else "val2014"
    raws = TOPICS[topic][:n_sentences]
    sentences = [{"tokens": _tokens(r), "raw": r, "imgid": imgid, "sentid": first_sentid + k}
                 for k, r in enumerate(raws)]
    return {"filepath": folder, "sentids": [s["sentid"] for s in sentences],
            "filename": f"COCO_{folder}_{cocoid:012d}.jpg", "imgid": imgid, "split": split,
            "sentences": sentences, "cocoid": cocoid, **extra}


# (cocoid, split, topic, sentences): real files have 5-7 sentences per image and interleave the splits
LAYOUT = [(391895, "test", "surf", 5), (522418, "restval", "dogs", 5), (184613, "train", "bus", 6),
          (318219, "val", "dogs", 5), (554625, "test", "food", 7), (397133, "train", "surf", 5),
          (37777, "test", "bus", 5), (87038, "restval", "food", 5)]


def _dataset(extra: dict | None = None) -> dict:
    images, sentid = [], 770337
    for imgid, (cocoid, split, topic, n) in enumerate(LAYOUT):
        images.append(_record(imgid, cocoid, split, topic, n, sentid, **(extra or {}).get(cocoid, {})))
        sentid += 10
    return {"images": images, "dataset": "coco"}


@pytest.fixture
def karpathy_json(tmp_path):
    path = tmp_path / "dataset_coco.json"
    path.write_text(json.dumps(_dataset({37777: {"toy_attributes": {"color": "red"}}})))
    return path


def test_read_karpathy_keeps_file_order_splits_and_every_sentence(karpathy_json):
    images = read_karpathy(karpathy_json)
    assert [im.cocoid for im in images] == [c for c, *_ in LAYOUT]
    assert [im.imgid for im in images] == list(range(len(LAYOUT)))
    counts = {s: sum(im.split == s for im in images) for s in ("train", "restval", "val", "test")}
    assert counts == {"train": 2, "restval": 2, "val": 1, "test": 3}
    test = read_karpathy(karpathy_json, splits=["test"])
    assert [im.cocoid for im in test] == [391895, 554625, 37777]
    assert [im.cocoid for im in read_karpathy(karpathy_json, splits=["train", "restval"])] == [
        522418, 184613, 397133, 87038]

    raw = json.loads(karpathy_json.read_text())["images"]
    for image, record in zip(images, raw):
        assert isinstance(image, KarpathyImage)
        assert image.raw == tuple(s["raw"] for s in record["sentences"])  # as written: trailing space kept
        assert image.tokens == tuple(tuple(s["tokens"]) for s in record["sentences"])
        assert len(image.raw) == len(image.tokens) == {c: n for c, _, _, n in LAYOUT}[image.cocoid]
    seven = images[4]
    assert len(seven.raw) == 7 and seven.raw[0] == "A plate of food with broccoli and rice."
    assert seven.tokens[0] == ("a", "plate", "of", "food", "with", "broccoli", "and", "rice")
    assert images[6].extra == {"toy_attributes": {"color": "red"}} and images[0].extra == {}
    assert images[0].relpath == "val2014/COCO_val2014_000000391895.jpg"
    assert image_path("/data/coco", images[2]) == coco.Path("/data/coco/train2014/COCO_train2014_000000184613.jpg")
    hash(images[6])  # frozen records stay hashable although ``extra`` is a dict


def test_split_references_are_the_raw_sentences_of_the_split(karpathy_json):
    images = read_karpathy(karpathy_json)
    refs = split_references(images, "test")
    assert list(refs) == [391895, 554625, 37777]
    assert refs[554625] == list(images[4].raw) and len(refs[554625]) == 7
    assert split_references(images, "val") == {318219: list(images[3].raw)}
    with pytest.raises(ValueError, match="unknown Karpathy split 'dev'.*valid: train, restval, val, test"):
        split_references(images, "dev")


def _broken(mutate) -> dict:
    data = _dataset()
    mutate(data)
    return data


@pytest.mark.parametrize("data, match", [
    ("{not json", r"dataset_coco\.json is not valid JSON"),
    ([1, 2], r"dataset_coco\.json: expected an object with key 'images'"),
    ({"dataset": "coco"}, r"dataset_coco\.json: expected an object with key 'images'"),
    (_broken(lambda d: d["images"][2].pop("filename")),
     r"dataset_coco\.json: images\[2\] \(cocoid 184613\) lacks key 'filename'"),
    (_broken(lambda d: d["images"][3].update(sentences=[])), r"images\[3\].*image 318219 has no sentences"),
    (_broken(lambda d: d["images"][1]["sentences"][2].pop("tokens")),
     r"images\[1\] \(cocoid 522418\): sentences\[2\]\['tokens'\] must be a list of strings"),
    (_broken(lambda d: d["images"][0]["sentences"][0].update(raw=None)), r"sentences\[0\]\['raw'\] must be a string"),
    (_broken(lambda d: d["images"][5].update(cocoid="397133")), r"images\[5\].*'cocoid' must be an integer"),
    (_broken(lambda d: d["images"][5].update(split="dev")), r"images\[5\].*unknown split 'dev'"),
    (_broken(lambda d: d["images"][7].update(cocoid=391895)),
     r"cocoid 391895 appears twice \(images\[0\] and images\[7\]\)"),
    (_broken(lambda d: d["images"].__setitem__(4, "x")), r"images\[4\] must be an object"),
])
def test_read_karpathy_errors_name_the_file_record_and_key(tmp_path, data, match):
    path = tmp_path / "dataset_coco.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    with pytest.raises(ValueError, match=match):
        read_karpathy(path)


def test_read_karpathy_missing_file_and_unknown_split(tmp_path, karpathy_json):
    with pytest.raises(FileNotFoundError, match=r"nosuch\.json not found"):
        read_karpathy(tmp_path / "nosuch.json")
    with pytest.raises(ValueError, match="unknown Karpathy split 'testing'"):
        read_karpathy(karpathy_json, splits=["train", "testing"])


def test_results_file_round_trip_is_atomic_and_validated(tmp_path):
    path = tmp_path / "eval" / "results.json"
    ids = np.array([391895, 554625], dtype=np.int64)  # numpy ids, as an evaluator holds them
    assert write_results(path, ids, ["a man on a surfboard", "a plate of food"]) == path
    assert json.loads(path.read_text()) == [{"image_id": 391895, "caption": "a man on a surfboard"},
                                            {"image_id": 554625, "caption": "a plate of food"}]
    assert [p.name for p in path.parent.iterdir()] == ["results.json"]  # no temporary file left
    assert read_results(path) == read_results(str(path)) == json.loads(path.read_text())
    assert read_results([{"image_id": 1, "caption": "x", "score": 0.5}]) == [{"image_id": 1, "caption": "x"}]

    with pytest.raises(ValueError, match="2 image ids but 1 captions"):
        write_results(path, [1, 2], ["x"])
    with pytest.raises(ValueError, match="image id '7' is not an integer"):
        write_results(path, ["7"], ["x"])
    with pytest.raises(ValueError, match=r"results\[1\]: image_id 1 already has a caption \(results\[0\]\)"):
        write_results(path, [1, 1], ["x", "y"])
    assert json.loads(path.read_text())[0]["image_id"] == 391895  # a refused write leaves the file as it was


@pytest.mark.parametrize("entries, match", [
    ({"image_id": 1, "caption": "x"}, "expected a list"),
    ([{"image_id": 1, "caption": "x"}, "y"], r"results\[1\]: expected"),
    ([{"image_id": "1", "caption": "x"}], r"results\[0\]: 'image_id' must be an integer.*'1'"),
    ([{"image_id": 1.0, "caption": "x"}], r"results\[0\]: 'image_id' must be an integer"),
    ([{"image_id": True, "caption": "x"}], r"results\[0\]: 'image_id' must be an integer"),
    ([{"image_id": 1}], r"results\[0\]: 'caption' must be a string, got None"),
    ([{"image_id": 1, "caption": "x"}, {"image_id": 2, "caption": "y"}, {"image_id": 1, "caption": "z"}],
     r"results\[2\]: image_id 1 already has a caption \(results\[0\]\)"),
])
def test_read_results_names_the_bad_entry(entries, match):
    with pytest.raises(ValueError, match=match):
        read_results(entries)


def test_read_results_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="results file .*missing.json not found"):
        read_results(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"image_id": 3}]))
    with pytest.raises(ValueError, match=r"bad\.json\[0\]: 'caption' must be a string"):
        read_results(bad)


class _FakeScores:
    """Stands in for caption_scores (no Java): records what it was given."""

    def __init__(self):
        self.calls = []

    def __call__(self, references, candidates):
        self.calls.append((references, candidates))
        return {"BLEU-1": 0.5, "BLEU-2": 0.4, "BLEU-3": 0.3, "BLEU-4": 0.2, "METEOR": 0.1, "ROUGE-L": 0.3,
                "CIDEr": 1.0, "SPICE": None}


def test_score_karpathy_complete_split_from_a_file_or_read_images(karpathy_json, tmp_path, monkeypatch, caplog):
    fake = _FakeScores()
    monkeypatch.setattr(coco, "caption_scores", fake)
    results = write_results(tmp_path / "results.json", [37777, 391895, 554625], ["a", "b", "c"])
    with caplog.at_level(logging.WARNING, logger=coco.__name__):
        scores = score_karpathy(karpathy_json, results)
        again = score_karpathy(read_karpathy(karpathy_json), read_results(results), split="test")
    assert not caplog.records  # complete: no warning
    assert scores == again
    assert scores["complete"] is True and scores["num_images"] == scores["split_images"] == 3
    assert scores["split"] == "test" and scores["CIDEr"] == 1.0
    assert scores["SPICE"] is None and scores["SPICE_unavailable"]
    refs, cands = fake.calls[0]
    assert cands == {37777: "a", 391895: "b", 554625: "c"}
    assert refs == split_references(read_karpathy(karpathy_json), "test")

    val = score_karpathy(karpathy_json, [{"image_id": 318219, "caption": "x"}], split="val")
    assert val["complete"] is True and fake.calls[-1][0] == {318219: list(read_karpathy(karpathy_json)[3].raw)}


def test_score_karpathy_rejects_ids_outside_the_split(karpathy_json, monkeypatch):
    monkeypatch.setattr(coco, "caption_scores", _FakeScores())
    results = [{"image_id": 391895, "caption": "a"}, {"image_id": 318219, "caption": "b"},
               {"image_id": 5, "caption": "c"}]
    with pytest.raises(ValueError, match=r"2 image ids of the results are not in Karpathy split 'test' of "
                                         r".*dataset_coco\.json: 318219 \(in val\), 5 \(unknown\)"):
        score_karpathy(karpathy_json, results)
    with pytest.raises(ValueError, match="the results hold no captions"):
        score_karpathy(karpathy_json, [])
    with pytest.raises(ValueError, match="unknown Karpathy split 'dev'"):
        score_karpathy(karpathy_json, results, split="dev")


def test_score_karpathy_partial_set_equals_pycocoevalcap_called_directly(karpathy_json, caplog, monkeypatch):
    import pycocoevalcap.meteor.meteor as meteor_module
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    results = [{"image_id": 554625, "caption": "a plate of food with broccoli and rice"},
               {"image_id": 391895, "caption": "a man riding a wave on a surfboard"}]
    images = {im.cocoid: im for im in read_karpathy(karpathy_json)}
    tok = PTBTokenizer()
    gts = tok.tokenize({r["image_id"]: [{"caption": s} for s in images[r["image_id"]].raw] for r in results})
    res = tok.tokenize({r["image_id"]: [{"caption": r["caption"]}] for r in results})
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    meteor = meteor_module.Meteor()  # its Java start takes ~10 s: one process serves both computations
    meteor_direct = meteor.compute_score(gts, res)[0]
    monkeypatch.setattr(meteor_module, "Meteor", lambda: meteor)

    with caplog.at_level(logging.WARNING, logger=coco.__name__):
        scores = score_karpathy(karpathy_json, results, split="test")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.name == coco.__name__]
    assert len(warnings) == 1 and "2 of the 3 images" in warnings[0].getMessage()
    assert scores["complete"] is False and scores["num_images"] == 2 and scores["split_images"] == 3
    for n in range(4):
        assert scores[f"BLEU-{n + 1}"] == pytest.approx(bleu[n])
    assert scores["METEOR"] == pytest.approx(meteor_direct)
    assert scores["ROUGE-L"] == pytest.approx(Rouge().compute_score(gts, res)[0])
    assert scores["CIDEr"] == pytest.approx(Cider().compute_score(gts, res)[0])
    assert scores["BLEU-1"] > scores["BLEU-4"] > 0 and scores["CIDEr"] > 0 and 0 < scores["METEOR"] < 1
    if scores["SPICE"] is None:
        assert scores["SPICE_unavailable"]
