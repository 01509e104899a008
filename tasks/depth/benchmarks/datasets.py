"""The five zero-shot depth benchmarks as Marigold distributes them: per-dataset specs and one reader.

Each benchmark is a directory, or a ``.tar`` whose members are stored as ``./REL`` (as made by
``cd DIR && tar -cf ../x.tar .``), plus a filename list with one sample per line, paths relative to the
data root, separated by white space. What differs per dataset is data (:class:`BenchmarkSpec`); reading is
written once (:class:`BenchmarkData`).

===========  ==================================  =================  ===============  ==============================
name         list line                           depth decoding     valid (strict)   masks / crops
===========  ==================================  =================  ===============  ==============================
``nyu_v2``   ``rgb_N depth_N filled_N`` (.png)   uint16 PNG / 1000  1e-3 < d < 10    Eigen crop rows 45:471, cols
                                                                                     41:601 (480×640 only); GT is
                                                                                     the ``depth_`` (raw) file
``kitti``    ``rgb.png depth.png|None focal``    uint16 PNG / 256   1e-5 < d < 80    KB crop 352×1216 of RGB and
                                                                                     GT, then Eigen's fractions of
                                                                                     the crop; ``None`` skipped
``eth3d``    ``rgb.JPG depth``                   raw float32 of     1e-5 < d < inf   none; the LS fit uses ≤ 1024
                                                 the RGB's H×W,                      columns (``alignment_max_res``)
                                                 inf → 0
``scannet``  ``color/N.jpg depth/N.png``         uint16 PNG / 1000  1e-3 < d < 10    none
``diode``    ``rgb.png depth.npy mask.npy``      npy (metres)       the mask file    the mask file only; 0.6 / 350
                                                                                     only clip predictions
===========  ==================================  =================  ===============  ==============================

Sources: prs-eth/Marigold ``src/dataset/{base_depth,nyu,kitti,eth3d,scannet,diode}_dataset.py``,
``config/dataset_depth/data_*.yaml`` and ``script/depth/eval/*.sh`` (commit b1dffaa).
"""

from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np
from PIL import Image

KB_CROP_HEIGHT, KB_CROP_WIDTH = 352, 1216
NYU_EIGEN_CROP = (45, 471, 41, 601)  # rows [45, 471), cols [41, 601) of the 480×640 map
NYU_SHAPE = (480, 640)
KITTI_EIGEN_FRACTIONS = (0.3324324, 0.91351351, 0.0359477, 0.96405229)  # row0, row1, col0, col1 (× H, × W)
ETH3D_SHAPE = (4032, 6048)  # H × W of ETH3D's DSLR images and raw depth maps (for messages; the RGB decides)
MISSING_GT = "None"  # KITTI list lines without ground truth carry this in the depth column

Crop = tuple[int, int, int, int]
DepthDecoder = Callable[[bytes, tuple[int, int], str], np.ndarray]


# --------------------------------------------------------------------------- decoding and crops


def _decode_png(raw: bytes, rgb_shape: tuple[int, int], rel: str, *, divisor: float) -> np.ndarray:
    """uint16 PNG → ``(H, W)`` float32 metres (``value / divisor``; 0 stays 0 = no measurement)."""
    array = np.asarray(Image.open(io.BytesIO(raw)))
    if array.ndim != 2:
        raise ValueError(f"depth PNG {rel} has shape {array.shape}; expected a single-channel uint16 image")
    return (array / divisor).astype(np.float32)


def decode_eth3d_raw(raw: bytes, rgb_shape: tuple[int, int], rel: str) -> np.ndarray:
    """ETH3D's header-less row-major float32 depth map → ``(H, W)`` float32 metres, ``+inf`` (no
    measurement) → 0. The map has the RGB image's size (4032×6048 in the real data)."""
    h, w = rgb_shape
    if len(raw) != 4 * h * w:
        raise ValueError(f"ETH3D depth {rel} has {len(raw)} bytes; its RGB is {h}×{w}, so 4·{h}·{w} = "
                         f"{4 * h * w} bytes of float32 were expected (real ETH3D: {ETH3D_SHAPE[0]}×{ETH3D_SHAPE[1]})")
    depth = np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(h, w)
    depth[depth == np.inf] = 0.0
    return depth


def _load_npy(raw: bytes, rel: str) -> np.ndarray:
    array = np.load(io.BytesIO(raw), allow_pickle=False).squeeze()
    if array.ndim != 2:
        raise ValueError(f"{rel} holds an array of shape {array.shape}; expected (H, W) or (H, W, 1)")
    return array


def decode_npy(raw: bytes, rgb_shape: tuple[int, int], rel: str) -> np.ndarray:
    """DIODE ``*_depth.npy`` (``(H, W, 1)`` metres) → ``(H, W)`` float32."""
    return _load_npy(raw, rel).astype(np.float32)


def decode_png_mm(raw: bytes, rgb_shape: tuple[int, int], rel: str) -> np.ndarray:
    """uint16 PNG in millimetres (NYUv2, ScanNet) → metres."""
    return _decode_png(raw, rgb_shape, rel, divisor=1000.0)


def decode_png_kitti(raw: bytes, rgb_shape: tuple[int, int], rel: str) -> np.ndarray:
    """uint16 PNG in 1/256 m (KITTI depth benchmark) → metres."""
    return _decode_png(raw, rgb_shape, rel, divisor=256.0)


def kitti_benchmark_crop(array: np.ndarray) -> np.ndarray:
    """The KITTI benchmark crop of an ``(H, W)`` or ``(H, W, C)`` array: the bottom 352 rows and the
    centred 1216 columns (``top = H − 352``, ``left = (W − 1216) // 2``)."""
    h, w = array.shape[:2]
    if h < KB_CROP_HEIGHT or w < KB_CROP_WIDTH:
        raise ValueError(f"the KITTI benchmark crop needs images of at least {KB_CROP_HEIGHT}×{KB_CROP_WIDTH}, "
                         f"got {h}×{w}")
    top, left = h - KB_CROP_HEIGHT, (w - KB_CROP_WIDTH) // 2
    return array[top:top + KB_CROP_HEIGHT, left:left + KB_CROP_WIDTH]


def nyu_eigen_crop(shape: tuple[int, int]) -> Crop:
    """Eigen's evaluation crop of NYUv2 (defined on 480×640 maps only)."""
    if tuple(shape) != NYU_SHAPE:
        raise ValueError(f"NYUv2's Eigen crop (rows 45:471, cols 41:601) is defined on {NYU_SHAPE[0]}×{NYU_SHAPE[1]} "
                         f"depth maps, got {shape[0]}×{shape[1]}")
    return NYU_EIGEN_CROP


def kitti_eigen_crop(shape: tuple[int, int]) -> Crop:
    """Eigen's crop as fractions of the (KB-cropped) map: rows ``[int(0.3324324·H), int(0.91351351·H))``,
    cols ``[int(0.0359477·W), int(0.96405229·W))``; on 352×1216: rows 117:321, cols 43:1172."""
    h, w = shape
    r0, r1, c0, c1 = KITTI_EIGEN_FRACTIONS
    return int(r0 * h), int(r1 * h), int(c0 * w), int(c1 * w)


#: Garg's crop (ECCV 2016) as fractions of the map: the in-domain KITTI protocol (BTS, AdaBins, the paper's Table 5).
KITTI_GARG_FRACTIONS = (0.40810811, 0.99189189, 0.03594771, 0.96405229)


def kitti_garg_crop(shape: tuple[int, int]) -> Crop:
    """Garg's crop as fractions of the (KB-cropped) map: rows ``[int(0.40810811·H), int(0.99189189·H))``,
    cols ``[int(0.03594771·W), int(0.96405229·W))``; on 352×1216: rows 143:349, cols 43:1172."""
    h, w = shape
    r0, r1, c0, c1 = KITTI_GARG_FRACTIONS
    return int(r0 * h), int(r1 * h), int(c0 * w), int(c1 * w)


# --------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class BenchmarkSpec:
    """What one evaluation dataset does differently.

    Attributes:
        name: key in :data:`BENCHMARKS`.
        min_depth, max_depth: metres; ground truth is valid where ``min_depth < d < max_depth`` and
            aligned predictions are clipped to ``[min_depth, max_depth]``.
        decode_depth: ``(bytes, rgb (H, W), rel path) -> (H, W)`` float32 metres.
        columns: fields a list line needs (rgb, depth, then filled / focal / mask).
        mask_column: list column of a boolean mask file that replaces the range test (DIODE), else None.
        eval_crop: ``(H, W) -> (row0, row1, col0, col1)`` region the evaluation keeps, else None.
        kb_crop: apply :func:`kitti_benchmark_crop` to RGB and ground truth before anything else.
        skip_missing_gt: list lines whose depth field is ``None`` are skipped (and counted).
        alignment_max_res: Marigold fits the least-squares alignment on a subsample of at most this many
            pixels per side (``--alignment_max_res``; see
            :func:`~tasks.depth.benchmarks.alignment.alignment_subsample`).
        marigold_data, marigold_list, marigold_count: Marigold's archive, list and evaluated sample count.
    """

    name: str
    min_depth: float
    max_depth: float
    decode_depth: DepthDecoder
    columns: int
    marigold_data: str
    marigold_list: str
    marigold_count: int
    mask_column: Optional[int] = None
    eval_crop: Optional[Callable[[tuple[int, int]], Crop]] = None
    kb_crop: bool = False
    skip_missing_gt: bool = False
    alignment_max_res: Optional[int] = None


BENCHMARKS: dict[str, BenchmarkSpec] = {
    "nyu_v2": BenchmarkSpec(
        "nyu_v2", 1e-3, 10.0, decode_png_mm, 3, "nyuv2/nyu_labeled_extracted.tar",
        "data_split/nyu_depth/labeled/filename_list_test.txt", 654, eval_crop=nyu_eigen_crop),
    "kitti": BenchmarkSpec(
        "kitti", 1e-5, 80.0, decode_png_kitti, 2, "kitti/kitti_eigen_split_test.tar",
        "data_split/kitti_depth/eigen_test_files_with_gt.txt", 652, eval_crop=kitti_eigen_crop, kb_crop=True,
        skip_missing_gt=True),
    # In-domain KITTI (paper Table 5, as BTS / AdaBins score it): 1e-3–80 m and Garg's crop, here taken on the
    # KB-cropped 352×1216 map like Marigold's crops (BTS takes the fractions of the full frame after padding).
    "kitti_garg": BenchmarkSpec(
        "kitti_garg", 1e-3, 80.0, decode_png_kitti, 2, "kitti/kitti_eigen_split_test.tar",
        "data_split/kitti_depth/eigen_test_files_with_gt.txt", 652, eval_crop=kitti_garg_crop, kb_crop=True,
        skip_missing_gt=True),
    "eth3d": BenchmarkSpec(
        "eth3d", 1e-5, float("inf"), decode_eth3d_raw, 2, "eth3d/eth3d.tar",
        "data_split/eth3d_depth/eth3d_filename_list.txt", 454, alignment_max_res=1024),
    "scannet": BenchmarkSpec(
        "scannet", 1e-3, 10.0, decode_png_mm, 2, "scannet/scannet_val_sampled_800_1.tar",
        "data_split/scannet_depth/scannet_val_sampled_list_800_1.txt", 800),
    "diode": BenchmarkSpec(
        "diode", 0.6, 350.0, decode_npy, 3, "diode/diode_val.tar",
        "data_split/diode_depth/diode_val_all_filename_list.txt", 771, mask_column=2),
}


def benchmark_spec(name: str) -> BenchmarkSpec:
    """The spec of ``name`` (one of :data:`BENCHMARKS`)."""
    if name not in BENCHMARKS:
        raise ValueError(f"unknown depth benchmark {name!r}; valid: {', '.join(BENCHMARKS)}")
    return BENCHMARKS[name]


# --------------------------------------------------------------------------- files


class DataRoot:
    """Files under a benchmark root: a directory, or a tar whose members are stored as ``./REL``.

    Members stored without the ``./`` prefix are found too. Use as a context manager (closes the tar).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._tar: Optional[tarfile.TarFile] = None
        if self.root.is_dir():
            return
        if not self.root.is_file():
            raise FileNotFoundError(f"benchmark data {self.root} does not exist (give a directory or a .tar)")
        if not tarfile.is_tarfile(self.root):
            raise ValueError(f"benchmark data {self.root} is neither a directory nor a tar archive")
        self._tar = tarfile.open(self.root)

    @property
    def is_tar(self) -> bool:
        return self._tar is not None

    def read(self, rel: str) -> bytes:
        """The bytes of the file at ``rel`` (relative to the root)."""
        if self._tar is None:
            path = self.root / rel
            if not path.is_file():
                raise FileNotFoundError(f"{path} does not exist (listed as {rel!r})")
            return path.read_bytes()
        for member in ("./" + rel, rel):
            try:
                handle = self._tar.extractfile(member)
            except KeyError:
                continue
            if handle is not None:
                return handle.read()
        raise FileNotFoundError(f"{self.root} has no member ./{rel}")

    def close(self) -> None:
        if self._tar is not None:
            self._tar.close()
            self._tar = None

    def __enter__(self) -> "DataRoot":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_filename_list(spec: BenchmarkSpec, filenames: str | Path) -> tuple[list[list[str]], int]:
    """Lines of a Marigold filename list → ``(entries, skipped)``.

    Each entry is the line's white-space separated fields; blank lines are ignored; lines whose depth
    field is ``None`` are skipped and counted where the dataset allows it (KITTI: 45 of 697).
    """
    path = Path(filenames)
    if not path.is_file():
        raise FileNotFoundError(f"filename list {path} does not exist")
    entries, skipped = [], 0
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if spec.skip_missing_gt and len(fields) > 1 and fields[1] == MISSING_GT:
            skipped += 1
            continue
        if len(fields) < spec.columns:
            raise ValueError(f"{path}:{number}: {spec.name} lines need {spec.columns} fields, got {line!r}")
        entries.append(fields)
    return entries, skipped


# --------------------------------------------------------------------------- samples


@dataclass
class BenchmarkSample:
    """One evaluation sample as the protocol presents it.

    Attributes:
        rgb_path: the RGB file as listed (relative to the data root); names the sample.
        rgb: ``(H, W, 3)`` uint8, the model's input (after KITTI's benchmark crop).
        depth: ``(H, W)`` float32 ground truth in metres (0 = no measurement), same crop.
        valid: ``(H, W)`` bool, the pixels the alignment and the metrics use (range, crops, mask file).
    """

    rgb_path: str
    rgb: np.ndarray
    depth: np.ndarray
    valid: np.ndarray


def _read_rgb(raw: bytes) -> np.ndarray:
    # No EXIF transpose: the depth maps are stored in the files' pixel order.
    return np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"))


def load_sample(spec: BenchmarkSpec, root: DataRoot, entry: list[str]) -> BenchmarkSample:
    """Read and decode one filename-list entry (see :class:`BenchmarkSample`)."""
    rgb_rel, depth_rel = entry[0], entry[1]
    rgb = _read_rgb(root.read(rgb_rel))
    depth = spec.decode_depth(root.read(depth_rel), rgb.shape[:2], depth_rel)
    if spec.mask_column is not None:
        mask_rel = entry[spec.mask_column]
        valid = _load_npy(root.read(mask_rel), mask_rel).astype(bool)
        if valid.shape != depth.shape:
            raise ValueError(f"mask {mask_rel} is {valid.shape[0]}×{valid.shape[1]}, its depth map "
                             f"{depth.shape[0]}×{depth.shape[1]}")
    else:
        valid = (depth > spec.min_depth) & (depth < spec.max_depth)
    if spec.kb_crop:
        rgb, depth, valid = kitti_benchmark_crop(rgb), kitti_benchmark_crop(depth), kitti_benchmark_crop(valid)
    if spec.eval_crop is not None:
        r0, r1, c0, c1 = spec.eval_crop(depth.shape)
        region = np.zeros_like(valid)
        region[r0:r1, c0:c1] = True
        valid = valid & region
    return BenchmarkSample(rgb_path=rgb_rel, rgb=np.ascontiguousarray(rgb), depth=np.ascontiguousarray(depth),
                           valid=np.ascontiguousarray(valid))


class BenchmarkData:
    """One benchmark's samples, read lazily in list order.

    Args:
        name: one of :data:`BENCHMARKS` (``nyu_v2, kitti, eth3d, scannet, diode``).
        data: the data root, a directory or a ``.tar`` with ``./``-prefixed members.
        filenames: the filename list in Marigold's format.

    Attributes:
        spec: the dataset's :class:`BenchmarkSpec`.
        entries: the list's usable lines (split into fields).
        skipped: lines skipped for missing ground truth (KITTI's ``None``).
    """

    def __init__(self, name: str, data: str | Path, filenames: str | Path) -> None:
        self.spec = benchmark_spec(name)
        self.entries, self.skipped = read_filename_list(self.spec, filenames)
        self.root = DataRoot(data)

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> BenchmarkSample:
        return load_sample(self.spec, self.root, self.entries[index])

    def __iter__(self) -> Iterator[BenchmarkSample]:
        for index in range(len(self)):
            yield self[index]

    def close(self) -> None:
        self.root.close()

    def __enter__(self) -> "BenchmarkData":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
