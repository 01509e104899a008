"""Where the toolkit keeps files it can recompute (prompt embeddings): one cache per user, not per directory.

The root is, first found: ``$CROSSFLOW_CACHE_DIR``, ``$XDG_CACHE_HOME/crossflow``, ``~/.cache/crossflow``
(the XDG base-directory convention). Commands run from any directory share it; config keys such as
``task.cache_dir`` still override it per experiment.
"""

from __future__ import annotations

import os
from pathlib import Path

#: Environment variable that overrides the cache root.
CACHE_ENV_VAR = "CROSSFLOW_CACHE_DIR"


def user_cache_dir(*parts: str) -> Path:
    """The user's crossflow cache root, or ``root/part/...`` (nothing is created here).

    Args:
        parts: sub-folders under the root, e.g. ``"embeddings"``.
    """
    if os.environ.get(CACHE_ENV_VAR):
        root = Path(os.environ[CACHE_ENV_VAR]).expanduser()
    elif os.environ.get("XDG_CACHE_HOME"):
        root = Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "crossflow"
    else:
        root = Path.home() / ".cache" / "crossflow"
    return root.joinpath(*parts)


__all__ = ["CACHE_ENV_VAR", "user_cache_dir"]
