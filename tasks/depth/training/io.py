"""File access and decoding shared by the training-data readers: list files, directories or tars, PNG/JPEG.

Readers name every file they fail on: :class:`SampleError` carries the path, and :class:`SkipBudget` turns too
many of them into one error instead of a crash on the first bad file.
"""

from __future__ import annotations

import io
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image, UnidentifiedImageError


class SampleError(ValueError):
    """One training sample can't be used: unreadable or corrupt file, or no valid depth pixel.

    Attributes:
        path: the offending file (or sample name).
        reason: what went wrong.
    """

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = str(path), reason


@dataclass
class SkipBudget:
    """Counts the distinct files skipped; past ``max_skipped`` of them a ValueError names the last one.

    A file that fails again (next epoch) is not counted twice. The count is per process: each DataLoader worker
    holds its own copy of the dataset and so its own budget.
    """

    max_skipped: int = 100
    skipped: dict[str, str] = field(default_factory=dict)

    def record(self, error: SampleError) -> None:
        """Counts ``error``'s file; raises once more than ``max_skipped`` distinct files failed."""
        self.skipped[error.path] = error.reason
        if len(self.skipped) > self.max_skipped:
            raise ValueError(f"{len(self.skipped)} unreadable training samples, more than the budget "
                             f"max_skipped={self.max_skipped}; the last: {error.path}: {error.reason}")


class FileSource:
    """Files under a directory, or members of a tar archive (Marigold packs each dataset as one ``.tar``).

    Marigold's tars are made with ``cd DIR && tar -cf ../x.tar .`` and read as ``"./" + relative_path``;
    members stored without the ``./`` prefix are found as well. The tar is opened lazily, once per process,
    so the dataset can be handed to DataLoader workers.
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        if not self.root.exists():
            raise FileNotFoundError(f"dataset root {self.root} does not exist (a directory or a .tar file)")
        self.is_tar = self.root.is_file()
        if self.is_tar and not tarfile.is_tarfile(self.root):
            raise ValueError(f"dataset root {self.root} is a file but not a tar archive")
        self._tar: Optional[tarfile.TarFile] = None
        self._tar_pid = -1

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_tar": None, "_tar_pid": -1}  # an open tar must not travel to workers

    def path(self, rel: str) -> str:
        """Display path of ``rel`` (for error messages)."""
        return f"{self.root}:{rel}" if self.is_tar else str(self.root / rel)

    def read(self, rel: str) -> bytes:
        """The bytes of ``rel``; :class:`SampleError` when missing or unreadable."""
        try:
            if not self.is_tar:
                return (self.root / rel).read_bytes()
            if self._tar is None or self._tar_pid != os.getpid():
                self._tar, self._tar_pid = tarfile.open(self.root), os.getpid()
            for name in ("./" + rel, rel):
                try:
                    member = self._tar.extractfile(name)
                except KeyError:
                    continue
                if member is not None:
                    return member.read()
            raise FileNotFoundError("no such member")
        except (OSError, tarfile.TarError) as err:
            raise SampleError(self.path(rel), f"cannot read ({err.__class__.__name__}: {err})") from err


def read_list(path: str | os.PathLike, *, min_columns: int = 2) -> list[list[str]]:
    """Whitespace-separated lines of a split file (blank lines dropped).

    Raises:
        FileNotFoundError: when the list is missing.
        ValueError: naming the file and line when a line has fewer than ``min_columns`` fields.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"file list {path} does not exist")
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < min_columns:
            raise ValueError(f"{path}:{number}: expected at least {min_columns} columns "
                             f"(rgb path, depth path, ...), got {line!r}")
        rows.append(fields)
    return rows


def _open_image(data: bytes, name: str) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise SampleError(name, f"not a readable image ({err.__class__.__name__}: {err})") from err
    return image


def decode_rgb(data: bytes, name: str) -> np.ndarray:
    """PNG/JPEG bytes → ``(H, W, 3)`` uint8 (8-bit grey/palette/RGBA images are converted to RGB)."""
    image = _open_image(data, name)
    if image.mode not in ("RGB", "RGBA", "L", "P", "LA", "CMYK", "YCbCr"):
        raise SampleError(name, f"expected an 8-bit colour image, got PIL mode {image.mode!r}")
    return np.asarray(image.convert("RGB") if image.mode != "RGB" else image, dtype=np.uint8)


def decode_depth_png(data: bytes, name: str, units_per_metre: float) -> np.ndarray:
    """16-bit single-channel PNG → ``(H, W)`` float32 metres (``stored value / units_per_metre``; 0 stays 0).

    Args:
        data: the file's bytes.
        name: for error messages.
        units_per_metre: 1000 (mm: Hypersim, NYUv2), 256 (KITTI), 100 (cm: Virtual KITTI 2).

    Raises:
        SampleError: unreadable, or not a 16-bit single-channel image (an 8-bit or RGB PNG would decode to
            wrong depths silently).
    """
    image = _open_image(data, name)
    array = np.asarray(image)
    # Pillow opens 16-bit greyscale PNG as mode "I;16" (uint16); some versions promote to "I" (int32).
    if array.ndim != 2 or image.mode not in ("I;16", "I;16B", "I;16L", "I"):
        raise SampleError(name, f"expected a 16-bit single-channel depth PNG, got PIL mode {image.mode!r} "
                                f"with shape {array.shape}")
    if array.dtype != np.uint16 and (array.min() < 0 or array.max() > 65535):
        raise SampleError(name, f"depth values outside the uint16 range [{array.min()}, {array.max()}]")
    return (array.astype(np.float64) / units_per_metre).astype(np.float32)  # as Marigold: float64 divide, then f32
