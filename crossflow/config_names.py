"""Ready-made configs by name: ``crossflow train t2i/dit_256_clip`` works from any directory.

The repository's ``configs/`` folder is installed as the package data ``crossflow._configs`` (setup.py maps
it), so wheels and editable installs both carry it. A config argument is a path when that file exists;
otherwise it is looked up there as a name (``t2i/toy``, ``t2i/toy.yaml`` or ``configs/t2i/toy.yaml``).
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Optional

from crossflow.config import ConfigError

log = logging.getLogger(__name__)

#: Package that holds the shipped configs (the repository's ``configs/`` directory).
CONFIG_PACKAGE = "crossflow._configs"
_SUFFIXES = (".yaml", ".yml")


def shipped_config_dir() -> Optional[Path]:
    """Directory of the shipped configs: the installed ``crossflow._configs``, else ``configs/`` beside the
    package (a source checkout on ``sys.path`` without installing); ``None`` if neither exists."""
    try:
        spec = importlib.util.find_spec(CONFIG_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            if Path(location).is_dir():
                return Path(location)
    checkout = Path(__file__).resolve().parents[1] / "configs"
    return checkout if checkout.is_dir() else None


def shipped_configs() -> list[str]:
    """Names of the shipped configs (``t2i/toy``, ``t2i/official/t2i_256px_clip_dimr``, ...), sorted."""
    root = shipped_config_dir()
    if root is None:
        return []
    return sorted(p.relative_to(root).with_suffix("").as_posix() for p in root.rglob("*")
                  if p.suffix in _SUFFIXES and p.is_file())


def find_config(path_or_name: str | Path) -> Path:
    """The YAML file of a config argument: an existing file as given, else the shipped config of that name.

    Raises:
        ConfigError: neither a file nor a shipped name; the message lists the shipped names.
    """
    path = Path(path_or_name)
    if path.is_file():
        return path
    name = path.as_posix()
    if not path.is_absolute():
        name = name.removeprefix("./").removeprefix("configs/")
        for suffix in _SUFFIXES:
            name = name.removesuffix(suffix)
        root = shipped_config_dir()
        for suffix in _SUFFIXES:
            candidate = root / f"{name}{suffix}" if root is not None and name else None
            if candidate is not None and candidate.is_file():
                if path.suffix in _SUFFIXES:  # looked like a path: say where it came from
                    log.info("config %s: no such file here; using the shipped config %s", path, candidate)
                return candidate
    names = shipped_configs()
    listed = ", ".join(names) if names else "none found (is the package installed? pip install -e .)"
    raise ConfigError(f"config file not found: {path} (not a file, nor the name of a shipped config; shipped: "
                      f"{listed})")


__all__ = ["CONFIG_PACKAGE", "find_config", "shipped_config_dir", "shipped_configs"]
