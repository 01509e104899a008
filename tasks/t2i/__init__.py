"""Text-to-image task adapter."""

from tasks.t2i.task import TextToImageTask

TASK = TextToImageTask

__all__ = ["TASK", "TextToImageTask"]
