"""Sharded training with torch's FSDP2 (``fully_shard``): ``train.parallel: fsdp``.

Every transformer / ConvNeXt block of the DiT, DiMR, the token encoders and the text VAE is one sharding
unit (:data:`UNIT_TYPES`), the whole model the root unit. Parameters, gradients and the AdamW state
are sharded over the processes (each holds ``1/N``); a unit's parameters are gathered just before it
runs and freed after it ("reshard after forward"). With ``train.mixed_precision: bf16`` the gathered
copies are bf16 and gradients are reduced in fp32 into fp32 master weights; with
``train.fsdp_cpu_offload`` the shards, their gradients and the optimizer state live in host memory.

Why not accelerate's FSDP plugin: accelerate turns FSDP on only for multi-GPU launches (never for
CPU processes, so the path could not be tested here) and prepares one model, while we shard the EMA
copy too. accelerate still owns devices, processes, autocast and trackers.
"""

from __future__ import annotations

import logging
from typing import Iterable

import torch
import torch.distributed as dist
from torch import nn

log = logging.getLogger(__name__)


def unit_types() -> tuple[type[nn.Module], ...]:
    """The block classes that become one FSDP unit each (imported here: the model modules import nothing of this)."""
    from crossflow.encoders.image_ve import ResBlock
    from crossflow.encoders.reduction_ve import PostNormLayer
    from crossflow.encoders.token_ve import EncoderBlock
    from crossflow.models.dimr import ConvNeXtBlock, TransformerBlock
    from crossflow.models.dit import DiTBlock

    return DiTBlock, TransformerBlock, ConvNeXtBlock, EncoderBlock, PostNormLayer, ResBlock


def shard_units(model: nn.Module) -> list[nn.Module]:
    """The model's blocks of :func:`unit_types` that hold parameters, outermost first (no unit inside another)."""
    types = unit_types()
    units: list[nn.Module] = []
    inside: set[int] = set()
    for module in model.modules():
        if id(module) in inside:
            continue
        if isinstance(module, types) and any(True for _ in module.parameters()):
            units.append(module)
            inside.update(id(m) for m in module.modules())
    return units


def ensure_process_group(device: torch.device) -> None:
    """FSDP needs a process group: one process without a launcher gets a private one-rank group.

    (In-memory store, so nothing listens on a port.) Under torchrun / accelerate the group exists already.
    The group stays for the life of the process (the sharded model needs it).
    """
    if dist.is_available() and dist.is_initialized():
        return
    backend = "cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
    log.info("train.parallel=fsdp in one process: a one-rank process group (nothing is sharded)")


def apply_fsdp(models: Iterable[nn.Module], device: torch.device, *, mixed_precision: str,
               cpu_offload: bool) -> None:
    """``fully_shard`` every unit of each model, then the model itself, in place, over all processes.

    The live model and its EMA copy are sharded the same way, so the EMA update works shard by shard.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy, fully_shard

    if mixed_precision not in ("no", "bf16"):
        raise ValueError(f"train.parallel=fsdp supports train.mixed_precision no or bf16, got {mixed_precision!r}")
    if cpu_offload and device.type != "cuda":
        raise ValueError("train.fsdp_cpu_offload=true moves shards from the GPU to host memory; this run is on the "
                         f"{device.type}, where there is nothing to offload: set train.fsdp_cpu_offload=false")
    ensure_process_group(device)
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    # Inputs keep their dtype (targets and losses stay fp32); autocast casts inside the blocks.
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32, cast_forward_inputs=False) \
        if mixed_precision == "bf16" else MixedPrecisionPolicy()
    offload = CPUOffloadPolicy() if cpu_offload else OffloadPolicy()
    for model in models:
        if device.type == "cuda" and not cpu_offload:
            model.to(device)
        for unit in shard_units(model):
            fully_shard(unit, mesh=mesh, mp_policy=policy, offload_policy=offload)
        fully_shard(model, mesh=mesh, mp_policy=policy, offload_policy=offload)


def local(tensor: torch.Tensor) -> torch.Tensor:
    """This process's shard of a sharded (DTensor) tensor; a plain tensor as it is."""
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor


def full_value(tensor: torch.Tensor) -> torch.Tensor:
    """A replicated DTensor (e.g. the gradient norm of sharded gradients) as a plain tensor."""
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor
