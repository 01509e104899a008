"""Training-set readers for list-file datasets: Hypersim (Marigold-preprocessed), Virtual KITTI 2, KITTI Eigen
(BTS list) and NYUv2 synchronised frames (BTS list).

Each item is a dict: ``rgb`` uint8 ``(3, H, W)``, ``depth`` float32 metres ``(1, H, W)`` (0 where the file has no
measurement), ``valid`` bool ``(1, H, W)`` (``min_depth < depth < max_depth``, strict, and inside the evaluation
crop when one is asked), ``name`` (the RGB path as listed) and, where the list has it, ``focal`` (pixels).
One small class per dataset holds only what differs: decoding scale, valid range, crops, resolution.
"""

from __future__ import annotations

import logging
import os
from typing import Any, ClassVar, Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from tasks.depth.training.geometry import crop_mask, kb_crop, resize_nearest, resize_rgb
from tasks.depth.training.io import FileSource, SampleError, decode_depth_png, decode_rgb, read_list

log = logging.getLogger(__name__)

NO_DEPTH = "None"  # depth column of list lines without ground truth (45 of the 697 KITTI Eigen test lines)


def depth_sample(rgb: np.ndarray, depth: np.ndarray, valid: np.ndarray, name: str, **extra: Any) -> dict[str, Any]:
    """The reader item: ``(H, W, 3)`` uint8, ``(H, W)`` float32 and ``(H, W)`` bool arrays → CHW tensors."""
    return {"rgb": torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))),
            "depth": torch.from_numpy(np.ascontiguousarray(depth, dtype=np.float32))[None],
            "valid": torch.from_numpy(np.ascontiguousarray(valid, dtype=bool))[None],
            "name": name, **extra}


def finish_sample(rgb: np.ndarray, depth: np.ndarray, *, depth_range: tuple[float, float], crop: Optional[str],
                  size: Optional[tuple[int, int]], name: str, **extra: Any) -> dict[str, Any]:
    """Valid mask (strict range, evaluation crop at the file's resolution), then the resize asked for
    (RGB by area/bilinear, depth and mask nearest-exact as Marigold resizes its training maps)."""
    valid = (depth > depth_range[0]) & (depth < depth_range[1])
    if crop is not None:
        valid &= crop_mask(depth.shape, crop)
    if size is not None and tuple(size) != depth.shape:
        rgb, depth, valid = resize_rgb(rgb, size), resize_nearest(depth, size), resize_nearest(valid, size)
    return depth_sample(rgb, depth, valid, name, **extra)


class ListDepthDataset(Dataset):
    """Base reader: a split file of ``rgb_path depth_path [focal]`` lines over a directory or a tar.

    Lines whose depth path is ``None`` are skipped and counted (``num_without_depth``). Paths are relative to
    ``root`` (RGB) and ``depth_root`` (depth; default ``root``); a leading ``/`` (BTS's NYUv2 lists) is dropped.

    Args:
        root: directory or ``.tar`` holding the RGB files (and the depth files unless ``depth_root``).
        filenames: the split file.
        depth_root: directory or ``.tar`` of the depth files (KITTI: ``data_depth_annotated``).
        size: ``(H, W)`` to resize every sample to, or None for the stored resolution (after any KB crop).
        crop: evaluation crop ANDed into ``valid`` (one of the class's ``crops``), or None (training).
        depth_range: ``(min, max)`` metres overriding the dataset's valid range.

    Raises:
        FileNotFoundError: root or list missing. ValueError: malformed list line, unknown crop.
        Items raise :class:`SampleError` naming the file when it is unreadable or corrupt.
    """

    units_per_metre: ClassVar[float]
    min_depth: ClassVar[float]
    max_depth: ClassVar[float]
    crops: ClassVar[tuple[str, ...]] = ()
    apply_kb_crop: ClassVar[bool] = False

    def __init__(self, root: str | os.PathLike, filenames: str | os.PathLike, *,
                 depth_root: str | os.PathLike | None = None, size: Optional[tuple[int, int]] = None,
                 crop: Optional[str] = None, depth_range: Optional[tuple[float, float]] = None) -> None:
        if crop is not None and crop not in self.crops:
            raise ValueError(f"{type(self).__name__}: unknown crop {crop!r}; valid: {list(self.crops)} or None")
        self.images = FileSource(root)
        self.depths = FileSource(depth_root) if depth_root is not None else self.images
        rows = read_list(filenames)
        self.rows = [r for r in rows if r[1] != NO_DEPTH]
        self.num_without_depth = len(rows) - len(self.rows)
        if self.num_without_depth:
            log.info("%s: %d of %d lines have no depth (None) and are skipped", filenames, self.num_without_depth,
                     len(rows))
        self.size, self.crop = (tuple(size) if size is not None else None), crop
        self.depth_range = tuple(depth_range) if depth_range is not None else (self.min_depth, self.max_depth)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = self.rows[index]
        rgb_rel, depth_rel = row[0].lstrip("/"), row[1].lstrip("/")
        rgb = decode_rgb(self.images.read(rgb_rel), self.images.path(rgb_rel))
        depth_name = self.depths.path(depth_rel)
        depth = decode_depth_png(self.depths.read(depth_rel), depth_name, self.units_per_metre)
        if rgb.shape[:2] != depth.shape:
            raise SampleError(depth_name, f"depth is {depth.shape[0]}×{depth.shape[1]}, its image "
                                          f"{self.images.path(rgb_rel)} is {rgb.shape[0]}×{rgb.shape[1]}")
        if self.apply_kb_crop:
            try:
                rgb, depth = kb_crop(rgb), kb_crop(depth)
            except ValueError as err:
                raise SampleError(depth_name, str(err)) from err
        extra = {"focal": float(row[2])} if len(row) > 2 else {}
        return finish_sample(rgb, depth, depth_range=self.depth_range, crop=self.crop, size=self.size,
                             name=row[0], **extra)


class HypersimDepth(ListDepthDataset):
    """Hypersim as Marigold preprocesses it (``script/depth/dataset_preprocess/hypersim``): ``<scene>/rgb_cam_XX_
    frNNNN.png`` (tone-mapped uint8) and ``depth_plane_cam_XX_frNNNN.png`` (planar depth, uint16 mm, 0 where
    ``render_entity_id == -1``); list lines ``rgb depth``. Valid 1e-5 < d < 65 m; resized from 768×1024 to
    480×640 by default (Marigold's ``resize_to_hw``)."""

    units_per_metre, min_depth, max_depth = 1000.0, 1e-5, 65.0

    def __init__(self, root: str | os.PathLike, filenames: str | os.PathLike, *,
                 size: Optional[tuple[int, int]] = (480, 640), **kwargs: Any) -> None:
        super().__init__(root, filenames, size=size, **kwargs)


class VirtualKittiDepth(ListDepthDataset):
    """Virtual KITTI 2: ``rgb/SceneXX/<variation>/frames/rgb/Camera_k/rgb_NNNNN.jpg`` and ``depth/.../depth_NNNNN.png``
    (uint16 cm; sky at 65535 = 655.35 m); valid 1e-5 < d < 80 m; KB crop to 352×1216 (Marigold's training
    config: ``kitti_bm_crop: true``, no evaluation crop)."""

    units_per_metre, min_depth, max_depth = 100.0, 1e-5, 80.0
    crops = ("garg", "eigen")
    apply_kb_crop = True


class KittiEigenTrain(ListDepthDataset):
    """KITTI Eigen split in BTS's list format ``<date>/<drive>_sync/image_02/data/<frame>.png
    <drive>_sync/proj_depth/groundtruth/image_02/<frame>.png <focal>``: RGB under the raw-data root, annotated
    depth (uint16 / 256, 0 = no LiDAR point) under ``depth_root``. Valid 1e-3 < d < 80 m; KB crop to 352×1216
    (as BTS trains, ``--do_kb_crop``); ``crop="garg"``/``"eigen"`` for evaluation masks."""

    units_per_metre, min_depth, max_depth = 256.0, 1e-3, 80.0
    crops = ("garg", "eigen")
    apply_kb_crop = True


class NyuSyncTrain(ListDepthDataset):
    """NYUv2 synchronised raw frames in BTS's list format ``/<scene>/rgb_NNNNN.jpg /<scene>/sync_depth_NNNNN.png
    518.8579`` (24,231 training lines), depth uint16 mm; valid 1e-3 < d < 10 m; ``crop="nyu_eigen"`` for the
    evaluation mask (rows 45:471, cols 41:601)."""

    units_per_metre, min_depth, max_depth = 1000.0, 1e-3, 10.0
    crops = ("nyu_eigen",)
