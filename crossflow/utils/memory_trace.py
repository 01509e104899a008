"""Measure the memory of one training forward + backward without running it: fake tensors, live bytes per op.

The model is built on the meta device (:func:`crossflow.utils.params.build_on_meta`), its parameters become
*fake* CPU tensors (``FakeTensorMode``: shapes, dtypes and storages, no data), and one training step's
forward (under bf16 autocast when asked) and backward run on a fake batch of the task's shapes. A dispatch
mode sees every tensor each op creates and watches its storage's lifetime, so the trace knows, after every
op, how many bytes are alive:

* what the forward keeps for backward (the saved activations: the same tensors ``saved_tensors_hooks`` would
  see, counted once per storage even when several ops save them), plus the backward's temporaries and, under
  gradient checkpointing, the saved block inputs and each block's recomputation (torch's non-reentrant
  checkpoint runs for real on the fake tensors, so it needs no formula);
* the gradients as backward writes them (the storages that end up in ``param.grad``);
* the bf16 copies of the weights that autocast makes and keeps while the forward's graph holds them.

Because the kernels are CPU kernels, attention is the fused CPU kernel, which, like flash and memory-efficient
attention on GPUs, keeps the output and the log-sum-exp instead of the attention matrix, and autocast follows
its CPU op lists (the same matmuls and convolutions in bf16 as on a GPU). Nothing runs on a device and no
memory is allocated: DiT-H/2 traces in a few seconds. (``FakeTensorMode`` and ``TorchDispatchMode`` are the
tools torch's own tracing and memory tracker are built on; their modules carry a leading underscore.)
"""

from __future__ import annotations

import itertools
import weakref
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.weak import WeakIdKeyDictionary

from crossflow.specs import Spec


@dataclass
class StepTrace:
    """Live bytes during one training forward + backward: index ``2k`` just after op ``k`` made its outputs, ``2k+1``
    once what it freed is gone (index 0: before the first op).

    Attributes:
        micro_batch: samples in the traced batch.
        activations: ``(T,)`` int64 bytes of activations and temporaries (everything the step made except
            gradients and weight copies).
        gradients: ``(T,)`` bytes of the gradients written so far.
        weight_copies: ``(T,)`` bytes of autocast's low-precision weight copies.
        forward_end: the index at the end of the forward.
        batch_bytes: bytes of the input batch.
    """

    micro_batch: int
    activations: Tensor
    gradients: Tensor
    weight_copies: Tensor
    forward_end: int
    batch_bytes: int

    def at(self, other: StepTrace, micro_batch: int) -> StepTrace:
        """The trace at ``micro_batch``, linear in the batch from this trace and ``other`` (same ops, another batch).

        Every tensor of a step is either batch-sized (linear) or not (weights, gradients); the in-batch
        contrastive logits (B×B) are the exception, and too small to matter.
        """
        if other.activations.shape != self.activations.shape:
            raise ValueError("the two traces ran different ops; trace the batch size itself")
        w = (micro_batch - self.micro_batch) / (other.micro_batch - self.micro_batch)

        def mix(a: Tensor, b: Tensor) -> Tensor:
            return (a + w * (b - a)).round().clamp_min(0).long()

        return StepTrace(micro_batch, mix(self.activations, other.activations), self.gradients,
                         self.weight_copies, self.forward_end,
                         round(self.batch_bytes + w * (other.batch_bytes - self.batch_bytes)))


class _LiveBytes(TorchDispatchMode):
    """Records when each storage an op creates is born and dies (weak references on the storages)."""

    def __init__(self, param_storages: set[int]) -> None:
        super().__init__()
        self.param_storages = param_storages
        self.tokens: WeakIdKeyDictionary = WeakIdKeyDictionary()  # storage -> (token, weakref)
        # (time, token, ±bytes, is a weight copy); time 2k: the outputs of op k are born, 2k+1: what dies after it
        self.events: list[tuple[int, int, int, bool]] = []
        self.op = 0
        self._next = itertools.count()

    def _died(self, token: int, nbytes: int, copy: bool, _ref: Any) -> None:
        self.events.append((2 * self.op + 1, token, -nbytes, copy))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            # A fake tensor has no values: a condition the model reads from data (``bool(t)``) is taken as True.
            # The models' validity checks then pass; DiMR's "one time for the whole batch" shortcut is taken,
            # which shrinks its (B, dim) norm gates to (1, dim), too small to matter. Numbers cannot be guessed.
            if args[0].dtype != torch.bool:
                raise ValueError(f"the training step reads a {args[0].dtype} value from a tensor "
                                 f"({func}); it cannot be traced on fake tensors")
            return True
        out = func(*args, **(kwargs or {}))
        self.op += 1
        first = args[0] if args and isinstance(args[0], Tensor) else None
        # autocast's cast of a parameter: a weight copy (cached for the forward, then held by the graph)
        copy = (func is torch.ops.aten._to_copy.default and first is not None
                and first.untyped_storage()._cdata in self.param_storages)
        for t in tree_leaves(out):
            if not isinstance(t, Tensor):
                continue
            storage = t.untyped_storage()
            if storage in self.tokens or storage._cdata in self.param_storages:
                continue  # a view of a tensor already counted, or a parameter
            token, nbytes = next(self._next), storage.nbytes()
            ref = weakref.ref(storage, lambda r, k=token, n=nbytes, c=copy: self._died(k, n, c, r))
            self.tokens[storage] = (token, ref)
            self.events.append((2 * self.op, token, nbytes, copy))
        return out


def _make_fake(model: nn.Module, mode: FakeTensorMode) -> None:
    """Replace the (meta) parameters and buffers of ``model`` by fake CPU tensors, in place; shared ones stay shared."""
    made: dict[int, Tensor] = {}
    with mode:
        for module in model.modules():
            for table, as_param in ((module._parameters, True), (module._buffers, False)):
                for name, t in list(table.items()):
                    if t is None:
                        continue
                    if id(t) not in made:
                        fake = torch.empty(t.shape, dtype=t.dtype, device="cpu")
                        made[id(t)] = nn.Parameter(fake, requires_grad=t.requires_grad) if as_param else fake
                    table[name] = made[id(t)]


def fake_batch(source: Spec, target: Spec, micro_batch: int) -> dict[str, Tensor]:
    """A training batch of the specs' shapes (``source``, ``source_mask`` for tokens, ``target``); call it under a
    fake mode."""
    batch = {"source": torch.empty(micro_batch, *source.shape), "target": torch.empty(micro_batch, *target.shape)}
    if source.kind == "tokens":
        batch["source_mask"] = torch.ones(micro_batch, source.max_tokens, dtype=torch.bool)
    return batch


def trace_training_step(model: nn.Module, source: Spec, target: Spec, micro_batch: int, *,
                        autocast_dtype: torch.dtype | None = None) -> StepTrace:
    """Trace one forward + backward of ``model`` (built on meta; its tensors are made fake here, in place).

    Args:
        model: a trainable model on the meta device (``model(batch).loss``).
        source, target: the task's specs, for the batch shapes.
        micro_batch: samples in the batch.
        autocast_dtype: run the forward under ``torch.autocast`` with this dtype (None: full precision).
            As in the trainer, autocast ends before ``backward``.
    """
    mode = FakeTensorMode()
    _make_fake(model, mode)
    params = [p for p in model.parameters()]
    live = _LiveBytes({p.untyped_storage()._cdata for p in params})
    with mode:
        batch = fake_batch(source, target, micro_batch)
    model.train()
    with mode, live:
        with torch.autocast("cpu", autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None):
            try:
                loss = model(batch).loss
            except KeyError as exc:  # e.g. the text VAE of captioning's first stage trains on token ids
                raise ValueError(f"{type(model).__name__} trains on batches with key {exc}; the memory trace makes "
                                 f"batches of {', '.join(batch)} only") from None
        forward_end = 2 * live.op + 1
        loss.backward()
        del loss
    events = list(live.events)
    grad_tokens = {live.tokens[p.grad.untyped_storage()][0] for p in params if p.grad is not None}
    series = torch.zeros(2 * live.op + 2, 3, dtype=torch.long)  # activations, gradients, weight copies
    for time, token, nbytes, copy in events:
        kind = 1 if token in grad_tokens else 2 if copy else 0
        series[time, kind] += nbytes
    series = series.cumsum(0)
    batch_bytes = sum(t.nbytes for t in batch.values())
    return StepTrace(micro_batch, series[:, 0], series[:, 1], series[:, 2], forward_end, batch_bytes)
