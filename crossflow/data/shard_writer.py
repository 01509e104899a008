"""Assemble per-record results into feature shards, resumably (see :mod:`crossflow.data.feature_shards`).

Shard ``k`` owns the input positions ``[k·S, (k+1)·S)``. A :class:`ShardAssembler` is told which
records each pending shard expects; it collects one result per record (arrays, or the reason it
was skipped) and writes a shard as soon as all its records have arrived. Shards that already have
their marker are never planned again, so re-running an interrupted extraction continues where it
stopped; with ``part=(i, n)`` several processes can share one output directory.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from crossflow.data.feature_shards import INDEX, complete_shards, write_json, write_shard


def plan_shards(num_positions: int, shard_size: int, done: Sequence[int], part: tuple[int, int] = (0, 1)) -> list[int]:
    """Shards still to write: those of this part (``k % n == i``) without a marker."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    i, n = part
    if not 0 <= i < n:
        raise ValueError(f"part must be i/n with 0 <= i < n, got {i}/{n}")
    num_shards = -(-num_positions // shard_size)
    return [k for k in range(num_shards) if k % n == i and k not in set(done)]


def check_resumable(root: str | Path, meta: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """Complete shards already in ``root``; raise if they were written with different settings.

    Raises:
        ValueError: naming the first meta key whose stored value differs from ``meta``.
    """
    done = complete_shards(root)
    for k, shard in done.items():
        old = shard.get("meta", {})
        if old != meta:
            keys = sorted(set(old) | set(meta))
            diff = next((key for key in keys if old.get(key) != meta.get(key)), "?")
            raise ValueError(f"{root} already holds shard {k} written with different settings ({diff}: "
                             f"{json.dumps(old.get(diff))[:120]} vs now {json.dumps(meta.get(diff))[:120]}); "
                             "extract into an empty directory or re-run with the same settings")
    return done


class ShardAssembler:
    """Collect per-record results and write each shard once complete.

    Args:
        root: output directory.
        meta: settings stored in every shard (and compared on resume).
        shard_size: input positions per shard.
        expected: ``{k: [record dicts]}`` of the pending shards (``"index"`` in each record).
        skipped: ``{k: [skip dicts]}`` known in advance (e.g. unreadable input lines).
    """

    def __init__(self, root: str | Path, meta: dict[str, Any], shard_size: int,
                 expected: dict[int, list[dict[str, Any]]], skipped: Optional[dict[int, list[dict]]] = None) -> None:
        self.root, self.meta, self.shard_size = Path(root), meta, shard_size
        self.expected = expected
        self.rows: dict[int, dict[int, dict[str, np.ndarray]]] = {k: {} for k in expected}
        self.kept_records: dict[int, dict[int, dict[str, Any]]] = {k: {} for k in expected}
        self.skipped: dict[int, list[dict]] = {k: list((skipped or {}).get(k, [])) for k in expected}
        self.arrived = {k: 0 for k in expected}
        self.written: list[int] = []
        for k in list(expected):
            self._maybe_write(k)

    def add(self, record: dict[str, Any], arrays: Optional[dict[str, np.ndarray]],
            reason: Optional[str] = None) -> None:
        """One record's result: its arrays (the record as given is stored with them), or ``None`` and why not."""
        k = record["index"] // self.shard_size
        if k not in self.expected:
            raise KeyError(f"record {record['index']} belongs to shard {k}, which is not pending")
        if arrays is None:
            self.skipped[k].append({"index": record["index"], "img_path": record.get("img_path"),
                                    "reason": reason or "skipped"})
        else:
            self.rows[k][record["index"]] = arrays
            self.kept_records[k][record["index"]] = record
        self.arrived[k] += 1
        self._maybe_write(k)

    def _maybe_write(self, k: int) -> None:
        if self.arrived[k] < len(self.expected[k]) or k in self.written:
            return
        kept = [self.kept_records[k][r["index"]] for r in self.expected[k] if r["index"] in self.rows[k]]
        names = sorted({n for a in self.rows[k].values() for n in a}) if kept else []
        arrays = {n: np.stack([self.rows[k][r["index"]][n] for r in kept]) for n in names}
        write_shard(self.root, k, arrays, {"meta": self.meta,
                                           "skipped": sorted(self.skipped[k], key=lambda s: s["index"]),
                                           "positions": [k * self.shard_size, (k + 1) * self.shard_size]}, kept)
        self.written.append(k)
        del self.rows[k], self.kept_records[k]

    @property
    def pending(self) -> list[int]:
        return [k for k in self.expected if k not in self.written]


def write_index(root: str | Path, num_shards: int) -> dict[str, Any]:
    """Summarise the complete shards of ``root`` into ``index.json``; returns the summary."""
    done = complete_shards(root)
    first = next((s for s in done.values() if s["count"] > 0), next(iter(done.values()), {}))
    summary = {"meta": first.get("meta"), "fields": first.get("fields"),
               "num_samples": sum(s["count"] for s in done.values()),
               "num_skipped": sum(len(s.get("skipped", [])) for s in done.values()),
               "num_shards": num_shards, "complete_shards": len(done), "complete": len(done) == num_shards,
               "shards": [{"shard": k, "count": s["count"]} for k, s in done.items()]}
    write_json(Path(root) / INDEX, summary)
    return summary
