"""Monocular depth task adapter (image → depth map, pixel space)."""

from tasks.depth.task import DepthTask

__all__ = ["DepthTask"]
