"""FID reference statistics of an image–text list's images, preprocessed like the official COCO evaluation.

The official reference (``fid_stats_mscoco256_val.npz``) holds the Inception statistics of the COCO
val2014 images center-cropped to a square and LANCZOS-resized to 256 px. This computes the same from
the records of ``crossflow extract`` (each image once, however many captions it has), with the
InceptionV3 and streaming statistics of :mod:`crossflow.metrics.fid`. Unreadable images are skipped
and counted.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import DataLoader

from crossflow.data.image_text import CroppedImages, ImageTextRecord, collate_list
from crossflow.data.transforms import CROPS

log = logging.getLogger(__name__)


def reference_statistics(records: list[ImageTextRecord], image_root: str | Path, out: str | Path, *, weights: str,
                         resolution: int = 256, crop: str = "lanczos", batch_size: int = 50, num_workers: int = 4,
                         device: str = "cpu") -> dict[str, Any]:
    """Write ``out`` (``.npz`` with ``mu``, ``sigma``, ``count``) for the unique images of ``records``.

    Args:
        records: image–text records (duplicates of an image are used once).
        image_root: directory the ``img_path`` entries are relative to.
        out: output ``.npz`` path.
        weights: local FID Inception weights (``pt_inception-2015-12-05-6726825d.pth``).
        resolution: side of the preprocessed images (official COCO reference: 256).
        crop: ``lanczos`` (official COCO) or ``adm``.

    Returns:
        ``{"fid_stats": path, "fid_images": count, "fid_skipped": n}``.
    """
    try:
        from crossflow.metrics import fid
        from crossflow.metrics.fid_inception import load_fid_inception
    except ImportError as e:  # pragma: no cover - the metrics package ships with the toolkit
        raise ValueError(f"--fid-stats needs crossflow.metrics.fid ({e})") from e
    seen: dict[str, ImageTextRecord] = {}
    for r in records:
        seen.setdefault(r.img_path, r)
    unique = list(seen.values())
    model = load_fid_inception(weights, device=device)
    loader = DataLoader(CroppedImages(unique, image_root, resolution, CROPS[crop]), batch_size=batch_size,
                        num_workers=num_workers, collate_fn=collate_list)
    skipped: list[str] = []

    def batches():
        for batch in loader:
            skipped.extend(reason for _, arr, reason in batch if arr is None)
            good = [arr for _, arr, _ in batch if arr is not None]
            if good:
                yield np.stack(good)

    stats = fid.batch_statistics(batches(), model, device=device, resize_512=False,
                                 total=-(-len(unique) // batch_size))
    fid.save_statistics(out, stats.mu, stats.sigma, count=np.array(stats.count))
    if skipped:
        log.warning("FID reference: %d of %d images skipped (first: %s)", len(skipped), len(unique), skipped[0])
    return {"fid_stats": str(out), "fid_images": stats.count, "fid_skipped": len(skipped)}
