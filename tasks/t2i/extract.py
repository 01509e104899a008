"""``crossflow extract``: precompute text-to-image training and evaluation features.

From an image–text list (``{"img_path", "prompt"}`` JSON lines + an image root), COCO caption
annotations, or a folder of official per-sample ``.npy`` files, write memory-mapped shards (see
:mod:`crossflow.data.feature_shards`) of the config's language model's token states (+ mask, ids)
and, unless ``--prompts-only``, the config's VAE posterior moments of the center-cropped images.
Missing and corrupt images are skipped, counted and listed in ``extraction_report.json``;
re-running the same command continues where it stopped, and after records were appended to the list
it extracts the new ones (a list that was edited or shrank is refused).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from crossflow.data.feature_shards import complete_shards
from crossflow.data.image_text import (CroppedImages, ImageTextRecord, collate_list, read_coco_captions,
                                       read_image_text_jsonl)
from crossflow.data.official_npy import load_official_npy, official_sample_features
from crossflow.data.shard_writer import ShardAssembler, check_resumable, grown_shards, plan_shards, write_index
from crossflow.data.transforms import CROPS, to_model_input
from crossflow.language import resolve_model_path
from crossflow.language.hf import TextEmbedder
from crossflow.registry import load_experiment
from tasks.t2i import features as real_data
from tasks.t2i.config import TextToImageConfig

log = logging.getLogger(__name__)
REPORT = "extraction_report.json"
_STORAGE = {"float16": np.float16, "float32": np.float32}
#: Seconds between progress log lines (records/s and the time left).
PROGRESS_EVERY_S = 60.0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="crossflow extract", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Precompute LM token states and SD-VAE moments into memory-mapped shards. The language model, "
                    "VAE and resolution come from the task section of CONFIG (override with key=value).",
        epilog="examples:\n"
               "  crossflow extract configs/t2i/dit_256_clip.yaml --jsonl data/img_text_pair.jsonl "
               "--image-root data/imgs --out features/clip256\n"
               "  crossflow extract configs/t2i/dit_256_clip.yaml --coco-captions coco/captions_val2014.json "
               "--prompts-only --out features/coco_val_clip\n"
               "  crossflow extract configs/t2i/dit_256_clip.yaml --from-official JourneyDB/features "
               "--out features/jdb")
    p.add_argument("config", help="t2i YAML config (task.language_model, task.vae, task.resolution are used)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--jsonl", help="image-text list: one {\"img_path\": ..., \"prompt\": ...} per line")
    src.add_argument("--coco-captions", help="COCO captions_*.json: every caption of every image, images by id")
    src.add_argument("--from-official", metavar="DIR",
                     help="convert a folder of official per-sample .npy files (the LM is task.official_lm, the "
                          "resolution task.resolution)")
    p.add_argument("--image-root", help="directory the img_path entries are relative to")
    p.add_argument("--out", help="output directory (default: task.features_dir)")
    p.add_argument("--prompts-only", action="store_true", help="only LM features, no images (evaluation prompts)")
    p.add_argument("--crop", choices=sorted(CROPS), help="adm (official training crop, the default) or lanczos "
                                                        "(official COCO crop, the default with --coco-captions)")
    p.add_argument("--batch-size", type=int, default=32, help="images/prompts per model call (default 32)")
    p.add_argument("--num-workers", type=int, default=4, help="image decoding processes (default 4)")
    p.add_argument("--shard-size", type=int, default=1024, help="input records per shard (default 1024); a shard is "
                                                                "held in memory until written (CLIP-L: ~135 KB per "
                                                                "record, T5-XXL: ~650 KB)")
    p.add_argument("--dtype", choices=sorted(_STORAGE), default="float16", help="storage dtype of the features")
    p.add_argument("--device", help="device of the LM and VAE (default: task.language_model.device, else cuda if "
                                    "visible, else cpu)")
    p.add_argument("--part", default="0/1", help="i/n: this process writes the shards k with k %% n == i (default 0/1)")
    p.add_argument("--fid-stats", metavar="NPZ", help="also write FID reference statistics (mu, sigma) of the input "
                                                      "images, preprocessed as the official COCO reference")
    p.add_argument("--inception-weights", metavar="PTH", help="FID Inception weights for --fid-stats "
                                                              "(pt_inception-2015-12-05-6726825d.pth)")
    p.add_argument("--fid-resolution", type=int, default=256, help="image side for --fid-stats (official: 256)")
    p.add_argument("--fid-crop", choices=sorted(CROPS), default="lanczos", help="crop for --fid-stats (official "
                                                                               "COCO reference: lanczos)")
    p.add_argument("--limit", type=int, help="only the shards holding the first N input records (whole shards, so "
                                           "a later run without --limit continues)")
    return p


def _records(args: argparse.Namespace) -> tuple[list[ImageTextRecord], list[dict], dict[str, Any]]:
    if args.jsonl:
        records, bad = read_image_text_jsonl(args.jsonl)
        return records, bad, {"kind": "jsonl", "file": str(Path(args.jsonl).name)}
    if args.coco_captions:
        return read_coco_captions(args.coco_captions), [], {"kind": "coco", "file": str(Path(args.coco_captions).name)}
    files = sorted(Path(args.from_official).glob("*.npy"))
    if not files:
        raise FileNotFoundError(f"--from-official {args.from_official}: no .npy files")
    return [ImageTextRecord(i, f.name, "") for i, f in enumerate(files)], [], {"kind": "official"}


class FeatureExtractor:
    """The config's LM (and VAE) turned into per-record arrays for the shard writer."""

    def __init__(self, tc: TextToImageConfig, *, device: str, storage: str, with_images: bool) -> None:
        lm = tc.language_model
        self.tc, self.storage = tc, _STORAGE[storage]
        self.embedder = TextEmbedder(resolve_model_path(lm.name_or_path), max_length=lm.max_length,
                                     local_files_only=lm.local_files_only, dtype=lm.dtype, output_scale=lm.output_scale,
                                     kind=lm.kind, model_attention_mask=lm.model_attention_mask, device=device)
        if lm.dim is not None and lm.dim != self.embedder.dim:
            raise ValueError(f"task.language_model.dim: the config says {lm.dim} but {lm.name_or_path} gives "
                             f"{self.embedder.dim}-wide token states; drop the key (the width is read from the "
                             "model) or fix it")
        self.codec = None
        if with_images:
            self.codec = real_data.build_codec(tc, device=device)
            real_data.check_codec(self.codec, tc)
        self.truncated = 0

    def lm_meta(self) -> dict[str, Any]:
        e = self.embedder
        return {"name_or_path": self.tc.language_model.name_or_path, "kind": e.kind, "max_length": e.max_length,
                "output_scale": e.output_scale, "dtype": str(e.dtype).replace("torch.", ""), "dim": e.dim,
                "model_attention_mask": e.model_attention_mask, "identifier": e.identifier}

    def vae_meta(self) -> Optional[dict[str, Any]]:
        if self.codec is None:
            return None
        return {"name_or_path": self.tc.vae.name_or_path, "identifier": self.codec.identifier,
                "latent_channels": self.codec.latent_channels, "downsample": self.codec.downsample_factor}

    def _half(self, x: torch.Tensor, what: str) -> np.ndarray:
        a = x.detach().float().cpu().numpy().astype(self.storage)
        if not np.isfinite(a).all():
            raise ValueError(f"{what} overflow the storage dtype {np.dtype(self.storage)} (max |x| = "
                             f"{float(x.abs().max()):.4g}); re-run with --dtype float32")
        return a

    def text_arrays(self, prompts: list[str]) -> list[dict[str, np.ndarray]]:
        states, mask, ids, truncated = self.embedder.embed_batch(prompts)
        self.truncated += len(truncated)
        tokens = self._half(states, "token states")
        mask_np, ids_np = mask.cpu().numpy().astype(np.uint8), ids.cpu().numpy().astype(np.int32)
        return [{"tokens": tokens[i], "mask": mask_np[i], "input_ids": ids_np[i]} for i in range(len(prompts))]

    def image_arrays(self, images: np.ndarray) -> np.ndarray:
        return self._half(self.codec.encode_moments(to_model_input(images)), "VAE moments")


def _official_meta(tc: TextToImageConfig, sample: dict[str, Any]) -> dict[str, Any]:
    lm = tc.official_lm
    return ({"name_or_path": f"official:{lm}", "kind": lm, "max_length": int(sample["tokens"].shape[0]),
             "output_scale": 10.0 if lm == "t5" else 1.0, "dtype": "float32", "dim": int(sample["tokens"].shape[1]),
             "model_attention_mask": lm == "t5", "identifier": f"official-{lm}"},
            {"name_or_path": "official:kl-f8", "identifier": "official-kl-f8",
             "latent_channels": int(sample["moments"].shape[0]) // 2,
             "downsample": tc.resolution // int(sample["moments"].shape[-1])})


def _first_official(root: Path, records: list[ImageTextRecord], tc: TextToImageConfig) -> dict[str, Any]:
    """The first readable official file's fields (they fix the stored shapes)."""
    for r in records:
        try:
            return official_sample_features(load_official_npy(root / r.img_path), lm=tc.official_lm,
                                            resolution=tc.resolution)
        except (ValueError, KeyError, OSError):
            continue
    raise ValueError(f"--from-official {root}: no readable file with image_latent_{tc.resolution} and "
                     f"{tc.official_lm} token states")


def _results(args, records: list[ImageTextRecord], extractor: Optional[FeatureExtractor], tc: TextToImageConfig,
             crop: str, storage) -> Iterator[tuple[ImageTextRecord, Optional[dict], Optional[str]]]:
    """Yield ``(record, arrays or None, skip reason)`` in input order."""
    if args.from_official:
        for r in records:
            try:
                s = official_sample_features(load_official_npy(Path(args.from_official) / r.img_path),
                                             lm=tc.official_lm, resolution=tc.resolution)
            except (ValueError, KeyError, OSError) as e:
                yield r, None, f"corrupt: {e}"
                continue
            r.prompt = s["prompt"]
            yield r, {"tokens": s["tokens"].astype(storage), "mask": s["mask"].astype(np.uint8),
                      "input_ids": s["input_ids"].astype(np.int32), "moments": s["moments"].astype(storage)}, None
        return
    if args.prompts_only:
        for i in range(0, len(records), args.batch_size):
            chunk = records[i:i + args.batch_size]
            yield from ((r, a, None) for r, a in zip(chunk, extractor.text_arrays([r.prompt for r in chunk])))
        return
    images = CroppedImages(records, args.image_root, tc.resolution, CROPS[crop])
    loader = DataLoader(images, batch_size=args.batch_size, num_workers=args.num_workers, collate_fn=collate_list)
    for batch in loader:
        good = [(records[i], arr) for i, arr, _ in batch if arr is not None]
        for i, arr, reason in batch:
            if arr is None:
                yield records[i], None, reason
        if good:
            moments = extractor.image_arrays(np.stack([a for _, a in good]))
            texts = extractor.text_arrays([r.prompt for r, _ in good])
            for j, (r, _) in enumerate(good):
                yield r, texts[j] | {"moments": moments[j]}, None


def main(argv: list[str]) -> dict[str, Any]:
    """Run the extractor; returns the summary printed by the CLI."""
    args = build_parser().parse_intermixed_args(argv)
    cfg, _ = load_experiment(args.config, args.overrides)
    tc = cfg.task
    if not isinstance(tc, TextToImageConfig):
        raise ValueError(f"{args.config}: crossflow extract needs a t2i config, got task {getattr(tc, 'name', '?')!r}")
    out = args.out or tc.features_dir
    if not out:
        raise ValueError("no output directory: give --out DIR or set task.features_dir in the config")
    if (args.jsonl or args.coco_captions) and not args.prompts_only and not args.image_root:
        raise ValueError("--image-root is required to read images (or use --prompts-only)")
    if args.fid_stats and not (args.inception_weights and args.image_root):
        raise ValueError("--fid-stats needs --inception-weights PTH and --image-root DIR")
    try:
        part = tuple(int(x) for x in args.part.split("/"))
        assert len(part) == 2
    except (ValueError, AssertionError):
        raise ValueError(f"--part must look like i/n (e.g. 0/4), got {args.part!r}") from None
    crop = args.crop or ("lanczos" if args.coco_captions else "adm")
    records, bad, source = _records(args)
    if not records and not bad:
        raise ValueError("no input records")
    num_positions = max([r.index for r in records] + [b["index"] for b in bad]) + 1
    if args.limit is not None:  # whole shards only: a shard is never marked complete with records missing
        end = -(-args.limit // args.shard_size) * args.shard_size
        records, bad = [r for r in records if r.index < end], [b for b in bad if b["index"] < end]
    storage = _STORAGE[args.dtype]
    with_images = not args.prompts_only
    extractor = None
    if args.from_official:
        lm_meta, vae_meta = _official_meta(tc, _first_official(Path(args.from_official), records, tc))
    else:
        device = args.device or tc.language_model.device or ("cuda" if torch.cuda.is_available() else "cpu")
        extractor = FeatureExtractor(tc, device=device, storage=args.dtype, with_images=with_images)
        lm_meta, vae_meta = extractor.lm_meta(), extractor.vae_meta()
    meta = {"format": real_data.FEATURES_FORMAT, "language_model": lm_meta, "vae": vae_meta,
            "resolution": tc.resolution if with_images else None,
            "crop": crop if with_images and not args.from_official else None,
            "storage_dtype": args.dtype, "shard_size": args.shard_size, "source": source}
    done = check_resumable(out, meta)
    grown = grown_shards(done, num_positions, args.shard_size, out)  # records appended since they were written
    todo = plan_shards(num_positions, args.shard_size, [k for k in done if k not in grown], part)
    if args.limit is not None:
        todo = [k for k in todo if k * args.shard_size < args.limit]
    by_shard: dict[int, list[ImageTextRecord]] = {k: [] for k in todo}
    for r in records:
        by_shard.get(r.index // args.shard_size, []).append(r)
    skipped = {k: [b | {"img_path": None} for b in bad if b["index"] // args.shard_size == k] for k in todo}
    assembler = ShardAssembler(out, meta, args.shard_size, {k: [r.to_json() for r in rs] for k, rs in by_shard.items()},
                               skipped)
    carried: set[int] = set()
    for k in (k for k in todo if k in grown):
        carried |= assembler.carry_over(k, done[k], {r.index: r.to_json() for r in by_shard[k]})
    flat = [r for k in todo for r in by_shard[k] if r.index not in carried]
    if grown:
        log.info("extract: the input has %d records; shard(s) %s were written when it had fewer and are completed "
                 "now (their %d extracted records are kept)", num_positions, ", ".join(map(str, grown)), len(carried))
    log.info("extract: %d records in %d shards to do (%d shards already complete) -> %s", len(flat), len(todo),
             len(done) - len(grown), out)
    start, count = time.time(), 0
    new_skips: dict[str, int] = {}  # skipped in this run (warned about once, here)
    known = {s["index"] for k in grown for s in done[k].get("skipped", [])}
    for b in (b for k in todo for b in skipped[k] if b["index"] not in known):
        _count_reason(new_skips, b["reason"])
    progress = ExtractionProgress(len(flat))
    with tqdm(total=len(flat), unit="rec", desc="extract", dynamic_ncols=True) as bar:
        for record, arrays, reason in _results(args, flat, extractor, tc, crop, storage):
            assembler.add(record.to_json(), arrays, reason)
            count += arrays is not None
            if arrays is None:
                _count_reason(new_skips, reason or "skipped")
            bar.update(1)
            progress.update(1)
    seconds = time.time() - start
    num_shards = -(-num_positions // args.shard_size)
    summary = write_index(out, num_shards, num_positions)
    report = _report(out, summary, seconds, count, extractor, new_skips)
    result = {"out": str(out), "samples": summary["num_samples"], "skipped": report["num_skipped"],
              "skipped_by_reason": report["skipped_by_reason"], "complete": summary["complete"],
              "records_missing": summary["records_missing"],
              "shards": f"{summary['complete_shards']}/{num_shards}", "samples_per_s_this_run": report["samples_per_s"],
              "report": str(Path(out) / REPORT)}
    if args.coco_captions:
        result["prompts"] = _write_coco_prompts(records, Path(out))
    if args.fid_stats:
        from tasks.t2i.fid_reference import reference_statistics

        device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        result |= reference_statistics(records, args.image_root, args.fid_stats, weights=args.inception_weights,
                                       resolution=args.fid_resolution, crop=args.fid_crop,
                                       num_workers=args.num_workers, device=device)
    return result


def _count_reason(counts: dict[str, int], reason: str) -> None:
    kind = reason.split(":", 1)[0]
    counts[kind] = counts.get(kind, 0) + 1


class ExtractionProgress:
    """Log the extraction rate and the time left every ``PROGRESS_EVERY_S`` (tqdm shows them too, but only on
    a terminal; the log line also reaches log files and batch jobs). ``unit`` names what is counted."""

    def __init__(self, total: int, unit: str = "records", rate_unit: str = "rec/s") -> None:
        self.total, self.done, self.unit, self.rate_unit = total, 0, unit, rate_unit
        self.start = self.last = time.time()

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.time()
        if now - self.last < PROGRESS_EVERY_S or self.done >= self.total:
            return
        self.last = now
        rate = self.done / max(now - self.start, 1e-9)
        log.info("extract: %d/%d %s (%.1f %s), about %s left", self.done, self.total, self.unit, rate, self.rate_unit,
                 format_duration((self.total - self.done) / max(rate, 1e-9)))


def format_duration(seconds: float) -> str:
    """``3h 05m``, ``4m 10s`` or ``12s``."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def _write_coco_prompts(records: list[ImageTextRecord], out: Path, seed: int = 0) -> str:
    """``prompts.jsonl``: every caption; ``prompts_one_per_image.jsonl``: one random caption per image, images
    in random order (the official FID evaluation draws a random caption per COCO val image, shuffled)."""
    rng = np.random.default_rng(seed)
    by_image: dict[int, list[ImageTextRecord]] = {}
    for r in records:
        by_image.setdefault(r.extra["image_id"], []).append(r)
    picked = [caps[rng.integers(len(caps))] for caps in by_image.values()]
    picked = [picked[i] for i in rng.permutation(len(picked))]
    for name, rows in (("prompts.jsonl", records), ("prompts_one_per_image.jsonl", picked)):
        with open(out / name, "w", encoding="utf-8") as fh:
            fh.writelines(json.dumps({"prompt": r.prompt, "img_path": r.img_path, **r.extra}) + "\n" for r in rows)
    return str(out / "prompts_one_per_image.jsonl")


def _report(out: str | Path, summary: dict[str, Any], seconds: float, count: int,
            extractor: Optional[FeatureExtractor], new_skips: dict[str, int]) -> dict[str, Any]:
    skipped = [s for sh in complete_shards(out).values() for s in sh.get("skipped", [])]
    by_reason: dict[str, int] = {}
    for s in skipped:
        kind = s["reason"].split(":", 1)[0]
        by_reason[kind] = by_reason.get(kind, 0) + 1
    report = {"num_samples": summary["num_samples"], "num_skipped": len(skipped), "skipped_by_reason": by_reason,
              "complete": summary["complete"], "records_missing": summary["records_missing"],
              "complete_shards": summary["complete_shards"],
              "num_shards": summary["num_shards"], "this_run": {"samples": count, "seconds": round(seconds, 2)},
              "samples_per_s": round(count / max(seconds, 1e-9), 2),
              "truncated_prompts_this_run": extractor.truncated if extractor is not None else 0,
              "skipped": sorted(skipped, key=lambda s: s["index"])}
    Path(out, REPORT).write_text(json.dumps(report, indent=1), encoding="utf-8")
    if new_skips:  # warn once, in the run that skipped them
        log.warning("extract: %d records skipped in this run (%s); listed in %s", sum(new_skips.values()),
                    new_skips, Path(out) / REPORT)
    elif skipped:
        log.info("extract: %d records were skipped by earlier runs; listed in %s", len(skipped), Path(out) / REPORT)
    return report
