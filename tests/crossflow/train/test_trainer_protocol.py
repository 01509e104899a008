"""What the trainer asks of a model (the Trainable protocol): a TrainOutput, and the modules that
``train.compile`` compiles — checked for CrossFlow, the cross-attention baseline and the text VAE."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from crossflow.pipeline import load_model
from crossflow.registry import experiment_from_dict
from crossflow.train.protocol import Trainable, TrainOutput
from crossflow.train.trainer import Trainer
from helpers.synthetic_task import SyntheticTask, tiny_raw_config

TEXT_VAE_STAGE = {"name": "captioning.text_vae_stage", "toyworld": {"num_train": 32, "num_test": 4},
                  "text_vae": {"latent_channels": 2, "latent_size": 2, "embed_dim": 8, "width": 16,
                               "encoder_depth": 1, "decoder_depth": 1, "num_heads": 2, "num_queries": 1,
                               "memory_tokens": 1}}


def _config(kind: str, **train):
    raw = tiny_raw_config(**train)
    if kind == "xattn_baseline":
        raw["model"] = {"kind": "xattn_baseline",
                        "velocity_net": {"patch_size": 2, "hidden_size": 32, "depth": 2, "num_heads": 2}}
    elif kind == "text_vae":
        raw["task"] = TEXT_VAE_STAGE
        raw["train"]["batch_size"] = 8
    return experiment_from_dict(raw)


@pytest.fixture
def compiled(monkeypatch) -> list[nn.Module]:
    """The modules whose ``compile()`` is called (recorded, not compiled: torch.compile takes ~15 s cold)."""
    seen: list[nn.Module] = []
    monkeypatch.setattr(nn.Module, "compile", lambda self, *args, **kwargs: seen.append(self))
    return seen


@pytest.mark.parametrize("kind, expected", [
    ("crossflow", ["velocity_net"]),
    ("xattn_baseline", ["velocity_net"]),
    ("text_vae", ["encoder", "decoder"]),
])
def test_train_compile_compiles_exactly_the_modules_the_model_names(tmp_path, compiled, kind, expected):
    cfg, task_cls = _config(kind, compile=True)
    trainer = Trainer(cfg, task_cls(cfg), tmp_path)
    model = trainer._unwrapped()
    assert isinstance(model, Trainable)
    assert [id(m) for m in compiled] == [id(getattr(model, name)) for name in expected]
    assert [id(m) for m in model.compile_modules()] == [id(m) for m in compiled]
    out = model(next(trainer._batches()))
    assert isinstance(out, TrainOutput) and out.loss.dim() == 0 and "loss" in out.logs
    assert all(v.dim() == 0 and not v.requires_grad for v in out.logs.values())


def test_without_train_compile_nothing_is_compiled(tiny_config, tmp_path, compiled):
    cfg, task_cls = tiny_config()
    Trainer(cfg, task_cls(cfg), tmp_path)
    assert compiled == []


class _NothingToCompile(SyntheticTask):
    def build_model(self):
        model = super().build_model()
        model.compile_modules = lambda: []
        return model


def test_compile_of_a_model_that_names_no_modules_is_a_one_line_error(tiny_config, tmp_path):
    cfg, _ = tiny_config(compile=True)
    with pytest.raises(ValueError, match=r"train\.compile=true: CrossFlow names no modules to compile") as err:
        Trainer(cfg, _NothingToCompile(cfg), tmp_path)
    assert "\n" not in str(err.value) and "train.compile=false" in str(err.value)
    cfg.train.compile = False
    Trainer(cfg, _NothingToCompile(cfg), tmp_path)  # fine when nothing is to be compiled


class _PlainModule(SyntheticTask):
    def build_model(self):
        return nn.Linear(2, 2)  # has forward, but no compile_modules and no TrainOutput


def test_a_model_that_is_not_trainable_is_a_type_error_naming_its_class(tiny_config, tmp_path):
    cfg, _ = tiny_config()
    with pytest.raises(TypeError, match=r"^Linear \(built by task 'helpers\.synthetic_task:SyntheticTask'\) is not "
                                        r"trainable: it needs forward\(batch, generator=None\) -> TrainOutput"):
        Trainer(cfg, _PlainModule(cfg), tmp_path)


@pytest.mark.slow
def test_text_vae_really_compiles_and_keeps_its_state_dict_keys(tmp_path):
    """torch.compile of the text VAE's encoder and decoder (~15 s cold on a CPU): training runs, the weights keep
    their names (no ``_orig_mod``), and the export loads strictly into an uncompiled model."""
    cfg, task_cls = _config("text_vae", compile=True, max_steps=2, checkpoint_every=1000, log_every=1)
    task = task_cls(cfg)
    trainer = Trainer(cfg, task, tmp_path)
    model = trainer._unwrapped()
    assert all(m._compiled_call_impl is not None for m in (model.encoder, model.decoder))
    result = trainer.fit()
    assert result.step == 2 and torch.isfinite(torch.tensor(result.final_loss))
    assert set(model.state_dict()) == set(task.build_model().state_dict())
    loaded, _ = load_model(result.export_dir)  # strict: raises on any renamed key
    assert loaded.encoder._compiled_call_impl is None
