"""Toy-world scenes written in Marigold's evaluation layouts, so the real benchmark pipeline runs on a CPU.

The toy renderer draws square scenes (one shape in front of a receding plane) with depth in
``TOY_DEPTH_RANGE`` = [0.8, 4.0]. The writers render each scene at ``resolution`` (square), stretch it with
nearest-neighbour sampling to the dataset's frame size (NYUv2 480×640, so the Eigen crop applies; KITTI
376×1241 like a raw KITTI frame, so the 352×1216 benchmark crop applies) and map depth affinely into a
plausible range for the dataset (NYUv2 1–9 m, KITTI 5–75 m). Nearest sampling keeps RGB and depth pixels
aligned and every depth value a rendered one; the stretch changes the aspect ratio, which is harmless for a
toy. Affine depth scaling means an affine-invariant model trained on toy depths is judged fairly after the
protocol's least-squares alignment.

Layouts (``DATA`` is a directory, or ``DATA.tar`` with members stored as ``./REL`` when ``tar=True``):

* NYUv2: ``OUT/nyu_labeled_extracted/test/toy_<shape>/{rgb,depth,filled}_NNNN.png`` (NNNN 1-based), depth
  PNGs uint16 millimetres; ``depth_`` is the raw map with holes (0, ``NYU_HOLE_FRACTION`` of the render's
  pixels), ``filled_`` the complete one; list ``OUT/filename_list_test.txt`` (``rgb depth filled``).
* KITTI: ``OUT/kitti_eigen_split_test/toyworld/toyworld_drive_0000_sync/image_02/data/NNNNNNNNNN.png`` and
  ``.../toyworld_drive_0000_sync/proj_depth/groundtruth/image_02/NNNNNNNNNN.png`` (uint16, metres·256),
  sparse like LiDAR ground truth (every ``KITTI_SCANLINE_EVERY``-th row below ``KITTI_LIDAR_TOP`` of the
  frame, ``KITTI_POINT_KEEP`` of its pixels; the rest 0); list ``OUT/eigen_test_files_with_gt.txt``
  (``rgb depth focal``) where one frame after every four has ``None`` for depth and no depth file.
"""

from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
from PIL import Image

from tasks.toyworld.dataset import make_split, render_batch
from tasks.toyworld.scenes import DEPTH_BASE, DEPTH_TOP, SPHERE_BULGE

TOY_DEPTH_RANGE: tuple[float, float] = (min(DEPTH_BASE.values()) - SPHERE_BULGE, DEPTH_TOP)  # (0.8, 4.0)
NYU_SHAPE: tuple[int, int] = (480, 640)
NYU_DEPTH_RANGE: tuple[float, float] = (1.0, 9.0)
NYU_HOLE_FRACTION = 0.1
KITTI_SHAPE: tuple[int, int] = (376, 1241)
KITTI_DEPTH_RANGE: tuple[float, float] = (5.0, 75.0)
KITTI_FOCAL = 721.5377  # the focal length the real list gives for the 2011_09_26 drives
KITTI_LIDAR_TOP = 0.3  # no ground truth above this fraction of the frame (beyond the LiDAR's field of view)
KITTI_SCANLINE_EVERY = 3
KITTI_POINT_KEEP = 0.5
KITTI_GT_EVERY = 4  # a ``None`` line follows every 4 frames with ground truth (and the last one)


@dataclass
class ToyBenchmark:
    """Where a writer put a toy benchmark, ready for :func:`tasks.depth.benchmarks.evaluate_benchmark`.

    Attributes:
        name: the benchmark's name (``nyu_v2`` or ``kitti``).
        data: the data directory or ``.tar``.
        filenames: the filename list.
        count: samples with ground truth.
        skipped: list lines without ground truth (KITTI's ``None``).
    """

    name: str
    data: Path
    filenames: Path
    count: int
    skipped: int = 0


class _Sink:
    """Files written into a directory, or into a tar as ``./REL`` members (Marigold's layout)."""

    def __init__(self, root: Path, tar: bool) -> None:
        self.path = root.with_name(root.name + ".tar") if tar else root
        self._tar = tarfile.open(self.path, "w") if tar else None

    def write(self, rel: str, payload: bytes) -> None:
        if self._tar is None:
            path = self.path / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(payload)
        else:
            info = tarfile.TarInfo("./" + rel)
            info.size = len(payload)
            self._tar.addfile(info, io.BytesIO(payload))

    def close(self) -> None:
        if self._tar is not None:
            self._tar.close()


def pack_tar(src_dir: str | Path, tar_path: str | Path) -> Path:
    """Pack a directory as Marigold's archives are packed (``cd DIR && tar -cf TAR .``: members ``./REL``)."""
    src, dst = Path(src_dir), Path(tar_path)
    with tarfile.open(dst, "w") as archive:
        for path in sorted(p for p in src.rglob("*") if p.is_file()):
            archive.add(path, arcname="./" + path.relative_to(src).as_posix())
    return dst


def png_bytes(array: np.ndarray) -> bytes:
    """``(H, W, 3)`` uint8 or ``(H, W)`` uint16 array → PNG bytes (16-bit grey for uint16)."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _check(num: int, resolution: int) -> None:
    if num < 1:
        raise ValueError(f"num must be >= 1, got {num}")
    if resolution < 8:
        raise ValueError(f"resolution must be >= 8 (the toy renderer's smallest), got {resolution}")


def _render(num: int, resolution: int, seed: int) -> tuple[list, np.ndarray, np.ndarray]:
    """``num`` balanced toy test scenes: examples, ``(N, R, R, 3)`` uint8 images, ``(N, R, R)`` depths."""
    _, examples = make_split(0, num, seed)
    images, depths = render_batch(examples, resolution)
    return examples, images, depths


def _stretch(array: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resampling of the first two axes to ``shape`` (pixel centres mapped)."""
    h, w = array.shape[:2]
    rows = np.minimum(((np.arange(shape[0]) + 0.5) * h / shape[0]).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(shape[1]) + 0.5) * w / shape[1]).astype(np.int64), w - 1)
    return array[rows][:, cols]


def _rescale(depth: np.ndarray, target: tuple[float, float]) -> np.ndarray:
    lo, hi = TOY_DEPTH_RANGE
    return target[0] + (depth.astype(np.float64) - lo) * (target[1] - target[0]) / (hi - lo)


def write_toy_nyu(out_dir: str | Path, num: int = 8, resolution: int = 32, seed: int = 0,
                  tar: bool = False) -> ToyBenchmark:
    """Write ``num`` toy scenes as Marigold's NYUv2 test set (layout in the module docstring).

    Args:
        out_dir: created if missing; existing files of the same names are overwritten.
        num: scenes (all with ground truth).
        resolution: the square render's side, stretched to 480×640.
        seed: scene split and hole pattern.
        tar: write ``nyu_labeled_extracted.tar`` instead of the directory.
    """
    _check(num, resolution)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    examples, images, depths = _render(num, resolution, seed)
    rng = np.random.default_rng([seed, 2])
    sink, lines = _Sink(out / "nyu_labeled_extracted", tar), []
    try:
        for i, example in enumerate(examples):
            stem = f"test/toy_{example.scene.shape}"
            filled = np.round(_rescale(_stretch(depths[i], NYU_SHAPE), NYU_DEPTH_RANGE) * 1000.0).astype(np.uint16)
            holes = _stretch(rng.random(depths[i].shape) < NYU_HOLE_FRACTION, NYU_SHAPE)
            raw = np.where(holes, 0, filled).astype(np.uint16)
            names = [f"{stem}/{kind}_{i + 1:04d}.png" for kind in ("rgb", "depth", "filled")]
            for name, array in zip(names, (_stretch(images[i], NYU_SHAPE), raw, filled)):
                sink.write(name, png_bytes(np.ascontiguousarray(array)))
            lines.append(" ".join(names))
    finally:
        sink.close()
    filenames = out / "filename_list_test.txt"
    filenames.write_text("\n".join(lines) + "\n")
    return ToyBenchmark("nyu_v2", sink.path, filenames, count=num)


def _lidar_mask(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    rows = np.arange(shape[0])
    top = int(KITTI_LIDAR_TOP * shape[0])
    scanlines = (rows >= top) & ((rows - top) % KITTI_SCANLINE_EVERY == 0)
    return scanlines[:, None] & (rng.random(shape) < KITTI_POINT_KEEP)


def write_toy_kitti(out_dir: str | Path, num: int = 8, resolution: int = 32, seed: int = 0,
                    tar: bool = False) -> ToyBenchmark:
    """Write ``num`` toy frames with ground truth (plus ``ceil(num / 4)`` without) as Marigold's KITTI
    Eigen test set (layout in the module docstring).

    Args:
        out_dir: created if missing; existing files of the same names are overwritten.
        num: frames with ground truth.
        resolution: the square render's side, stretched to 376×1241.
        seed: scene split and LiDAR pattern.
        tar: write ``kitti_eigen_split_test.tar`` instead of the directory.
    """
    _check(num, resolution)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    has_gt: list[bool] = []
    for k in range(num):
        has_gt.append(True)
        if k % KITTI_GT_EVERY == KITTI_GT_EVERY - 1 or k == num - 1:
            has_gt.append(False)
    _, images, depths = _render(len(has_gt), resolution, seed)
    rng = np.random.default_rng([seed, 3])
    drive = "toyworld_drive_0000_sync"
    sink, lines = _Sink(out / "kitti_eigen_split_test", tar), []
    try:
        for j, gt in enumerate(has_gt):
            rgb_rel = f"toyworld/{drive}/image_02/data/{j:010d}.png"
            sink.write(rgb_rel, png_bytes(np.ascontiguousarray(_stretch(images[j], KITTI_SHAPE))))
            depth_rel = "None"
            if gt:
                depth_rel = f"{drive}/proj_depth/groundtruth/image_02/{j:010d}.png"
                dense = _rescale(_stretch(depths[j], KITTI_SHAPE), KITTI_DEPTH_RANGE)
                sparse = np.where(_lidar_mask(KITTI_SHAPE, rng), np.round(dense * 256.0), 0).astype(np.uint16)
                sink.write(depth_rel, png_bytes(sparse))
            lines.append(f"{rgb_rel} {depth_rel} {KITTI_FOCAL}")
    finally:
        sink.close()
    filenames = out / "eigen_test_files_with_gt.txt"
    filenames.write_text("\n".join(lines) + "\n")
    return ToyBenchmark("kitti", sink.path, filenames, count=num, skipped=len(has_gt) - num)


ToyWriter = Callable[..., ToyBenchmark]
TOY_FORMATS: dict[str, ToyWriter] = {"nyu": write_toy_nyu, "kitti": write_toy_kitti}


def write_toy(kind: str, out_dir: str | Path, num: int = 8, resolution: int = 32, seed: int = 0,
              tar: bool = False) -> ToyBenchmark:
    """``TOY_FORMATS[kind](...)`` with a one-line error for an unknown ``kind``."""
    writer: Optional[ToyWriter] = TOY_FORMATS.get(kind)
    if writer is None:
        raise ValueError(f"unknown toy data format {kind!r}; valid: {', '.join(TOY_FORMATS)}")
    return writer(out_dir, num=num, resolution=resolution, seed=seed, tar=tar)
