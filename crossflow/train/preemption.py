"""Preemption: SIGTERM / SIGUSR1 (what SLURM and Kubernetes send before killing a job) stop training cleanly.

The trainer finishes the step in progress, writes a checkpoint and raises :class:`TrainingPreempted`;
``crossflow train`` then exits with :data:`EXIT_PREEMPTED` (75, ``EX_TEMPFAIL``: "try again"), and
``crossflow train --resume --run-dir RUN`` continues exactly where it stopped. Under several processes
the processes agree after every step whether any of them was signalled, so all stop at the same step.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType
from typing import Optional

log = logging.getLogger(__name__)

EXIT_PREEMPTED = 75
SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class TrainingPreempted(Exception):
    """Training stopped on a signal after writing a checkpoint; ``--resume`` continues it."""

    def __init__(self, signal_name: str, step: int, checkpoint) -> None:
        self.signal_name, self.step, self.checkpoint = signal_name, step, checkpoint
        super().__init__(f"{signal_name} received: stopped after step {step} with checkpoint {checkpoint}; "
                         f"continue with `crossflow train --resume --run-dir {checkpoint.parent.parent}` "
                         f"(exit code {EXIT_PREEMPTED})")


class PreemptionWatch:
    """Record SIGTERM / SIGUSR1 while training (a context manager; previous handlers come back on exit).

    Only the main thread can install signal handlers; elsewhere (e.g. a notebook's worker thread)
    signals keep their default behaviour and :attr:`requested` stays ``None``.
    """

    def __init__(self) -> None:
        self.requested: Optional[str] = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: Optional[FrameType]) -> None:
        if self.requested is None:
            self.requested = signal.Signals(signum).name
            log.warning("%s received: finishing the current step, then writing a checkpoint", self.requested)

    def __enter__(self) -> "PreemptionWatch":
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


def ignore_stop_signals(_worker_id: int = 0) -> None:
    """DataLoader worker init: leave SIGTERM / SIGUSR1 to the training process (a worker killed by the
    signal would break the step the trainer is finishing)."""
    for sig in SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
