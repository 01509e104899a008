"""On-disk cache of prompt embeddings (safetensors shards + a JSON index).

Layout under ``root/<sanitized embedder id>/``: ``index.json`` maps ``sha1(prompt)`` to
``[shard file, row]``; each shard holds ``emb`` (N, L, D) in the storage dtype, ``mask`` (N, L) uint8 and,
in its metadata, the sha1 of every row so that a row is only ever returned for the prompt it was made from.
Files are written to a temporary name and moved into place. One writer per directory at a time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import uuid
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

logger = logging.getLogger(__name__)

ComputeFn = Callable[[list[str]], tuple[Tensor, Tensor]]


def prompt_key(prompt: str) -> str:
    """Cache key of one prompt: hex sha1 of its UTF-8 bytes (exact string, whitespace included)."""
    return hashlib.sha1(prompt.encode("utf-8")).hexdigest()


def _sanitize(name: str) -> str:
    """Directory name for an embedder id; a short hash keeps ids that sanitize alike apart."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "embedder"
    return safe if safe == name else f"{safe}-{hashlib.sha1(name.encode('utf-8')).hexdigest()[:8]}"


class EmbeddingCache:
    """Cache of ``(embedding, mask)`` rows keyed by prompt text, for one embedder.

    Args:
        root: Cache root directory (created on first write).
        embedder_id: Identifier of the embedder (e.g. ``TextEmbedder.identifier``); one sub-directory each.
        dtype: Storage dtype of the embeddings (float16 by default; returned tensors are float32).
        shard_rows: Most rows per shard file (rows are read back one by one through memory maps).
    """

    INDEX = "index.json"

    def __init__(self, root: str | Path, embedder_id: str, dtype: torch.dtype = torch.float16,
                 shard_rows: int = 8192) -> None:
        self.dir = Path(root) / _sanitize(embedder_id)
        self.shard_rows = shard_rows
        self.embedder_id = embedder_id
        self.dtype = dtype

    def _load_index(self) -> dict[str, list[Any]]:
        path = self.dir / self.INDEX
        if not path.exists():
            return {}
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            entries = data["entries"]
            ok = isinstance(entries, dict) and all(isinstance(v, list) and len(v) == 2 and isinstance(v[0], str)
                                                   and isinstance(v[1], int) for v in entries.values())
            if not ok:
                raise ValueError("malformed entries")
            return entries
        except (OSError, ValueError, KeyError, TypeError) as e:
            warnings.warn(f"embedding cache index {path} is unreadable ({e}); recomputing its prompts",
                          stacklevel=3)
            return {}

    def _write_atomic(self, path: Path, write: Callable[[str], None]) -> None:
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            write(str(tmp))
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()

    def _read_rows(self, entries: dict[str, list[Any]], keys: list[str]) -> dict[str, tuple[Tensor, Tensor]]:
        """Read cached rows for ``keys``; rows from unreadable or mismatching shards are left out."""
        by_shard: dict[str, list[str]] = {}
        for k in keys:
            if k in entries:
                by_shard.setdefault(entries[k][0], []).append(k)
        rows: dict[str, tuple[Tensor, Tensor]] = {}
        for shard, ks in by_shard.items():
            path = self.dir / shard
            try:
                with safe_open(str(path), framework="pt") as f:
                    row_keys = json.loads(f.metadata()["keys"])
                    emb, mask = f.get_slice("emb"), f.get_slice("mask")
                    if emb.get_shape()[0] != len(row_keys) or mask.get_shape()[0] != len(row_keys):
                        raise ValueError("row count does not match its key list")
                    for k in ks:
                        r = entries[k][1]
                        if 0 <= r < len(row_keys) and row_keys[r] == k:
                            rows[k] = (emb[r:r + 1][0].float(), mask[r:r + 1][0].bool())
                        else:
                            warnings.warn(f"embedding cache shard {path} does not hold the indexed row {r}; "
                                          "recomputing", stacklevel=3)
            except Exception as e:  # noqa: BLE001 - any corruption means "recompute"
                warnings.warn(f"embedding cache shard {path} is unreadable ({e}); recomputing its prompts",
                              stacklevel=3)
                for k in ks:
                    rows.pop(k, None)
        return rows

    def get_or_compute(self, prompts: Sequence[str], compute_fn: ComputeFn,
                       batch_size: int = 256) -> tuple[Tensor, Tensor]:
        """Return ``(embeddings float32 (B, L, D), mask bool (B, L))`` in input order.

        Only prompts missing from the cache are passed to ``compute_fn`` (in chunks of ``batch_size``,
        each unique prompt once); their rows are then stored in new shards.

        Raises:
            TypeError: a prompt is not a ``str`` (index named).
            ValueError: ``prompts`` is empty, or the embeddings overflow the storage dtype.
        """
        prompts = list(prompts)
        if not prompts:
            raise ValueError("get_or_compute needs at least one prompt")
        for i, p in enumerate(prompts):
            if not isinstance(p, str):
                raise TypeError(f"prompt {i} is a {type(p).__name__}, expected str")
        keys = [prompt_key(p) for p in prompts]
        unique = list(dict.fromkeys(keys))
        entries = self._load_index()
        rows = self._read_rows(entries, unique)
        text = dict(zip(keys, prompts))
        missing = [k for k in unique if k not in rows]
        if missing:
            logger.info("embedding cache %s: computing %d of %d unique prompts", self.dir, len(missing), len(unique))
            embs, masks = [], []
            for s in range(0, len(missing), batch_size):
                chunk = [text[k] for k in missing[s:s + batch_size]]
                e, m = compute_fn(chunk)
                if e.shape[0] != len(chunk) or m.shape[:2] != e.shape[:2]:
                    raise ValueError(f"compute_fn returned {tuple(e.shape)} / {tuple(m.shape)} "
                                     f"for {len(chunk)} prompts")
                embs.append(e.detach().cpu().to(self.dtype))
                masks.append(m.detach().cpu().to(torch.uint8))
            emb, mask = torch.cat(embs).contiguous(), torch.cat(masks).contiguous()
            if not torch.isfinite(emb).all():
                raise ValueError(f"embeddings overflow the cache dtype {self.dtype}; use dtype=torch.float32")
            for s in range(0, len(missing), self.shard_rows):
                self._store(entries, missing[s:s + self.shard_rows], emb[s:s + self.shard_rows].contiguous(),
                            mask[s:s + self.shard_rows].contiguous())
            rows.update({k: (emb[i].float(), mask[i].bool()) for i, k in enumerate(missing)})
        return torch.stack([rows[k][0] for k in keys]), torch.stack([rows[k][1] for k in keys])

    def _store(self, entries: dict[str, list[Any]], keys: list[str], emb: Tensor, mask: Tensor) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        shard = f"shard-{uuid.uuid4().hex[:12]}.safetensors"
        meta = {"keys": json.dumps(keys), "embedder_id": self.embedder_id}
        self._write_atomic(self.dir / shard, lambda p: save_file({"emb": emb, "mask": mask}, p, metadata=meta))
        entries.update({k: [shard, i] for i, k in enumerate(keys)})
        index = json.dumps({"version": 1, "embedder_id": self.embedder_id, "entries": entries})
        self._write_atomic(self.dir / self.INDEX, lambda p: Path(p).write_text(index, encoding="utf-8"))


def embed_prompts(embedder: Any, prompts: Sequence[str], cache_dir: str | Path | None = None,
                  batch_size: int = 256, progress: bool = False) -> tuple[Tensor, Tensor]:
    """Embed ``prompts`` with ``embedder.encode``, through an :class:`EmbeddingCache` when ``cache_dir`` is set.

    Args:
        embedder: Object with ``encode(prompts, batch_size=, progress=)`` and ``identifier`` (a TextEmbedder).
        prompts: Prompts to embed.
        cache_dir: Cache root; ``None`` computes without caching (full precision).
        batch_size: Prompts per model call.
        progress: Show a progress bar while computing.
    """
    if cache_dir is None:
        return embedder.encode(list(prompts), batch_size=batch_size, progress=progress)
    cache = EmbeddingCache(cache_dir, embedder.identifier)
    return cache.get_or_compute(
        prompts, lambda ps: embedder.encode(ps, batch_size=batch_size, progress=progress), batch_size=batch_size)
