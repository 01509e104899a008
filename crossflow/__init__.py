"""CrossFlow: cross-modal flow matching (Liu et al., CVPR 2025).

The core package is modality-agnostic: task adapters live in the top-level ``tasks`` package.
"""

__version__ = "0.1.0"
