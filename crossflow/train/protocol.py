"""What the trainer needs from a model: a loss with logged scalars, and the modules worth compiling.

CrossFlow, the cross-attention baseline and the text VAE all honour :class:`Trainable`; the trainer
checks it once, when it is built, and never asks which model it trains.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Protocol, runtime_checkable

import torch
from torch import Tensor, nn


@dataclass
class TrainOutput:
    """One batch's objective.

    Attributes:
        loss: scalar tensor that backward runs on.
        logs: scalar tensors to log (detached, still on the device). The trainer accumulates them on the
            device and reads them only every ``train.log_every`` steps, so a step never waits for the GPU.
    """

    loss: Tensor
    logs: dict[str, Tensor] = field(default_factory=dict)


@runtime_checkable
class Trainable(Protocol):
    """A model the trainer can fit.

    ``forward(batch, generator=None) -> TrainOutput`` is the training objective (``forward`` so that DDP
    wraps it); ``compile_modules()`` lists the sub-modules that ``train.compile=true`` compiles in place
    (the heavy, shape-stable parts; state-dict keys stay unchanged). Checkpoints hold the whole
    ``state_dict()``.
    """

    def forward(self, batch: dict[str, Tensor], generator: Optional[torch.Generator] = None) -> TrainOutput: ...

    def compile_modules(self) -> list[nn.Module]: ...
