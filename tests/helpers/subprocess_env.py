"""The environment of child processes (torchrun, ``python -c``) that import the toolkit and the test helpers."""

from __future__ import annotations

import os

from helpers.paths import REPO_ROOT, TESTS_DIR


def child_env(**extra: str) -> dict[str, str]:
    """``os.environ`` with ``PYTHONPATH`` = repository root, then ``tests/`` (for ``helpers``), then the old value.

    The root comes first so that the test folders ``tests/crossflow`` and ``tests/tasks`` can never shadow the
    packages of the same name, whatever the child's working directory.
    """
    path = os.pathsep.join(p for p in (str(REPO_ROOT), str(TESTS_DIR), os.environ.get("PYTHONPATH", "")) if p)
    return os.environ | {"PYTHONPATH": path} | extra
