"""Super-resolution task adapter (low-res → high-res by direct evolution; noise + concatenation baseline)."""

from tasks.super_resolution.task import SuperResolutionTask

__all__ = ["SuperResolutionTask"]
