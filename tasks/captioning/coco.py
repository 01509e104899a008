"""COCO captions in Karpathy's split: reading ``dataset_coco.json``, results files, and the standard scores.

``dataset_coco.json`` (from Karpathy's ``caption_datasets.zip``) is ``{"images": [...], "dataset": "coco"}``;
each image has ``filepath`` (``train2014`` | ``val2014``), ``filename``, ``imgid`` (running index), ``cocoid``
(the COCO image id), ``split`` (``train`` 82,783 | ``restval`` 30,504 | ``val`` 5,000 | ``test`` 5,000),
``sentids`` and ``sentences`` (5–7 per image, each with the original ``raw`` string and its lower-cased,
punctuation-free ``tokens``). The image is ``<image_root>/<filepath>/<filename>``.

Scoring follows the COCO caption evaluation (pycocoevalcap): one generated caption per image in a results file
``[{"image_id": cocoid, "caption": str}, ...]``, references = every ``raw`` sentence of the image, both
PTB-tokenised, then BLEU-1..4, METEOR, ROUGE-L, CIDEr-D (and SPICE when its jars are present). CIDEr's document
frequencies come from the scored images' references, so a score over part of a split is not the split's score:
:func:`score_karpathy` says whether the whole split was scored (``complete``).
"""

from __future__ import annotations

import json
import logging
import operator
import os
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasks.captioning.config import KARPATHY_SPLITS
from tasks.captioning.metrics import caption_scores, spice_unavailable_reason

log = logging.getLogger(__name__)

IMAGE_KEYS: tuple[str, ...] = ("filepath", "sentids", "filename", "imgid", "split", "sentences", "cocoid")
SENTENCE_KEYS: tuple[str, ...] = ("tokens", "raw", "imgid", "sentid")
PathLike = str | os.PathLike


@dataclass(frozen=True)
class KarpathyImage:
    """One image record of ``dataset_coco.json``.

    Attributes:
        cocoid: COCO image id (the ``image_id`` of results files).
        imgid: running index of the record in the json.
        split: ``train``, ``restval``, ``val`` or ``test``.
        filepath: image folder under the COCO root (``train2014`` or ``val2014``).
        filename: image file name, e.g. ``COCO_val2014_000000391895.jpg``.
        raw: the reference sentences as written (5–7).
        tokens: each sentence's tokens (lower-cased, punctuation stripped), as in the json.
        extra: the record's other keys (e.g. ``toy_attributes`` of toy data; ``sentids`` is dropped); not hashed.
    """

    cocoid: int
    imgid: int
    split: str
    filepath: str
    filename: str
    raw: tuple[str, ...]
    tokens: tuple[tuple[str, ...], ...]
    extra: dict = field(default_factory=dict, hash=False)

    @property
    def relpath(self) -> str:
        """``filepath/filename``: the image's path under the COCO image root."""
        return f"{self.filepath}/{self.filename}"


def _check_splits(splits: Iterable[str], what: str) -> list[str]:
    splits = [splits] if isinstance(splits, str) else list(splits)
    for split in splits:
        if split not in KARPATHY_SPLITS:
            raise ValueError(f"{what}: unknown Karpathy split {split!r}; valid: {', '.join(KARPATHY_SPLITS)}")
    return splits


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _parse_image(record: Any, index: int, source: str) -> KarpathyImage:
    where = f"{source}: images[{index}]"
    if not isinstance(record, dict):
        raise ValueError(f"{where} must be an object with keys {', '.join(IMAGE_KEYS)}, got {type(record).__name__}")
    if "cocoid" in record:
        where += f" (cocoid {record['cocoid']!r})"
    for key in ("cocoid", "imgid", "split", "filepath", "filename", "sentences"):
        if key not in record:
            raise ValueError(f"{where} lacks key {key!r}")
    for key in ("cocoid", "imgid"):
        if not _is_int(record[key]):
            raise ValueError(f"{where}: {key!r} must be an integer, got {record[key]!r}")
    for key in ("filepath", "filename"):
        if not isinstance(record[key], str) or not record[key]:
            raise ValueError(f"{where}: {key!r} must be a non-empty string, got {record[key]!r}")
    if record["split"] not in KARPATHY_SPLITS:
        raise ValueError(f"{where}: unknown split {record['split']!r}; valid: {', '.join(KARPATHY_SPLITS)}")
    sentences = record["sentences"]
    if not isinstance(sentences, list):
        raise ValueError(f"{where}: 'sentences' must be a list, got {type(sentences).__name__}")
    if not sentences:
        raise ValueError(f"{where}: image {record['cocoid']} has no sentences (every image needs at least one)")
    raw, tokens = [], []
    for k, sentence in enumerate(sentences):
        if not isinstance(sentence, dict):
            raise ValueError(f"{where}: sentences[{k}] must be an object with 'raw' and 'tokens'")
        text, toks = sentence.get("raw"), sentence.get("tokens")
        if not isinstance(text, str):
            raise ValueError(f"{where}: sentences[{k}]['raw'] must be a string, got {text!r}")
        if not isinstance(toks, list) or not all(isinstance(t, str) for t in toks):
            raise ValueError(f"{where}: sentences[{k}]['tokens'] must be a list of strings, got {toks!r}")
        raw.append(text)
        tokens.append(tuple(toks))
    return KarpathyImage(cocoid=record["cocoid"], imgid=record["imgid"], split=record["split"],
                         filepath=record["filepath"], filename=record["filename"], raw=tuple(raw),
                         tokens=tuple(tokens), extra={k: v for k, v in record.items() if k not in IMAGE_KEYS})


def read_karpathy(dataset_json: PathLike, splits: Sequence[str] | None = None) -> list[KarpathyImage]:
    """The images of Karpathy's ``dataset_coco.json``, in file order.

    Args:
        dataset_json: path of ``dataset_coco.json`` (or a file of the same structure).
        splits: keep only these splits (``train``, ``restval``, ``val``, ``test``); None keeps all.

    Returns:
        One :class:`KarpathyImage` per record of the chosen splits.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not JSON of that structure (the message names the file, the record and the key),
            an image has no sentences (named by cocoid), or a cocoid appears twice.
    """
    path = Path(dataset_json)
    wanted = None if splits is None else set(_check_splits(splits, f"read_karpathy({path})"))
    if not path.is_file():
        raise FileNotFoundError(f"Karpathy split file {path} not found (dataset_coco.json from caption_datasets.zip)")
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ValueError(f"{path}: expected an object with key 'images' holding a list of image records "
                         f"(Karpathy's dataset_coco.json)")
    images: list[KarpathyImage] = []
    seen: dict[int, int] = {}
    for index, record in enumerate(data["images"]):
        image = _parse_image(record, index, str(path))
        if image.cocoid in seen:
            raise ValueError(f"{path}: cocoid {image.cocoid} appears twice (images[{seen[image.cocoid]}] and "
                             f"images[{index}])")
        seen[image.cocoid] = index
        if wanted is None or image.split in wanted:
            images.append(image)
    return images


def image_path(image_root: PathLike, image: KarpathyImage) -> Path:
    """``<image_root>/<filepath>/<filename>``: where the COCO image of a record lies."""
    return Path(image_root) / image.filepath / image.filename


def split_references(images: Sequence[KarpathyImage], split: str) -> dict[int, list[str]]:
    """``cocoid → raw sentences`` of the images of one split (the references of the caption metrics)."""
    _check_splits([split], "split_references")
    return {image.cocoid: list(image.raw) for image in images if image.split == split}


def write_results(path: PathLike, image_ids: Sequence[int], captions: Sequence[str]) -> Path:
    """Write a COCO caption results file ``[{"image_id": int, "caption": str}, ...]`` atomically.

    Args:
        path: the JSON file to write (parent folders are created).
        image_ids: the cocoid of each caption (numpy integers are accepted).
        captions: one generated caption per image id.

    Returns:
        The written path.
    """
    if len(image_ids) != len(captions):
        raise ValueError(f"write_results: {len(image_ids)} image ids but {len(captions)} captions")
    entries = []
    for image_id, text in zip(image_ids, captions):
        try:
            if isinstance(image_id, bool):
                raise TypeError
            image_id = operator.index(image_id)
        except TypeError:
            raise ValueError(f"write_results: image id {image_id!r} is not an integer (a cocoid)") from None
        entries.append({"image_id": image_id, "caption": text})
    read_results(entries)  # the same checks a reader applies (strings, one caption per image)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_text(json.dumps(entries), encoding="utf-8")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def read_results(results: PathLike | list) -> list[dict]:
    """Read and check a COCO caption results list (a path to its JSON, or the list itself).

    Returns:
        ``[{"image_id": int, "caption": str}, ...]`` in the given order (other keys of an entry are dropped).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: not a list of objects with an integer ``image_id`` and a string ``caption``, or an image id
            appears twice (the message names the entry).
    """
    if isinstance(results, (str, os.PathLike)):
        source = str(results)
        if not Path(results).is_file():
            raise FileNotFoundError(f"results file {source} not found")
        try:
            entries = json.loads(Path(results).read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"results file {source} is not valid JSON ({exc})") from None
    else:
        source, entries = "results", results
    if not isinstance(entries, list):
        raise ValueError(f"{source}: expected a list of {{\"image_id\": int, \"caption\": str}}, "
                         f"got {type(entries).__name__}")
    out: list[dict] = []
    first: dict[int, int] = {}
    for i, entry in enumerate(entries):
        where = f"{source}[{i}]"
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: expected {{\"image_id\": int, \"caption\": str}}, got {entry!r}")
        if not _is_int(entry.get("image_id")):
            raise ValueError(f"{where}: 'image_id' must be an integer (the cocoid), got {entry.get('image_id')!r}")
        if not isinstance(entry.get("caption"), str):
            raise ValueError(f"{where}: 'caption' must be a string, got {entry.get('caption')!r}")
        image_id = entry["image_id"]
        if image_id in first:
            raise ValueError(f"{where}: image_id {image_id} already has a caption ({source}[{first[image_id]}]); "
                             f"give one caption per image")
        first[image_id] = i
        out.append({"image_id": image_id, "caption": entry["caption"]})
    return out


def score_karpathy(dataset_json: PathLike | Sequence[KarpathyImage], results: PathLike | list,
                   split: str = "test") -> dict:
    """COCO caption scores of a results list against the references of one Karpathy split.

    Args:
        dataset_json: ``dataset_coco.json``, or its images already read by :func:`read_karpathy`.
        results: a results file or list ``[{"image_id": cocoid, "caption": str}]`` (see :func:`read_results`).
        split: the Karpathy split whose sentences are the references.

    Returns:
        ``BLEU-1`` .. ``BLEU-4``, ``METEOR``, ``ROUGE-L``, ``CIDEr``, ``SPICE`` (pycocoevalcap's scale; SPICE is
        None when it cannot run, with the reason under ``SPICE_unavailable``), ``num_images`` (scored),
        ``split_images`` (in the split), ``split`` and ``complete`` (every image of the split was scored; a
        warning is logged once per call when not, as CIDEr depends on the scored set).

    Raises:
        ValueError: an image id is not in the split (some are named), or the results are empty.
    """
    _check_splits([split], "score_karpathy")
    if isinstance(dataset_json, (str, os.PathLike)):
        source, images = str(dataset_json), read_karpathy(dataset_json)
    else:
        source, images = "the given images", list(dataset_json)
    references = split_references(images, split)
    if not references:
        raise ValueError(f"Karpathy split {split!r} of {source} has no images")
    entries = read_results(results)
    if not entries:
        raise ValueError("score_karpathy: the results hold no captions")
    candidates = {e["image_id"]: e["caption"] for e in entries}
    outside = [i for i in candidates if i not in references]
    if outside:
        split_of = {image.cocoid: image.split for image in images}
        named = ", ".join(f"{i} ({'in ' + split_of[i] if i in split_of else 'unknown'})" for i in outside[:5])
        raise ValueError(f"{len(outside)} image ids of the results are not in Karpathy split {split!r} of "
                         f"{source}: {named}{', ...' if len(outside) > 5 else ''}")
    complete = len(candidates) == len(references)
    if not complete:
        log.warning("scoring %d of the %d images of Karpathy split %r: CIDEr (document frequencies) and the other "
                    "scores are not the split's", len(candidates), len(references), split)
    scores = caption_scores({i: references[i] for i in candidates}, candidates)
    if scores.get("SPICE") is None:
        scores["SPICE_unavailable"] = spice_unavailable_reason() or "SPICE failed (the reason is in the log)"
    return {**scores, "num_images": len(candidates), "split_images": len(references), "split": split,
            "complete": complete}
