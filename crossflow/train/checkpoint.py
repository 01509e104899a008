"""Atomic, complete, pickle-free training checkpoints, whole or sharded.

Layout of ``RUN_DIR/checkpoints/step-NNNNNNN/`` (the *full* layout: one process or DDP)::

    model.safetensors      live weights          ema.safetensors   EMA weights
    optimizer.pt           optimizer state       scheduler.pt      LR scheduler state
    rng-rank{R}.pt         RNG states per rank   state.json        step, data position, EMA count, layout, config
    COMPLETE               written last

The *sharded* layout (``train.parallel: fsdp``) keeps the weights, EMA weights and optimizer tensors in
``dcp/``, written by every process through ``torch.distributed.checkpoint`` (one file of shards per
process and a ``.metadata`` index); ``optimizer.pt`` then holds only the optimizer's param groups. It
resumes on any number of processes, sharded or not.

What is saved is one mapping of name → :class:`Part` built by the trainer. A checkpoint is written into
a hidden temporary directory, fsync'ed, marked ``COMPLETE`` and then renamed into place, so a crash
never leaves a directory that looks complete. Loading uses safetensors and ``torch.load(weights_only=True)``
only; a distributed checkpoint's metadata is unpickled allowing only its own classes.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

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


class Stateful(Protocol):
    """One stateful part of a run (model, EMA, optimizer, scheduler, progress).

    ``state_dict()`` is this process's state (this process's shards under FSDP);
    ``load_state_dict(state, full)`` restores it, ``full`` telling whether ``state`` holds whole tensors
    (a checkpoint of the full layout, read by every process) or this process's shards (read through
    torch's distributed checkpoint, resharded to the current number of processes).
    """

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any], full: bool) -> None: ...


@dataclass
class Part:
    """A :class:`Stateful` and where it is stored.

    Attributes:
        obj: the stateful object.
        file: its file in the full layout (``.safetensors``: a flat dict of tensors; ``.pt``: any
            weights-only-loadable object; ``.json``); in the sharded layout the non-tensor rest of a sharded
            part (e.g. the optimizer's param groups) goes there, if any.
        sharded: its tensors go through torch's distributed checkpoint (``dcp/``) in the sharded layout.
    """

    obj: Stateful
    file: str
    sharded: bool = False


class Collective(Protocol):
    """What checkpointing needs of the processes: who writes, waiting, and agreeing on a failure."""

    is_main: bool

    def barrier(self) -> None: ...

    def any(self, flag: bool) -> bool: ...


class _Alone:
    is_main = True

    def barrier(self) -> None:
        pass

    def any(self, flag: bool) -> bool:
        return flag


def contiguous_cpu(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in state.items()}


def _split_tensors(tree: Any) -> tuple[dict, Any]:
    """Split nested dicts into (the tensors, the rest with the same dict structure)."""
    if not isinstance(tree, dict):
        return {}, tree
    tensors, rest = {}, {}
    for key, value in tree.items():
        if isinstance(value, torch.Tensor):
            tensors[key] = value
        elif isinstance(value, dict):
            sub_tensors, rest[key] = _split_tensors(value)
            if sub_tensors:
                tensors[key] = sub_tensors
        else:
            rest[key] = value
    return tensors, rest


def _merge(rest: Any, tensors: dict) -> Any:
    if not isinstance(rest, dict):
        return rest
    out = dict(rest)
    for key, value in tensors.items():
        out[key] = _merge(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


def _write_file(path: Path, state: Any) -> None:
    if path.suffix == ".safetensors":
        save_file(contiguous_cpu(state), str(path))
    elif path.suffix == ".json":
        path.write_text(json.dumps(state, indent=2))
    else:
        torch.save(state, path)


def _fsync_tree(path: Path) -> None:
    for f in sorted(path.rglob("*")):
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        elif f.is_dir():
            _fsync_dir(f)
    _fsync_dir(path)


def save_checkpoint(root: Path, step: int, parts: dict[str, Part], *, rng: dict[int, dict], sharded: bool = False,
                    keep: int = 2, group: Collective | None = None) -> Path:
    """Write one checkpoint atomically on every process, then keep the newest ``keep`` complete ones.

    Full layout (one process or DDP): the main process writes every part's file. Sharded layout (FSDP):
    every process writes its shards of the sharded parts through ``torch.distributed.checkpoint`` into
    ``dcp/``, the main process the rest. Either way the checkpoint is written into a hidden temporary
    directory, fsync'ed, marked ``COMPLETE`` and renamed into place by the main process, so it counts only
    once every process has finished. A failed write (e.g. a full disk) removes the temporary directory,
    leaves the earlier checkpoints as they were and raises :class:`CheckpointWriteError` on every process.
    """
    group = group or _Alone()
    root = Path(root)
    final = root / checkpoint_name(step)
    tmp = root / f".tmp-{checkpoint_name(step)}"
    error: BaseException | None = None
    try:
        if group.is_main:
            root.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
    except OSError as exc:
        error = exc
    if group.any(error is not None):  # every process needs the directory before the shards are written
        raise _write_error(final, error, root)
    try:
        rest: dict[str, Any] = {}
        if sharded:
            import torch.distributed.checkpoint as dcp

            shards = {}
            for name, part in parts.items():
                state = part.obj.state_dict()
                if part.sharded:
                    shards[name], state = _split_tensors(state)
                rest[name] = state
            dcp.save(shards, storage_writer=dcp.FileSystemWriter(str(tmp / "dcp"), sync_files=True))
        if group.is_main:
            for name, part in parts.items():
                state = rest[name] if sharded else part.obj.state_dict()
                if not (sharded and part.sharded and not state):  # a sharded part's rest, if any
                    _write_file(tmp / part.file, state)
            for rank, rank_state in rng.items():
                torch.save(rank_state, tmp / f"rng-rank{rank}.pt")
            _fsync_tree(tmp)
            (tmp / MARKER).write_text(str(step))
            _fsync_dir(tmp)
    except (OSError, RuntimeError, ValueError, dcp_exception()) as exc:
        error = exc
    if group.any(error is not None):
        if group.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
        raise _write_error(final, error, root)
    if group.is_main:
        if final.exists():  # re-saving the same step (e.g. final save right after a periodic one)
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(root)
        prune_checkpoints(root, keep)
    group.barrier()
    return final


class CheckpointWriteError(CheckpointError):
    """A checkpoint could not be written; the earlier ones are intact."""


def _write_error(final: Path, error: BaseException | None, root: Path) -> CheckpointWriteError:
    reason = _describe(error) if error else "it failed on another process"
    earlier = [p.name for p in list_checkpoints(root)]
    kept = f"the earlier checkpoints are intact ({', '.join(earlier)}; --resume continues from the newest)" \
        if earlier else "there is no earlier checkpoint"
    return CheckpointWriteError(f"could not write checkpoint {final} ({reason}); {kept}")


def dcp_exception() -> type[BaseException]:
    """torch's distributed-checkpoint failure type (a BaseException, so it must be named to be caught)."""
    from torch.distributed.checkpoint.api import CheckpointException

    return CheckpointException

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
        cause = exc.__cause__ or exc.__context__ or exc  # torch's weights-only error wraps the reason in advice
        reason = str(cause).strip().splitlines()[-1] if str(cause).strip() else type(cause).__name__
        raise CheckpointError(f"checkpoint file {path} is corrupt or not a weights-only file: "
                              f"{type(cause).__name__}: {' '.join(reason.split())[:300]}") from exc


def load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Load a safetensors file with an error that names it."""
    if not path.is_file():
        raise CheckpointError(f"weights file {path} is missing")
    try:
        return load_file(str(path))
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"weights file {path} is corrupt: {exc}") from exc


def _read_file(path: Path) -> Any:
    if path.suffix == ".safetensors":
        return load_safetensors(path)
    if path.suffix == ".json":
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"checkpoint file {path} is unreadable: {exc}") from exc
    return _load_torch(path)


def read_state(path: Path) -> dict[str, Any]:
    """``state.json`` of a complete checkpoint (step, data position, layout, ...)."""
    path = Path(path)
    if not (path / MARKER).is_file():
        raise CheckpointError(f"{path} is not a complete checkpoint (no {MARKER} marker)")
    return _read_file(path / "state.json")


def load_checkpoint(path: Path, parts: dict[str, Part], *, rank: int = 0) -> dict[str, Any] | None:
    """Restore every part from ``path`` (either layout, any number of processes); return this rank's RNG state.

    The full layout is read completely before anything is restored, so a corrupt file changes nothing.
    The sharded layout is read through ``torch.distributed.checkpoint`` (collective: every process calls
    this), resharded to the current processes; a sharded checkpoint also loads into an unsharded model.
    Failures raise :class:`CheckpointError` naming the file.
    """
    path = Path(path)
    layout = read_state(path).get("layout", "full")
    if layout == "full":
        states = {name: _read_file(path / part.file) for name, part in parts.items()}
        for name, part in parts.items():
            _apply(part, states[name], full=True, where=path / part.file)
    else:
        rests = {name: _read_file(path / part.file) if (path / part.file).exists() else {}
                 for name, part in parts.items()}
        targets = {name: _split_tensors(part.obj.state_dict())[0] for name, part in parts.items() if part.sharded}
        read_sharded(path, targets)
        for name, part in parts.items():
            state = _merge(rests[name], targets[name]) if part.sharded else rests[name]
            _apply(part, state, full=False, where=path / ("dcp" if part.sharded else part.file))
    rng_file = path / f"rng-rank{rank}.pt"
    return _load_torch(rng_file) if rng_file.exists() else None


def _apply(part: Part, state: Any, *, full: bool, where: Path) -> None:
    try:
        part.obj.load_state_dict(state, full)
    except (RuntimeError, KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{where} does not fit this run: {' '.join(str(exc).split())[:400]}") from exc


class _MetadataUnpickler(pickle.Unpickler):
    """Reads a distributed checkpoint's ``.metadata`` allowing only its own classes (no arbitrary code)."""

    def find_class(self, module: str, name: str) -> Any:
        allowed = (module.startswith("torch.distributed.checkpoint.")
                   or (module == "torch" and (name == "Size" or isinstance(getattr(torch, name, None), torch.dtype)))
                   or (module, name) in {("torch.serialization", "_get_layout"), ("pathlib", "PosixPath"),
                                         ("pathlib", "PurePosixPath"), ("pathlib", "WindowsPath"),
                                         ("collections", "OrderedDict")})
        if not allowed:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in checkpoint metadata")
        return super().find_class(module, name)


def _reader(path: Path):
    """A ``FileSystemReader`` whose metadata is read with :class:`_MetadataUnpickler`; tensors are read by
    torch with ``weights_only=True`` (and no pickled non-tensor values are stored: they go to ``.pt`` files)."""
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import StorageMeta

    class Reader(FileSystemReader):
        def read_metadata(self, *args: Any, **kwargs: Any):
            file = Path(self.path) / ".metadata"
            try:
                with open(file, "rb") as fh:
                    metadata = _MetadataUnpickler(fh).load()
            except Exception as exc:  # noqa: BLE001 - truncated, garbage or foreign classes
                raise CheckpointError(f"checkpoint file {file} is corrupt or missing: {exc}") from exc
            if getattr(metadata, "storage_meta", None) is None:
                metadata.storage_meta = StorageMeta()
            metadata.storage_meta.load_id = self.load_id
            return metadata

    return Reader(str(path))


def read_sharded(path: Path, targets: dict[str, Any]) -> None:
    """Fill ``targets`` (nested dicts of tensors, shards or whole) in place from ``path/dcp``."""
    import warnings

    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp

    dcp_dir = Path(path) / "dcp"
    if not (dcp_dir / ".metadata").is_file():
        raise CheckpointError(f"checkpoint file {dcp_dir / '.metadata'} is missing")
    _check_shard_files(dcp_dir, _reader(dcp_dir).read_metadata())
    try:
        with warnings.catch_warnings():  # "no process group: loading in one process" is what we want
            warnings.simplefilter("ignore", UserWarning)
            dcp.load(targets, storage_reader=_reader(dcp_dir),
                     no_dist=not (dist.is_available() and dist.is_initialized()))
    except CheckpointError:
        raise
    except (dcp_exception(), Exception) as exc:  # noqa: BLE001 - damaged shards, keys or shapes of another model
        raise CheckpointError(f"sharded checkpoint {dcp_dir} is corrupt or does not fit this run: "
                              f"{_describe(exc)}") from exc


def _describe(exc: BaseException) -> str:
    """One line for an exception; torch's CheckpointException (tracebacks of every rank) as each rank's cause."""
    failures = getattr(exc, "failures", None)  # rank -> wrapped exception
    if failures:
        causes = [getattr(f, "exception", f) for f in failures.values()]
        text = "; ".join(f"rank {r}: {type(c).__name__}: {c}" for r, c in zip(failures, causes))
    else:
        text = f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())[:500]


def _check_shard_files(dcp_dir: Path, metadata: Any) -> None:
    """Every shard file the index names exists and is long enough (a truncated copy is named, not unpickled)."""
    need: dict[str, int] = {}
    for info in (metadata.storage_data or {}).values():
        need[info.relative_path] = max(need.get(info.relative_path, 0), info.offset + info.length)
    for name, size in sorted(need.items()):
        file = dcp_dir / name
        if not file.is_file():
            raise CheckpointError(f"checkpoint file {file} is missing")
        if file.stat().st_size < size:
            raise CheckpointError(f"checkpoint file {file} is truncated: {file.stat().st_size} bytes, its index "
                                  f"needs {size}")


def read_sharded_weights(path: Path, part: str = "ema") -> dict[str, torch.Tensor]:
    """Whole tensors of one sharded part in this process, by flattened name (``ema``: the EMA weights of an FSDP
    checkpoint; ``optimizer``: ``state.<parameter>.<moment>``)."""
    metadata = _reader(Path(path) / "dcp").read_metadata()
    prefix = f"{part}."
    targets = {key[len(prefix):]: torch.empty(tuple(md.size), dtype=md.properties.dtype)
               for key, md in metadata.state_dict_metadata.items()
               if key.startswith(prefix) and hasattr(md, "size")}
    if not targets:
        raise CheckpointError(f"sharded checkpoint {path} holds no {part!r} weights")
    read_sharded(path, {part: targets})
    return targets
