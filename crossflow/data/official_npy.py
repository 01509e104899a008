"""Reader of the official CrossFlow per-sample ``.npy`` feature files (no arbitrary pickle).

The official extraction scripts ``np.save`` one Python dict per sample (so ``np.load`` would need
``allow_pickle=True``). Training files (``features/<name>.npy``) hold::

    image_latent_256  float32 (8, 32, 32)   VAE moments, mean ‖ logvar, unscaled
    image_latent_512  float32 (8, 64, 64)
    token_embedding_clip float32 (77, 768)    token_embedding_t5 float32 (77, 4096), already ×10
    token_mask_clip / token_mask_t5 int64 (77,)   token_clip / token_t5 int64 (77,)
    batch_caption     str

Validation prompt files (``val/{i}_{k}.npy``, ``run_vis/{i}.npy``) hold ``promt`` (sic),
``token_embedding``, ``token_mask``, ``token``; ``val/{i}.npy`` is a plain moments array.

:func:`load_official_npy` unpickles with an allow-list of the numpy reconstruction functions only,
so a crafted file cannot run code.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

try:  # numpy >= 2
    from numpy._core import multiarray as _multiarray
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _multiarray

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy.core.multiarray", "scalar"): _multiarray.scalar,
    ("numpy._core.multiarray", "scalar"): _multiarray.scalar,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name} "
                                         "(only numpy arrays are allowed)") from None


def load_official_npy(path: str | Path) -> Any:
    """Load an official ``.npy`` feature file: a dict of arrays/strings, or a plain array.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: not a ``.npy`` file, or its pickle references anything but numpy arrays.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"official feature file {path} does not exist")
    with open(path, "rb") as fh:
        try:
            version = np.lib.format.read_magic(fh)
            reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = reader(fh)
        except ValueError as e:
            raise ValueError(f"{path} is not a .npy file: {e}") from e
        if not dtype.hasobject:
            fh.seek(0)
            return np.load(fh, allow_pickle=False)
        try:
            obj = _NumpyOnlyUnpickler(io.BytesIO(fh.read())).load()
        except (pickle.UnpicklingError, EOFError, AttributeError, TypeError) as e:
            raise ValueError(f"{path}: {e}") from e
    if isinstance(obj, np.ndarray) and obj.dtype.hasobject and obj.shape == ():
        obj = obj.item()
    return obj


def official_sample_features(sample: dict[str, Any], *, lm: str = "clip",
                             resolution: Optional[int] = 256) -> dict[str, Any]:
    """Pick one LM and one resolution out of an official per-sample dict.

    Args:
        sample: dict from :func:`load_official_npy` (training or validation prompt layout).
        lm: ``"clip"`` or ``"t5"`` (training layout only; validation files hold one LM).
        resolution: 256 or 512 for the stored moments; ``None`` for prompt-only files.

    Returns:
        ``tokens`` float32 ``(L, D)``, ``mask`` bool ``(L,)``, ``input_ids`` int64 ``(L,)``, ``prompt``
        str and, with a resolution, ``moments`` float32 ``(8, h, w)``.

    Raises:
        KeyError: a needed key is absent (named, with the keys that are there).
    """
    def get(*keys: str) -> Any:
        for k in keys:
            if k in sample:
                return sample[k]
        raise KeyError(f"official sample has none of {keys}; keys: {sorted(sample)}")

    if lm not in ("clip", "t5"):
        raise ValueError(f"lm must be 'clip' or 't5', got {lm!r}")
    out = {"tokens": np.asarray(get(f"token_embedding_{lm}", "token_embedding"), dtype=np.float32),
           "mask": np.asarray(get(f"token_mask_{lm}", "token_mask")).astype(bool),
           "input_ids": np.asarray(get(f"token_{lm}", "token")).astype(np.int64),
           "prompt": str(get("batch_caption", "promt", "prompt"))}
    if resolution is not None:
        out["moments"] = np.asarray(get(f"image_latent_{resolution}"), dtype=np.float32)
    return out


class OfficialFeatureFolder(Dataset):
    """A folder of official per-sample training ``.npy`` files as a training dataset.

    Batches have the keys of :class:`~crossflow.data.feature_shards.FeatureShards`: ``source``,
    ``source_mask``, ``input_ids``, ``moments``. Each access reads and unpickles one file, so this is
    for using existing official features; convert them (``crossflow extract --from-official``) for speed.
    """

    def __init__(self, root: str | Path, *, lm: str = "clip", resolution: int = 256) -> None:
        self.root = Path(root)
        self.files = sorted(self.root.glob("*.npy"))
        if not self.files:
            raise FileNotFoundError(f"no .npy files under {self.root}")
        self.lm, self.resolution = lm, resolution

    def __len__(self) -> int:
        return len(self.files)

    def sample(self, i: int) -> dict[str, Any]:
        return official_sample_features(load_official_npy(self.files[i]), lm=self.lm, resolution=self.resolution)

    def __getitems__(self, indices: list[int]) -> dict[str, Tensor]:
        rows = [self.sample(i) for i in indices]
        return {"source": torch.from_numpy(np.stack([r["tokens"] for r in rows])),
                "source_mask": torch.from_numpy(np.stack([r["mask"] for r in rows])),
                "input_ids": torch.from_numpy(np.stack([r["input_ids"] for r in rows])),
                "moments": torch.from_numpy(np.stack([r["moments"] for r in rows]))}

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {k: v[0] for k, v in self.__getitems__([index]).items()}
