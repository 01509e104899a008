"""``crossflow params CONFIG --memory``: the options of the peak-memory estimate and the command."""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger("crossflow")

#: The estimate's options (argparse destinations); each needs --memory.
MEMORY_OPTIONS = ("parallel", "processes", "micro_batch", "precision", "checkpointing", "offload")


def add_memory_options(p: argparse.ArgumentParser) -> None:
    """The ``--memory`` flags of ``crossflow params``. Values are checked by the estimate, which names the flag in
    a one-line error."""
    g = p.add_argument_group("peak memory per process (--memory)", "Trace one training step of the model on fake "
                             "tensors (nothing is allocated) and add the weights, gradients, AdamW state, EMA copy "
                             "and parallel working copies; defaults come from the config (docs/training_at_scale.md)")
    g.add_argument("--memory", action="store_true",
                   help="estimate the peak memory per training process (per GPU) instead of counting parameters")
    g.add_argument("--parallel", metavar="{ddp,fsdp}",
                   help="ddp: every process holds the whole model, gradients and AdamW state; fsdp: FSDP2 shards "
                        "them and the EMA copy over --processes (default: train.parallel, else ddp)")
    g.add_argument("--processes", metavar="N", help="training processes (GPUs); shards the state under fsdp and "
                                                    "splits train.batch_size (default 1)")
    g.add_argument("--micro-batch", metavar="B", help="samples per process per forward (default: train.batch_size / "
                                                      "(processes × train.grad_accum_steps))")
    g.add_argument("--precision", metavar="{no,bf16}", help="no: fp32; bf16: autocast (bf16 weight copies under ddp, "
                                                            "bf16 gathered units under fsdp), fp32 master weights "
                                                            "(default: train.mixed_precision)")
    g.add_argument("--checkpointing", metavar="{on,off}",
                   help="gradient checkpointing of the velocity net's blocks (default: the config's "
                        "model.velocity_net.gradient_checkpointing)")
    g.add_argument("--offload", action="store_true", default=None,
                   help="with --parallel fsdp: parameter shards, gradients and AdamW state in host memory (default: "
                        "train.fsdp_cpu_offload)")


def cmd_params_memory(args: argparse.Namespace) -> dict | None:
    """The estimate when ``--memory`` is given; None for a plain parameter count. Estimate flags without
    ``--memory`` raise, naming the first one."""
    given = {k: getattr(args, k) for k in MEMORY_OPTIONS if getattr(args, k, None) is not None}
    if not args.memory:
        if given:
            raise ValueError(f"--{next(iter(given)).replace('_', '-')} is an option of the memory estimate: add "
                             "--memory")
        return None
    from crossflow.utils.memory import config_memory_estimate

    result = config_memory_estimate(args.config, args.overrides, **given)
    log.info(result["summary"])
    return result
