"""Training-curve plots from a JSONL metrics log (matplotlib Agg canvas, never a display)."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Sequence

logger = logging.getLogger(__name__)


def read_metrics(jsonl_path: str | Path) -> list[dict]:
    """Read a JSONL log, one JSON object per line; blank, malformed or truncated lines are skipped.

    Raises:
        FileNotFoundError: the log does not exist.
    """
    path = Path(jsonl_path)
    rows, bad = [], 0
    with path.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                bad += 1
                continue
            if isinstance(obj, dict):
                rows.append(obj)
    if bad:
        logger.warning("%s: skipped %d malformed line(s)", path, bad)
    return rows


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def ema(values: Sequence[float], smooth: float) -> list[float]:
    """Bias-corrected exponential moving average (TensorBoard style); ``smooth=0`` returns the values."""
    out, acc, weight = [], 0.0, 0.0
    for v in values:
        acc = smooth * acc + (1 - smooth) * v
        weight = smooth * weight + (1 - smooth)
        out.append(acc / weight if weight > 0 else v)
    return out


NOT_PLOTTED: tuple[str, ...] = ("time",)  # a timestamp per row, not a curve anyone reads


def metrics_file(run: str | Path) -> Path:
    """The JSONL log of ``run``: a run directory (its ``metrics.jsonl``) or the log file itself.

    Raises:
        FileNotFoundError: neither exists, naming the path.
    """
    path = Path(run)
    if path.is_dir():
        path = path / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{run}: no metrics.jsonl (expected a run directory or a JSONL log)")
    return path


def loss_keys(found: Sequence[str]) -> list[str]:
    """The loss curves among logged keys: ``loss`` and every ``loss_*`` (in first-seen order)."""
    return [k for k in found if k == "loss" or k.startswith("loss_")]


def _numeric_rows(path: Path) -> tuple[list[dict], dict[str, None]]:
    rows = [r for r in read_metrics(path) if _is_number(r.get("step"))]
    found: dict[str, None] = {}
    for r in rows:
        found.update({k: None for k, v in r.items() if k != "step" and _is_number(v)})
    return rows, found


def plot_runs(runs: Sequence[str | Path], out_png: str | Path, keys: Sequence[str] | None = None,
              smooth: float = 0.9, labels: Sequence[str] | None = None) -> Path:
    """Plot metrics of one or several runs against ``step``: one panel per key, one colour per run.

    Each run's raw values are drawn faintly with their EMA on top; a panel's y axis is logarithmic when
    every value in it is positive and they are not all equal.

    Args:
        runs: run directories or JSONL logs.
        out_png: output image path (parent folders are created).
        keys: metrics to plot; default ``loss`` and every ``loss_*`` any run logged; ``["all"]``: every
            logged number but the wall clock. Keys no run logged are skipped with a warning.
        smooth: EMA factor in [0, 1).
        labels: legend name of each run (default: the paths as given).

    Returns:
        The path of the written PNG.

    Raises:
        FileNotFoundError: a run has no log.
        ValueError: a log has no usable rows, no requested key was logged, or ``smooth`` is out of range.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not 0 <= smooth < 1:
        raise ValueError(f"smooth must be in [0, 1), got {smooth}")
    if not runs:
        raise ValueError("no runs to plot")
    paths = [metrics_file(r) for r in runs]
    names = list(labels) if labels is not None else [str(r) for r in runs]
    found: dict[str, None] = {}
    data = []
    for path in paths:
        rows, keys_here = _numeric_rows(path)
        if not rows or not keys_here:
            raise ValueError(f"{path}: no usable rows (need JSON objects with a numeric 'step' and metrics)")
        data.append(rows)
        found.update(keys_here)
    if keys is None:
        keys = loss_keys(list(found))
    elif list(keys) == ["all"]:
        keys = [k for k in found if k not in NOT_PLOTTED]
    missing = [k for k in keys if k not in found]
    if missing:
        logger.warning("no run logged %s; logged: %s", missing, list(found))
    keys = [k for k in keys if k in found]
    if not keys:
        raise ValueError(f"none of the requested keys was logged; logged: {', '.join(found)}")

    fig = Figure(figsize=(6, 2.6 * len(keys)), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(keys), 1, squeeze=False)[:, 0]
    for ax, key in zip(axes, keys):
        positive, seen = True, set()
        for name, rows in zip(names, data):
            pts = sorted((r["step"], r[key]) for r in rows if _is_number(r.get(key)))
            if not pts:
                continue
            steps, vals = [p[0] for p in pts], [p[1] for p in pts]
            positive &= all(v > 0 for v in vals)
            seen.update(vals)
            line = ax.plot(steps, vals, alpha=0.25, linewidth=0.8)[0]
            label = f"{key} (EMA {smooth:g})" if len(data) == 1 else f"{name}"
            ax.plot(steps, ema(vals, smooth), color=line.get_color(), linewidth=1.5, label=label)
        if positive and len(seen) > 1:  # a constant (e.g. the LR after warm-up) stays linear
            ax.set_yscale("log")
        ax.set_ylabel(key)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper right", fontsize="small")
    axes[-1].set_xlabel("step")
    if len(data) > 1:
        axes[0].set_title(f"EMA {smooth:g} (faint: raw)", fontsize="small")
    fig.tight_layout()
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png")
    return out


def plot_loss_curves(jsonl_path: str | Path, out_png: str | Path, keys: Sequence[str] | None = None,
                     smooth: float = 0.9) -> Path:
    """Plot numeric metrics of one log against ``step``, one subplot per key, and save a PNG.

    Args:
        jsonl_path: Metrics log; rows without a numeric ``"step"`` are ignored.
        out_png: Output image path (parent folders are created).
        keys: Metrics to plot; default every numeric key except ``step`` and the wall-clock ``time``
            (in first-seen order). Keys absent from the log are skipped with a logged warning.
        smooth: EMA factor in [0, 1).

    Returns:
        The path of the written PNG.

    Raises:
        ValueError: no usable rows, none of ``keys`` appears, or ``smooth`` is out of range.
    """
    if keys is None:
        rows, found = _numeric_rows(Path(jsonl_path))
        if not rows or not found:
            raise ValueError(f"{jsonl_path}: no usable rows (need JSON objects with a numeric 'step' and metrics)")
        keys = [k for k in found if k not in NOT_PLOTTED]
    return plot_runs([jsonl_path], out_png, keys=keys, smooth=smooth)
