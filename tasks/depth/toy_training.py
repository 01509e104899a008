"""Toy training sets written in the real formats (Hypersim as Marigold preprocesses it, Virtual KITTI 2, KITTI Eigen
with BTS lists, NYUv2 labeled .mat + splits.mat, NYUv2 sync frames), so every reader and the whole training
pipeline run end to end on a CPU without the real data.

Scenes come from the toy world (``tasks.toyworld``): rendered square, resized to the format's size, depth (0.8–4 m)
scaled into the dataset's plausible range and varied per image; some pixels are made invalid the way the dataset
marks them (holes at 0, sky at the format's maximum, sparse LiDAR), so masks are exercised.

Every writer: ``write_toy_<format>(out_dir, *, num, resolution=(H, W), seed=0) -> dict`` with ``format``, ``num``,
``files`` (what was written, relative to ``out_dir``) and ``reader_kwargs`` for the matching reader
(:func:`open_toy`); the registry is ``TOY_TRAINING_FORMATS``.
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path
from typing import Any, Callable

import cv2
import h5py
import numpy as np
import scipy.io
from PIL import Image
from torch.utils.data import Dataset

from tasks.depth.training import HypersimDepth, KittiEigenTrain, NyuLabeledMat, NyuSyncTrain, VirtualKittiDepth
from tasks.toyworld.dataset import make_split, render_batch

RENDER_SIDE = 64  # toy scenes are rendered at this square size, then resized to the format's resolution
KITTI_FOCAL, NYU_FOCAL = 721.5377, 518.8579  # focal lengths (pixels) as BTS's list files carry them


def toy_scenes(num: int, resolution: tuple[int, int], seed: int, depth_scale: float
               ) -> tuple[np.ndarray, np.ndarray, np.random.Generator]:
    """``(num, H, W, 3)`` uint8 images and ``(num, H, W)`` float64 depths (toy depths × ``depth_scale`` × a per-image
    factor in [0.8, 1.25]), plus the generator for the invalid-pixel draws."""
    if num < 1 or len(resolution) != 2 or min(resolution) < 8:
        raise ValueError(f"need num >= 1 and a resolution (H, W) of at least 8×8, got {num} and {resolution}")
    height, width = resolution
    examples, _ = make_split(num, 0, seed)
    images, depths = render_batch(examples, RENDER_SIDE)
    rng = np.random.default_rng([seed, 7])
    factors = rng.uniform(0.8, 1.25, size=num) * depth_scale
    rgb = np.stack([cv2.resize(im, (width, height), interpolation=cv2.INTER_LINEAR) for im in images])
    depth = np.stack([cv2.resize(d, (width, height), interpolation=cv2.INTER_LINEAR) for d in depths])
    return rgb, depth.astype(np.float64) * factors[:, None, None], rng


def holes(rng: np.random.Generator, shape: tuple[int, int], count: int = 3, extent: float = 0.15) -> np.ndarray:
    """``(H, W)`` bool: ``count`` random rectangles of up to ``extent`` of each side (missing measurements)."""
    mask = np.zeros(shape, dtype=bool)
    for _ in range(count):
        h, w = (max(1, int(rng.uniform(0.3, 1.0) * extent * s)) for s in shape)
        top, left = int(rng.integers(0, shape[0] - h + 1)), int(rng.integers(0, shape[1] - w + 1))
        mask[top:top + h, left:left + w] = True
    return mask


def _save_png16(path: Path, metres: np.ndarray, units_per_metre: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(np.round(metres * units_per_metre), 0, 65535).astype(np.uint16)).save(path)


def _save_rgb(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path, **({"quality": 95} if path.suffix == ".jpg" else {}))


def _write_list(path: Path, lines: list[str]) -> None:
    path.write_text("\n".join(lines))  # no final newline, as Marigold's and BTS's lists


def write_toy_hypersim(out_dir: str | os.PathLike, *, num: int = 8, resolution: tuple[int, int] = (768, 1024),
                       seed: int = 0, split: str = "train", tar: bool = False) -> dict[str, Any]:
    """Hypersim in Marigold's preprocessed layout: ``<split>/ai_XXX_YYY/rgb_cam_00_frNNNN.png`` (uint8 RGB),
    ``depth_plane_cam_00_frNNNN.png`` (uint16 mm; 0 in holes = ``render_entity_id == -1``; a few pixels at
    65535 mm, past the 65 m cap) and ``<split>/filename_list_<split>.txt``; with ``tar`` also
    ``hypersim_processed_<split>.tar`` (members ``./ai_...``, as ``cd <split> && tar -cf ../x.tar .``)."""
    out, split_dir = Path(out_dir), Path(out_dir) / split
    rgb, depth, rng = toy_scenes(num, resolution, seed, depth_scale=1.5)
    lines = []
    for i in range(num):
        scene, frame = f"ai_001_{1 + i // 4:03d}", i % 4  # Hypersim names: ai_<volume>_<scene>
        rgb_rel, depth_rel = f"{scene}/rgb_cam_00_fr{frame:04d}.png", f"{scene}/depth_plane_cam_00_fr{frame:04d}.png"
        d = np.where(holes(rng, depth[i].shape), 0.0, depth[i])
        d[holes(rng, d.shape, count=1, extent=0.05)] = 65.535
        _save_rgb(split_dir / rgb_rel, rgb[i])
        _save_png16(split_dir / depth_rel, d, 1000.0)
        lines.append(f"{rgb_rel} {depth_rel}")
    listing = split_dir / f"filename_list_{split}.txt"
    _write_list(listing, lines)
    info = {"format": "hypersim", "num": num, "files": [str(listing.relative_to(out))],
            "reader_kwargs": {"root": str(split_dir), "filenames": str(listing), "size": list(resolution)}}
    if tar:
        archive = out / f"hypersim_processed_{split}.tar"
        with tarfile.open(archive, "w") as t:
            for line in lines:
                for rel in line.split():
                    t.add(split_dir / rel, arcname="./" + rel)
        info["files"].append(archive.name)
        info["tar_reader_kwargs"] = {**info["reader_kwargs"], "root": str(archive)}
    return info


def write_toy_vkitti(out_dir: str | os.PathLike, *, num: int = 4, resolution: tuple[int, int] = (375, 1242),
                     seed: int = 0) -> dict[str, Any]:
    """Virtual KITTI 2: ``vkitti/rgb/Scene02/clone/frames/rgb/Camera_0/rgb_NNNNN.jpg`` and
    ``vkitti/depth/Scene02/clone/frames/depth/Camera_0/depth_NNNNN.png`` (uint16 cm, the top fifth "sky" at
    65535 = 655.35 m, past the 80 m cap), list ``vkitti_train.txt``. Resolution at least 352×1216 (KB crop)."""
    out, root = Path(out_dir), Path(out_dir) / "vkitti"
    rgb, depth, _ = toy_scenes(num, resolution, seed, depth_scale=12.0)
    lines = []
    for i in range(num):
        camera = f"Camera_{i % 2}"
        rgb_rel = f"rgb/Scene02/clone/frames/rgb/{camera}/rgb_{i:05d}.jpg"
        depth_rel = f"depth/Scene02/clone/frames/depth/{camera}/depth_{i:05d}.png"
        d = depth[i].copy()
        d[: resolution[0] // 5] = 655.35
        _save_rgb(root / rgb_rel, rgb[i])
        _save_png16(root / depth_rel, d, 100.0)
        lines.append(f"{rgb_rel} {depth_rel}")
    _write_list(out / "vkitti_train.txt", lines)
    return {"format": "vkitti", "num": num, "files": ["vkitti", "vkitti_train.txt"],
            "reader_kwargs": {"root": str(root), "filenames": str(out / "vkitti_train.txt")}}


def write_toy_kitti_train(out_dir: str | os.PathLike, *, num: int = 4, resolution: tuple[int, int] = (375, 1242),
                          seed: int = 0) -> dict[str, Any]:
    """KITTI Eigen training data as BTS reads it: raw RGB ``kitti_raw/2011_09_26/2011_09_26_drive_0001_sync/image_02/
    data/NNNNNNNNNN.png``, annotated depth ``data_depth_annotated/2011_09_26_drive_0001_sync/proj_depth/groundtruth/
    image_02/NNNNNNNNNN.png`` (uint16 / 256, sparse "LiDAR": no points in the top 35 % and 70 % of the rest empty),
    list ``eigen_train_files_with_gt.txt`` (``image depth focal``) with one more line whose depth is ``None``."""
    out, raw, annotated = Path(out_dir), Path(out_dir) / "kitti_raw", Path(out_dir) / "data_depth_annotated"
    rgb, depth, rng = toy_scenes(num + 1, resolution, seed, depth_scale=12.0)
    drive, lines = "2011_09_26_drive_0001_sync", []
    for i in range(num + 1):
        rgb_rel = f"2011_09_26/{drive}/image_02/data/{i:010d}.png"
        _save_rgb(raw / rgb_rel, rgb[i])
        if i == num:  # a frame without ground truth, as 45 lines of the Eigen test list
            lines.append(f"{rgb_rel} None {KITTI_FOCAL}")
            continue
        depth_rel = f"{drive}/proj_depth/groundtruth/image_02/{i:010d}.png"
        empty = rng.random(resolution) < 0.7
        empty[: int(0.35 * resolution[0])] = True
        _save_png16(annotated / depth_rel, np.where(empty, 0.0, depth[i]), 256.0)
        lines.append(f"{rgb_rel} {depth_rel} {KITTI_FOCAL}")
    _write_list(out / "eigen_train_files_with_gt.txt", lines)
    return {"format": "kitti_train", "num": num, "num_without_depth": 1,
            "files": ["kitti_raw", "data_depth_annotated", "eigen_train_files_with_gt.txt"],
            "reader_kwargs": {"root": str(raw), "filenames": str(out / "eigen_train_files_with_gt.txt"),
                              "depth_root": str(annotated)}}


def _matlab_header(path: Path) -> None:
    """The 128-byte MATLAB 7.3 header in the HDF5 user block: text, subsystem offset, version 0x0200, 'IM'."""
    text = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Thu Jan  1 00:00:00 2015 HDF5 schema 1.00 ."
    with open(path, "r+b") as f:
        f.write(text.ljust(116, b" ") + b" " * 8 + b"\x00\x02" + b"IM")


def _cell_of_strings(f: h5py.File, name: str, values: list[str]) -> None:
    """A MATLAB cell array of char rows: a (1, N) dataset of references into ``#refs#`` (uint16 characters)."""
    refs = f.require_group("#refs#")
    out = f.create_dataset(name, (1, len(values)), dtype=h5py.ref_dtype)
    for i, value in enumerate(values):
        chars = refs.create_dataset(f"{name}_{i}", data=np.array([[ord(c)] for c in value], dtype=np.uint16))
        chars.attrs["MATLAB_class"] = np.bytes_("char")
        out[0, i] = chars.ref
    out.attrs["MATLAB_class"] = np.bytes_("cell")


def write_toy_nyu_mat(out_dir: str | os.PathLike, *, num: int = 6, resolution: tuple[int, int] = (480, 640),
                      seed: int = 0) -> dict[str, Any]:
    """``nyu_depth_v2_labeled.mat`` (v7.3: HDF5 with MATLAB's 512-byte user block) in h5py's axis order —
    ``images`` (N, 3, W, H) uint8, ``depths`` (N, W, H) float32 filled, ``rawDepths`` with holes at 0,
    ``sceneTypes``/``scenes`` cells — and ``splits.mat`` (MATLAB 5) with 1-based ``trainNdxs``/``testNdxs`` (k, 1)
    uint16 (test: about 45 %, as 654 of 1449)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rgb, depth, rng = toy_scenes(num, resolution, seed, depth_scale=1.5)
    raw = np.stack([np.where(holes(rng, d.shape), 0.0, d) for d in depth])
    mat = out / "nyu_depth_v2_labeled.mat"
    with h5py.File(mat, "w", userblock_size=512) as f:
        f.create_dataset("images", data=rgb.transpose(0, 3, 2, 1), compression="gzip")  # (N, H, W, 3) → (N, 3, W, H)
        f.create_dataset("depths", data=depth.transpose(0, 2, 1).astype(np.float32), compression="gzip")
        f.create_dataset("rawDepths", data=raw.transpose(0, 2, 1).astype(np.float32), compression="gzip")
        scenes = [f"kitchen_{i // 2:04d}" for i in range(num)]
        _cell_of_strings(f, "sceneTypes", ["kitchen"] * num)
        _cell_of_strings(f, "scenes", scenes)
    _matlab_header(mat)
    order = rng.permutation(num) + 1  # 1-based
    num_test = max(1, round(0.45 * num)) if num > 1 else 0
    test, train = np.sort(order[:num_test]), np.sort(order[num_test:])
    splits = out / "splits.mat"
    scipy.io.savemat(splits, {"trainNdxs": train.astype(np.uint16)[:, None],
                              "testNdxs": test.astype(np.uint16)[:, None]})
    return {"format": "nyu_mat", "num": num, "num_train": len(train), "num_test": len(test),
            "files": [mat.name, splits.name],
            "reader_kwargs": {"mat_path": str(mat), "splits_path": str(splits), "split": "train"}}


def write_toy_nyu_sync(out_dir: str | os.PathLike, *, num: int = 6, resolution: tuple[int, int] = (480, 640),
                       seed: int = 0) -> dict[str, Any]:
    """NYUv2 synchronised frames in BTS's layout: ``sync/<scene>/rgb_NNNNN.jpg``, ``sync/<scene>/sync_depth_NNNNN.png``
    (uint16 mm, holes at 0) and ``nyudepthv2_train_files_with_gt.txt``
    (``/scene/rgb... /scene/sync_depth... 518.8579``)."""
    out, root = Path(out_dir), Path(out_dir) / "sync"
    rgb, depth, rng = toy_scenes(num, resolution, seed, depth_scale=1.5)
    lines = []
    for i in range(num):
        scene = f"living_room_{i // 3:04d}"
        rgb_rel, depth_rel = f"{scene}/rgb_{i:05d}.jpg", f"{scene}/sync_depth_{i:05d}.png"
        _save_rgb(root / rgb_rel, rgb[i])
        _save_png16(root / depth_rel, np.where(holes(rng, depth[i].shape), 0.0, depth[i]), 1000.0)
        lines.append(f"/{rgb_rel} /{depth_rel} {NYU_FOCAL}")
    _write_list(out / "nyudepthv2_train_files_with_gt.txt", lines)
    return {"format": "nyu_sync", "num": num, "files": ["sync", "nyudepthv2_train_files_with_gt.txt"],
            "reader_kwargs": {"root": str(root), "filenames": str(out / "nyudepthv2_train_files_with_gt.txt")}}


TOY_TRAINING_FORMATS: dict[str, Callable[..., dict[str, Any]]] = {
    "hypersim": write_toy_hypersim,
    "vkitti": write_toy_vkitti,
    "kitti_train": write_toy_kitti_train,
    "nyu_mat": write_toy_nyu_mat,
    "nyu_sync": write_toy_nyu_sync,
}
TOY_READERS: dict[str, type[Dataset]] = {
    "hypersim": HypersimDepth, "vkitti": VirtualKittiDepth, "kitti_train": KittiEigenTrain,
    "nyu_mat": NyuLabeledMat, "nyu_sync": NyuSyncTrain,
}


def write_toy_training_data(name: str, out_dir: str | os.PathLike, **kwargs: Any) -> dict[str, Any]:
    """Writes the toy set ``name`` (a key of ``TOY_TRAINING_FORMATS``) under ``out_dir``."""
    if name not in TOY_TRAINING_FORMATS:
        raise ValueError(f"unknown toy training format {name!r}; valid: {sorted(TOY_TRAINING_FORMATS)}")
    return TOY_TRAINING_FORMATS[name](out_dir, **kwargs)


def open_toy(info: dict[str, Any], **overrides: Any) -> Dataset:
    """The reader of a toy set from its writer's ``info`` (``reader_kwargs`` updated by ``overrides``)."""
    kwargs = {**info["reader_kwargs"], **overrides}
    if "size" in kwargs and kwargs["size"] is not None:
        kwargs["size"] = tuple(kwargs["size"])
    return TOY_READERS[info["format"]](**kwargs)
