"""``crossflow params CONFIG --memory``: the peak-memory estimate per training process.

The slow test trains a sized config on the CPU in a subprocess and checks the estimate against the measured
peak RSS; the fast ones check the arithmetic of the parallel setups (on hand-made traces), what checkpointing
and bf16 change (on traced models), the fake-tensor trace against the saved tensors of a real forward, and the
command's output and one-line errors.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from crossflow.cli import main
from crossflow.registry import experiment_from_dict
from crossflow.utils.memory import MemoryPlanner, MemorySetup, ModelSizes, combine
from crossflow.utils.memory_trace import StepTrace, fake_batch
from helpers.subprocess_env import child_env
from helpers.synthetic_task import tiny_raw_config


def small_raw(**velocity_net) -> dict:
    """The synthetic task with a DiT big enough for checkpointing and bf16 to show (4 blocks, width 64)."""
    raw = tiny_raw_config()
    raw["model"]["velocity_net"] |= {"hidden_size": 64, "depth": 4, "num_heads": 4} | velocity_net
    return raw


@pytest.fixture(scope="module")
def planner() -> MemoryPlanner:
    return MemoryPlanner(*experiment_from_dict(small_raw()))


# ------------------------------------------------------------------ arithmetic of the setups
SIZES = ModelSizes(param_bytes=4000, trainable_bytes=4000, buffer_bytes=100, trainable=1000, frozen=0,
                   root_unit=100, largest_unit=200)


def hand_trace() -> StepTrace:
    """Forward saves 3000 bytes of activations; backward frees them while writing 4000 bytes of gradients."""
    acts = torch.tensor([0, 1000, 3000, 3000, 2000, 600, 0])
    grads = torch.tensor([0, 0, 0, 0, 2500, 3600, 4000])
    return StepTrace(8, acts, grads, torch.zeros_like(acts), forward_end=3, batch_bytes=10)


def test_fsdp_over_n_processes_divides_the_sharded_state_by_n():
    one = combine(SIZES, hand_trace(), MemorySetup(parallel="fsdp", processes=1, grad_accum_steps=2))
    four = combine(SIZES, hand_trace(), MemorySetup(parallel="fsdp", processes=4, grad_accum_steps=2))
    c1, c4 = one.components, four.components
    assert c1["adamw"] == 8000 and c4["adamw"] == 2000
    assert (c1["weights"], c4["weights"]) == (4100, 1100)  # buffers are replicated
    assert (c1["ema"], c4["ema"]) == (4100, 1100)
    assert (c1["gradients"], c4["gradients"]) == (4000, 1000)  # accumulation: whole (sharded) gradients alive
    assert c1["working"] == c4["working"] > 0 and c1["activations"] == c4["activations"] == 3000 + 10
    assert one.total == sum(c1.values())


def test_offload_keeps_only_gathered_units_and_activations_on_the_device():
    est = combine(SIZES, hand_trace(), MemorySetup(parallel="fsdp", processes=4, offload=True))
    assert est.components["adamw"] == est.components["gradients"] == 0
    assert est.components["weights"] == est.components["ema"] == 100  # buffers only
    # the root unit and two block units gathered (fp32), one block's unsharded gradient + its fp32 reduce buffer
    assert est.working_parts == {"fsdp_gathered_parameters": (100 + 2 * 200) * 4, "fsdp_unsharded_gradient": 200 * 8}


def test_fsdp_peak_can_be_the_root_units_gradient_at_the_end_of_backward():
    big_root = replace(SIZES, root_unit=900)  # 900 fp32 elements outside the blocks: 7200 bytes to reduce
    est = combine(big_root, hand_trace(), MemorySetup(parallel="fsdp", processes=4))
    assert est.peak_phase == "end of backward" and est.components["gradients"] == 1000
    assert est.working_parts == {"fsdp_gathered_parameters": (900 + 2 * 200) * 4, "fsdp_unsharded_gradient": 900 * 8}


def test_ddp_peak_follows_the_backward_and_adds_buckets_over_several_processes():
    one = combine(SIZES, hand_trace(), MemorySetup())
    # the largest activations + gradients so far: 2000 + 2500 in the backward (the sum of both peaks is 7000)
    assert one.peak_phase == "backward" and one.components["gradients"] == 2500
    assert one.components["activations"] == 2000 + 10
    two = combine(SIZES, hand_trace(), MemorySetup(processes=2))
    assert two.working_parts == {"ddp_gradient_buckets": 4000} and two.total == one.total + 4000


def test_flags_are_checked_naming_the_flag():
    for kwargs, flag in (({"processes": 0}, "--processes"), ({"micro_batch": 0}, "--micro-batch"),
                         ({"precision": "fp8"}, "--precision"), ({"parallel": "tp"}, "--parallel"),
                         ({"offload": True}, "--offload")):
        with pytest.raises(ValueError, match=flag):
            MemorySetup(**kwargs)


# ------------------------------------------------------------------ traced models
def test_checkpointing_lowers_the_activations(planner):
    off = planner.estimate(planner.setup(micro_batch=16, checkpointing="off"))
    on = planner.estimate(planner.setup(micro_batch=16, checkpointing="on"))
    assert on.activations_after_forward < 0.6 * off.activations_after_forward
    assert on.total < off.total
    assert {k: on.components[k] for k in ("weights", "adamw", "ema")} == \
        {k: off.components[k] for k in ("weights", "adamw", "ema")}


def test_bf16_adds_weight_copies_under_ddp_and_halves_gathered_units_under_fsdp(planner):
    fp32 = planner.estimate(planner.setup(micro_batch=16, precision="no"))
    bf16 = planner.estimate(planner.setup(micro_batch=16, precision="bf16"))
    for k in ("weights", "adamw", "ema"):  # fp32 master weights and optimizer state either way
        assert bf16.components[k] == fp32.components[k]
    assert bf16.activations_after_forward < fp32.activations_after_forward
    copies = planner.trace(16, "bf16", False).weight_copies.max()
    assert 0 < copies <= planner.sizes.param_bytes // 2  # at most a bf16 copy of every weight
    fsdp = {p: planner.estimate(planner.setup(micro_batch=16, precision=p, parallel="fsdp", processes=4))
            for p in ("no", "bf16")}
    assert "autocast_weight_copies" not in fsdp["bf16"].working_parts  # the gathered units are bf16 already
    gathered = {p: e.working_parts["fsdp_gathered_parameters"] for p, e in fsdp.items()}
    assert 2 * gathered["bf16"] == gathered["no"]


def test_interpolated_micro_batch_matches_the_trace_of_that_batch(planner):
    setup = planner.setup(micro_batch=12)
    exact, interpolated = planner.estimate(setup).total, planner.estimate(setup, exact=False).total
    assert abs(interpolated - exact) < 0.01 * exact


def test_trace_sees_the_tensors_a_real_forward_saves_for_backward():
    """The fake trace's activations at the end of the forward are the storages a real forward saves (plus its
    few outputs)."""
    cfg, task_cls = experiment_from_dict(small_raw())
    task = task_cls(cfg)
    torch.manual_seed(0)
    model = task.build_model().train()
    params = {p.untyped_storage()._cdata for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t):
        if t.untyped_storage()._cdata not in params:
            saved[t.untyped_storage()._cdata] = t.untyped_storage().nbytes()
        return t

    batch = {k: torch.randn(v.shape) if v.is_floating_point() else torch.ones(v.shape, dtype=v.dtype)
             for k, v in fake_batch(task.source_spec(), task.target_spec(), 16).items()}
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(batch).loss
    traced = MemoryPlanner(cfg, task_cls).trace(16, "no", False)
    real = sum(saved.values()) - sum(t.nbytes for t in batch.values() if t.untyped_storage()._cdata in saved)
    assert real > 0 and abs(int(traced.activations[traced.forward_end]) - real) < 0.02 * real
    loss.backward()


def test_models_that_check_their_inputs_are_traced():
    """The cross-attention baseline checks its token mask with ``bool(...)``, which fake tensors cannot answer."""
    raw = tiny_raw_config()
    raw["model"] = {"kind": "xattn_baseline", "velocity_net": {"patch_size": 2, "hidden_size": 32, "depth": 2,
                                                               "num_heads": 2}}
    planner = MemoryPlanner(*experiment_from_dict(raw))
    assert planner.estimate(planner.setup(micro_batch=4)).components["activations"] > 0


# ------------------------------------------------------------------ command line
def test_params_memory_prints_components_that_add_up(capsys, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps(small_raw()))
    assert main(["params", str(config), "--memory", "--micro-batch", "4", "--parallel", "fsdp",
                 "--processes", "2", "--precision", "bf16", "--checkpointing", "on"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["setup"]["processes"] == 2 and out["setup"]["checkpointing"] and out["setup"]["parallel"] == "fsdp"
    parts = {k: v for k, v in out["bytes"].items() if k != "total"}
    assert sum(parts.values()) == out["bytes"]["total"] and "GiB" in out["summary"]


@pytest.mark.parametrize("flags, named", [
    (["--processes", "0"], "--processes"), (["--processes", "two"], "--processes"),
    (["--micro-batch", "0"], "--micro-batch"), (["--precision", "fp8"], "--precision"),
    (["--checkpointing", "maybe"], "--checkpointing"), (["--parallel", "tp"], "--parallel"),
    (["--offload"], "--offload")])
def test_bad_memory_flags_end_in_one_line_naming_the_flag(flags, named, tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps(small_raw()))
    assert main(["params", str(config), "--memory", *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and named in err[0]


def test_memory_flags_need_memory(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps(small_raw()))
    assert main(["params", str(config), "--processes", "2"]) == 2
    assert "--memory" in capsys.readouterr().err


# ------------------------------------------------------------------ against a measured training run
SIZED_TASK = "helpers.sized_task:SizedTask"

CHILD = """
import json, resource, sys
from crossflow.registry import experiment_from_dict
from crossflow.train.trainer import Trainer
from helpers.synthetic_task import tiny_raw_config

def rss_kib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() // 1024

raws, run_dir = json.loads(sys.argv[1]), sys.argv[2]
# Warm the runtime up first (kernel code pages, thread pools): a fixed cost of any training, not the config's.
warm_cfg, warm_task = experiment_from_dict(tiny_raw_config(max_steps=2))
Trainer(warm_cfg, warm_task(warm_cfg), run_dir + "/warmup").fit()
out = []
for i, raw in enumerate(raws):  # one after the other: each measured from the RSS just before its model is built
    cfg, task_cls = experiment_from_dict(raw)
    task = task_cls(cfg)
    before = rss_kib()
    trainer = Trainer(cfg, task, run_dir + f"/run{i}")
    trainer.fit()
    out.append({"before_kib": before, "peak_kib": task.data.peak_rss_kib[-1]})
    del trainer, task
print(json.dumps(out))
"""


def sized_raw(checkpointing: bool) -> dict:
    """29M parameters (464 MiB of weights, EMA and AdamW state) and 0.1-0.5 GiB of activations."""
    return {"task": {"name": SIZED_TASK, "tokens": 16, "token_dim": 64, "channels": 4, "size": 32},
            "model": {"source_encoder": {"width": 256, "depth": 2, "num_heads": 4, "num_queries": 8},
                      "velocity_net": {"patch_size": 2, "hidden_size": 256, "depth": 6, "num_heads": 4,
                                       "gradient_checkpointing": checkpointing},
                      "contrastive": {"widths": [32, 64, 128], "hidden_dim": 512}},
            # 3 steps: the peak RSS read when step 3's batch is prepared covers step 2, the first with AdamW state
            "train": {"batch_size": 16, "max_steps": 3, "warmup_steps": 1, "checkpoint_every": 1000,
                      "log_every": 1000}}


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads the resident set size from /proc")
def test_estimate_is_within_20_percent_of_the_measured_peak_on_the_cpu(tmp_path):
    """Peak RSS of real training (trainer, one CPU process) minus the RSS before the model is built, without and
    with gradient checkpointing (one child process, the two runs one after the other).

    glibc keeps freed blocks below its mmap threshold (which grows up to 32 MiB) in its heap, so RSS keeps a
    step's freed activations and grows by fragmentation (1213 MiB instead of 974 MiB for the plain run here):
    with blocks above 128 KiB mapped and unmapped directly, RSS follows the live tensors, as a GPU's
    allocated-bytes counter does.
    """
    raws = [sized_raw(False), sized_raw(True)]
    env = child_env(OMP_NUM_THREADS="1", MALLOC_MMAP_THRESHOLD_="131072")
    result = subprocess.run([sys.executable, "-c", CHILD, json.dumps(raws), str(tmp_path)], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    for raw, rss in zip(raws, json.loads(result.stdout.strip().splitlines()[-1])):
        planner = MemoryPlanner(*experiment_from_dict(raw))
        estimate = planner.estimate(planner.setup()).total
        measured = (rss["peak_kib"] - rss["before_kib"]) * 1024
        assert abs(estimate / measured - 1) < 0.2, (estimate / 2**20, measured / 2**20)
