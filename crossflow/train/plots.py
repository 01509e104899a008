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


def plot_loss_curves(jsonl_path: str | Path, out_png: str | Path, keys: Sequence[str] | None = None,
                     smooth: float = 0.9) -> Path:
    """Plot numeric metrics against ``step``, one subplot per key, and save a PNG.

    Each subplot shows the raw values faintly and their EMA on top; the y axis is logarithmic when all
    of a key's values are positive.

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
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not 0 <= smooth < 1:
        raise ValueError(f"smooth must be in [0, 1), got {smooth}")
    rows = [r for r in read_metrics(jsonl_path) if _is_number(r.get("step"))]
    found: dict[str, None] = {}
    for r in rows:
        found.update({k: None for k, v in r.items() if k != "step" and _is_number(v)})
    if not rows or not found:
        raise ValueError(f"{jsonl_path}: no usable rows (need JSON objects with a numeric 'step' and metrics)")
    if keys is None:
        keys = [k for k in found if k not in NOT_PLOTTED]
    missing = [k for k in keys if k not in found]
    if missing:
        logger.warning("%s: no numeric values for %s; available: %s", jsonl_path, missing, list(found))
    keys = [k for k in keys if k in found]
    if not keys:
        raise ValueError(f"{jsonl_path}: none of the requested keys has numeric values; available: {list(found)}")

    fig = Figure(figsize=(6, 2.6 * len(keys)), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(keys), 1, squeeze=False)[:, 0]
    for ax, key in zip(axes, keys):
        pts = sorted((r["step"], r[key]) for r in rows if _is_number(r.get(key)))
        steps, vals = [p[0] for p in pts], [p[1] for p in pts]
        line = ax.plot(steps, vals, alpha=0.25, linewidth=0.8)[0]
        ax.plot(steps, ema(vals, smooth), color=line.get_color(), linewidth=1.5, label=f"{key} (EMA {smooth:g})")
        if all(v > 0 for v in vals):
            ax.set_yscale("log")
        ax.set_ylabel(key)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper right", fontsize="small")
    axes[-1].set_xlabel("step")
    fig.tight_layout()
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png")
    return out
