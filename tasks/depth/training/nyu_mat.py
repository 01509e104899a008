"""NYU Depth v2 labeled subset: ``nyu_depth_v2_labeled.mat`` (MATLAB v7.3 = HDF5, read with h5py) and the official
``splits.mat`` (MATLAB 5, read with scipy; 795 train / 654 test, 1-based indices).

h5py sees MATLAB's arrays with the axes reversed: ``images`` is ``(1449, 3, 640, 480)`` uint8 = (N, C, W, H), and
``depths``/``rawDepths`` are ``(1449, 640, 480)`` float32 metres = (N, W, H). So image ``i`` is
``images[i].transpose(2, 1, 0)`` → ``(480, 640, 3)`` (BTS: ``image.T``) and its depth ``depths[i].T`` →
``(480, 640)``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import h5py
import numpy as np
import scipy.io
from torch.utils.data import Dataset

from tasks.depth.training.geometry import NYU_SIZE
from tasks.depth.training.io import SampleError
from tasks.depth.training.readers import finish_sample

DEPTH_KEYS = {"raw": "rawDepths", "filled": "depths"}  # raw: Kinect depth with holes (0); filled: in-painted
SPLIT_KEYS = {"train": "trainNdxs", "test": "testNdxs"}


def read_nyu_splits(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """``splits.mat`` → ``{"train": ..., "test": ...}`` 0-based int64 indices into the labeled set.

    The file stores ``trainNdxs`` (795, 1) and ``testNdxs`` (654, 1) uint16, 1-based (MATLAB). A v7.3 (HDF5)
    copy is read with h5py instead (scipy refuses those).

    Raises:
        FileNotFoundError: missing file. ValueError: a key missing, or an index < 1 (not 1-based).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"NYUv2 split file {path} does not exist (the official splits.mat)")
    try:
        raw = scipy.io.loadmat(path)
    except NotImplementedError:  # MATLAB v7.3: HDF5
        with h5py.File(path, "r") as f:
            raw = {k: np.asarray(f[k]) for k in SPLIT_KEYS.values() if k in f}
    out = {}
    for split, key in SPLIT_KEYS.items():
        if key not in raw:
            raise ValueError(f"{path} has no {key!r}; expected keys {list(SPLIT_KEYS.values())}")
        one_based = np.asarray(raw[key]).astype(np.int64).ravel()
        if one_based.size and one_based.min() < 1:
            raise ValueError(f"{path}: {key} holds index {one_based.min()}, but MATLAB indices are 1-based")
        out[split] = one_based - 1
    return out


class NyuLabeledMat(Dataset):
    """The labeled NYUv2 images of one official split, read lazily from the .mat (once opened per process).

    Args:
        mat_path: ``nyu_depth_v2_labeled.mat``.
        splits_path: ``splits.mat``; required unless ``split="all"``.
        split: ``"train"`` (795), ``"test"`` (654) or ``"all"`` (1449).
        depth: ``"raw"`` (``rawDepths``, holes invalid; default, what the loss should see) or ``"filled"``
            (``depths``, colorization in-painted: every pixel "valid").
        crop: ``"nyu_eigen"`` to AND the evaluation crop (rows 45:471, cols 41:601) into ``valid``, or None.
        size: ``(H, W)`` to resize to, or None (480×640).

    Items as the list readers': ``rgb``, ``depth``, ``valid`` (1e-3 < d < 10 m), ``name`` = ``"nyu_labeled/<1-based
    index>"`` and ``index`` (0-based position in the .mat).
    """

    min_depth, max_depth = 1e-3, 10.0

    def __init__(self, mat_path: str | os.PathLike, splits_path: str | os.PathLike | None = None, *,
                 split: str = "train", depth: str = "raw", crop: Optional[str] = None,
                 size: Optional[tuple[int, int]] = None) -> None:
        if depth not in DEPTH_KEYS:
            raise ValueError(f"unknown NYUv2 depth {depth!r}; valid: {list(DEPTH_KEYS)}")
        if crop not in (None, "nyu_eigen"):
            raise ValueError(f"unknown NYUv2 crop {crop!r}; valid: 'nyu_eigen' or None")
        self.mat_path, self.depth_key = Path(mat_path), DEPTH_KEYS[depth]
        if not self.mat_path.is_file():
            raise FileNotFoundError(f"NYUv2 labeled file {self.mat_path} does not exist")
        with h5py.File(self.mat_path, "r") as f:
            for key in ("images", self.depth_key):
                if key not in f:
                    raise ValueError(f"{self.mat_path} has no dataset {key!r} (is it nyu_depth_v2_labeled.mat?)")
            images, depths = f["images"], f[self.depth_key]
            if images.ndim != 4 or images.shape[1] != 3 or depths.shape != (images.shape[0], *images.shape[2:]):
                raise ValueError(f"{self.mat_path}: expected images (N, 3, W, H) and {self.depth_key} (N, W, H) "
                                 f"as h5py shows MATLAB's arrays, got {images.shape} and {depths.shape}")
            total, stored_hw = images.shape[0], images.shape[:1:-1]  # (N, 3, W, H) → (H, W)
        if crop == "nyu_eigen" and stored_hw != NYU_SIZE:
            raise ValueError(f"the NYUv2 Eigen crop is defined on 480×640 maps; {self.mat_path} stores "
                             f"{stored_hw[0]}×{stored_hw[1]}")
        if split == "all":
            self.indices = np.arange(total)
        elif split in SPLIT_KEYS:
            if splits_path is None:
                raise ValueError(f"split {split!r} needs splits_path (the official splits.mat)")
            self.indices = read_nyu_splits(splits_path)[split]
            if self.indices.size and self.indices.max() >= total:
                raise ValueError(f"{splits_path}: index {self.indices.max() + 1} (1-based) is past the "
                                 f"{total} images of {self.mat_path}")
        else:
            raise ValueError(f"unknown NYUv2 split {split!r}; valid: 'train', 'test', 'all'")
        self.crop, self.size = crop, (tuple(size) if size is not None else None)
        self._file: Optional[h5py.File] = None
        self._pid = -1

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_file": None, "_pid": -1}  # h5py handles must not cross processes

    def __len__(self) -> int:
        return len(self.indices)

    def _open(self) -> h5py.File:
        if self._file is None or self._pid != os.getpid():
            self._file, self._pid = h5py.File(self.mat_path, "r"), os.getpid()
        return self._file

    def __getitem__(self, index: int) -> dict[str, Any]:
        i = int(self.indices[index])
        name = f"nyu_labeled/{i + 1}"
        try:
            f = self._open()
            rgb = np.ascontiguousarray(f["images"][i].transpose(2, 1, 0))  # (3, W, H) → (H, W, 3)
            depth = np.ascontiguousarray(f[self.depth_key][i].T, dtype=np.float32)  # (W, H) → (H, W)
        except (OSError, KeyError, ValueError) as err:
            raise SampleError(f"{self.mat_path}[{i + 1}]", f"cannot read ({err.__class__.__name__}: {err})") from err
        if rgb.dtype != np.uint8:
            raise SampleError(f"{self.mat_path}[{i + 1}]", f"images are {rgb.dtype}, expected uint8")
        return finish_sample(rgb, np.nan_to_num(depth, nan=0.0, posinf=0.0, neginf=0.0),
                             depth_range=(self.min_depth, self.max_depth), crop=self.crop, size=self.size,
                             name=name, index=i)
