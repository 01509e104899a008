"""The config-key listing of ``crossflow train --help``: every key with its type, default and meaning.

The ``task`` section belongs to the config's task adapter (its ``config_class``), so its keys depend on the
config: ``crossflow train CONFIG --help`` lists them, and every key with CONFIG's value where it differs
from the default, only for the architectures that CONFIG picks. Without a config, the task-independent keys
are listed with a note on how to see a task's keys.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from crossflow.config import ConfigError, describe, to_dict

HELP_FLAGS = ("-h", "--help")


def help_config(argv: Sequence[str]) -> Optional[str]:
    """The CONFIG of ``train CONFIG ... --help`` (``None`` unless the command line asks for train's help)."""
    argv = [a for a in argv if a not in ("-v", "--verbose")]
    if not argv or argv[0] != "train" or not any(a in HELP_FLAGS for a in argv):
        return None
    # the first positional after "train": not an option, not an option's value, not a key=value override
    skip_next = False
    for tok in argv[1:]:
        if skip_next:
            skip_next = False
        elif tok == "--run-dir":
            skip_next = True
        elif not tok.startswith("-") and "=" not in tok:
            return tok
    return None


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix: tree}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat |= _flatten(value, f"{prefix}.{key}" if prefix else str(key))
    return flat


def _applies(label: str, values: dict[str, Any]) -> bool:
    """Whether a row ``key [tag=v, ...]`` belongs to the architectures the config picks."""
    key, _, when = label.partition(" [")
    if not when:
        return True
    parts = key.split(".")
    sections = [".".join(parts[:i]) for i in range(1, len(parts))]
    for cond in when.rstrip("]").split(", "):
        tag, _, value = cond.partition("=")
        if not any(str(values.get(f"{s}.{tag}")) == value for s in sections):
            return False
    return True


def _format(rows: list[tuple[str, str, str, str]], values: Optional[dict[str, Any]]) -> list[str]:
    """One line per key; with a config's ``values``, the rows all apply to it: its value, no ``[arch=..]`` label."""
    if values is not None:
        rows = [(key.partition(" [")[0], *rest) for key, *rest in rows]
    width = max(len(r[0]) for r in rows)
    lines = []
    for key, typ, default, help_ in rows:
        shown = default
        if values is not None and key in values:
            value = repr(values[key])
            shown = default if value == default else f"{value} (default {default})"
        lines.append(f"  {key:<{width}}  {typ} = {shown}  {help_}")
    return lines


def config_keys_epilog(config: Optional[str] = None) -> str:
    """The key listing for ``train --help``; with ``config``, its task's keys and its values too."""
    from crossflow.registry import load_experiment, registered_tasks
    from crossflow.schema import ExperimentConfig

    rows = [r for r in describe(ExperimentConfig) if not r[0].startswith("task")]
    if config is not None:
        try:
            cfg, task_cls = load_experiment(config)
        except (ConfigError, ValueError, OSError) as exc:
            note = f"({config}: {exc}; its task keys cannot be listed)"
        else:
            values = _flatten(to_dict(cfg))
            task_rows = describe(task_cls.config_class, "task")
            rows = [r for r in task_rows + rows if _applies(r[0], values)]
            head = (f"config keys of {config} (task {cfg.task.name!r}; value = this config's, with the default "
                    f"where it differs; override any as key=value):")
            return "\n".join([head] + _format(rows, values))
    else:
        note = ""
    tasks = ", ".join(sorted(registered_tasks())) or "none installed"
    head = ("config keys (override any as key=value). The task.* keys belong to the config's task: "
            f"`crossflow train CONFIG --help` lists them with CONFIG's values (registered tasks: {tasks}).")
    return "\n".join([head] + ([note] if note else []) + _format(rows, None))


__all__ = ["config_keys_epilog", "help_config"]
