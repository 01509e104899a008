"""Metrics logging from the main process: a JSONL file (always; needs nothing installed) and the experiment
trackers of ``train.log_with`` (TensorBoard, Weights & Biases, ...) through accelerate's tracking API."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from crossflow.config import ConfigError

log = logging.getLogger(__name__)

#: pip package of each tracker accelerate knows (where it differs from the tracker's name).
TRACKER_PACKAGES = {"comet_ml": "comet-ml"}


def resolve_trackers(names: Sequence[str]) -> Optional[list[str]]:
    """``train.log_with`` checked against accelerate: the names (duplicates dropped), or ``None`` for none.

    Accepts accelerate's tracker names (``tensorboard``, ``wandb``, ..., ``all``) and names registered with
    ``accelerate.tracking.register_tracker_class``.

    Raises:
        ConfigError: an unknown name, or a tracker whose package is not installed (accelerate would drop it
            silently), naming the package to install.
    """
    if not names:
        return None
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS, get_available_trackers

    known = ["all", *LOGGER_TYPE_TO_CLASS]
    available = sorted(str(t) for t in get_available_trackers())
    builtin = {"aim", "comet_ml", "mlflow", "tensorboard", "wandb", "clearml", "dvclive", "swanlab", "trackio"}
    for name in names:
        if name not in known:
            raise ConfigError(f"train.log_with: unknown tracker {name!r}; accelerate knows {', '.join(known)}")
        if name in builtin and name not in available:
            raise ConfigError(f"train.log_with: {name!r} needs its package (pip install "
                              f"{TRACKER_PACKAGES.get(name, name)}); installed trackers: "
                              f"{', '.join(available) or 'none'} (metrics.jsonl is written either way)")
    return list(dict.fromkeys(names))


def flat_config(tree: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config dict as ``{dotted.key: scalar}`` (lists and None as text), as trackers store hparams."""
    if isinstance(tree, dict):
        flat: dict[str, Any] = {}
        for key, value in tree.items():
            flat |= flat_config(value, f"{prefix}.{key}" if prefix else str(key))
        return flat
    is_scalar = isinstance(tree, (bool, int, float, str))
    return {prefix: tree if is_scalar else str(tree)}


class MetricsLogger:
    """Append one JSON object per :meth:`log` to ``path``; send the numbers to the accelerator's trackers.

    The trackers start at the first row (the run directory exists by then) with the flattened ``config`` as
    their hyper-parameters, and end with :meth:`close`.

    Args:
        path: the JSONL file.
        enabled: False on processes other than the main one (nothing is written).
        accelerator: an ``Accelerator`` built with ``log_with``/``project_dir`` (None or no trackers: JSONL only).
        project_name: the trackers' project.
        config: the resolved experiment config as a nested dict (stored by the trackers).
    """

    def __init__(self, path: Path, *, enabled: bool = True, accelerator: Any = None, project_name: str = "crossflow",
                 config: Optional[dict[str, Any]] = None) -> None:
        self.path = Path(path)
        self.enabled = enabled
        self._acc = accelerator if enabled and accelerator is not None and accelerator.log_with else None
        self.project_name, self.config = project_name, config or {}
        self._started = False

    def _start_trackers(self) -> None:
        run_dir = self.path.parent
        names = {str(t) for t in self._acc.log_with}
        # wandb keeps its files in the run directory (not ./wandb) and names the run after it
        init_kwargs = {"wandb": {"name": run_dir.name, "dir": str(run_dir)}} if "wandb" in names else {}
        self._acc.init_trackers(self.project_name, config=flat_config(self.config), init_kwargs=init_kwargs)
        self._started = True
        log.info("logging to %s and %s", self.path, ", ".join(sorted(names)))

    def log(self, step: int, values: dict[str, Any]) -> None:
        """Write one row ``{"step", "time", **values}``; numbers also go to the trackers at ``step``."""
        if not self.enabled:
            return
        row = {"step": step, "time": round(time.time(), 3), **values}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
        if self._acc is not None:
            if not self._started:
                self._start_trackers()
            numbers = {k: v for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            self._acc.log(numbers, step=step)

    def close(self) -> None:
        """Finish the trackers (flushes TensorBoard, ends the wandb run).

        Not ``Accelerator.end_training``, which also destroys the process group that evaluation after
        training may still use.
        """
        if self._acc is not None and self._started:
            for tracker in self._acc.trackers:
                tracker.finish()
            self._acc.trackers = []
            self._started = False


__all__ = ["TRACKER_PACKAGES", "MetricsLogger", "flat_config", "resolve_trackers"]
