"""``crossflow sample`` as a researcher meets it: several samples per prompt differ, the choice is stated,
inputs and options are checked before anything loads, a failed run leaves no empty folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from crossflow.cli import main
from helpers.tiny_t2i import export_tiny_t2i

PROMPT = "a large red circle in the top left"


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> str:
    """A tiny untrained t2i export whose outputs depend on the prompt and on z0 (sample.guidance 2, steps 3)."""
    return str(export_tiny_t2i(tmp_path_factory.mktemp("tiny_t2i")))


def _run(argv, capsys):
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def _images(folder: Path) -> list[np.ndarray]:
    return [np.asarray(Image.open(p)) for p in sorted(folder.glob("[0-9]*.png"))]


def _rows(folder: Path, name: str = "prompts.jsonl") -> list[dict]:
    return [json.loads(line) for line in (folder / name).read_text().splitlines()]


def test_several_samples_per_prompt_differ_and_z0_mean_gives_the_single_best(export, tmp_path, capsys):
    code, out, err = _run(["sample", export, "--prompt", PROMPT, "--num", "3", "--out", str(tmp_path / "a")], capsys)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["settings"]["z0"] == "sample" and "--num > 1" in summary["z0_from"]
    images = _images(tmp_path / "a")
    assert len(images) == 3
    assert all(not np.array_equal(images[i], images[j]) for i, j in ((0, 1), (0, 2), (1, 2)))
    rows = _rows(tmp_path / "a")
    assert [r["index"] for r in rows] == [0, 1, 2]
    for row in rows:  # every image records how it was made
        assert {"guidance": 2.0, "solver": "euler", "steps": 3, "z0": "sample", "temperature": 1.0,
                "seed": 0}.items() <= row["settings"].items()
    # the same seed gives the same images; another seed other ones
    assert _run(["sample", export, "--prompt", PROMPT, "--num", "3", "--out", str(tmp_path / "b")], capsys)[0] == 0
    assert all(np.array_equal(x, y) for x, y in zip(images, _images(tmp_path / "b")))
    assert _run(["sample", export, "--prompt", PROMPT, "--num", "3", "--seed", "1", "--out", str(tmp_path / "c")],
                capsys)[0] == 0
    assert all(not np.array_equal(x, y) for x, y in zip(images, _images(tmp_path / "c")))
    # --z0 mean: the VE mean, the same (best) image each time; one sample per prompt starts from the mean too
    assert _run(["sample", export, "--prompt", PROMPT, "--num", "2", "--z0", "mean", "--out", str(tmp_path / "m")],
                capsys)[0] == 0
    mean = _images(tmp_path / "m")
    assert np.array_equal(mean[0], mean[1]) and _rows(tmp_path / "m")[0]["settings"]["z0"] == "mean"
    assert _run(["sample", export, "--prompt", PROMPT, "--out", str(tmp_path / "one")], capsys)[0] == 0
    assert np.array_equal(_images(tmp_path / "one")[0], mean[0])


def test_sample_help_states_where_each_default_comes_from_and_the_z0_choice(export, capsys):
    with pytest.raises(SystemExit):
        main(["sample", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for option in ("steps", "solver", "guidance", "z0", "temperature", "seed", "batch_size"):
        assert f"default: the model's sample.{option}" in text
    assert "--num > 1 and no --z0" in text and "--z0 mean gives the single best-quality image" in text
    code, out, _ = _run(["sample", export, "--show-defaults", "--num", "4", "--guidance", "1.5"], capsys)
    shown = json.loads(out)
    assert code == 0 and shown["model_sample_config"]["guidance"] == 2.0 and shown["model_sample_config"]["z0"] == "mean"
    assert shown["this_command"]["guidance"] == 1.5 and shown["this_command"]["z0"] == "sample"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
@pytest.mark.parametrize("command", [["sample", "--prompt", PROMPT], ["eval", "--num", "1"],
                                     ["interpolate", "--from", "a", "--to", "b"]])
def test_a_device_this_machine_lacks_is_a_one_line_error(export, tmp_path, capsys, command):
    name, *rest = command
    code, _, err = _run([name, export, *rest, "--device", "cuda", "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "--device cuda" in err and "available here: cpu" in err and "Traceback" not in err
    code, _, err = _run([name, export, *rest, "--device", "gpu", "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "'gpu' is not a torch device" in err
    assert not (tmp_path / "o").exists()


def test_prompts_file_lines_starting_with_hash_are_comments(export, tmp_path, capsys):
    from tasks.t2i.evaluation import read_prompts

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# toy prompts\na small red circle in the center\n\n   # indented comment\n"
                       "a large blue square in the top right\n")
    code, _, err = _run(["sample", export, "--prompts-file", str(prompts), "--out", str(tmp_path / "s")], capsys)
    assert code == 0, err
    assert [r["prompt"] for r in _rows(tmp_path / "s")] == ["a small red circle in the center",
                                                          "a large blue square in the top right"]
    assert read_prompts(prompts) == ["a small red circle in the center", "a large blue square in the top right"]


@pytest.mark.parametrize("option, fragment", [(["--steps", "0"], "steps must be >= 1"),
                                              (["--seed", "-1"], "seed must be >= 0"),
                                              (["--batch-size", "0"], "batch_size must be >= 1"),
                                              (["--temperature", "-1"], "temperature must be >= 0")])
def test_bad_options_fail_before_the_language_model_loads_and_leave_no_folder(export, tmp_path, capsys, monkeypatch,
                                                                             option, fragment):
    from tasks.t2i.prompts import PromptEncoder

    def no_language_model(self):
        raise AssertionError("the language model was loaded before the options were checked")

    monkeypatch.setattr(PromptEncoder, "embedder", no_language_model)
    code, _, err = _run(["sample", export, "--prompt", PROMPT, *option, "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and fragment in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o").exists()


def test_a_failed_sample_removes_the_empty_out_folder_it_made(export, tmp_path, capsys, monkeypatch):
    from crossflow.pipeline import Pipeline

    def fail(self, *args, **kwargs):
        raise ValueError("the codec failed")

    monkeypatch.setattr(Pipeline, "__call__", fail)
    code, _, err = _run(["sample", export, "--prompt", PROMPT, "--out", str(tmp_path / "new" / "o")], capsys)
    assert code == 2 and "the codec failed" in err and not (tmp_path / "new" / "o").exists()
    (tmp_path / "mine").mkdir()  # a folder the user made stays
    assert _run(["sample", export, "--prompt", PROMPT, "--out", str(tmp_path / "mine")], capsys)[0] == 2
    assert (tmp_path / "mine").is_dir()
    (tmp_path / "file").write_text("x")
    code, _, err = _run(["sample", export, "--prompt", PROMPT, "--out", str(tmp_path / "file")], capsys)
    assert code == 2 and "--out" in err and "is a file" in err


def test_missing_input_file_is_named_before_the_model_loads(tmp_path, capsys):
    code, _, err = _run(["sample", str(tmp_path / "no_model"), "--input", str(tmp_path / "missing.png")], capsys)
    assert code == 2 and "--input" in err and "missing.png" in err
