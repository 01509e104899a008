"""``crossflow extract CONFIG`` for captioning: COCO images (Karpathy split) → image features in shards.

Reads ``task.coco.dataset_json`` (Karpathy's ``dataset_coco.json``) and the images under ``task.coco.image_root``,
encodes each image as ``task.image`` says (:class:`tasks.captioning.images.ImageEncoder`) and writes memory-mapped
shards (:mod:`crossflow.data.feature_shards`) with one array field ``image`` and one record per row
(``index``, ``cocoid``, ``split``, ``filepath``, ``filename``, ``img_path``). Row positions are the images of the
selected splits in file order; shard ``k`` holds positions ``[k·S, (k+1)·S)``.

Re-running the same command continues where it stopped (only shards without their marker are done again);
``--part i/n`` lets ``n`` processes share one output directory. The shard meta records the image settings, the
splits and the dataset file, and a resume with different ones is refused. Missing and corrupt images are skipped,
counted and listed in ``extraction_report.json``; when more than ``task.coco.max_skipped_fraction`` of the images
would be skipped the run stops with one line (before writing the shard that would pass the limit).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Optional

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from crossflow.config import ConfigError
from crossflow.data.feature_shards import complete_shards, write_json
from crossflow.data.image_text import CroppedImages, ImageTextRecord, collate_list
from crossflow.data.shard_writer import ShardAssembler, check_resumable, plan_shards, write_index
from crossflow.data.transforms import center_crop_lanczos
from crossflow.registry import load_experiment
from tasks.captioning.config import KARPATHY_SPLITS, CaptioningConfig
from tasks.captioning.images import FEATURES_FORMAT, ImageEncoder
from tasks.t2i.extract import ExtractionProgress

log = logging.getLogger(__name__)
REPORT = "extraction_report.json"
#: ``task.image`` keys named in the error when a resume's image settings differ from the stored ones.
_IMAGE_KEYS = {"kind": "task.image.kind", "resolution": "task.image.resolution", "vae": "task.image.vae.name_or_path",
               "vae_subfolder": "task.image.vae.subfolder", "vae_dtype": "task.image.vae.dtype",
               "clip_vision": "task.image.clip_vision", "clip_layer": "task.image.clip_layer",
               "storage_dtype": "task.image.dtype", "identifier": "the model weights"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="crossflow extract", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Encode the COCO images of Karpathy's split (task.coco.dataset_json, task.coco.image_root) as "
                    "task.image says (pixels, sd_vae or clip_vision) into memory-mapped shards for captioning.",
        epilog="examples:\n"
               "  crossflow extract configs/captioning/coco_toy.yaml task.coco.features_dir=features/coco_pixels\n"
               "  crossflow extract configs/captioning/coco_toy.yaml --part 0/4 --device cuda:0   # one of 4 processes")
    p.add_argument("config", help="captioning YAML config (task.coco and task.image are used)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")
    p.add_argument("--out", help="output directory (default: task.coco.features_dir)")
    p.add_argument("--splits", help=f"comma-separated Karpathy splits to extract (default: all, "
                                    f"{','.join(KARPATHY_SPLITS)})")
    p.add_argument("--part", default="0/1", help="i/n: this process writes the shards k with k %% n == i (default 0/1)")
    p.add_argument("--batch-size", type=int, default=64, help="images per model call (default 64)")
    p.add_argument("--num-workers", type=int, default=4, help="image decoding processes (default 4)")
    p.add_argument("--shard-size", type=int, default=4096, help="images per shard (default 4096)")
    p.add_argument("--device", help="device of the VAE / CLIP model (default: cuda if visible, else cpu)")
    return p


def parse_part(text: str) -> tuple[int, int]:
    """``"i/n"`` → ``(i, n)`` with ``0 <= i < n``."""
    try:
        i, n = (int(x) for x in text.split("/"))
        if not 0 <= i < n:
            raise ValueError
    except ValueError:
        raise ValueError(f"--part must be i/n with 0 <= i < n (e.g. 0/4), got {text!r}") from None
    return i, n


def parse_splits(text: Optional[str]) -> Optional[list[str]]:
    """``"test,val"`` → ``["test", "val"]`` (``None``: every split)."""
    if text is None:
        return None
    splits = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in splits if s not in KARPATHY_SPLITS]
    if bad or not splits:
        raise ValueError(f"--splits: unknown Karpathy split(s) {', '.join(bad) or repr(text)}; valid: "
                         f"{', '.join(KARPATHY_SPLITS)}")
    return splits


def _check_image_settings(out: str | Path, image_meta: dict[str, Any]) -> None:
    """Refuse a resume whose image settings differ from the stored shards', naming the ``task.image`` key."""
    for k, shard in complete_shards(out).items():
        old = (shard.get("meta") or {}).get("image") or {}
        for key in [*_IMAGE_KEYS, *sorted((set(old) | set(image_meta)) - set(_IMAGE_KEYS))]:
            if old.get(key) != image_meta.get(key):
                raise ValueError(f"{out} already holds image features with {_IMAGE_KEYS.get(key, key)}="
                                 f"{json.dumps(old.get(key))} (shard {k}); the config now gives "
                                 f"{json.dumps(image_meta.get(key))}; extract into an empty directory or use the "
                                 "same settings")


def _missing_files(records: list[ImageTextRecord], root: Path) -> list[dict[str, Any]]:
    """Records whose image file does not exist (a cheap check before any image is decoded)."""
    return [{"index": r.index, "img_path": r.img_path, "reason": f"missing: {root / r.img_path}"}
            for r in records if not os.path.isfile(root / r.img_path)]


class SkipLimitExceeded(ValueError):
    """More images missing or unreadable than ``task.coco.max_skipped_fraction`` allows."""


def main(argv: list[str]) -> dict[str, Any]:
    """Run the extractor; returns the summary the CLI prints.

    Raises:
        ConfigError / ValueError / FileNotFoundError: one line naming the key, file or value.
    """
    args = build_parser().parse_intermixed_args(argv)
    cfg, _ = load_experiment(args.config, args.overrides)
    tc = cfg.task
    if not isinstance(tc, CaptioningConfig):
        raise ValueError(f"{args.config}: this extractor needs a captioning config, got task "
                         f"{getattr(tc, 'name', '?')!r}")
    coco = tc.coco
    for key in ("dataset_json", "image_root"):
        if not getattr(coco, key):
            raise ConfigError(f"task.coco.{key}: required by crossflow extract (Karpathy's dataset_coco.json and "
                              "the COCO image root holding train2014/ and val2014/)")
    out = args.out or coco.features_dir
    if not out:
        raise ConfigError("no output directory: give --out DIR or set task.coco.features_dir")
    if args.shard_size < 1 or args.batch_size < 1:
        raise ValueError("--shard-size and --batch-size must be >= 1")
    part, splits = parse_part(args.part), parse_splits(args.splits)
    from tasks.captioning.coco import read_karpathy

    images = read_karpathy(coco.dataset_json, splits)
    if not images:
        raise ValueError(f"{coco.dataset_json}: no images of split(s) {', '.join(splits or KARPATHY_SPLITS)}")
    root = Path(coco.image_root)
    if not root.is_dir():
        raise FileNotFoundError(f"task.coco.image_root={str(root)!r} is not a directory")
    records = [ImageTextRecord(i, im.relpath, "") for i, im in enumerate(images)]
    rows = {i: {"index": i, "cocoid": int(im.cocoid), "split": im.split, "filepath": im.filepath,
                "filename": im.filename, "img_path": im.relpath} for i, im in enumerate(images)}

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    encoder = ImageEncoder.from_config(tc.image, device=device)
    num, size = len(images), args.shard_size
    cocoids = ",".join(str(r["cocoid"]) for r in rows.values()).encode()
    meta = {"format": FEATURES_FORMAT, "image": encoder.meta(), "shard_size": size,
            "dataset": {"file": Path(coco.dataset_json).name, "splits": sorted({im.split for im in images}),
                        "num_images": num, "cocoids_sha1": hashlib.sha1(cocoids).hexdigest()[:16]}}
    _check_image_settings(out, meta["image"])
    done = check_resumable(out, meta)
    todo = plan_shards(num, size, list(done), part)
    expected = {k: [rows[i] for i in range(k * size, min((k + 1) * size, num))] for k in todo}
    flat = [records[r["index"]] for k in todo for r in expected[k]]

    allowed = int(coco.max_skipped_fraction * num)
    skipped_before = sum(len(s.get("skipped", [])) for s in done.values())
    missing = _missing_files(flat, root)
    if skipped_before + len(missing) > allowed:
        _stop(out, rows, num, size, missing, skipped_before + len(missing), allowed, coco.max_skipped_fraction)
    log.info("extract: %d images in %d shards to do (%d shards already complete, %d image files missing) -> %s",
             len(flat), len(todo), len(done), len(missing), out)

    assembler = ShardAssembler(out, meta, size, expected)
    loader = DataLoader(CroppedImages(flat, root, tc.image.resolution, center_crop_lanczos),
                        batch_size=args.batch_size, num_workers=args.num_workers, collate_fn=collate_list)
    start, count, new_skips = time.time(), 0, []
    progress = ExtractionProgress(len(flat), unit="images", rate_unit="img/s")
    with tqdm(total=len(flat), unit="img", desc="extract", dynamic_ncols=True) as bar:
        for batch in loader:
            features = iter(encoder.encode([arr for _, arr, _ in batch if arr is not None]))
            for i, arr, reason in batch:  # in input order, so a stop leaves the shards before it written
                if arr is not None:
                    assembler.add(rows[flat[i].index], {"image": next(features)})
                    count += 1
                    continue
                new_skips.append({"index": flat[i].index, "img_path": flat[i].img_path, "reason": reason})
                if skipped_before + len(new_skips) > allowed:
                    _stop(out, rows, num, size, new_skips, skipped_before + len(new_skips), allowed,
                          coco.max_skipped_fraction)
                assembler.add(rows[flat[i].index], None, reason)
            bar.update(len(batch))
            progress.update(len(batch))
    seconds = time.time() - start
    num_shards = -(-num // size)
    summary = write_index(out, num_shards, num)
    report = write_report(out, rows, summary, {"images": count, "seconds": round(seconds, 2)})
    if new_skips:  # warn once, in the run that skipped them
        log.warning("extract: %d images skipped in this run (%s); listed in %s", len(new_skips),
                    _by_reason(new_skips), Path(out) / REPORT)
    return {"out": str(out), "images": summary["num_samples"], "skipped": report["num_skipped"],
            "skipped_by_reason": report["skipped_by_reason"], "splits": report["splits"],
            "complete": summary["complete"], "shards": f"{summary['complete_shards']}/{num_shards}",
            "images_per_s_this_run": round(count / max(seconds, 1e-9), 2), "report": str(Path(out) / REPORT)}


def _by_reason(skipped: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for s in skipped:
        kind = str(s["reason"]).split(":", 1)[0]
        counts[kind] = counts.get(kind, 0) + 1
    return counts


def write_report(out: str | Path, rows: dict[int, dict[str, Any]], summary: Optional[dict[str, Any]],
                 this_run: dict[str, Any], pending: Optional[list[dict[str, Any]]] = None,
                 stopped: Optional[str] = None) -> dict[str, Any]:
    """Write ``extraction_report.json``: counts, images per split and every skipped image (cocoid, split, path,
    reason) of the complete shards, plus ``pending`` skips of shards a stopped run did not write."""
    shards = complete_shards(out)
    skipped = [s for sh in shards.values() for s in sh.get("skipped", [])] + list(pending or [])
    listed = [{"index": s["index"], "cocoid": rows[s["index"]]["cocoid"], "split": rows[s["index"]]["split"],
               "img_path": s.get("img_path"), "reason": s["reason"]} for s in sorted(skipped, key=lambda s: s["index"])
              if s["index"] in rows]
    splits: dict[str, int] = {}
    for k in shards:
        path = Path(out) / f"shard-{k:05d}.records.jsonl"
        for line in path.read_text(encoding="utf-8").splitlines() if path.is_file() else []:
            split = json.loads(line)["split"]
            splits[split] = splits.get(split, 0) + 1
    report = {"num_images": sum(s.get("count", 0) for s in shards.values()), "num_skipped": len(listed),
              "skipped_by_reason": _by_reason(listed), "splits": dict(sorted(splits.items())),
              "complete": bool(summary and summary["complete"]), "complete_shards": len(shards),
              "num_shards": summary["num_shards"] if summary else None, "this_run": this_run,
              "stopped": stopped, "skipped": listed}
    Path(out).mkdir(parents=True, exist_ok=True)
    write_json(Path(out) / REPORT, report)
    return report


def _stop(out: str | Path, rows: dict[int, dict[str, Any]], num: int, size: int, pending: list[dict[str, Any]],
          skipped: int, allowed: int, fraction: float) -> None:
    """Write the report (listing the skips so far) and raise the one-line error."""
    first = pending[0]["reason"] if pending else "?"
    message = (f"{skipped} of {num} images are missing or unreadable, more than task.coco.max_skipped_fraction="
               f"{fraction:g} allows ({allowed}); first: {first}; check task.coco.image_root, or raise the limit "
               f"(skipped images are listed in {Path(out) / REPORT})")
    written = {k for k in complete_shards(out)}
    write_report(out, rows, None, {"images": None}, [p for p in pending if p["index"] // size not in written],
                 stopped=message)
    raise SkipLimitExceeded(message)
