"""``crossflow train CONFIG --smoke``: any config shrunk to a run that learns in a few hundred CPU steps,
and the schedule checks that catch paper settings in short runs.

A paper config is sized for 600K steps on 8 GPUs: a 1B-parameter DiT, 5,000 warm-up steps (the learning
rate is 6e-8 at step 2), EMA 0.9999 without warm-up (after 500 steps the exported EMA is still ~95% the
random initial weights), 8 data workers. :func:`smoke_overrides` lists the keys that make such a config a
smoke run, for every architecture (token / reduction / image VE, DiT / DiMR stages, the contrastive tower,
the cross-attention baseline); the task section (data, resolution, language model) is left as it is, so
the run reads the same data as the full one. :func:`check_schedule` names the settings that waste a run.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from crossflow.config import apply_overrides, from_dict, to_dict
from crossflow.schema import (CrossFlowModelConfig, DiMRConfig, DiTConfig, ExperimentConfig, ImageVEConfig,
                              ReductionVEConfig, RegressionModelConfig, TokenVEConfig, TrainConfig,
                              XAttnBaselineConfig)

#: Smoke sizes: upper bounds (a config that is smaller keeps its own value).
WIDTH, DEPTH, HEADS, FFN = 64, 2, 2, 128
#: Smoke optimisation and sampling: values set as they are, except that the step counts, batch sizes and
#: cadences only ever go down and the learning rate only up.
TRAIN = {"batch_size": 16, "grad_accum_steps": 1, "max_steps": 200, "warmup_steps": 10, "lr": 5e-4,
         "ema_warmup": True, "num_workers": 0, "log_every": 10, "checkpoint_every": 100, "sample_every": 0,
         "mixed_precision": "no", "compile": False, "grad_clip": 1.0}
SAMPLE = {"steps": 10, "batch_size": 16}
_AT_MOST = {"batch_size", "max_steps", "warmup_steps", "steps", "checkpoint_every", "log_every"}
_AT_LEAST = {"lr"}


def _conv_widths(widths: list[int], base: int = 8) -> list[int]:
    """Same number of levels (so the resolutions stay), channels at most 8, 16, 32, ..."""
    return [min(w, base * 2 ** i) for i, w in enumerate(widths)]


def _shrink(section: Any) -> dict[str, Any]:
    """The smoke values of one model section (a schema dataclass), by its class."""
    if isinstance(section, TokenVEConfig):
        return {"width": min(section.width, WIDTH), "depth": 1, "num_heads": HEADS,
                "num_queries": min(section.num_queries, 4),
                "conv_head_channels": min(section.conv_head_channels, 8)}
    if isinstance(section, ReductionVEConfig):
        # Every reduction layer halves the width, which must still split into the heads.
        step = HEADS * 2 ** section.reduction_layers
        small = section.width <= WIDTH and section.width % step == 0
        return {"width": section.width if small else -(-WIDTH // step) * step, "depth": 1, "num_heads": HEADS,
                "ffn_dim": min(section.ffn_dim, FFN)}
    if isinstance(section, ImageVEConfig):
        return {"widths": _conv_widths(section.widths), "blocks": 1}
    if isinstance(section, DiTConfig):
        return {"hidden_size": min(section.hidden_size, WIDTH), "depth": min(section.depth, DEPTH),
                "num_heads": HEADS, "gradient_checkpointing": False,
                "conv_head_channels": min(section.conv_head_channels, 8)}
    if isinstance(section, DiMRConfig):
        stages = [to_dict(dataclasses.replace(
            s, dim=min(s.dim, WIDTH // 2), hidden_dim=min(s.hidden_dim, WIDTH), num_heads=HEADS, num_blocks=1))
            for s in section.stages]
        return {"stages": stages, "gradient_checkpointing": False}
    return {}  # no size keys (noise source) or an architecture this list does not know


def _leaves(prefix: str, values: dict[str, Any], current: Any) -> list[tuple[str, Any]]:
    """``(dotted key, value)`` for each value that differs from ``current``'s field."""
    return [(f"{prefix}.{k}", v) for k, v in values.items() if to_dict(getattr(current, k)) != v]


def _bounded(values: dict[str, Any], current: Any) -> dict[str, Any]:
    return {k: min(v, getattr(current, k)) if k in _AT_MOST else max(v, getattr(current, k)) if k in _AT_LEAST
            else v for k, v in values.items()}


def smoke_overrides(raw: dict[str, Any]) -> list[tuple[str, Any]]:
    """``(dotted key, value)`` overrides that shrink the raw config ``raw`` to a smoke run.

    Sizes (VE, velocity net, contrastive tower) become tiny, the batch 16 in one step, warm-up 10 steps, the
    learning rate at least 5e-4, the EMA warms up, no data workers, fp32, 200 steps, a checkpoint every 100,
    10 sampling steps (:data:`TRAIN`, :data:`SAMPLE`). The ``task`` section is untouched. Only keys whose value
    changes are listed.

    Raises:
        ConfigError: ``raw`` (less its task section) is not a valid config.
    """
    cfg = from_dict(ExperimentConfig, {k: v for k, v in raw.items() if k != "task"})
    out: list[tuple[str, Any]] = []
    model = cfg.model
    if isinstance(model, CrossFlowModelConfig):
        out += _leaves("model.source_encoder", _shrink(model.source_encoder), model.source_encoder)
        con = model.contrastive
        out += _leaves("model.contrastive", {"widths": _conv_widths(con.widths),
                                             "hidden_dim": min(con.hidden_dim, WIDTH)}, con)
    if isinstance(model, (CrossFlowModelConfig, XAttnBaselineConfig, RegressionModelConfig)):
        out += _leaves("model.velocity_net", _shrink(model.velocity_net), model.velocity_net)
    out += _leaves("train", _bounded(TRAIN, cfg.train), cfg.train)
    out += _leaves("sample", _bounded(SAMPLE, cfg.sample), cfg.sample)
    return out


def apply_smoke(raw: dict[str, Any], overrides: list[tuple[str, Any]] = ()) -> tuple[dict[str, Any], list[str]]:
    """``raw`` (with ``overrides`` already applied) shrunk by :func:`smoke_overrides`; the user's ``overrides``
    are applied again on top, so a key set on the command line keeps its value.

    Returns:
        ``(raw config, ["key: old -> new", ...])`` listing what the smoke values changed.
    """
    shrink = smoke_overrides(raw)
    user = {k for k, _ in overrides}
    kept = [(k, v) for k, v in shrink if k not in user]
    flat = _flat(raw)
    changes = [f"{k}: {_show(flat.get(k, '(default)'))} -> {_show(v)}" for k, v in kept]
    return apply_overrides(apply_overrides(raw, shrink), list(overrides)), changes


def _flat(data: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(data, dict):
        return {prefix: data}
    out: dict[str, Any] = {}
    for k, v in data.items():
        out |= _flat(v, f"{prefix}.{k}" if prefix else str(k))
    return out


def _show(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check_schedule(cfg: ExperimentConfig | TrainConfig) -> list[str]:
    """Warnings for a schedule that cannot do what the run needs (empty when it is fine).

    - ``train.max_steps`` below ``train.warmup_steps``: the learning rate never reaches ``train.lr``.
    - EMA without warm-up whose horizon ``1/(1 - ema_decay)`` exceeds the run: the exported EMA weights are
      still mostly the initial random ones (their share after the run is ``ema_decay**max_steps``).
    """
    tc = cfg.train if isinstance(cfg, ExperimentConfig) else cfg
    notes = []
    if tc.max_steps < tc.warmup_steps:
        notes.append(f"train.max_steps={tc.max_steps} is below train.warmup_steps={tc.warmup_steps}: the learning "
                     f"rate only reaches {tc.lr * tc.max_steps / tc.warmup_steps:.2g} of train.lr={tc.lr:g} at the "
                     "last step; lower train.warmup_steps (or train with --smoke)")
    horizon = 1.0 / max(1.0 - tc.ema_decay, 1e-12)
    if not tc.ema_warmup and horizon > tc.max_steps:
        initial = math.exp(tc.max_steps * math.log(max(tc.ema_decay, 1e-12)))
        notes.append(f"train.ema_decay={tc.ema_decay:g} averages over ~{horizon:,.0f} steps, more than train."
                     f"max_steps={tc.max_steps}, and train.ema_warmup is off: the exported EMA weights are still "
                     f"{initial:.0%} the random initial ones; set train.ema_warmup=true or lower train.ema_decay "
                     "(or train with --smoke)")
    return notes


__all__ = ["SAMPLE", "TRAIN", "apply_smoke", "check_schedule", "smoke_overrides"]
