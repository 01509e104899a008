"""Finding task adapters by name, and loading an experiment config with its task.

Tasks register under the entry-point group ``crossflow.tasks`` (``name = package.module:TaskClass``
in the package metadata), so a task package outside this repository plugs in by being installed:
``task: {name: my_task}`` in a config then resolves to it. A name of the form ``package.module:Class``
is imported directly (handy for a task that is not installed).
"""

from __future__ import annotations

import importlib
import logging
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

from crossflow.config import ConfigError, apply_overrides, from_dict, load_yaml, parse_overrides
from crossflow.schema import ExperimentConfig
from crossflow.task import Task

log = logging.getLogger(__name__)

#: Entry-point group of task adapters.
ENTRY_POINT_GROUP = "crossflow.tasks"


def registered_tasks() -> dict[str, EntryPoint]:
    """Installed task adapters by name (read from the installed packages' metadata at each call)."""
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name, ep)  # the first on sys.path wins, as for imports
    return found


def _check(cls: Any, name: str, where: str) -> type[Task]:
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise ConfigError(f"task.name: {name!r} ({where}) is not a crossflow.task.Task subclass")
    return cls


def load_task_class(name: str) -> type[Task]:
    """``name`` → its :class:`Task` subclass: a registered name, or ``package.module:Class``."""
    tasks = registered_tasks()
    if name in tasks:
        try:
            cls = tasks[name].load()
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"task.name: {name!r} is registered as {tasks[name].value!r}, which cannot be "
                              f"imported: {exc}") from exc
        return _check(cls, name, tasks[name].value)
    module_name, sep, attr = name.partition(":")
    if not sep:
        known = ", ".join(sorted(tasks)) or "none (is the package installed? pip install -e .)"
        raise ConfigError(f"task.name: no task adapter {name!r}; registered: {known}; or give package.module:Class")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ConfigError(f"task.name: {name!r}: module {module_name!r} not found") from exc
    return _check(getattr(module, attr, None), name, name)


def experiment_from_dict(raw: dict[str, Any]) -> tuple[ExperimentConfig, type[Task]]:
    """Validate a raw config dict: the static sections by the schema, ``task`` by its adapter's config class."""
    task_raw = raw.get("task")
    if not isinstance(task_raw, dict) or "name" not in task_raw:
        raise ConfigError("task.name: missing; every config names its task adapter (e.g. task: {name: t2i})")
    task_cls = load_task_class(str(task_raw["name"]))
    task_cfg = from_dict(task_cls.config_class, task_raw, path="task")
    cfg = from_dict(ExperimentConfig, {k: v for k, v in raw.items() if k != "task"})
    cfg.task = task_cfg
    return cfg, task_cls


def load_experiment(path: str | Path, overrides: list[str] = (), *,
                    smoke: bool = False) -> tuple[ExperimentConfig, type[Task]]:
    """YAML file or shipped config name (+ ``key=value`` overrides) → validated config and its task adapter class.

    ``smoke`` shrinks the config to a short CPU run (:mod:`crossflow.smoke`); the overrides still win.
    """
    pairs = parse_overrides(list(overrides))
    raw = apply_overrides(load_yaml(path), pairs)
    if smoke:
        from crossflow.smoke import apply_smoke

        raw, changes = apply_smoke(raw, pairs)
        log.info("--smoke: %s", "; ".join(changes) or "nothing to shrink")
    return experiment_from_dict(raw)


__all__ = ["ENTRY_POINT_GROUP", "experiment_from_dict", "load_experiment", "load_task_class", "registered_tasks"]
