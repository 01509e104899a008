"""The stateful parts of a training run as :class:`~crossflow.train.checkpoint.Stateful` objects, and the
processes' agreement (:class:`Processes`) that checkpointing and preemption need.

Weights and optimizer state go through torch's ``torch.distributed.checkpoint.state_dict`` API, which
gives one format (parameter names as keys) for a plain model, a DDP-wrapped one and an FSDP-sharded one,
so a checkpoint of any of them restores into any other.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn


def _api():
    """torch's state-dict API (imported when first used: it pulls in DTensor, ~1 s)."""
    from torch.distributed.checkpoint import state_dict

    return state_dict


class ModuleState:
    """A model's weights (plain, DDP-wrapped or FSDP-sharded)."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def state_dict(self) -> dict[str, torch.Tensor]:
        return _api().get_model_state_dict(self.module)

    def load_state_dict(self, state: dict[str, torch.Tensor], full: bool) -> None:
        api = _api()
        api.set_model_state_dict(self.module, state, options=api.StateDictOptions(full_state_dict=full))


class OptimizerState:
    """An optimizer's state keyed by parameter names (not by position), so it reshards."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.model, self.optimizer = model, optimizer

    def state_dict(self) -> dict[str, Any]:
        return _api().get_optimizer_state_dict(self.model, self.optimizer)

    def load_state_dict(self, state: dict[str, Any], full: bool) -> None:
        if any(isinstance(k, int) for k in state.get("state", {})) or any(
                isinstance(p, int) for g in state.get("param_groups", []) for p in g["params"]):
            state = self._by_name(state)  # a checkpoint written before names were used
        api = _api()
        api.set_optimizer_state_dict(self.model, self.optimizer, state,
                                     options=api.StateDictOptions(full_state_dict=full))

    def _by_name(self, state: dict[str, Any]) -> dict[str, Any]:
        names = {id(p): n for n, p in self.model.named_parameters()}
        order = [names[id(p)].removeprefix("module.") for g in self.optimizer.param_groups for p in g["params"]]
        return {"state": {order[i]: s for i, s in state["state"].items()},
                "param_groups": [dict(g, params=[order[i] for i in g["params"]]) for g in state["param_groups"]]}


class PlainState:
    """An object with torch's ``state_dict()`` / ``load_state_dict(state)`` (e.g. an LR scheduler)."""

    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def state_dict(self) -> dict[str, Any]:
        return self.obj.state_dict()

    def load_state_dict(self, state: dict[str, Any], full: bool) -> None:
        self.obj.load_state_dict(state)


class Processes:
    """The training processes: who writes files, waiting for all, agreeing on a flag, gathering objects.

    Flags travel over a gloo group (the default one on CPUs; a separate one next to NCCL), so agreeing
    on a flag after every step (preemption) costs a tiny host message and never waits for the GPU.
    """

    def __init__(self) -> None:
        self.active = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        self.rank = dist.get_rank() if self.active else 0
        self.size = dist.get_world_size() if self.active else 1
        self.is_main = self.rank == 0
        self.group = None
        if self.active and dist.get_backend() != "gloo":
            self.group = dist.new_group(backend="gloo")

    def barrier(self) -> None:
        if self.active:
            dist.barrier(group=self.group)

    def any(self, flag: bool) -> bool:
        """True on every process if ``flag`` is True on any."""
        if not self.active:
            return bool(flag)
        value = torch.tensor([int(bool(flag))])
        dist.all_reduce(value, op=dist.ReduceOp.MAX, group=self.group)
        return bool(value.item())

    def gather(self, obj: Any) -> list[Any]:
        """``obj`` of every process, in rank order, on every process."""
        if not self.active:
            return [obj]
        out: list[Any] = [None] * self.size
        dist.all_gather_object(out, obj, group=self.group)
        return out
