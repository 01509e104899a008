"""Text-to-image task adapter."""

from tasks.t2i.task import TextToImageTask

__all__ = ["TextToImageTask"]
