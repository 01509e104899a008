"""train.parallel=fsdp: sharded training and checkpoints on 1 and 2 CPU processes (torchrun, gloo)."""

from __future__ import annotations

import copy
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from crossflow.pipeline import load_model
from crossflow.registry import experiment_from_dict
from crossflow.train import checkpoint as ckpt
from crossflow.train.preemption import EXIT_PREEMPTED
from crossflow.train.sharding import shard_units, unit_types
from crossflow.train.trainer import Trainer
from helpers.subprocess_env import child_env
from helpers.synthetic_task import tiny_raw_config

# A deterministic model (the regression baseline: no noise, no time sampling) on toy super-resolution, so that
# 2 processes with half the batch each must follow 1 process exactly, up to float rounding.
REGRESSION = {
    "task": {"name": "super_resolution", "toyworld": {"num_train": 256, "num_test": 16, "seed": 0}, "scale": 4},
    "model": {"kind": "regression", "velocity_net": {"patch_size": 4, "hidden_size": 32, "depth": 2, "num_heads": 2}},
    "train": {"batch_size": 16, "max_steps": 6, "lr": 1.0e-3, "warmup_steps": 2, "log_every": 1,
              "checkpoint_every": 3, "seed": 1},
}


def _write(tmp_path: Path, raw: dict, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return path


def _launch(nproc: int, cfg: Path | None, run: Path, *extra: str, env: dict | None = None,
            expect: int = 0) -> subprocess.CompletedProcess:
    """``crossflow train`` on ``nproc`` CPU processes (torchrun) or in one plain process (no ``cfg``: the run's own,
    with ``--resume``)."""
    launcher = ["-m", "torch.distributed.run", "--nproc_per_node", str(nproc)] if nproc > 1 else []
    config = [str(cfg)] if cfg is not None else []
    cmd = [sys.executable, *launcher, "-m", "crossflow", "train", *config, "--run-dir", str(run), *extra]
    result = subprocess.run(cmd, env=child_env(**(env or {})), capture_output=True, text=True, timeout=600)
    assert result.returncode == expect, result.stderr[-3000:]
    return result


def _losses(run: Path) -> list[float]:
    return [r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in r]


def _checkpoint_weights(path: Path) -> dict[str, torch.Tensor]:
    """Model and EMA weights of a checkpoint of either layout, as whole tensors."""
    if (path / "dcp").is_dir():
        return ({f"model.{k}": v for k, v in ckpt.read_sharded_weights(path, "model").items()}
                | {f"ema.{k}": v for k, v in ckpt.read_sharded_weights(path, "ema").items()})
    return ({f"model.{k}": v for k, v in load_file(str(path / "model.safetensors")).items()}
            | {f"ema.{k}": v for k, v in load_file(str(path / "ema.safetensors")).items()})


def _assert_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_every_block_of_each_architecture_is_one_unit():
    from crossflow.codecs.text_vae import TextVAE, TextVAEConfig  # noqa: F401 - the text VAE's blocks too
    from crossflow.models.dimr import DiMR  # noqa: F401

    cfg, task_cls = experiment_from_dict(tiny_raw_config())
    model = task_cls(cfg).build_model()
    units = shard_units(model)
    assert units and all(isinstance(u, unit_types()) for u in units)
    blocks = [m for m in model.modules() if isinstance(m, unit_types())]
    assert len(units) == len(blocks)  # none nested in another here
    assert sum(p.numel() for u in units for p in u.parameters()) > 0.5 * sum(p.numel() for p in model.parameters())


def test_fsdp_in_one_process_trains_exactly_like_plain_training(tmp_path):
    runs = {}
    for parallel in ("ddp", "fsdp"):
        cfg, task_cls = experiment_from_dict(tiny_raw_config(max_steps=8, log_every=1, parallel=parallel))
        runs[parallel] = Trainer(cfg, task_cls(cfg), tmp_path / parallel).fit()
    assert _losses(tmp_path / "ddp") == _losses(tmp_path / "fsdp")
    _assert_equal(load_file(str(tmp_path / "ddp" / "export" / "model.safetensors")),
                  load_file(str(tmp_path / "fsdp" / "export" / "model.safetensors")))
    state = json.loads((runs["fsdp"].last_checkpoint / "state.json").read_text())
    assert state["layout"] == "sharded" and (runs["fsdp"].last_checkpoint / "dcp" / ".metadata").is_file()
    # an interrupted FSDP run (no export yet) loads for sampling from its sharded checkpoint's EMA weights
    shutil.rmtree(tmp_path / "fsdp" / "export")
    model, _ = load_model(tmp_path / "fsdp")
    _assert_equal(model.state_dict(), load_file(str(tmp_path / "ddp" / "export" / "model.safetensors")))


@pytest.fixture
def fresh_accelerator_state():
    """accelerate keeps one precision per process: start and leave this test with a fresh state."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()
    yield
    AcceleratorState._reset_state()


def test_fsdp_bf16_keeps_fp32_master_weights_and_works_with_activation_checkpointing(tmp_path,
                                                                                   fresh_accelerator_state):
    raw = tiny_raw_config(max_steps=4, log_every=1, parallel="fsdp", mixed_precision="bf16")
    raw["model"]["velocity_net"]["gradient_checkpointing"] = True
    cfg, task_cls = experiment_from_dict(raw)
    trainer = Trainer(cfg, task_cls(cfg), tmp_path)
    result = trainer.fit()
    assert len(_losses(tmp_path)) == 4 and all(map(math.isfinite, _losses(tmp_path)))
    assert {p.dtype for p in trainer.model.parameters()} == {torch.float32}  # the shards are the master weights
    assert trainer.model.velocity_net.blocks[0].mlp.fc1.weight.to_local().dtype == torch.float32
    assert {v.dtype for v in load_file(str(result.export_dir / "model.safetensors")).values()} == {torch.float32}


def test_cpu_offload_is_refused_where_there_is_nothing_to_offload(tmp_path):
    cfg, task_cls = experiment_from_dict(tiny_raw_config(parallel="fsdp", fsdp_cpu_offload=True))
    with pytest.raises(ValueError, match="train.fsdp_cpu_offload"):
        Trainer(cfg, task_cls(cfg), tmp_path)
    cfg, task_cls = experiment_from_dict(tiny_raw_config(fsdp_cpu_offload=True))
    with pytest.raises(ValueError, match="needs train.parallel=fsdp"):
        Trainer(cfg, task_cls(cfg), tmp_path)


def test_fsdp_on_two_processes_follows_the_one_process_loss_trajectory(tmp_path):
    cfg_obj, task_cls = experiment_from_dict(copy.deepcopy(REGRESSION))
    Trainer(cfg_obj, task_cls(cfg_obj), tmp_path / "one").fit()  # one plain process (this one)
    _launch(2, _write(tmp_path, REGRESSION), tmp_path / "two", "train.parallel=fsdp")
    one, two = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert len(one) == len(two) == 6
    torch.testing.assert_close(torch.tensor(two), torch.tensor(one), rtol=1e-5, atol=1e-7)
    a = load_file(str(tmp_path / "one" / "export" / "model.safetensors"))
    b = load_file(str(tmp_path / "two" / "export" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5)
    last = tmp_path / "two" / "checkpoints" / ckpt.checkpoint_name(6)
    assert sorted(p.name for p in (last / "dcp").glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]


@pytest.fixture(scope="module")
def fsdp_run(tmp_path_factory) -> tuple[Path, Path]:
    """(config, run): the synthetic task on 2 FSDP processes, 8 steps, checkpoints at 4 and 8; shared, read only."""
    root = tmp_path_factory.mktemp("fsdp_run")
    cfg = _write(root, tiny_raw_config(max_steps=8, checkpoint_every=4, log_every=1))
    _launch(2, cfg, root / "run", "train.parallel=fsdp")
    return cfg, root / "run"


def test_a_checkpoint_resumes_on_another_number_of_processes_with_identical_weights(fsdp_run, tmp_path):
    """2 processes (sharded) -> 1 process (whole state dicts) -> 2 processes (sharded): after each load the
    trainer writes the same step again in its own layout, with the weights and AdamW moments it loaded."""
    run, step = tmp_path / "run", ckpt.checkpoint_name(4)
    shutil.copytree(fsdp_run[1], run)
    shutil.rmtree(run / "checkpoints" / ckpt.checkpoint_name(8))  # resume from step 4
    saved = (_checkpoint_weights(run / "checkpoints" / step), _optimizer(run / "checkpoints" / step))
    for processes, parallel in ((1, "ddp"), (2, "fsdp")):
        if processes == 1:  # in this process: resume without further steps
            cfg_obj, task_cls = experiment_from_dict(yaml.safe_load((run / "config.yaml").read_text()))
            cfg_obj.train.parallel, cfg_obj.train.max_steps = parallel, 4
            Trainer(cfg_obj, task_cls(cfg_obj), run, resume=True).fit()
        else:
            _launch(processes, None, run, "--resume", f"train.parallel={parallel}", "train.max_steps=4")
        again = run / "checkpoints" / step
        state = json.loads((again / "state.json").read_text())
        assert (state["num_processes"], state["layout"]) == (processes, "full" if parallel == "ddp" else "sharded")
        _assert_equal(saved[0], _checkpoint_weights(again))
        _assert_equal(saved[1], _optimizer(again))


def _optimizer(path: Path) -> dict[str, torch.Tensor]:
    """AdamW moments by parameter name, whole tensors, from either layout."""
    if (path / "dcp").is_dir():
        return ckpt.read_sharded_weights(path, "optimizer")
    state = torch.load(path / "optimizer.pt", weights_only=True)["state"]
    return {f"state.{n}.{m}": t for n, ms in state.items() for m, t in ms.items()}


def test_sigterm_on_one_rank_stops_both_at_the_same_step_and_resume_equals_an_uninterrupted_run(fsdp_run,
                                                                                                 tmp_path):
    cfg, straight = fsdp_run
    run = tmp_path / "run"
    # only rank 1 is signalled (mid-step 5): the processes agree after the step and both stop there
    signal_rank_1 = {"SYNTHETIC_SIGTERM_AT": "5", "SYNTHETIC_SIGTERM_RANKS": "1"}
    stopped = _launch(2, cfg, run, "train.parallel=fsdp", env=signal_rank_1,
                      expect=1)  # torchrun reports its failed workers with exit code 1 ...
    assert f"exitcode  : {EXIT_PREEMPTED}" in stopped.stderr  # ... and each worker's own code
    assert ckpt.latest_checkpoint(run / "checkpoints").name == ckpt.checkpoint_name(5)
    assert not (run / "export").exists()
    _launch(2, None, run, "--resume")  # the run's saved config: still FSDP
    last = ckpt.checkpoint_name(8)
    _assert_equal(_checkpoint_weights(straight / "checkpoints" / last), _checkpoint_weights(run / "checkpoints" / last))
    assert _losses(run) == pytest.approx(_losses(straight), rel=0, abs=0)
