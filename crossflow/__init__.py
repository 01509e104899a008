"""CrossFlow: cross-modal flow matching (Liu et al., CVPR 2025).

The core package is modality-agnostic: task adapters live in the top-level ``tasks`` package (or any
installed package registered under the ``crossflow.tasks`` entry-point group). The Python API is
:class:`crossflow.pipeline.Pipeline`, also importable as ``from crossflow import Pipeline``.
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["Pipeline", "__version__"]


def __getattr__(name: str) -> Any:  # lazy: `import crossflow` stays cheap (the CLI's --help needs no torch)
    if name == "Pipeline":
        from crossflow.pipeline import Pipeline

        return Pipeline
    raise AttributeError(f"module 'crossflow' has no attribute {name!r}")
