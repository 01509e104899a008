"""Trainer invariants: exact resume, atomic/pruned checkpoints, NaN stop, export round trip."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
import torch
from safetensors.torch import load_file

from crossflow.pipeline import Pipeline, load_model
from crossflow.train import checkpoint as ckpt
from crossflow.train.trainer import NonFiniteLossError, Trainer
from helpers.subprocess_env import child_env
from helpers.synthetic_task import tiny_raw_config


def _train(make_cfg, run_dir, *, resume=False, **train):
    cfg, task_cls = make_cfg(**train)
    return Trainer(cfg, task_cls(cfg), run_dir, resume=resume).fit()


def _weights(ckpt_dir):
    return load_file(str(ckpt_dir / "model.safetensors")), load_file(str(ckpt_dir / "ema.safetensors"))


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_resume_gives_the_same_weights_as_straight_training(tiny_config, tmp_path):
    straight = _train(tiny_config, tmp_path / "straight", max_steps=20)
    _train(tiny_config, tmp_path / "resumed", max_steps=10)
    resumed = _train(tiny_config, tmp_path / "resumed", max_steps=20, resume=True)
    assert straight.step == resumed.step == 20
    for a, b in zip(_weights(straight.last_checkpoint), _weights(resumed.last_checkpoint)):
        _assert_same(a, b)
    state = json.loads((resumed.last_checkpoint / "state.json").read_text())
    assert state["step"] == 20 and state["ema_updates"] == 20
    # 256 items / batch 16 = 16 batches per epoch: step 20 is batch 4 of epoch 1
    assert (state["epoch"], state["batch_in_epoch"]) == (1, 4)


def test_fused_adamw_follows_the_same_update_rule_as_the_loop(tiny_config, tmp_path):
    losses = {}
    for fused in (True, False):
        _train(tiny_config, tmp_path / str(fused), max_steps=8, log_every=1, fused_optimizer=fused)
        rows = [json.loads(line) for line in (tmp_path / str(fused) / "metrics.jsonl").read_text().splitlines()]
        losses[fused] = [r["loss"] for r in rows if "loss" in r]
    assert len(losses[True]) == 8
    # one kernel vs a per-tensor loop: the same trajectory up to float rounding (weights themselves can differ
    # where a gradient is pure rounding noise, e.g. attention key biases, which Adam normalises to full steps)
    torch.testing.assert_close(torch.tensor(losses[True]), torch.tensor(losses[False]), rtol=1e-4, atol=1e-5)
    assert losses[True][-1] < losses[True][0]


def test_incomplete_checkpoint_is_ignored_on_resume(tiny_config, tmp_path, caplog):
    straight = _train(tiny_config, tmp_path / "straight", max_steps=20)
    run = tmp_path / "run"
    _train(tiny_config, run, max_steps=10)
    # a crash in the middle of writing step 15: files present, no completion marker
    partial = run / "checkpoints" / ckpt.checkpoint_name(15)
    shutil.copytree(run / "checkpoints" / ckpt.checkpoint_name(10), partial)
    (partial / ckpt.MARKER).unlink()
    (partial / "model.safetensors").write_bytes(b"garbage")
    with caplog.at_level(logging.WARNING):
        resumed = _train(tiny_config, run, max_steps=20, resume=True)
    assert "incomplete checkpoint" in caplog.text
    for a, b in zip(_weights(straight.last_checkpoint), _weights(resumed.last_checkpoint)):
        _assert_same(a, b)


def test_keeps_the_newest_complete_checkpoints_and_no_temporaries(tiny_config, tmp_path):
    _train(tiny_config, tmp_path, max_steps=40, keep_checkpoints=2)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == [ckpt.checkpoint_name(30), ckpt.checkpoint_name(40)]
    for name in names:
        files = {p.name for p in (tmp_path / "checkpoints" / name).iterdir()}
        assert {"model.safetensors", "ema.safetensors", "optimizer.pt", "scheduler.pt", "rng-rank0.pt",
                "state.json", ckpt.MARKER} <= files
    # every torch file loads with weights_only=True
    for f in (tmp_path / "checkpoints" / names[-1]).glob("*.pt"):
        torch.load(f, weights_only=True)


def test_nan_loss_stops_before_the_optimizer_step_and_keeps_last_checkpoint(tiny_config, tmp_path):
    cfg, task_cls = tiny_config(max_steps=30, checkpoint_every=10)
    cfg.task.nan_at_step = 15  # log_every 5: the device-side marker is read at step 15
    trainer = Trainer(cfg, task_cls(cfg), tmp_path)
    with pytest.raises(NonFiniteLossError, match="step 15") as err:
        trainer.fit()
    assert "step-0000010" in str(err.value)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "checkpoints")] == [ckpt.checkpoint_name(10)]
    # the weights in memory are those after step 14: the NaN batch never reached the optimizer
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    assert trainer.step == 14


def test_corrupt_checkpoint_file_gives_an_error_naming_it(tiny_config, tmp_path):
    _train(tiny_config, tmp_path, max_steps=10)
    bad = tmp_path / "checkpoints" / ckpt.checkpoint_name(10) / "optimizer.pt"
    bad.write_bytes(b"\x00not a checkpoint")
    with pytest.raises(ckpt.CheckpointError, match="optimizer.pt"):
        _train(tiny_config, tmp_path, max_steps=20, resume=True)


def test_export_reloads_with_identical_outputs(tiny_config, tmp_path):
    cfg, task_cls = tiny_config(max_steps=10)
    trainer = Trainer(cfg, task_cls(cfg), tmp_path)
    result = trainer.fit()
    model, task = load_model(result.export_dir)
    assert task.config.train.max_steps == 10
    tokens, mask = task.data.source(torch.arange(4), torch.full((4,), 5), torch.zeros(4, 6, 16))
    expected = trainer.ema.model.generate(tokens, mask, options=cfg.sample)
    torch.testing.assert_close(model.generate(tokens, mask, options=cfg.sample), expected, rtol=0, atol=0)
    # the same through the pipeline, with posterior noise: the export is the EMA model
    labels = [0, 1, 2, 3, 3]
    loaded = Pipeline.from_pretrained(result.export_dir, device="cpu")(labels, z0="sample", seed=5).images
    assert torch.equal(loaded, Pipeline(trainer.ema.model, trainer.task)(labels, z0="sample", seed=5).images)


def test_missing_weights_directory_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(tmp_path / "nope")
    with pytest.raises(ckpt.CheckpointError, match="no weights found"):
        load_model(tmp_path)


def test_gradient_accumulation_consumes_micro_batches_per_optimizer_step(tiny_config, tmp_path):
    cfg, task_cls = tiny_config(max_steps=3, grad_accum_steps=4, checkpoint_every=1000)
    trainer = Trainer(cfg, task_cls(cfg), tmp_path)
    assert trainer.micro_batch == 4  # batch 16 over 1 process × 4 accumulation steps
    trainer.fit()
    assert trainer.step == 3 and trainer.scheduler.last_epoch == 3  # one optimizer/scheduler step per step
    assert trainer.sampler.position == (0, 12)  # 3 steps × 4 micro-batches of 4 items
    assert trainer.ema.num_updates == 3


def test_two_process_ddp_on_cpu_resumes_exactly(tmp_path):
    """torchrun with 2 CPU processes (gloo): DDP engages, and 5 + resume 5 steps equals 10 steps."""
    import subprocess
    import sys

    import yaml

    raw = tiny_raw_config(max_steps=10, checkpoint_every=5)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    env = child_env()  # the children import helpers.synthetic_task, named in the config

    def torchrun(run_dir, *extra):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "crossflow", "train",
               str(cfg), "--run-dir", str(run_dir), *extra]
        result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]

    torchrun(tmp_path / "straight")
    torchrun(tmp_path / "resumed", "train.max_steps=5")
    torchrun(tmp_path / "resumed", "--resume")
    a = tmp_path / "straight" / "checkpoints" / ckpt.checkpoint_name(10)
    b = tmp_path / "resumed" / "checkpoints" / ckpt.checkpoint_name(10)
    assert json.loads((a / "state.json").read_text())["num_processes"] == 2
    assert {p.name for p in a.glob("rng-rank*.pt")} == {"rng-rank0.pt", "rng-rank1.pt"}
    for x, y in zip(_weights(a), _weights(b)):
        _assert_same(x, y)


def test_a_checkpoint_with_position_keyed_optimizer_state_still_resumes(tiny_config, tmp_path):
    """Checkpoints written before optimizer state was keyed by parameter name hold torch's positional state dict."""
    cfg, task_cls = tiny_config(max_steps=10)
    trainer = Trainer(cfg, task_cls(cfg), tmp_path)
    trainer.fit()
    last = ckpt.latest_checkpoint(tmp_path / "checkpoints")
    written = trainer._base_optimizer.state_dict()
    torch.save(written, last / "optimizer.pt")
    cfg, task_cls = tiny_config(max_steps=10)
    resumed = Trainer(cfg, task_cls(cfg), tmp_path, resume=True)
    resumed.load(last)
    loaded = resumed._base_optimizer.state_dict()
    assert loaded["state"].keys() == written["state"].keys() and len(written["state"]) > 0
    for i, moments in written["state"].items():
        for name, value in moments.items():
            assert torch.equal(loaded["state"][i][name], value), (i, name)
