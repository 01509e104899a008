"""Super-resolution on image folders (ImageNet layout): config checks, the three models' contracts (CrossFlow, the
noise + concatenation baseline, the regression baseline), the evaluator end to end on JPEGs written here, FID/IS
with a random-weight Inception, and the paper/toy configs' sizes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from crossflow.config import ConfigError
from crossflow.pipeline import Pipeline, sample_noise
from crossflow.registry import experiment_from_dict, load_experiment
from crossflow.regression import DirectRegression
from crossflow.schema import SampleConfig
from crossflow.train.protocol import Trainable
from tasks.image_source import upsample_bicubic
from tasks.super_resolution.data import downsample
from tasks.super_resolution.imagenet import sr_crop
from tasks.super_resolution.metrics import psnr

HR, SCALE = 32, 4
CONFIGS = Path(__file__).resolve().parents[3] / "configs" / "super_resolution"


def _smooth_image(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A smooth random ``(h, w, 3)`` uint8 image (bilinear blow-up of a 4×4 colour grid: JPEG keeps it well)."""
    small = Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8))
    return np.asarray(small.resize((w, h), Image.BILINEAR))


@pytest.fixture(scope="module")
def image_root(tmp_path_factory) -> Path:
    """``train/`` and ``val/`` in ImageNet's layout: regular squares, non-square images and a few too small."""
    root = tmp_path_factory.mktemp("imagenet")
    rng = np.random.default_rng(0)
    sizes = {"train": [(HR, HR)] * 10 + [(HR, HR + 8)], "val": [(HR, HR)] * 5 + [(HR + 8, HR), (HR // 2, HR // 2)] * 2}
    for split, shapes in sizes.items():
        for i, (h, w) in enumerate(shapes):
            folder = root / split / f"n{i % 2:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(_smooth_image(rng, h, w)).save(folder / f"{split}_{i:04d}.JPEG", quality=95)
    return root


def _raw(kind: str, root: Path | None = None, **task) -> dict:
    net = {"patch_size": 4, "hidden_size": 32, "depth": 1, "num_heads": 2}
    if kind == "crossflow":
        model = {"source_encoder": {"arch": "image", "widths": [8, 16], "input_skip": True, "head_init_scale": 0.0},
                 "velocity_net": net, "contrastive": {"enabled": False}}
    elif kind == "baseline":
        model = {"source_encoder": {"arch": "noise"}, "velocity_net": net | {"concat_source": True},
                 "contrastive": {"enabled": False}}
    else:
        model = {"kind": "regression", "velocity_net": net}
    imagenet = {"hr_size": HR} | ({"root": str(root)} if root else {})
    return {"task": {"name": "super_resolution", "dataset": "imagenet", "imagenet": imagenet, "scale": SCALE,
                     "picture_items": 4, "preview_items": 2} | task,
            "model": model, "flow": {"null_probability": 0.0},
            "sample": {"steps": 2, "guidance": 1.0, "batch_size": 3, "z0": "sample" if kind == "baseline" else "mean"},
            "train": {"batch_size": 4, "max_steps": 2, "warmup_steps": 1, "log_every": 1, "checkpoint_every": 2}}


def _task(kind: str, root: Path | None = None, **task):
    cfg, task_cls = experiment_from_dict(_raw(kind, root, **task))
    return task_cls(cfg)


# ------------------------------------------------------------------ config validation
def test_scale_is_checked_against_the_selected_dataset():
    # imagenet: hr_size 48 / scale 3 is valid although the (unused) toy resolution 32 is not divisible by 3
    task = _task("regression", imagenet={"hr_size": 48}, scale=3)
    assert task.source_spec().shape == task.target_spec().shape == (3, 48, 48)
    assert task.source_processor().input_size == (16, 16)  # the processor takes LOW-RES images
    with pytest.raises(ConfigError, match=r"scale=3 must divide imagenet.hr_size=64"):
        experiment_from_dict(_raw("regression", imagenet={"hr_size": 64}, scale=3))
    with pytest.raises(ConfigError, match=r"scale=3 must divide toyworld.resolution=32"):
        experiment_from_dict(_raw("regression", dataset="toyworld", scale=3))
    with pytest.raises(ConfigError, match="scale must be >= 2"):
        experiment_from_dict(_raw("regression", scale=1))


def test_unsupported_settings_are_config_errors_naming_the_key():
    with pytest.raises(ConfigError, match=r"task.imagenet.root: not set"):
        _task("crossflow").train_dataset()
    raw = _raw("regression")
    raw["model"]["velocity_net"]["concat_source"] = True
    cfg, task_cls = experiment_from_dict(raw)
    with pytest.raises(ConfigError, match=r"model.velocity_net.concat_source: not supported by model.kind=regression"):
        task_cls(cfg).build_model()


# ------------------------------------------------------------------ the three models
@pytest.mark.parametrize("kind", ["crossflow", "baseline", "regression"])
def test_model_contracts_forward_loss_and_generate_shapes(kind):
    task = _task(kind)
    torch.manual_seed(0)
    model = task.build_model()
    assert isinstance(model, Trainable)
    assert isinstance(model, DirectRegression) == (kind == "regression")
    low = torch.randint(0, 256, (3, 3, HR // SCALE, HR // SCALE), dtype=torch.uint8)
    source = upsample_bicubic(low, (HR, HR))
    batch = {"source": source, "target": torch.rand(3, 3, HR, HR) * 2 - 1}
    out = model(batch)
    assert out.loss.dim() == 0 and torch.isfinite(out.loss) and "loss" in out.logs
    out.loss.backward()
    assert all(p.grad is not None for p in model.compile_modules()[0].parameters() if p.requires_grad)
    steps = []
    noise = sample_noise((3, HR, HR), 0, range(3))
    pred = model.generate(source, None, options=SampleConfig(steps=2, guidance=1.0), noise=noise,
                          callback=lambda r: steps.append(r["step"]))
    assert pred.shape == (3, 3, HR, HR) and torch.isfinite(pred).all()
    assert steps[0] == -1 and len(steps) == (2 if kind == "regression" else 3)
    if kind != "baseline":  # zero-initialised correction: an untrained direct model returns the upsampled image
        torch.testing.assert_close(pred, source)


def test_regression_ignores_sampling_options_and_rejects_wrong_shapes():
    model = _task("regression").build_model().eval()
    source = torch.rand(2, 3, HR, HR) * 2 - 1
    with torch.no_grad():
        model.net.final_layer.linear.bias.normal_()  # a non-trivial output
    a = model.generate(source, options=SampleConfig(steps=1, solver="euler"), noise=torch.randn(2, 3, HR, HR))
    b = model.generate(source, options=SampleConfig(steps=9, solver="heun"), mode="null")
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, source)
    with pytest.raises(ValueError, match="source of the target's shape"):
        model.predict(torch.zeros(2, 3, HR // 2, HR // 2))


def test_regression_loss_decreases():
    """A few Adam steps on a fixed batch: the residual net learns a fixed high-frequency detail."""
    torch.manual_seed(0)
    model = _task("regression").build_model()
    source = torch.rand(8, 3, HR, HR) * 2 - 1
    detail = 0.5 * torch.sign(torch.randn(1, 3, HR, HR))
    batch = {"source": source, "target": (source + detail).clamp(-1, 1)}
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(60):
        out = model(batch)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(float(out.loss.detach()))
    assert losses[-1] < 0.5 * losses[0], losses[::10]


# ------------------------------------------------------------------ data and evaluation on a folder
def _truths_and_bicubic(root: Path, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Independent reference: the first ``n`` usable val images as HR crops, and their bicubic upsampling."""
    paths = sorted((p for p in (root / "val").rglob("*.JPEG")), key=lambda p: p.relative_to(root / "val").as_posix())
    crops = [c for c in (sr_crop(np.asarray(Image.open(p).convert("RGB")), HR) for p in paths) if c is not None][:n]
    hr = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2)
    up = upsample_bicubic(downsample(hr, SCALE), (HR, HR))
    return np.stack(crops), ((up + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def test_train_dataset_reads_the_train_folder(image_root):
    data = _task("crossflow", image_root).train_dataset()
    assert len(data) == 11  # 10 squares + 1 non-square (centre-cropped)
    batch = data.__getitems__([0, 10])
    assert batch["source"].shape == batch["target"].shape == (2, 3, HR, HR)
    hr = ((batch["target"] + 1) * 127.5).round().to(torch.uint8)
    torch.testing.assert_close(batch["source"], upsample_bicubic(downsample(hr, SCALE), (HR, HR)))


@pytest.mark.parametrize("kind", ["crossflow", "baseline", "regression"])
def test_imagenet_evaluator_writes_metrics_and_picture(image_root, tmp_path, kind):
    task = _task(kind, image_root, imagenet={"hr_size": HR, "root": str(image_root), "num_eval": 100})
    torch.manual_seed(0)
    pipe = Pipeline(task.build_model(), task)
    metrics = task.evaluator().evaluate(pipe, tmp_path, num=7)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["model"] == {"crossflow": "crossflow", "baseline": "concat_baseline"}.get(kind, "regression")
    assert saved["num_images"] == saved["settings"]["num_images"] == 7
    assert saved["data"]["dropped_small"] == 2  # both half-size images are listed before the 7th usable one
    assert saved["fid"] is None and "inception_weights" in saved["fid_skipped"] and saved["inception_score"] is None
    truths, bicubic = _truths_and_bicubic(image_root, 7)
    expected = np.mean([psnr(b / 255.0, t / 255.0) for b, t in zip(bicubic, truths)])
    assert saved["bicubic"]["psnr"] == pytest.approx(expected, abs=1e-6)
    if kind != "baseline":  # untrained direct models return the upsampled image: model == bicubic
        assert metrics["psnr"] == pytest.approx(metrics["bicubic"]["psnr"], abs=1e-6)
    picture = np.asarray(Image.open(tmp_path / "sr.png"))
    upscale = 128 // HR
    assert picture.shape[1] == 8 * HR * upscale + 9 * 2  # two examples of (LR | bicubic | model | HR) per row
    assert picture.shape[0] == 2 * HR * upscale + 3 * 2  # picture_items 4 → 2 rows


def test_fid_and_inception_score_with_a_random_weight_inception(image_root, tmp_path):
    from crossflow.metrics.fid_inception import FIDInceptionV3

    weights = tmp_path / "inception.pth"
    torch.manual_seed(0)
    torch.save(FIDInceptionV3().state_dict(), weights)
    task = _task("regression", image_root, imagenet={"hr_size": HR, "root": str(image_root)},
                 metrics={"inception_weights": str(weights), "is_splits": 2, "batch_size": 4})
    metrics = task.evaluator().evaluate(Pipeline(task.build_model(), task), tmp_path / "eval", num=4)
    # the untrained regression model returns bicubic images: finite FID > 0 against the HR statistics
    assert np.isfinite(metrics["fid"]) and metrics["fid"] > 0
    assert 1.0 <= metrics["inception_score"] <= 2.0 + 1e-6 and metrics["is_splits"] == 2  # 2 images per split
    cached = Path(metrics["fid_reference"])
    assert cached.is_file() and cached.parent == tmp_path / "eval"
    # given reference statistics are used as they are (here: the cached ones → the same FID)
    task2 = _task("regression", image_root, imagenet={"hr_size": HR, "root": str(image_root)},
                  metrics={"inception_weights": str(weights), "is_splits": 2, "fid_reference": str(cached)})
    again = task2.evaluator().evaluate(Pipeline(task2.build_model(), task2), tmp_path / "eval2", num=4)
    assert again["fid_reference"] == str(cached) and again["fid"] == pytest.approx(metrics["fid"], rel=1e-5)


def test_training_on_the_folder_with_preview(image_root, tmp_path):
    from crossflow.train.trainer import Trainer

    raw = _raw("regression", image_root)
    cfg, task_cls = experiment_from_dict(raw)
    Trainer(cfg, task_cls(cfg), tmp_path).fit()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert any("loss_mse" in row for row in rows)
    assert list(tmp_path.rglob("*.png"))  # the preview through ImageNetSREvaluator.preview


# ------------------------------------------------------------------ shipped configs
@pytest.mark.parametrize("name", ["imagenet_64_256", "imagenet_64_256_baseline", "imagenet_64_256_regression"])
def test_paper_configs_are_505m_at_the_paper_recipe(name):
    from crossflow.utils.params import build_on_meta, parameter_counts

    cfg, task_cls = load_experiment(CONFIGS / f"{name}.yaml")
    total = parameter_counts(build_on_meta(cfg, task_cls))["total"]
    assert abs(total - 505e6) <= 0.05 * 505e6, total
    t = cfg.train
    assert (t.batch_size, t.lr, t.warmup_steps, t.max_steps) == (512, 1e-4, 5000, 1_000_000)
    task = cfg.task
    assert (task.dataset, task.imagenet.hr_size, task.imagenet.hr_size // task.scale) == ("imagenet", 256, 64)
    tokens = (256 // cfg.model.velocity_net.patch_size) ** 2
    assert tokens == 1024


@pytest.mark.parametrize("name", ["imagenet_toy", "imagenet_toy_baseline", "imagenet_toy_regression"])
def test_toy_imagenet_configs_are_16_to_64(name):
    cfg, task_cls = load_experiment(CONFIGS / f"{name}.yaml")
    task = task_cls(cfg)
    assert task.target_spec().shape == (3, 64, 64)
    assert task.source_processor().input_size == (16, 16)
    assert cfg.train.max_minutes is not None and cfg.train.max_minutes <= 3.0
