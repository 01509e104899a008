"""Feature extraction throughput, bytes per sample and read speed: our shards vs the official per-sample .npy.

1. ``crossflow extract`` end to end on generated JPEGs with tiny random CLIP-text / AutoencoderKL models
   (no real weights here): measures image decoding + center crop + batching + shard writing + the tiny
   models; with real CLIP-L / kl-f8 on a GPU the models dominate. Also the crop-only rate.
2. Bytes per sample on disk at the paper's shapes (77×768 CLIP, 77×4096 T5, 8×32×32 / 8×64×64 moments):
   our fp16 shards vs the official dict files (float32, both LMs and both resolutions in every file).
3. Random-batch read speed: memory-mapped shards vs one unpickled official file per sample.

    python benchmarks/extract_features.py --images 256 --device cpu
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from crossflow.cli import main as cli_main  # noqa: E402
from crossflow.data.feature_shards import FeatureShards, write_shard  # noqa: E402
from crossflow.data.image_text import load_rgb  # noqa: E402
from crossflow.data.official_npy import OfficialFeatureFolder  # noqa: E402
from crossflow.data.transforms import center_crop_adm  # noqa: E402
from helpers.tiny_models import WORDS, make_tiny_clip, make_tiny_vae  # noqa: E402

PAPER = {"clip": (77, 768), "t5": (77, 4096)}


def _images(root: Path, n: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    (root / "imgs").mkdir(parents=True)
    with open(root / "pairs.jsonl", "w") as fh:
        for i in range(n):
            h, w = int(rng.integers(300, 520)), int(rng.integers(300, 520))
            # Smooth content compresses like photos (pure noise would make JPEG decoding unrealistically slow).
            base = rng.integers(0, 256, (h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8)
            Image.fromarray(base).resize((w, h), Image.BILINEAR).save(root / "imgs" / f"{i}.jpg", quality=90)
            fh.write(json.dumps({"img_path": f"{i}.jpg", "prompt": " ".join(rng.choice(WORDS, 8))}) + "\n")
    return root / "pairs.jsonl"


def extraction_rate(args, tmp: Path) -> dict:
    make_tiny_clip(tmp / "clip")
    make_tiny_vae(tmp / "vae")
    jsonl = _images(tmp / "data", args.images)
    cfg = tmp / "cfg.yaml"
    cfg.write_text(f"task: {{name: t2i, dataset: features, resolution: {args.resolution}, "
                   f"language_model: {{name_or_path: {tmp / 'clip'}, max_length: 77}}, "
                   f"vae: {{name_or_path: {tmp / 'vae'}}}}}\n")
    start = time.perf_counter()
    for i in range(args.images):
        center_crop_adm(load_rgb(tmp / "data" / "imgs" / f"{i}.jpg"), args.resolution)
    crop_rate = args.images / (time.perf_counter() - start)
    start = time.perf_counter()
    rc = cli_main(["extract", str(cfg), "--jsonl", str(jsonl), "--image-root", str(tmp / "data" / "imgs"),
                   "--out", str(tmp / "feats"), "--batch-size", str(args.batch_size), "--num-workers",
                   str(args.num_workers), "--shard-size", "1024", "--device", args.device])
    total = time.perf_counter() - start
    assert rc == 0
    report = json.loads((tmp / "feats" / "extraction_report.json").read_text())
    return {"crop_per_s": crop_rate, "extract_per_s": report["samples_per_s"], "end_to_end_s": total}


def _official_sample(rng, n_tokens=77) -> dict:
    return {"image_latent_256": rng.standard_normal((8, 32, 32), np.float32),
            "image_latent_512": rng.standard_normal((8, 64, 64), np.float32),
            "token_embedding_clip": rng.standard_normal((n_tokens, 768), np.float32),
            "token_embedding_t5": rng.standard_normal((n_tokens, 4096), np.float32),
            "token_mask_clip": np.ones(n_tokens, np.int64), "token_mask_t5": np.ones(n_tokens, np.int64),
            "token_clip": np.zeros(n_tokens, np.int64), "token_t5": np.zeros(n_tokens, np.int64),
            "batch_caption": "a photo of a red car parked next to a tree on a sunny day"}


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.iterdir() if f.is_file())


def bytes_per_sample(tmp: Path, n: int = 64) -> list[tuple[str, float]]:
    rng = np.random.default_rng(0)
    rows = []
    official = tmp / "official"
    official.mkdir()
    for i in range(n):
        np.save(official / f"{i:05d}.npy", _official_sample(rng))
    rows.append(("official per-sample .npy (CLIP + T5, 256 + 512 moments, fp32, pickled dict)",
                 _dir_bytes(official) / n))
    clip_only = tmp / "official_clip256"
    clip_only.mkdir()
    keep = ("image_latent_256", "token_embedding_clip", "token_mask_clip", "token_clip", "batch_caption")
    for i in range(n):
        np.save(clip_only / f"{i:05d}.npy", {k: v for k, v in _official_sample(rng).items() if k in keep})
    rows.append(("official layout holding only CLIP + 256 px moments (fp32, pickled dict)", _dir_bytes(clip_only) / n))
    for lm in ("clip", "t5"):
        for res in (256, 512):
            out = tmp / f"ours_{lm}_{res}"
            length, dim = PAPER[lm]
            arrays = {"tokens": rng.standard_normal((n, length, dim)).astype(np.float16),
                      "mask": np.ones((n, length), np.uint8), "input_ids": np.zeros((n, length), np.int32),
                      "moments": rng.standard_normal((n, 8, res // 8, res // 8)).astype(np.float16)}
            records = [{"index": i, "img_path": f"{i:08d}.jpg", "prompt": "a photo of a red car parked next to a "
                        "tree on a sunny day"} for i in range(n)]
            write_shard(out, 0, arrays, {"meta": {"format": "bench"}, "skipped": []}, records)
            rows.append((f"ours, {lm.upper()} {res} px (fp16 shards + index)", _dir_bytes(out) / n))
    return rows


def read_rates(tmp: Path, batch: int = 64, iters: int = 20) -> list[tuple[str, float]]:
    rng = np.random.default_rng(1)
    ours = FeatureShards(tmp / "ours_clip_256", fields=["tokens", "mask", "moments"])
    off = OfficialFeatureFolder(tmp / "official", lm="clip", resolution=256)
    rows = []
    readers = (("ours: memory-mapped shards, CLIP 256", ours), ("official: one .npy per sample, CLIP 256", off))
    for name, data in readers:
        data.__getitems__(list(range(batch)))  # warm the page cache
        start = time.perf_counter()
        for _ in range(iters):
            data.__getitems__(rng.integers(0, len(data), batch).tolist())
        rows.append((name, iters * batch / (time.perf_counter() - start)))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=256, help="generated images to extract")
    p.add_argument("--resolution", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--num-workers", type=int, default=2)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_extract_"))
    try:
        rate = extraction_rate(args, tmp)
        sizes = bytes_per_sample(tmp)
        reads = read_rates(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    dev = torch.cuda.get_device_name() if args.device.startswith("cuda") else \
        f"CPU, {torch.get_num_threads()} threads ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
    print(f"\n### Extraction ({dev}; tiny random CLIP-text + AutoencoderKL, {args.images} JPEGs 300-520 px, "
          f"{args.resolution} px, batch {args.batch_size}, {args.num_workers} workers)\n")
    print("| stage | samples/s |\n|---|---|")
    print(f"| decode + ADM center crop only (1 process) | {rate['crop_per_s']:.1f} |")
    print(f"| `crossflow extract` (crop + tiny LM + tiny VAE + shard writes) | {rate['extract_per_s']:.1f} |")
    print("\n### Bytes per sample on disk (paper shapes)\n\n| layout | bytes/sample | vs official |\n|---|---|---|")
    ref = sizes[0][1]
    for name, b in sizes:
        print(f"| {name} | {b:,.0f} | {b / ref:.3f}x |")
    print("\n### Random-batch reads (batch 64, page cache warm)\n\n| reader | samples/s |\n|---|---|")
    for name, r in reads:
        print(f"| {name} | {r:,.0f} |")


if __name__ == "__main__":
    main()
