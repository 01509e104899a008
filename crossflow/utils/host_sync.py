"""Count the places where Python reads a tensor's value (each one waits for the device on a GPU).

``tensor.item()``, ``float(t)``, ``int(t)``, ``bool(t)`` (an ``if`` on a tensor) and ``t.tolist()`` copy a
value to the host; on a GPU every such read blocks until all queued kernels have run, which stalls the
pipeline of a training or sampling loop. :class:`HostReadCounter` patches those methods while it is
active and counts the calls, so a test or benchmark can check that a loop reads nothing per step. (On
CUDA, ``torch.cuda.set_sync_debug_mode("error")`` is the stricter check; it does not exist for CPUs.)
"""

from __future__ import annotations

import collections
from typing import Any

import torch

_METHODS = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__")


class HostReadCounter:
    """Context manager counting host reads of tensor values, by method name.

    Example::

        with HostReadCounter() as reads:
            train_step()
        assert reads.total == 0, reads.counts
    """

    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self._saved: dict[str, Any] = {}

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def __enter__(self) -> "HostReadCounter":
        for name in _METHODS:
            original = getattr(torch.Tensor, name)
            self._saved[name] = original

            def counted(tensor: torch.Tensor, *args: Any, __name: str = name, __orig: Any = original) -> Any:
                self.counts[__name] += 1
                return __orig(tensor, *args)
            setattr(torch.Tensor, name, counted)
        return self

    def __exit__(self, *exc: Any) -> None:
        for name, original in self._saved.items():
            setattr(torch.Tensor, name, original)
        self._saved.clear()
