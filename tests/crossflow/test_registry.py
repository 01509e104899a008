"""Task adapters are found by name: the acceptance test of the task seam and the registry's errors.

A task defined outside ``tasks/`` (tests/helpers/synthetic_task.py) is registered the documented way, as an
entry point of the ``crossflow.tasks`` group in the metadata of an installed distribution, then trained,
sampled through the pipeline and evaluated, with no change to ``crossflow/`` or ``tasks/``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from crossflow.config import ConfigError
from crossflow.outputs import ImageOutput
from crossflow.pipeline import Pipeline
from crossflow.registry import ENTRY_POINT_GROUP, experiment_from_dict, load_task_class, registered_tasks
from crossflow.train.trainer import Trainer
from helpers.synthetic_task import SyntheticTask, quadrant_of, tiny_raw_config

SHIPPED = {"t2i", "depth", "super_resolution", "captioning", "captioning.text_vae_stage"}


def install_distribution(site: Path, name: str, tasks: dict[str, str]) -> None:
    """Write what ``pip install`` leaves for a distribution ``name`` that registers ``tasks`` (name → object)."""
    info = site / f"{name}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n" +
                                           "".join(f"{k} = {v}\n" for k, v in tasks.items()))


@pytest.fixture
def site(tmp_path, monkeypatch) -> Path:
    """A site directory on ``sys.path`` for the duration of one test."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    return site


def test_a_task_outside_tasks_registers_trains_samples_and_evaluates(site, tmp_path):
    install_distribution(site, "mytask", {"synthetic": "helpers.synthetic_task:SyntheticTask"})
    tasks = registered_tasks()
    assert tasks["synthetic"].value == "helpers.synthetic_task:SyntheticTask" and SHIPPED <= set(tasks)
    assert load_task_class("synthetic") is SyntheticTask

    raw = tiny_raw_config(max_steps=20)
    raw["task"]["name"] = "synthetic"
    cfg, task_cls = experiment_from_dict(raw)
    assert task_cls is SyntheticTask and cfg.task.name == "synthetic"
    run = tmp_path / "run"
    assert Trainer(cfg, task_cls(cfg), run).fit().step == 20
    assert (run / "previews" / "step-0000020.png").is_file()  # the task's evaluator drew the preview
    assert yaml.safe_load((run / "export" / "config.yaml").read_text())["task"]["name"] == "synthetic"

    pipe = Pipeline.from_pretrained(run, device="cpu")  # the saved config names the task by its entry point
    assert isinstance(pipe.task, SyntheticTask) and pipe.task.name == "synthetic"
    labels = [0, 1, 2, 3] * 3
    out = pipe(labels, z0="sample", seed=7)
    assert isinstance(out, ImageOutput) and len(out) == 12
    assert out.images.shape == out.latents.shape == (12, 1, 8, 8) and float(out.images.abs().max()) <= 1.0
    assert torch.equal(pipe(labels, z0="sample", seed=7).images, out.images)
    assert not torch.equal(pipe(labels, z0="sample", seed=8).latents, out.latents)
    torch.testing.assert_close(pipe(labels, z0="sample", seed=7, batch_size=5).latents, out.latents,
                               rtol=0, atol=1e-5)  # the noise is per sample: only float rounding differs

    options = pipe.options(steps=10)
    metrics = pipe.task.evaluator().evaluate(pipe, tmp_path / "eval", options=options)
    truth = torch.arange(4).repeat(8)
    accuracy = float((quadrant_of(pipe(truth.tolist(), options=options).images) == truth).float().mean())
    assert metrics == {"accuracy": accuracy} == json.loads((tmp_path / "eval" / "metrics.json").read_text())


def test_an_unknown_task_name_lists_the_registered_ones(site):
    install_distribution(site, "mytask", {"synthetic": "helpers.synthetic_task:SyntheticTask"})
    with pytest.raises(ConfigError, match=r"^task\.name: no task adapter 'nosuch'; registered: ") as err:
        experiment_from_dict({"task": {"name": "nosuch"}})
    assert all(name in str(err.value) for name in SHIPPED | {"synthetic"})
    with pytest.raises(ConfigError, match=r"^task\.name: missing"):
        experiment_from_dict({"model": {}})


@pytest.mark.parametrize("name, target, fragment", [
    ("broken_module", "helpers.no_such_module:Task", "cannot be imported"),
    ("broken_class", "helpers.synthetic_task:NoSuchTask", "cannot be imported"),
    ("not_a_task", "helpers.synthetic_task:SyntheticConfig", "is not a crossflow.task.Task subclass"),
])
def test_a_registered_task_that_does_not_load_is_named(site, name, target, fragment):
    install_distribution(site, "brokentask", {name: target})
    with pytest.raises(ConfigError) as err:
        experiment_from_dict({"task": {"name": name}})
    message = str(err.value)
    assert message.startswith("task.name: ") and repr(name) in message and target in message and fragment in message
    assert "\n" not in message


def test_module_and_class_names_resolve_without_registration():
    assert load_task_class("helpers.synthetic_task:SyntheticTask") is SyntheticTask
    with pytest.raises(ConfigError, match=r"task\.name: 'helpers\.nosuch:Task': module 'helpers\.nosuch' not found"):
        load_task_class("helpers.nosuch:Task")
    with pytest.raises(ConfigError, match="is not a crossflow.task.Task subclass"):
        load_task_class("helpers.synthetic_task:NoSuchTask")
