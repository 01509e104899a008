"""The ``crossflow`` command: clear one-line errors, complete --help, sample/eval from a run."""

from __future__ import annotations

import json

import pytest
import yaml

from crossflow.cli import main
from crossflow.config import ConfigError
from crossflow.registry import load_experiment
from helpers.synthetic_task import TASK_NAME, tiny_raw_config


def _write(path, raw):
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def _run(argv, capsys):
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("override, fragment", [
    ("train.max_stepz=3", "train.max_stepz: unknown key 'max_stepz' (did you mean 'max_steps'?)"),
    ("train.max_steps=abc", "train.max_steps: expected int"),
    ("train.keep_checkpoints=1", "keep_checkpoints must be at least 2"),
    ("flow.time_sampler=gaussian", "flow.time_sampler"),
    ("task.num_itemz=3", "task.num_itemz: unknown key"),
    ("task.name=nosuchtask", "task.name: no task adapter 'nosuchtask'"),
    ("train.lr", "'train.lr'"),
])
def test_config_errors_exit_nonzero_with_one_line(tmp_path, capsys, override, fragment):
    cfg = _write(tmp_path / "c.yaml", tiny_raw_config())
    code, out, err = _run(["train", cfg, "--run-dir", str(tmp_path / "run"), override], capsys)
    assert code != 0
    lines = [line for line in err.splitlines() if line.strip()]
    assert fragment in err and "Traceback" not in err
    assert len(lines) == 1 or lines[-1].startswith("crossflow")


def test_missing_config_file_is_named(tmp_path, capsys):
    code, _, err = _run(["train", str(tmp_path / "missing.yaml")], capsys)
    assert code == 2 and "missing.yaml" in err


def test_shipped_configs_validate():
    cfg, task_cls = load_experiment("configs/t2i/toy.yaml")
    assert cfg.task.name == "t2i" and cfg.train.keep_checkpoints >= 2
    with pytest.raises(ConfigError, match="model.velocity_net.depht"):
        load_experiment("configs/t2i/toy.yaml", ["model.velocity_net.depht=3"])


def test_train_help_lists_every_config_key(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for key in ("train.max_steps", "train.mixed_precision", "flow.null_probability", "flow.kl_weight",
                "model.velocity_net.patch_size", "sample.guidance", "--resume", "--run-dir"):
        assert key in text


@pytest.mark.parametrize("command", ["sample", "eval", "demo"])
def test_every_command_has_help(capsys, command):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0 and "usage" in capsys.readouterr().out


def test_train_eval_and_errors_of_sample_on_a_tiny_run(tmp_path, capsys):
    cfg = _write(tmp_path / "c.yaml", tiny_raw_config())
    run = tmp_path / "run"
    code, out, _ = _run(["train", cfg, "--run-dir", str(run), "train.max_steps=12", "--eval"], capsys)
    assert code == 0
    summary = json.loads(out)
    assert summary["step"] == 12 and 0.0 <= summary["metrics"]["accuracy"] <= 1.0
    assert (run / "export" / "model.safetensors").is_file() and (run / "metrics.jsonl").is_file()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 12 and "samples_per_s" in rows[-1]
    # resuming a finished run trains nothing more and reports the same step
    code, out, _ = _run(["train", cfg, "--run-dir", str(run), "train.max_steps=12", "--resume"], capsys)
    assert code == 0 and json.loads(out)["step"] == 12
    code, out, _ = _run(["eval", str(run), "--out", str(tmp_path / "ev"), "--steps", "4"], capsys)
    assert code == 0 and json.loads(out) == json.loads((tmp_path / "ev" / "metrics.json").read_text())
    # the synthetic task takes class labels, neither prompts nor files: one-line errors, not tracebacks
    errors = {}
    for name, argv in {"prompt": ["--prompt", "x"], "input": ["--input", cfg], "nothing": []}.items():
        code, _, errors[name] = _run(["sample", str(run), *argv], capsys)
        assert code == 2 and len(errors[name].strip().splitlines()) == 1, errors[name]
    assert f"task {TASK_NAME!r} does not take input files" in errors["input"]
    assert "nothing to sample" in errors["nothing"]


def test_sample_with_prompts_names_a_task_that_does_not_take_prompts(synthetic_run, capsys):
    code, _, err = _run(["sample", str(synthetic_run), "--prompt", "x"], capsys)
    assert code == 2 and f"task {TASK_NAME!r} does not take prompts" in err
    assert "takes input files" not in err  # it does not take them either
    code, _, err = _run(["sample", str(synthetic_run), "--input", "x.png"], capsys)
    assert code == 2 and "give prompts instead" not in err
