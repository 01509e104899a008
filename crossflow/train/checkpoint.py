"""Atomic, complete, pickle-free training checkpoints.

Layout of ``RUN_DIR/checkpoints/step-NNNNNNN/``::

    model.safetensors      live weights          ema.safetensors   EMA weights
    optimizer.pt           optimizer state       scheduler.pt      LR scheduler state
    rng-rank{R}.pt         RNG states per rank   state.json        step, data position, EMA count, config
    COMPLETE               written last

A checkpoint is written into a hidden temporary directory, fsync'ed, marked ``COMPLETE`` and then
renamed into place, so a crash never leaves a directory that looks complete. Loading uses
safetensors and ``torch.load(weights_only=True)`` only.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

log = logging.getLogger(__name__)
MARKER = "COMPLETE"
PREFIX = "step-"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete or unreadable; the message names the file."""


def checkpoint_name(step: int) -> str:
    return f"{PREFIX}{step:07d}"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def rng_state() -> dict[str, Any]:
    """RNG states of torch (CPU and CUDA), numpy and ``random`` as weights-only-loadable objects."""
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]),
             "python_version": random.getstate()[0], "python_gauss": random.getstate()[2],
             "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)), "numpy_pos": int(np_state[2]),
             "numpy_has_gauss": int(np_state[3]), "numpy_gauss": float(np_state[4])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((state["python_version"], tuple(state["python"]), state["python_gauss"]))
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), state["numpy_pos"],
                         state["numpy_has_gauss"], state["numpy_gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _contiguous(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in state.items()}


def save_checkpoint(root: Path, step: int, *, model: dict, ema: dict, optimizer: dict, scheduler: dict,
                    state: dict[str, Any], rng: dict[int, dict], keep: int = 2) -> Path:
    """Write one checkpoint atomically and prune old ones, keeping the newest ``keep`` complete ones."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / checkpoint_name(step)
    tmp = root / f".tmp-{checkpoint_name(step)}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file(_contiguous(model), str(tmp / "model.safetensors"))
    save_file(_contiguous(ema), str(tmp / "ema.safetensors"))
    torch.save(optimizer, tmp / "optimizer.pt")
    torch.save(scheduler, tmp / "scheduler.pt")
    for rank, rank_state in rng.items():
        torch.save(rank_state, tmp / f"rng-rank{rank}.pt")
    (tmp / "state.json").write_text(json.dumps(state, indent=2))
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    (tmp / MARKER).write_text(str(step))
    _fsync_dir(tmp)
    if final.exists():  # re-saving the same step (e.g. final save right after a periodic one)
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(root)
    prune_checkpoints(root, keep)
    return final


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints under ``root``, oldest first. Incomplete ones are skipped with a warning."""
    if not root.is_dir():
        return []
    complete = []
    for d in sorted(root.glob(f"{PREFIX}*")):
        if (d / MARKER).is_file():
            complete.append(d)
        else:
            log.warning("ignoring incomplete checkpoint %s (no %s marker)", d, MARKER)
    return complete


def prune_checkpoints(root: Path, keep: int) -> None:
    for d in list_checkpoints(root)[:-keep]:
        shutil.rmtree(d, ignore_errors=True)
    for d in root.glob(".tmp-*"):
        shutil.rmtree(d, ignore_errors=True)


def latest_checkpoint(root: Path) -> Path | None:
    ckpts = list_checkpoints(root)
    return ckpts[-1] if ckpts else None


def _load_torch(path: Path) -> Any:
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {path} is missing")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a corrupt file
        raise CheckpointError(f"checkpoint file {path} is corrupt or not a weights-only file: {exc}") from exc


def load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Load a safetensors file with an error that names it."""
    if not path.is_file():
        raise CheckpointError(f"weights file {path} is missing")
    try:
        return load_file(str(path))
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"weights file {path} is corrupt: {exc}") from exc


def load_checkpoint(path: Path, rank: int = 0) -> dict[str, Any]:
    """Read every part of a checkpoint directory (tensors on CPU)."""
    path = Path(path)
    if not (path / MARKER).is_file():
        raise CheckpointError(f"{path} is not a complete checkpoint (no {MARKER} marker)")
    try:
        state = json.loads((path / "state.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"checkpoint file {path / 'state.json'} is unreadable: {exc}") from exc
    rng_file = path / f"rng-rank{rank}.pt"
    return {"model": load_safetensors(path / "model.safetensors"), "ema": load_safetensors(path / "ema.safetensors"),
            "optimizer": _load_torch(path / "optimizer.pt"), "scheduler": _load_torch(path / "scheduler.pt"),
            "rng": _load_torch(rng_file) if rng_file.exists() else None, "state": state}
