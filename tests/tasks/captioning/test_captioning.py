"""The captioning adapter: specs from the text VAE, data, generation through the frozen text VAE, evaluation
files, `crossflow sample --input`, and errors naming task.text_vae_dir."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from PIL import Image

from crossflow.cli import main
from crossflow.codecs.text_vae import TextVAE
from crossflow.outputs import TextOutput
from crossflow.pipeline import Pipeline
from crossflow.registry import experiment_from_dict
from crossflow.specs import ImageSpec
from crossflow.task import PreparesBatches
from crossflow.train.trainer import export_model


def _text_vae_export(tmp_path):
    stage_raw = {"task": {"name": "captioning.text_vae_stage", "toyworld": {"num_train": 64, "num_test": 8},
                          "text_vae": {"latent_channels": 2, "latent_size": 2, "embed_dim": 16, "width": 32,
                                       "encoder_depth": 1, "decoder_depth": 1, "num_heads": 2, "num_queries": 2,
                                       "memory_tokens": 2}}}
    cfg, stage_cls = experiment_from_dict(stage_raw)
    torch.manual_seed(0)
    export_model(stage_cls(cfg).build_model().state_dict(), cfg, tmp_path / "tvae" / "export")
    return tmp_path / "tvae"


def _tiny_captioning(tvae, *, widths=(8, 16), num_train=64, num_test=4, steps=2, **task):
    return experiment_from_dict({
        "task": {"name": "captioning", "toyworld": {"num_train": num_train, "num_test": num_test, "resolution": 16},
                 "text_vae_dir": str(tvae), "text_vae_config": None, **task},
        "model": {"source_encoder": {"arch": "image", "widths": list(widths)},
                  "velocity_net": {"patch_size": 1, "hidden_size": 32, "depth": 1, "num_heads": 2},
                  "contrastive": {"enabled": False}},
        "sample": {"steps": steps, "guidance": 1.0, "batch_size": 4}})


def test_captioning_adapter_specs_data_and_generation(tmp_path):
    cfg, task_cls = _tiny_captioning(_text_vae_export(tmp_path), target="sample")
    mean_cfg = copy.deepcopy(cfg)
    mean_cfg.task.target = "mean"
    task = task_cls(cfg)
    assert task.target_spec() == ImageSpec(2, 2, 2) and task.source_spec() == ImageSpec(3, 16, 16)
    vae, stage = task.text_vae()
    assert isinstance(vae, TextVAE) and not any(p.requires_grad for p in vae.parameters())
    data = task.train_dataset()
    assert isinstance(data, PreparesBatches)
    raw = data.__getitems__([0, 1, 2])
    # the text posterior of each image is the frozen VAE's encoding of its caption
    train, _ = task.splits()
    ids, mask = stage.tokenizer.encode([ex.caption for ex in train.examples[:3]])
    torch.testing.assert_close(raw["text_mean"], vae.encode(ids, mask).mean)
    torch.manual_seed(0)
    batch = data.prepare(raw, torch.device("cpu"))
    assert set(batch) == {"source", "target"}
    assert batch["source"].shape == (3, 3, 16, 16) and batch["target"].shape == (3, 2, 2, 2)
    assert not torch.equal(batch["target"], raw["text_mean"])  # a posterior draw, not the mean
    mean_data = task_cls(mean_cfg).train_dataset()
    assert torch.equal(mean_data.prepare(raw, torch.device("cpu"))["target"], raw["text_mean"])
    model = task.build_model()
    assert torch.isfinite(model(batch).loss)
    out = Pipeline(model.eval(), task)(list(batch["source"]), steps=1)
    assert isinstance(out, TextOutput) and len(out) == 3 and all(isinstance(c, str) for c in out.texts)
    assert out.token_ids.shape == (3, 16) and out.latents.shape == (3, 2, 2, 2)
    assert out.texts == stage.tokenizer.decode(vae.decode(out.latents))  # the codec is the VAE's decoder


def test_captioning_evaluation_writes_metrics_and_pictures(tmp_path):
    cfg, task_cls = _tiny_captioning(_text_vae_export(tmp_path), widths=[8], num_train=16, num_test=3, steps=1)
    task = task_cls(cfg)
    pipe = Pipeline(task.build_model(), task)
    metrics = task.evaluator().evaluate(pipe, tmp_path / "eval")
    assert {"BLEU-4", "CIDEr", "all_accuracy", "text_vae_reconstruction", "z0_sample"} <= set(metrics)
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert saved["references"] == "all_templates" and saved["settings"]["steps"] == 1
    rows = [json.loads(line) for line in (tmp_path / "eval" / "captions.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and (tmp_path / "eval" / "captions.png").is_file()
    _, test = task.splits()
    assert [r["generated"] for r in rows] == pipe(list(test.images[:3])).texts
    assert [r["truth"] for r in rows] == [ex.caption for ex in test.examples[:3]]


def test_sample_command_writes_captions_into_the_index(tmp_path, capsys):
    cfg, task_cls = _tiny_captioning(_text_vae_export(tmp_path))
    task = task_cls(cfg)
    torch.manual_seed(0)
    export = export_model(task.build_model().state_dict(), cfg, tmp_path / "export")
    _, test = task.splits()
    files = []
    for i in range(2):
        files.append(str(tmp_path / f"in{i}.png"))
        Image.fromarray(test.images[i].permute(1, 2, 0).numpy()).save(files[-1])
    out = tmp_path / "samples"
    assert main(["sample", str(export), "--input", files[0], "--input", files[1], "--out", str(out)]) == 0, \
        capsys.readouterr().err
    rows = [json.loads(line) for line in (out / "inputs.jsonl").read_text().splitlines()]
    assert [r["input"] for r in rows] == files and all(r["settings"]["steps"] == 2 for r in rows)
    assert [r["text"] for r in rows] == Pipeline.from_pretrained(export, device="cpu")(files).texts
    assert (out / "grid.png").is_file() and not list(out.glob("0*.png"))  # captions are text, not files


def test_captioning_without_a_text_vae_names_the_key(tmp_path):
    cfg, task_cls = experiment_from_dict({"task": {"name": "captioning", "text_vae_dir": str(tmp_path / "none"),
                                                   "text_vae_config": None}})
    with pytest.raises(FileNotFoundError, match="task.text_vae_dir"):
        task_cls(cfg).target_spec()


def test_loading_a_missing_text_vae_names_the_key(tmp_path):
    cfg, task_cls = experiment_from_dict({"task": {"name": "captioning", "text_vae_dir": str(tmp_path / "none"),
                                                   "text_vae_config": None}})
    task = task_cls(cfg)
    for load in (task.text_vae, task.codec):  # what generation and evaluation need
        with pytest.raises(FileNotFoundError) as err:
            load()
        assert "task.text_vae_dir" in str(err.value)


def test_captioning_shapes_come_from_the_text_vae_config_without_training(tmp_path):
    cfg, task_cls = experiment_from_dict({
        "task": {"name": "captioning", "text_vae_dir": str(tmp_path / "tvae"),
                 "text_vae_config": "configs/captioning/toy_text_vae.yaml",
                 "text_vae_overrides": ["task.text_vae.latent_size=2"]},
        "model": {"source_encoder": {"arch": "image"}, "contrastive": {"enabled": False}}})
    task = task_cls(cfg)
    assert task.target_spec() == ImageSpec(4, 2, 2)
    with torch.device("meta"):
        model = task.build_model()  # what `crossflow params` does
    assert model.velocity_net.latent_shape == (4, 2, 2)
    assert not (tmp_path / "tvae").exists()  # nothing was trained
