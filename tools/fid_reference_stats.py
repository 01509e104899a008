"""Write FID reference statistics (``mu``, ``sigma``) of an image folder, or score a folder against them.

    python tools/fid_reference_stats.py FOLDER --weights pt_inception-2015-12-05-6726825d.pth --out ref.npz
    python tools/fid_reference_stats.py SAMPLES --weights pt_inception-...pth --fid-against ref.npz

Every image directly inside FOLDER (bmp/jpg/jpeg/pgm/png/ppm/tif/tiff/webp, sorted) goes through the
official FID preprocessing (512×512 → 256×256 with PIL's default filter unless ``--no-resize-512``,
[0, 1], bilinear to 299, [-1, 1]) and our FID InceptionV3 loaded strictly from ``--weights``. The
``.npz`` holds ``mu`` (2048,), ``sigma`` (2048, 2048) and ``count``. With ``--fid-against REF`` the
folder's FID against REF is printed (e.g. for samples written by a multi-GPU ``crossflow sample``).
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from crossflow.metrics.fid import fid_against_reference, folder_statistics, save_statistics  # noqa: E402
from crossflow.metrics.fid_inception import load_fid_inception  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", help="folder of images")
    p.add_argument("--weights", required=True, help="local pt_inception-2015-12-05-6726825d.pth")
    p.add_argument("--out", help="write the statistics to this .npz")
    p.add_argument("--fid-against", help="reference .npz: print the folder's FID against it")
    p.add_argument("--batch-size", type=int, default=50, help="images per forward (official 50)")
    p.add_argument("--num-workers", type=int, default=4, help="image-decoding worker processes")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device")
    p.add_argument("--no-resize-512", action="store_true", help="keep 512x512 images at full size")
    return p


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    if not args.out and not args.fid_against:
        raise SystemExit("give --out (write statistics) and/or --fid-against (score against a reference)")
    model = load_fid_inception(args.weights, device=args.device)
    stats = folder_statistics(args.folder, model, batch_size=args.batch_size, device=args.device,
                              num_workers=args.num_workers, resize_512=not args.no_resize_512)
    result: dict = {"folder": str(args.folder), "count": stats.count}
    if args.out:
        result["out"] = str(save_statistics(args.out, stats.mu, stats.sigma, count=np.array(stats.count)))
    if args.fid_against:
        result["fid"] = fid_against_reference(stats, args.fid_against)
        result["reference"] = str(args.fid_against)
    return result


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    print(json.dumps(main(), indent=2))
