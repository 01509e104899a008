"""Monocular depth task adapter (image → depth map, pixel space)."""

from tasks.depth.task import DepthTask

TASK = DepthTask

__all__ = ["TASK", "DepthTask"]
