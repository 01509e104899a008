"""The life of a run directory: a fresh start refuses a used directory, a resume continues the saved config.

A run directory holds ``config.yaml`` (the resolved config, written once training has started), the
checkpoints, the JSONL log, previews and the export. Starting a run in a directory that already holds one
would mix two runs (the log, the checkpoints, a later ``--resume`` picking the other run's newest step), so
it is refused unless the user asks to start over (``overwrite``). A resume starts from the saved config:
only settings that change neither the model nor the optimisation may differ (:data:`SAFE_ON_RESUME`).
"""

from __future__ import annotations

import logging

import shutil
from pathlib import Path
from typing import Any, Optional, Sequence

from crossflow.config import apply_overrides, load_yaml, parse_overrides, to_dict

#: Entries that make a directory a run directory.
RUN_ENTRIES = ("config.yaml", "checkpoints", "metrics.jsonl", "export", "train_summary.json")

#: Config keys that may change when a run is resumed: how long and how it logs, checkpoints and previews,
#: where it finds its files, how it samples, how it is spread over processes. Everything else (model, flow,
#: optimiser, data, precision) is the run's own; change it by starting a new run.
SAFE_ON_RESUME = ("train.max_steps", "train.max_minutes", "train.log_every", "train.sample_every",
                  "train.checkpoint_every", "train.keep_checkpoints", "train.num_workers", "train.tensorboard",
                  "train.project_name",
                  "train.log_with", "train.compile", "train.cpu", "train.parallel", "train.fsdp_cpu_offload",
                  "sample.", "task.metrics.", "task.preview_")
#: Keys naming files or directories (moving a run to another machine changes them) are safe too.
SAFE_PATH_KEYS = ("name_or_path", "features_dir", "cache_dir", "text_vae_dir", "text_vae_config")

log = logging.getLogger(__name__)


class RunDirectoryError(ValueError):
    """A run directory cannot be used as asked; the message says what to do instead."""


def run_entries(run_dir: Path) -> list[str]:
    """The run entries present in ``run_dir`` (empty for a missing or unused directory)."""
    run_dir = Path(run_dir)
    return [name for name in RUN_ENTRIES if (run_dir / name).exists()]


def prepare_fresh_run(run_dir: Path, *, overwrite: bool = False) -> None:
    """Make sure a new run may start in ``run_dir``; with ``overwrite`` delete a previous run there first.

    Raises:
        RunDirectoryError: ``run_dir`` holds a run and ``overwrite`` is false, or it holds other files (never
            deleted, even with ``overwrite``).
    """
    run_dir = Path(run_dir)
    if not run_dir.exists():
        return
    if not run_dir.is_dir():
        raise RunDirectoryError(f"--run-dir {run_dir} is a file, not a directory")
    used = run_entries(run_dir)
    if not used:
        if any(run_dir.iterdir()):
            raise RunDirectoryError(f"--run-dir {run_dir} is not empty and holds no run; choose an empty or new "
                                    "directory")
        return
    if not overwrite:
        raise RunDirectoryError(f"--run-dir {run_dir} already holds a run ({', '.join(used)}); continue it with "
                                "--resume, or start over with --overwrite (deletes it)")
    shutil.rmtree(run_dir)


def safe_on_resume(key: str) -> bool:
    """Whether the dotted config ``key`` may change when a run is resumed."""
    return key.startswith(SAFE_ON_RESUME) or key.rsplit(".", 1)[-1] in SAFE_PATH_KEYS


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for k, v in data.items():
            out |= _flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    return {prefix: data}


def config_changes(saved: Any, wanted: Any) -> dict[str, tuple[Any, Any]]:
    """``{dotted key: (saved value, wanted value)}`` for every leaf where two validated configs differ."""
    a, b = _flatten(to_dict(saved)), _flatten(to_dict(wanted))
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def resume_config(run_dir: Path, config: Optional[str | Path], overrides: Sequence[str]) -> tuple[Any, type]:
    """The config to resume ``run_dir`` with: its saved ``config.yaml`` (+ ``config`` and ``overrides``, which may
    change only :data:`SAFE_ON_RESUME` keys).

    Raises:
        RunDirectoryError: ``run_dir`` holds no saved config, or the command line changes a key that is not safe,
            naming the key, both values and what may change.
    """
    from crossflow.registry import experiment_from_dict

    saved_path = Path(run_dir) / "config.yaml"
    if not saved_path.is_file():
        raise RunDirectoryError(f"--resume: {run_dir} holds no run to resume (no config.yaml); start one without "
                                "--resume")
    saved_raw = load_yaml(saved_path)
    saved, task_cls = experiment_from_dict(saved_raw)
    base = load_yaml(config) if config is not None else saved_raw
    wanted, _ = experiment_from_dict(apply_overrides(base, parse_overrides(list(overrides))))
    unsafe = {k: v for k, v in config_changes(saved, wanted).items() if not safe_on_resume(k)}
    if unsafe:
        key, (old, new) = next(iter(unsafe.items()))
        more = f" (and {len(unsafe) - 1} more: {', '.join(list(unsafe)[1:4])})" if len(unsafe) > 1 else ""
        raise RunDirectoryError(f"--resume: {key} is {old!r} in the run's saved config, {new!r} now{more}; a resume "
                                f"continues the saved config and may change only train.max_steps, max_minutes, "
                                "logging/checkpoint/preview cadence, sample.*, task.metrics.* and file paths. Drop "
                                "the change, or start a new run")
    for key, (old, new) in config_changes(saved, wanted).items():  # e.g. a CONFIG file without an earlier override
        log.info("--resume: %s changes from %r (the run's saved config) to %r", key, old, new)
    return wanted, task_cls


__all__ = ["RUN_ENTRIES", "RunDirectoryError", "SAFE_ON_RESUME", "config_changes", "prepare_fresh_run",
           "resume_config", "run_entries", "safe_on_resume"]
