"""Precomputed features in memory-mapped ``.npy`` shards.

Layout of a features directory::

    shard-00000.tokens.npy     (N, L, D) float16   LM token states (already × output_scale)
    shard-00000.mask.npy       (N, L)    uint8     1 on real tokens
    shard-00000.input_ids.npy  (N, L)    int32     token ids
    shard-00000.moments.npy    (N, 2C, h, w) float16  VAE posterior moments (mean ‖ logvar); absent for
                                                      prompt-only features
    shard-00000.records.jsonl  one line per row: index (input position), img_path, prompt, ...
    shard-00000.json           completion marker (small): meta, count, fields, skipped records
    index.json                 summary of the complete shards (rebuilt by the writer); readers use it when
                               it lists exactly the markers present, else read every marker

Shard ``k`` holds the input records ``[k·S, (k+1)·S)`` that could be used. A shard counts only once
its ``.json`` exists; the arrays and records are written first, each to a temporary name then renamed,
so an interrupted run leaves no half shard behind and a re-run redoes exactly the missing shards.
Records (captions) are read only when asked for, so opening a dataset of millions of samples is cheap.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

INDEX = "index.json"
_SHARD_RE = re.compile(r"^shard-(\d{5,})\.json$")


def shard_stem(k: int) -> str:
    return f"shard-{k:05d}"


def _atomic(path: Path, write: Callable[[str], None]) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(str(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _save_npy(path: Path, array: np.ndarray) -> None:
    def write(p: str) -> None:
        with open(p, "wb") as fh:
            np.save(fh, array)
    _atomic(path, write)


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically (temporary file + rename)."""
    text = json.dumps(obj, indent=1)
    _atomic(Path(path), lambda p: Path(p).write_text(text, encoding="utf-8"))


def write_shard(root: str | Path, k: int, arrays: dict[str, np.ndarray], info: dict[str, Any],
                records: list[dict[str, Any]]) -> Path:
    """Write shard ``k``: arrays as ``shard-k.<name>.npy``, ``shard-k.records.jsonl``, then the ``shard-k.json`` marker.

    Args:
        root: features directory (created if needed).
        k: shard number.
        arrays: equal-length arrays keyed by field name.
        info: JSON-serialisable shard description (``meta``, ``skipped`` ...); ``count`` and ``fields``
            (shape and dtype per array) are added.
        records: one JSON-serialisable record per array row.

    Returns:
        Path of the marker file.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    counts = {name: a.shape[0] for name, a in arrays.items()}
    if len(set(counts.values())) > 1:
        raise ValueError(f"shard {k}: arrays have different lengths {counts}")
    count = int(next(iter(counts.values()), 0))
    if len(records) != count:
        raise ValueError(f"shard {k}: {len(records)} records for {count} rows")
    for name, a in arrays.items():
        _save_npy(root / f"{shard_stem(k)}.{name}.npy", np.ascontiguousarray(a))
    lines = "".join(json.dumps(r) + "\n" for r in records)
    _atomic(root / f"{shard_stem(k)}.records.jsonl", lambda p: Path(p).write_text(lines, encoding="utf-8"))
    info = dict(info, shard=k, count=count,
                fields={n: {"shape": list(a.shape[1:]), "dtype": str(a.dtype)} for n, a in arrays.items()})
    marker = root / f"{shard_stem(k)}.json"
    write_json(marker, info)
    return marker


def complete_shards(root: str | Path) -> dict[int, dict[str, Any]]:
    """``{k: marker contents}`` of every complete shard under ``root`` (unreadable markers are skipped)."""
    out = {}
    root = Path(root)
    if not root.is_dir():
        return out
    for p in root.iterdir():
        m = _SHARD_RE.match(p.name)
        if m:
            try:
                out[int(m.group(1))] = json.loads(p.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
    return dict(sorted(out.items()))


def _shard_table(root: Path) -> tuple[dict[int, int], dict[str, Any], dict[str, dict], Optional[int]]:
    """``({k: count}, meta, fields, skipped count or None)`` from ``index.json`` when it lists exactly the
    markers present, else from every marker (checking that they agree on their meta)."""
    present = sorted(int(m.group(1)) for p in root.iterdir() if (m := _SHARD_RE.match(p.name))) if root.is_dir() else []
    try:
        index = json.loads((root / INDEX).read_text(encoding="utf-8"))
        if [s["shard"] for s in index["shards"]] == present and index.get("meta") is not None:
            return ({s["shard"]: s["count"] for s in index["shards"]}, index["meta"], index["fields"],
                    index.get("num_skipped"))
    except (OSError, ValueError, KeyError, TypeError):
        pass
    shards = complete_shards(root)
    metas = {json.dumps(s.get("meta"), sort_keys=True) for s in shards.values()}
    if len(metas) > 1:
        raise ValueError(f"{root}: shards were written with different settings; re-extract into a clean directory")
    first = next((s for s in shards.values() if s["count"] > 0), None)
    if first is None:
        return {k: 0 for k in shards}, {}, {}, None
    return ({k: s["count"] for k, s in shards.items()}, first.get("meta", {}), first["fields"],
            sum(len(s.get("skipped", [])) for s in shards.values()))


class FeatureShards(Dataset):
    """Read a features directory through memory maps.

    ``__getitems__`` gathers a whole batch: ``source`` ``(B, L, D)`` float32, ``source_mask``
    ``(B, L)`` bool, ``input_ids`` ``(B, L)`` int64 and, where stored, ``moments`` ``(B, 2C, h, w)``
    float32. Memory maps are opened lazily in each process (DataLoader workers included).

    Args:
        root: features directory written by the extractor.
        fields: stored fields to return (default: all of them).

    Raises:
        FileNotFoundError: no complete shard under ``root``.
        ValueError: shards disagree on their meta (written with different settings).
    """

    _RENAME = {"tokens": "source", "mask": "source_mask"}

    def __init__(self, root: str | Path, fields: Optional[list[str]] = None) -> None:
        self.root = Path(root)
        counts, self.meta, self.field_specs, self._num_skipped = _shard_table(self.root)
        if not counts:
            raise FileNotFoundError(f"no feature shards (shard-*.json) under {self.root}; "
                                    "run `crossflow extract` first")
        if not self.field_specs:
            raise FileNotFoundError(f"the feature shards under {self.root} hold no samples (every record was skipped)")
        self.fields: list[str] = []
        self.select(fields if fields is not None else list(self.field_specs))
        self.shards = [k for k, c in counts.items() if c > 0]
        self.offsets = np.concatenate([[0], np.cumsum([counts[k] for k in self.shards], dtype=np.int64)])
        self._maps: Optional[dict[tuple[int, str], np.ndarray]] = None
        self._records: dict[int, list[dict[str, Any]]] = {}

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def select(self, fields: list[str]) -> None:
        """Return only ``fields`` from now on (stored names: ``tokens``, ``mask``, ``input_ids``, ``moments``)."""
        for f in fields:
            if f not in self.field_specs:
                raise ValueError(f"{self.root}: no field {f!r} stored; stored fields: {', '.join(self.field_specs)}")
        self.fields = list(fields)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_maps"] = None  # never pickle memory maps (that would copy the data)
        return state

    def _array(self, shard_pos: int, name: str) -> np.ndarray:
        if self._maps is None:
            self._maps = {}
        key = (shard_pos, name)
        if key not in self._maps:
            path = self.root / f"{shard_stem(self.shards[shard_pos])}.{name}.npy"
            self._maps[key] = np.load(path, mmap_mode="r")
        return self._maps[key]

    def shard_records(self, shard_pos: int) -> list[dict[str, Any]]:
        """Records of the ``shard_pos``-th non-empty shard (read once, then cached)."""
        if shard_pos not in self._records:
            path = self.root / f"{shard_stem(self.shards[shard_pos])}.records.jsonl"
            self._records[shard_pos] = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        return self._records[shard_pos]

    def record(self, index: int) -> dict[str, Any]:
        """The record (input position, img_path, prompt, ...) of row ``index``."""
        if not 0 <= index < len(self):
            raise IndexError(f"feature index {index} out of range [0, {len(self)})")
        s = int(np.searchsorted(self.offsets, index, side="right") - 1)
        return self.shard_records(s)[index - int(self.offsets[s])]

    def head_prompts(self, n: int) -> list[str]:
        """The first ``n`` prompts (reads only the shards that hold them)."""
        return [self.record(i)["prompt"] for i in range(min(n, len(self)))]

    @property
    def records(self) -> list[dict[str, Any]]:
        """Every record in row order (reads all record files: for small datasets and tools)."""
        return [r for s in range(len(self.shards)) for r in self.shard_records(s)]

    @property
    def prompts(self) -> list[str]:
        return [r["prompt"] for r in self.records]

    @property
    def skipped(self) -> list[dict[str, Any]]:
        """Records skipped at extraction, with reasons (reads every marker)."""
        return [s for sh in complete_shards(self.root).values() for s in sh.get("skipped", [])]

    @property
    def num_skipped(self) -> int:
        return self._num_skipped if self._num_skipped is not None else len(self.skipped)

    def gather(self, name: str, indices: np.ndarray) -> np.ndarray:
        """Rows ``indices`` of stored field ``name`` (reads each shard's rows in ascending order)."""
        indices = np.asarray(indices, dtype=np.int64)
        if indices.size and (indices.min() < 0 or indices.max() >= len(self)):
            raise IndexError(f"feature index out of range [0, {len(self)})")
        spec = self.field_specs[name]
        out = np.empty((len(indices), *spec["shape"]), dtype=np.dtype(spec["dtype"]))
        shard_pos = np.searchsorted(self.offsets, indices, side="right") - 1
        for s in np.unique(shard_pos):
            sel = np.nonzero(shard_pos == s)[0]
            local = indices[sel] - self.offsets[s]
            order = np.argsort(local, kind="stable")
            out[sel[order]] = self._array(int(s), name)[local[order]]
        return out

    def __getitems__(self, indices: list[int]) -> dict[str, Tensor]:
        idx = np.asarray(indices, dtype=np.int64)
        batch = {}
        for name in self.fields:
            a = torch.from_numpy(self.gather(name, idx))
            if name == "mask":
                a = a.bool()
            elif name == "input_ids":
                a = a.long()
            else:
                a = a.float()
            batch[self._RENAME.get(name, name)] = a
        return batch

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {k: v[0] for k, v in self.__getitems__([index]).items()}
