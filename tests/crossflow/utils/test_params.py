"""``crossflow params``: the model is built on the meta device even when the task reads its shapes from a
checkpoint (``from_pretrained`` refuses to run inside a meta-device context)."""

from __future__ import annotations

import yaml

from crossflow.cli import main
from crossflow.registry import experiment_from_dict
from crossflow.specs import TokenSpec
from crossflow.utils.params import build_on_meta, config_parameter_counts
from helpers.synthetic_task import SyntheticTask, tiny_raw_config


class TaskThatLoadsItsLanguageModel(SyntheticTask):
    """Reads the source width by loading a (tiny) language model, as a task without ``dim`` in its config may."""

    checkpoint = ""

    def source_spec(self) -> TokenSpec:
        from transformers import CLIPTextModel

        width = CLIPTextModel.from_pretrained(self.checkpoint).config.hidden_size
        return TokenSpec(max_tokens=6, dim=width)


def test_build_on_meta_resolves_the_specs_before_the_meta_device(tiny_clip_text, monkeypatch):
    monkeypatch.setattr(TaskThatLoadsItsLanguageModel, "checkpoint", str(tiny_clip_text))
    cfg, _ = experiment_from_dict(tiny_raw_config())
    model = build_on_meta(cfg, TaskThatLoadsItsLanguageModel)
    params = list(model.parameters())
    assert params and all(p.is_meta for p in params)
    plain = build_on_meta(cfg, SyntheticTask)  # 16-wide tokens: the loaded width (32) made a bigger VE
    assert sum(p.numel() for p in params) > sum(p.numel() for p in plain.parameters())


def test_params_of_the_toy_config_counts_on_meta(capsys):
    out = config_parameter_counts("configs/t2i/toy.yaml")
    assert out["tensors_not_on_meta"] == [] and out["parameters"]["total"] > 1_000_000
    assert main(["params", "configs/t2i/toy.yaml"]) == 0


def test_params_error_is_one_line(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(tiny_raw_config() | {"model": {"velocity_net": {"depht": 2}}}))
    assert main(["params", str(config)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "model.velocity_net.depht" in err
