"""Assemble per-record results into feature shards, resumably (see :mod:`crossflow.data.feature_shards`).

Shard ``k`` owns the input positions ``[k·S, (k+1)·S)``. A :class:`ShardAssembler` is told which
records each pending shard expects; it collects one result per record (arrays, or the reason it
was skipped) and writes a shard as soon as all its records have arrived. Shards that already have
their marker are never planned again, so re-running an interrupted extraction continues where it
stopped; with ``part=(i, n)`` several processes can share one output directory. A complete shard that
the input has since grown into (records appended to the list) is written again with its old rows
carried over (:func:`grown_shards`, :func:`read_shard_rows`), so a grown list is never reported complete
with records missing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from crossflow.data.feature_shards import INDEX, complete_shards, shard_stem, write_json, write_shard

#: Record fields that must be unchanged for a grown shard's old rows to be kept.
_IDENTITY = ("img_path", "prompt")


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


def shard_coverage(shard: dict[str, Any]) -> int:
    """Input positions a complete shard accounts for: its rows plus its skipped records."""
    return int(shard.get("count", 0)) + len(shard.get("skipped", []))


def expected_coverage(k: int, num_positions: int, shard_size: int) -> int:
    """Input positions shard ``k`` must account for when the input has ``num_positions`` records."""
    return max(0, min(shard_size, num_positions - k * shard_size))


def grown_shards(done: dict[int, dict[str, Any]], num_positions: int, shard_size: int,
                 root: str | Path = "") -> list[int]:
    """Complete shards that the input has grown into since they were written (records appended to the list).

    Raises:
        ValueError: a shard holds more positions than the input now has (the list shrank or was replaced).
    """
    grown = []
    for k, shard in done.items():
        have, want = shard_coverage(shard), expected_coverage(k, num_positions, shard_size)
        if have > want:
            raise ValueError(f"{root} holds shard {k} with input records up to position {k * shard_size + have - 1}, "
                             f"but the input now has {num_positions} records (it shrank or was replaced); extract "
                             "into an empty directory")
        if have < want:
            grown.append(k)
    return grown


def read_shard_rows(root: str | Path, k: int,
                    names: Sequence[str]) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    """Records and arrays (in memory) of complete shard ``k``."""
    root = Path(root)
    lines = (root / f"{shard_stem(k)}.records.jsonl").read_text(encoding="utf-8").splitlines()
    arrays = {n: np.load(root / f"{shard_stem(k)}.{n}.npy") for n in names}
    return [json.loads(line) for line in lines], arrays


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

    def carry_over(self, k: int, shard: dict[str, Any], current: dict[int, dict[str, Any]]) -> set[int]:
        """Take the rows of complete shard ``k`` (marker contents ``shard``), which the input has grown into, as
        results; returns the input positions carried over (the others of ``current`` still have to be added).

        ``current`` maps input positions of the shard to today's records. The old marker is removed first, so an
        interrupted run re-extracts the whole shard rather than leave a marker that does not match its arrays.

        Raises:
            ValueError: a kept record's ``img_path`` or ``prompt`` differs from today's record at that position
                (the input was edited, not only appended to).
        """
        old_records, arrays = read_shard_rows(self.root, k, list(shard.get("fields", {})))
        carried = set()
        for row, old in enumerate(old_records):
            now = current.get(old["index"])
            changed = now is None or any(now.get(key) and now.get(key) != old.get(key) for key in _IDENTITY)
            if changed:
                shown = {key: old.get(key) for key in _IDENTITY}
                now_text = "no record" if now is None else json.dumps({key: now.get(key) for key in shown})[:160]
                raise ValueError(f"{self.root}: input record {old['index']} was extracted into shard {k} as "
                                 f"{json.dumps(shown)[:160]}, the input now has {now_text}: it was edited, not only "
                                 "appended to; extract into an empty directory")
            self.add(old, {name: np.array(a[row]) for name, a in arrays.items()})
            carried.add(old["index"])
        for s in shard.get("skipped", []):  # unreadable images stay skipped; bad input lines are read again
            if s["index"] in current and not str(s.get("reason", "")).startswith("bad record"):
                self.add(current[s["index"]], None, s["reason"])
                carried.add(s["index"])
        (self.root / f"{shard_stem(k)}.json").unlink(missing_ok=True)
        return carried

    @property
    def pending(self) -> list[int]:
        return [k for k in self.expected if k not in self.written]


def write_index(root: str | Path, num_shards: int, num_positions: Optional[int] = None) -> dict[str, Any]:
    """Summarise the complete shards of ``root`` into ``index.json``; returns the summary.

    ``complete`` holds only when every shard is there and, given the input's ``num_positions``, accounts for
    all of its records (``records_missing`` counts those no shard holds or lists as skipped).
    """
    done = complete_shards(root)
    first = next((s for s in done.values() if s["count"] > 0), next(iter(done.values()), {}))
    covered = sum(shard_coverage(s) for s in done.values())
    missing = max(0, num_positions - covered) if num_positions is not None else None
    summary = {"meta": first.get("meta"), "fields": first.get("fields"),
               "num_samples": sum(s["count"] for s in done.values()),
               "num_skipped": sum(len(s.get("skipped", [])) for s in done.values()),
               "num_shards": num_shards, "complete_shards": len(done),
               "complete": len(done) == num_shards and not missing, "records_missing": missing,
               "shards": [{"shard": k, "count": s["count"]} for k, s in done.items()]}
    write_json(Path(root) / INDEX, summary)
    return summary
