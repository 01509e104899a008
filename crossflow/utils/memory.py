"""Peak memory per process of training a config: ``crossflow params CONFIG --memory``.

The estimate adds what a training process holds for the whole run to the peak of one training step:

* **weights**: the fp32 parameters and the buffers; **gradients**: fp32, trainable parameters only;
  **AdamW**: two fp32 states per trainable parameter; **EMA**: the trainer's fp32 copy of the weights.
  Under ``parallel: fsdp`` over N processes parameters, gradients, AdamW state and the EMA copy are
  sharded (1/N each; buffers are replicated); with CPU offload the shards live in host memory.
* **working copies**: what a parallel setup adds for the duration of a step: autocast's bf16 weight
  copies (DDP / one process with bf16; measured), DDP's gradient buckets (one fp32 copy of the gradients
  when N > 1), or under FSDP the gathered units: the root unit (every parameter outside the blocks,
  kept gathered from forward to backward), the running block unit and the prefetched one in the
  parameter dtype, and the running unit's unsharded gradient with its fp32 reduce-scatter buffer.
* **activations**: measured by tracing one forward + backward on fake tensors
  (:mod:`crossflow.utils.memory_trace`): what the forward saves for backward, the backward's
  temporaries, the input batch, and gradient checkpointing's effect, op by op.

The peak is the largest of: the largest "activations + gradients written so far + weight copies" along the
trace (gradient accumulation keeps the whole gradients alive instead), under FSDP the end of backward (the
root unit's gradient is reduced), and the optimizer step; the components are reported as they stand at that
moment, so they add up to the total. Checked against real CPU training in tests/crossflow/utils/test_memory.py
(docs/training_at_scale.md, "Memory per GPU").
Not included: the CUDA context and allocator caching (a few hundred MB to ~1 GB on a GPU, not measured
here), frozen models the task's data pipeline holds (the toy t2i language model, captioning's text VAE).
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from crossflow.utils.memory_trace import StepTrace, trace_training_step
from crossflow.utils.params import build_on_meta

GIB = 2**30
PARALLEL = ("ddp", "fsdp")
PRECISIONS = ("no", "bf16", "fp16")
COMPONENTS = ("weights", "gradients", "adamw", "ema", "working", "activations")


@dataclass(frozen=True)
class MemorySetup:
    """How a config is trained: the inputs of the estimate (each names its ``crossflow params`` flag)."""

    parallel: str = "ddp"          # --parallel
    processes: int = 1             # --processes
    micro_batch: int = 1           # --micro-batch
    precision: str = "no"          # --precision (fp16: the same sizes as bf16)
    checkpointing: bool = False    # --checkpointing
    offload: bool = False          # --offload
    grad_accum_steps: int = 1      # train.grad_accum_steps
    fused_optimizer: bool = True   # train.fused_optimizer

    def __post_init__(self) -> None:
        if self.parallel not in PARALLEL:
            raise ValueError(f"--parallel must be ddp or fsdp, got {self.parallel!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"--precision must be no or bf16, got {self.precision!r}")
        for flag, value in (("--processes", self.processes), ("--micro-batch", self.micro_batch),
                            ("train.grad_accum_steps", self.grad_accum_steps)):
            if value < 1:
                raise ValueError(f"{flag} must be >= 1, got {value}")
        if self.offload and self.parallel != "fsdp":
            raise ValueError("--offload is FSDP's CPU offload: it needs --parallel fsdp")
        if self.parallel == "fsdp" and self.precision == "fp16":
            raise ValueError("--parallel fsdp trains with --precision no or bf16, got fp16")

    @property
    def low_precision(self) -> bool:
        return self.precision != "no"


def _int_flag(flag: str, value: Any) -> int | None:
    if value is None or isinstance(value, int):
        return value
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{flag} must be a whole number, got {value!r}") from None


def _checkpointing_flag(value: Any) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    if str(value).lower() in ("on", "true", "yes", "1"):
        return True
    if str(value).lower() in ("off", "false", "no", "0"):
        return False
    raise ValueError(f"--checkpointing must be on or off, got {value!r}")


def resolve_setup(cfg: Any, *, parallel: str | None = None, processes: Any = None, micro_batch: Any = None,
                  precision: str | None = None, checkpointing: Any = None,
                  offload: bool | None = None) -> MemorySetup:
    """The setup from the flags given, the rest from the config (``train.parallel``, ``train.fsdp_cpu_offload``,
    ``train.mixed_precision``, the velocity net's ``gradient_checkpointing``; micro-batch
    ``train.batch_size / (processes × train.grad_accum_steps)``)."""
    tc = cfg.train
    processes = _int_flag("--processes", processes)
    processes = 1 if processes is None else processes
    if processes < 1:
        raise ValueError(f"--processes must be >= 1, got {processes}")
    micro_batch = _int_flag("--micro-batch", micro_batch)
    if micro_batch is None:
        per_step = processes * tc.grad_accum_steps
        if tc.batch_size % per_step:
            raise ValueError(f"train.batch_size={tc.batch_size} is not divisible by --processes × "
                             f"train.grad_accum_steps = {processes}×{tc.grad_accum_steps}; give --micro-batch")
        micro_batch = tc.batch_size // per_step
    net = getattr(cfg.model, "velocity_net", None)
    checkpointing = _checkpointing_flag(checkpointing)
    if checkpointing and not hasattr(net, "gradient_checkpointing"):
        raise ValueError("--checkpointing on: this config's model has no model.velocity_net.gradient_checkpointing")
    if checkpointing is None:
        checkpointing = bool(getattr(net, "gradient_checkpointing", False))
    parallel = parallel or getattr(tc, "parallel", "ddp")  # (configs written before train.parallel: ddp)
    if offload is None:
        offload = parallel == "fsdp" and bool(getattr(tc, "fsdp_cpu_offload", False))
    return MemorySetup(parallel=parallel, processes=processes, micro_batch=micro_batch,
                       precision=precision or tc.mixed_precision, checkpointing=checkpointing, offload=bool(offload),
                       grad_accum_steps=tc.grad_accum_steps, fused_optimizer=tc.fused_optimizer)


@dataclass(frozen=True)
class ModelSizes:
    """Bytes of a model's tensors as the trainer keeps them, and its FSDP units' sizes (numbers of elements)."""

    param_bytes: int
    trainable_bytes: int
    buffer_bytes: int
    trainable: int
    frozen: int
    root_unit: int
    largest_unit: int

    @classmethod
    def of(cls, model: nn.Module) -> ModelSizes:
        from crossflow.train.sharding import shard_units  # the trainer's FSDP units

        params = list(model.parameters())
        units = [sum(p.numel() for p in unit.parameters()) for unit in shard_units(model)]
        trainable = [p for p in params if p.requires_grad]
        return cls(param_bytes=sum(p.nbytes for p in params), trainable_bytes=sum(p.nbytes for p in trainable),
                   buffer_bytes=sum(b.nbytes for b in model.buffers()),
                   trainable=sum(p.numel() for p in trainable),
                   frozen=sum(p.numel() for p in params if not p.requires_grad),
                   root_unit=sum(p.numel() for p in params) - sum(units), largest_unit=max(units, default=0))


@dataclass
class MemoryEstimate:
    """Bytes per process at the peak of a training step, by component (they add up to ``total``)."""

    setup: MemorySetup
    components: dict[str, int]
    working_parts: dict[str, int]
    peak_phase: str  # "forward", "backward", "end of backward" (FSDP) or "optimizer step"
    activations_after_forward: int

    @property
    def total(self) -> int:
        return sum(self.components.values())

    def summary(self) -> str:
        s = self.setup
        parts = " + ".join(f"{k} {v / GIB:.2f}" for k, v in self.components.items())
        where = f"{s.parallel.upper()} over {s.processes} process{'es' * (s.processes > 1)}" + \
            (" with CPU offload" if s.offload else "")
        return (f"peak per process {self.total / GIB:.2f} GiB = {parts} GiB ({where}, micro-batch {s.micro_batch}, "
                f"precision {s.precision}, checkpointing {'on' if s.checkpointing else 'off'}; at the "
                f"{self.peak_phase})")

    def to_dict(self) -> dict[str, Any]:
        return {"setup": asdict(self.setup), "bytes": self.components | {"total": self.total},
                "gib": {k: round(v / GIB, 3) for k, v in (self.components | {"total": self.total}).items()},
                "working_parts_bytes": self.working_parts, "peak_phase": self.peak_phase,
                "activations_after_forward_gib": round(self.activations_after_forward / GIB, 3),
                "summary": self.summary()}


def combine(sizes: ModelSizes, trace: StepTrace, setup: MemorySetup) -> MemoryEstimate:
    """The estimate of ``setup`` from a model's sizes and a step trace at ``setup.micro_batch``.

    Three moments compete for the peak: the largest point of the step's trace (with the working copies alive
    then), under FSDP the end of backward (the root unit's gradient is reduced while every gradient shard is
    written), and the optimizer step (whole gradients).
    """
    n = setup.processes if setup.parallel == "fsdp" else 1
    on_device = 0.0 if setup.offload else 1.0 / n  # share of the sharded state this device holds
    persistent = {"weights": round(sizes.param_bytes * on_device) + sizes.buffer_bytes,
                  "adamw": round(2 * sizes.trainable_bytes * on_device),
                  "ema": round(sizes.param_bytes * on_device) + sizes.buffer_bytes}
    full_grads = round(sizes.trainable_bytes * on_device)
    buckets = {"ddp_gradient_buckets": sizes.trainable_bytes} if setup.parallel == "ddp" and setup.processes > 1 else {}
    gathered = unit_grad = root_grad = 0
    if setup.parallel == "fsdp":  # MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=fp32) under bf16
        param_dtype = 2 if setup.low_precision else 4
        # the root unit stays gathered from forward to backward; the running block unit and the prefetched one
        gathered = (sizes.root_unit + 2 * sizes.largest_unit) * param_dtype
        # a unit's unsharded gradient (param dtype) and the fp32 buffer it is reduce-scattered from
        unit_grad = sizes.largest_unit * (param_dtype + 4)
        root_grad = sizes.root_unit * (param_dtype + 4)

    # Along the trace: gradients are written as backward goes (sharded under FSDP, in host memory with offload);
    # with accumulation the previous micro-batches' gradients are alive all along.
    copies = trace.weight_copies if setup.parallel == "ddp" else torch.zeros_like(trace.weight_copies)
    grads = trace.gradients * on_device if setup.grad_accum_steps == 1 else torch.full_like(
        trace.gradients, full_grads, dtype=torch.float64)
    step = trace.activations + grads + copies
    t = int(step.argmax())
    working = buckets | {"autocast_weight_copies": int(copies[t]), "fsdp_gathered_parameters": gathered,
                         "fsdp_unsharded_gradient": unit_grad}
    moments = [("forward" if t <= trace.forward_end else "backward", working,
                {"gradients": round(float(grads[t])), "activations": int(trace.activations[t]) + trace.batch_bytes})]
    if setup.parallel == "fsdp":
        moments.append(("end of backward", {"fsdp_gathered_parameters": gathered, "fsdp_unsharded_gradient": root_grad},
                        {"gradients": full_grads, "activations": int(trace.activations[-1]) + trace.batch_bytes}))
    # The unfused (foreach) AdamW adds one fp32 temporary per parameter; the fused one none.
    optimizer_temp = 0 if setup.fused_optimizer or setup.offload else round(sizes.trainable_bytes * on_device)
    moments.append(("optimizer step", buckets | {"optimizer_temporaries": optimizer_temp},
                    {"gradients": full_grads, "activations": 0}))

    def total(moment) -> int:
        return sum(moment[1].values()) + sum(moment[2].values())

    phase, working, live = max(moments, key=total)  # the first of equals
    working = {k: v for k, v in working.items() if v}
    components = {k: (persistent | live | {"working": sum(working.values())})[k] for k in COMPONENTS}
    return MemoryEstimate(setup, components, working, phase, int(trace.activations[trace.forward_end]))


def _with_checkpointing(cfg: Any, checkpointing: bool) -> Any:
    net = getattr(cfg.model, "velocity_net", None)
    if not hasattr(net, "gradient_checkpointing") or net.gradient_checkpointing == checkpointing:
        return cfg
    cfg = copy.deepcopy(cfg)
    cfg.model.velocity_net.gradient_checkpointing = checkpointing
    return cfg


class MemoryPlanner:
    """A config's model sizes and step traces: estimates for any setup, traced once per precision and
    checkpointing setting (a trace of DiT-H/2 takes a few seconds)."""

    def __init__(self, cfg: Any, task_cls: type) -> None:
        self.cfg, self.task_cls = cfg, task_cls
        task = task_cls(cfg)
        self.source, self.target = task.source_spec(), task.target_spec()
        self.sizes = ModelSizes.of(build_on_meta(cfg, task_cls))
        self._traces: dict[tuple, StepTrace] = {}

    def setup(self, **flags: Any) -> MemorySetup:
        return resolve_setup(self.cfg, **flags)

    def trace(self, micro_batch: int, precision: str, checkpointing: bool) -> StepTrace:
        key = (micro_batch, precision != "no", checkpointing)
        if key not in self._traces:
            model = build_on_meta(_with_checkpointing(self.cfg, checkpointing), self.task_cls)
            dtype = {"no": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
            self._traces[key] = trace_training_step(model, self.source, self.target, micro_batch, autocast_dtype=dtype)
        return self._traces[key]

    def estimate(self, setup: MemorySetup, *, exact: bool = True) -> MemoryEstimate:
        """``exact``: trace at the setup's micro-batch; else interpolate from traces at micro-batches 2 and 4."""
        if exact:
            trace = self.trace(setup.micro_batch, setup.precision, setup.checkpointing)
        else:
            a, b = (self.trace(m, setup.precision, setup.checkpointing) for m in (2, 4))
            trace = a.at(b, setup.micro_batch)
        return combine(self.sizes, trace, setup)

    def largest_micro_batch(self, setup: MemorySetup, budget_bytes: float, *, limit: int = 4096) -> int:
        """The largest micro-batch whose (interpolated) estimate is at most ``budget_bytes``; 0 if none fits."""
        def fits(m: int) -> bool:
            return self.estimate(MemorySetup(**(asdict(setup) | {"micro_batch": m})), exact=False).total <= budget_bytes

        if not fits(1):
            return 0
        low, high = 1, 2
        while high <= limit and fits(high):
            low, high = high, 2 * high
        high = min(high, limit + 1)
        while high - low > 1:  # fits(low), not fits(high)
            mid = (low + high) // 2
            low, high = (mid, high) if fits(mid) else (low, mid)
        return low


def config_memory_estimate(config: str | Path, overrides: list[str] = (), **flags: Any) -> dict[str, Any]:
    """``crossflow params CONFIG --memory``: the estimate of one setup (flags as in :func:`resolve_setup`)."""
    from crossflow.registry import load_experiment

    cfg, task_cls = load_experiment(config, list(overrides))
    planner = MemoryPlanner(cfg, task_cls)
    estimate = planner.estimate(planner.setup(**flags))
    sizes = planner.sizes
    return {"config": str(config), "parameters": {"trainable": sizes.trainable, "frozen": sizes.frozen}} | \
        estimate.to_dict()
