"""The README's Python example runs as written (against a small text-to-image run in its place)."""

from __future__ import annotations

import re

import torch

from helpers.paths import REPO_ROOT
from helpers.tiny_t2i import export_tiny_t2i


def readme_python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (REPO_ROOT / "README.md").read_text(encoding="utf-8"), flags=re.S)


def test_readme_pipeline_example_runs_as_written(tmp_path, monkeypatch, capsys):
    blocks = readme_python_blocks()
    assert blocks and "Pipeline.from_pretrained(\"outputs/demo\")" in blocks[0]
    export_tiny_t2i(tmp_path / "outputs" / "demo")  # stands in for what `make demo` writes
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), scope)  # noqa: S102 - the documented example, verbatim
    assert "torch.Size([2, 3, 32, 32])" in capsys.readouterr().out  # what the comment in the example says
    assert (tmp_path / "outputs" / "circle.png").is_file()
    out, z0 = scope["out"], scope["z0"]
    assert out.images.min() >= -1 and out.images.max() <= 1
    assert z0.shape == (1, 3, 32, 32) and torch.isfinite(z0).all()
