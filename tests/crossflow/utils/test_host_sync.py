"""No host reads per step: the trainer and the solvers leave values on the device between log rows."""

from __future__ import annotations

import itertools

import pytest
import torch

from crossflow.flow.solvers import solve
from crossflow.schema import SampleConfig
from crossflow.train.trainer import Trainer
from crossflow.utils.host_sync import HostReadCounter


def test_counter_counts_each_kind_of_read_and_restores_the_methods():
    t = torch.tensor([1.5, 2.0])
    with HostReadCounter() as reads:
        t.sum().item()
        float(t[0])
        if t[1] > 0:  # bool()
            t.tolist()
    assert dict(reads.counts) == {"item": 1, "__float__": 1, "__bool__": 1, "tolist": 1} and reads.total == 4
    with HostReadCounter() as reads:
        pass
    float(t[0])  # outside: not counted, methods restored
    assert reads.total == 0 and torch.Tensor.item.__qualname__ == "TensorBase.item"


def _trainer(tiny_config, tmp_path, **train):
    cfg, task_cls = tiny_config(max_steps=50, **train)
    trainer = Trainer(cfg, task_cls(cfg), tmp_path)
    batch = trainer._prepare(trainer.dataset.__getitems__(list(range(trainer.micro_batch))))
    return trainer, itertools.repeat(batch)


def test_a_training_step_reads_nothing_from_the_device(tiny_config, tmp_path):
    trainer, batches = _trainer(tiny_config, tmp_path, grad_accum_steps=2)
    trainer._train_step(batches)  # first step: optimizer state is created
    with HostReadCounter() as reads:
        for _ in range(3):
            trainer._train_step(batches)
    assert reads.total == 0, dict(reads.counts)
    assert trainer._log_steps == 4 and set(trainer._read_logs()) >= {"loss", "loss_fm", "grad_norm"}


def test_the_host_checked_path_reads_once_per_step_and_the_unfused_optimizer_takes_it(tiny_config, tmp_path):
    trainer, batches = _trainer(tiny_config, tmp_path / "a", fused_optimizer=False)
    assert not trainer._device_skip
    trainer._train_step(batches)
    with HostReadCounter() as reads:
        trainer._train_step(batches)
    assert reads.total > 0  # without the fused optimizer's found_inf, non-finite steps are caught on the host


def test_fixed_step_solvers_read_the_same_amount_whatever_the_number_of_steps():
    def reads_for(steps: int) -> int:
        with HostReadCounter() as reads:
            solve(lambda x, t: -x, torch.ones(2, 3), method="heun", steps=steps)
        return reads.total

    assert reads_for(2) == reads_for(40) <= 2  # the CPU time grid, and one finiteness check after the loop


def test_generation_reads_do_not_grow_with_the_steps(tiny_config):
    cfg, task_cls = tiny_config()
    task = task_cls(cfg)
    model = task.build_model().eval()
    tokens, mask = task.data.source(torch.arange(4), torch.full((4,), 3), torch.zeros(4, 6, 16))

    def reads_for(steps: int) -> int:
        with torch.no_grad(), HostReadCounter() as reads:
            model.generate(tokens, mask, options=SampleConfig(steps=steps, guidance=2.0))
        return reads.total

    assert reads_for(3) == reads_for(30) <= 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA's sync debug mode needs a GPU")
def test_no_cuda_synchronisation_inside_a_training_step(tiny_config, tmp_path):
    cfg, task_cls = tiny_config(max_steps=50)
    trainer = Trainer(cfg, task_cls(cfg), tmp_path)
    batch = trainer._prepare(trainer.dataset.__getitems__(list(range(trainer.micro_batch))))
    batches = itertools.repeat(batch)
    trainer._train_step(batches)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        trainer._train_step(batches)
    finally:
        torch.cuda.set_sync_debug_mode("default")
