"""The batch error names train.batch_size as the user set it, how it was split, and the dataset size."""

from __future__ import annotations

import pytest

from crossflow.data.sampler import ResumableBatchSampler, check_batch_fits
from crossflow.registry import experiment_from_dict
from helpers.synthetic_task import tiny_raw_config


def test_message_names_the_setting_the_split_and_the_data() -> None:
    with pytest.raises(ValueError) as exc:
        check_batch_fits(62, 1024, num_processes=1, grad_accum_steps=4)
    msg = str(exc.value)
    for part in ("train.batch_size=1024", "1 process(es)", "train.grad_accum_steps=4", "micro-batches of 256",
                 "62 samples", "at most 248"):
        assert part in msg, part
    with pytest.raises(ValueError, match=r"train.batch_size=64 is split over 8 process\(es\) × "
                                         r"train.grad_accum_steps=1 into micro-batches of 8.* at most 56"):
        check_batch_fits(60, 64, num_processes=8)
    check_batch_fits(62, 248, num_processes=1, grad_accum_steps=4)  # 62 per micro-batch: fits
    ResumableBatchSampler(62, 62)


def test_trainer_reports_the_users_batch(tmp_path) -> None:
    from crossflow.train.trainer import Trainer

    raw = tiny_raw_config(batch_size=64, grad_accum_steps=2)
    raw["task"]["num_items"] = 20
    cfg, task_cls = experiment_from_dict(raw)
    with pytest.raises(ValueError, match=r"train\.batch_size=64 .* train\.grad_accum_steps=2 into micro-batches of "
                                         r"32, but the training data has only 20 samples"):
        Trainer(cfg, task_cls(cfg), tmp_path / "run")
