"""CrossFlow-T2I captioning: ``CrossFlow.invert`` retraces the ODE; the task trains a caption decoder on a frozen
T2I model's text latents and captions images by inversion; errors name task.t2i_dir; a slow learning test."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from PIL import Image
from torch import nn

from crossflow.cli import main
from crossflow.config import ConfigError
from crossflow.model import CrossFlow
from crossflow.outputs import TextOutput
from crossflow.pipeline import Pipeline, load_model
from crossflow.registry import experiment_from_dict, load_experiment
from crossflow.schema import FlowConfig, SampleConfig
from crossflow.specs import ImageSpec
from crossflow.task import PreparesBatches
from crossflow.train.protocol import Trainable
from crossflow.train.trainer import Trainer, export_model
from helpers.tiny_t2i import export_tiny_t2i
from tasks.toyworld.scenes import caption


class LinearVelocity(nn.Module):
    """``v = a·x`` on the conditional branch, ``b·x`` on the null branch: the guided ODE is ``dx/dt = k·x``."""

    def __init__(self, a: float, b: float) -> None:
        super().__init__()
        self.a, self.b = a, b

    def forward(self, x, t, null):
        rate = torch.where(null, self.b, self.a).to(x.dtype).view(-1, *[1] * (x.dim() - 1))
        return rate * x


def test_invert_runs_the_guided_ode_backwards_in_closed_form():
    model = CrossFlow(nn.Identity(), LinearVelocity(a=0.8, b=-0.4), FlowConfig()).eval()
    z1 = torch.randn(3, 2, 4, 4)
    opts = SampleConfig(solver="rk4", steps=20, guidance=2.0)
    k = -0.4 + 2.0 * (0.8 - (-0.4))  # v_null + s (v_cond - v_null) = k x
    times = []
    z0 = model.invert(z1, opts, callback=lambda info: times.append(info["t"]))
    torch.testing.assert_close(z0, z1 * math.exp(-k), rtol=1e-5, atol=1e-5)
    assert times[0] < 1.0 and times[-1] == 0.0 and times == sorted(times, reverse=True)
    torch.testing.assert_close(model.invert(z1, opts, mode="null"), z1 * math.exp(0.4), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model.integrate(z0, opts), z1, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="time_grid"):
        model.invert(z1, SampleConfig(time_grid="official"))


@pytest.fixture(scope="module")
def tiny_t2i_dir(tmp_path_factory):
    """An untrained (perturbed) tiny toy T2I export: real MiniLM tokens → VE → tiny DiT on 3×32×32."""
    root = tmp_path_factory.mktemp("tiny_t2i")
    export_tiny_t2i(root)
    return root


def test_invert_undoes_integrate_on_a_tiny_t2i_model(tiny_t2i_dir):
    model, _ = load_model(tiny_t2i_dir)
    z0 = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    opts = SampleConfig(solver="rk4", steps=40, guidance=2.0)
    z1 = model.integrate(z0, opts)
    assert (z1 - z0).abs().mean() > 0.05  # the flow moves the latent: the round trip is not trivial
    torch.testing.assert_close(model.invert(z1, opts), z0, rtol=0, atol=1e-3)
    errors = [(model.invert(z1, SampleConfig(steps=n, guidance=2.0)) - z0).abs().max() for n in (10, 80)]
    assert errors[1] < errors[0] / 4  # Euler: the error falls with the step size


def _raw(t2i_dir, **task):
    return {"task": {"name": "captioning.t2i_inversion", "t2i_dir": str(t2i_dir), "t2i_config": None,
                     "toyworld": {"num_train": 48, "num_test": 4},
                     "decoder": {"width": 32, "depth": 1, "num_heads": 2, "memory_tokens": 2}, "picture_items": 4,
                     **task},
            "train": {"batch_size": 8, "max_steps": 2, "warmup_steps": 1, "checkpoint_every": 10, "log_every": 1},
            "sample": {"steps": 3, "guidance": 1.0, "batch_size": 4}}


def test_decoder_data_model_and_generation_by_inversion(tiny_t2i_dir):
    cfg, task_cls = experiment_from_dict(_raw(tiny_t2i_dir))
    task = task_cls(cfg)
    assert task.source_spec() == task.target_spec() == ImageSpec(3, 32, 32)
    data = task.train_dataset()
    assert isinstance(data, PreparesBatches)
    raw = data.__getitems__([0, 1, 2])
    captions = task.tokenizer.decode(raw["ids"])
    t2i, t2i_task = task.t2i()
    source = t2i_task.source_processor()(captions, "cpu")  # the latent is the T2I Text VE's posterior of the caption
    torch.testing.assert_close(raw["latent_mean"], t2i.encode_source(source.values, source.mask).mean,
                               rtol=1e-4, atol=1e-4)
    torch.manual_seed(0)
    batch = data.prepare(raw, torch.device("cpu"))
    assert set(batch) == {"latent", "ids", "mask"} and batch["latent"].shape == (3, 3, 32, 32)
    assert not torch.equal(batch["latent"], raw["latent_mean"])  # latent: sample draws from the posterior
    data.latent = "mean"
    assert torch.equal(data.prepare(raw, torch.device("cpu"))["latent"], raw["latent_mean"])

    model = task.build_model()
    assert isinstance(model, Trainable)
    out = model(batch)
    out.loss.backward()
    assert torch.isfinite(out.loss) and set(out.logs) == {"loss", "token_accuracy"}
    assert all(k.startswith("decoder.") for k in model.state_dict())  # the frozen T2I model is not saved
    ema = copy.deepcopy(model)
    assert ema.t2i.get("cpu") is model.t2i.get("cpu") is t2i  # nor copied into the EMA model
    assert not any(p.requires_grad for p in t2i.parameters())

    _, test = task.splits()
    images = list(test.images[:3])
    pipe = Pipeline(model.eval(), task)
    text = pipe(images)
    assert isinstance(text, TextOutput) and len(text) == 3 and text.token_ids.shape == (3, 16)
    z1 = test.images_float(slice(0, 3))
    torch.testing.assert_close(text.latents, t2i.invert(z1, pipe.options()))  # z0: the image run backwards
    assert text.texts == task.tokenizer.decode(model.decode(text.latents))  # decoded by this model's decoder


def test_decoder_captions_can_be_limited_to_some_templates(tiny_t2i_dir):
    cfg, task_cls = experiment_from_dict(_raw(tiny_t2i_dir, templates=[0, 3]))
    task = task_cls(cfg)
    train, test = task.caption_split()
    allowed = {ex.caption for ex in train if ex.template_index in (0, 3)}
    data = task.train_dataset()
    assert set(task.tokenizer.decode(data.ids)) == allowed and len(allowed) < len({ex.caption for ex in train})
    for ex in test:  # the decoder is scored on held-out captions in a template it learned
        assert task.decoder_caption(ex) == (ex.caption if ex.template_index in (0, 3) else caption(ex.scene, 0))
    with pytest.raises(ConfigError, match=r"templates \[8\] out of range; valid: 0..7"):
        experiment_from_dict(_raw(tiny_t2i_dir, templates=[8]))


def test_training_then_eval_and_sample_commands(tiny_t2i_dir, tmp_path, capsys):
    cfg, task_cls = experiment_from_dict(_raw(tiny_t2i_dir))
    Trainer(cfg, task_cls(cfg), tmp_path / "run").fit()
    assert (tmp_path / "run" / "previews" / "step-0000002.png").is_file()  # the EMA decoder drew the preview
    assert main(["eval", str(tmp_path / "run"), "--out", str(tmp_path / "eval"), "--device", "cpu"]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert {"color_accuracy", "all_accuracy", "BLEU-4", "CIDEr", "decoder_on_true_latents", "decoder_on_image",
            "nearest_caption"} <= set(metrics)
    assert metrics["settings"]["steps"] == 3 and metrics["settings"]["num_images"] == 4
    rows = [json.loads(line) for line in (tmp_path / "eval" / "captions.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and (tmp_path / "eval" / "captions.png").is_file()

    pipe = Pipeline.from_pretrained(tmp_path / "run", device="cpu")
    _, test = pipe.task.splits()
    assert [r["generated"] for r in rows] == pipe(list(test.images[:4])).texts
    image = tmp_path / "in.png"
    Image.fromarray(test.images[0].permute(1, 2, 0).numpy()).save(image)
    out = tmp_path / "samples"
    assert main(["sample", str(tmp_path / "run"), "--input", str(image), "--out", str(out)]) == 0, \
        capsys.readouterr().err
    record = json.loads((out / "inputs.jsonl").read_text().splitlines()[0])
    assert record["text"] == rows[0]["generated"]


def test_a_t2i_dir_without_a_t2i_model_is_a_config_error(tiny_t2i_dir, tmp_path):
    cfg, task_cls = experiment_from_dict(_raw(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="task.t2i_dir=.*holds no text-to-image model"):
        task_cls(cfg).target_spec()

    stage_cfg, stage_cls = experiment_from_dict({"task": {"name": "captioning.text_vae_stage"}})
    export_model(stage_cls(stage_cfg).build_model().state_dict(), stage_cfg, tmp_path / "tvae" / "export")
    cfg, task_cls = experiment_from_dict(_raw(tmp_path / "tvae"))
    for call in (lambda t: t.target_spec(), lambda t: t.t2i(), lambda t: t.train_dataset()):
        with pytest.raises(ConfigError, match="task.t2i_dir=.*captioning.text_vae_stage.*not a text-to-image"):
            call(task_cls(cfg))

    cfg, task_cls = experiment_from_dict(_raw(tmp_path / "untrained", t2i_config="configs/t2i/toy.yaml"))
    task = task_cls(cfg)
    assert task.target_spec() == ImageSpec(3, 32, 32)  # shapes from the config alone (crossflow params)
    with pytest.raises(FileNotFoundError, match="task.t2i_dir=.*no trained text-to-image model"):
        task.train_dataset()

    cfg, task_cls = experiment_from_dict(_raw(tiny_t2i_dir, toyworld={"resolution": 16}))
    with pytest.raises(ConfigError, match="task.toyworld.resolution=16.*set task.toyworld.resolution=32"):
        task_cls(cfg).build_model()


@pytest.mark.slow
def test_inverting_the_toy_t2i_model_names_the_attributes_far_above_chance(toy_t2i_run, tmp_path):
    """The toy T2I model of the session (`toy_t2i_run`, ~2 minutes, shared with the T2I learning test), then its
    caption decoder (~15 s); held-out images inverted through the T2I model and decoded.

    Measured on the 60 held-out scenes (colour / shape / size / position, chance 1/6, 1/3, 1/2, 1/5): decoded
    captions ~1.00 / 0.43 / 0.60 / 0.80; the nearest training caption of the inverted z0 1.00 / 0.57 / 0.90 / 0.95
    (the 300-step T2I model itself draws shape 0.45).
    """
    cfg, task_cls = load_experiment("configs/captioning/toy_t2i_inversion.yaml", [
        f"task.t2i_dir={toy_t2i_run}", "task.toyworld.num_train=8000", "task.toyworld.num_test=60",
        "train.max_minutes=null", "train.log_every=100"])
    Trainer(cfg, task_cls(cfg), tmp_path / "run").fit()
    pipe = Pipeline.from_pretrained(tmp_path / "run", device="cpu")
    metrics = pipe.task.evaluator().evaluate(pipe, tmp_path / "eval")
    assert metrics["decoder_on_true_latents"]["token_accuracy"] >= 0.9, metrics
    assert metrics["color_accuracy"] >= 0.8, metrics  # chance 1/6
    assert metrics["position_accuracy"] >= 0.5, metrics  # chance 1/5
    nearest = metrics["nearest_caption"]  # the inverted z0 lies nearest to a caption of its own scene
    assert nearest["color_accuracy"] >= 0.8 and nearest["position_accuracy"] >= 0.7, metrics
    assert nearest["size_accuracy"] >= 0.75 and nearest["all_accuracy"] >= 0.25, metrics  # chance 1/2, 1/180
