"""Feature extraction → memory-mapped shards → training, with tiny CLIP + AutoencoderKL and generated images."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("transformers")
pytest.importorskip("diffusers")

from crossflow.cli import main as cli_main  # noqa: E402
from crossflow.codecs import SDVAECodec  # noqa: E402
from crossflow.config import ConfigError  # noqa: E402
from crossflow.data.feature_shards import FeatureShards  # noqa: E402
from crossflow.data.transforms import center_crop_adm, center_crop_lanczos, to_model_input  # noqa: E402
from crossflow.language.hf import TextEmbedder  # noqa: E402
from crossflow.outputs import ImageOutput  # noqa: E402
from crossflow.pipeline import Pipeline  # noqa: E402
from crossflow.registry import load_experiment  # noqa: E402
from crossflow.task import PreparesBatches  # noqa: E402
from crossflow.train.trainer import Trainer  # noqa: E402
from helpers.image_folder import make_image_folder  # noqa: E402


def _config(root: Path, features: Path, clip: Path, vae: Path, **task) -> Path:
    task_yaml = "".join(f"  {k}: {v}\n" for k, v in task.items())
    path = root / f"cfg_{features.name}.yaml"
    path.write_text(f"""
task:
  name: t2i
  dataset: features
  features_dir: {features}
  resolution: 32
  language_model: {{name_or_path: {clip}, max_length: 16}}
  vae: {{name_or_path: {vae}}}
  preview_prompts: 4
  cache_dir: {root / 'cache'}
{task_yaml}model:
  source_encoder: {{width: 32, depth: 1, num_heads: 2, num_queries: 2}}
  velocity_net: {{patch_size: 2, hidden_size: 32, depth: 2, num_heads: 2}}
  contrastive: {{widths: [8, 16], hidden_dim: 32}}
train: {{batch_size: 4, max_steps: 3, lr: 1.0e-3, warmup_steps: 1, checkpoint_every: 2, log_every: 1, seed: 1}}
sample: {{steps: 3, batch_size: 8}}
""", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_clip_text, tiny_vae):
    root = tmp_path_factory.mktemp("t2i_real")
    jsonl, images, records = make_image_folder(root / "data", 10)
    cfg = _config(root, root / "feats", tiny_clip_text, tiny_vae)
    rc = cli_main(["extract", str(cfg), "--jsonl", str(jsonl), "--image-root", str(images), "--shard-size", "4",
                   "--batch-size", "3", "--num-workers", "0", "--device", "cpu"])
    assert rc == 0
    return {"root": root, "clip": tiny_clip_text, "vae": tiny_vae, "jsonl": jsonl, "images": images,
            "records": records, "cfg": cfg, "feats": root / "feats"}


def _assert_same_rows(a: np.ndarray, b: np.ndarray, name: str) -> None:
    """Same rows; float features only up to fp16 rounding (other batch compositions → other CPU kernels)."""
    if np.issubdtype(a.dtype, np.floating):
        np.testing.assert_allclose(a.astype(np.float32), b.astype(np.float32), rtol=2e-3, atol=2e-3, err_msg=name)
    else:
        assert np.array_equal(a, b), name


def _extract(setup, out: Path, *extra: str) -> int:
    return cli_main(["extract", str(setup["cfg"]), "--jsonl", str(setup["jsonl"]), "--image-root", str(setup["images"]),
                     "--out", str(out), "--shard-size", "4", "--batch-size", "3", "--num-workers", "0",
                     "--device", "cpu", *extra])


def test_extraction_skips_and_reports(setup) -> None:
    feats, records = setup["feats"], setup["records"]
    report = json.loads((feats / "extraction_report.json").read_text())
    assert report["num_samples"] == 8 and report["num_skipped"] == 2 and report["complete"]
    assert report["skipped_by_reason"] == {"corrupt": 1, "missing": 1}
    assert [(s["index"], s["img_path"], s["reason"].split(":")[0]) for s in report["skipped"]] == \
        [(3, records[3]["img_path"], "corrupt"), (6, records[6]["img_path"], "missing")]
    data = FeatureShards(feats)
    kept = [i for i in range(10) if i not in (3, 6)]
    assert len(data) == 8 and data.prompts == [records[i]["prompt"] for i in kept]
    assert data.field_specs["tokens"] == {"shape": [16, 32], "dtype": "float16"}
    assert data.field_specs["moments"] == {"shape": [8, 4, 4], "dtype": "float16"}
    # Stored rows equal a direct computation (up to fp16 storage).
    batch = data.__getitems__([5, 0])
    emb = TextEmbedder(str(setup["clip"]), max_length=16, local_files_only=True)
    h, mask = emb([data.prompts[5], data.prompts[0]])
    torch.testing.assert_close(batch["source"], h, atol=2e-3, rtol=2e-3)
    assert torch.equal(batch["source_mask"], mask)
    codec = SDVAECodec(str(setup["vae"]), device="cpu")
    img = Image.open(setup["images"] / records[kept[5]]["img_path"]).convert("RGB")
    moments = codec.encode_moments(to_model_input(center_crop_adm(img, 32)[None]))
    torch.testing.assert_close(batch["moments"][:1], moments, atol=2e-3, rtol=2e-3)


def test_extraction_resumes(setup, tmp_path: Path) -> None:
    out = tmp_path / "feats"
    shutil.copytree(setup["feats"], out)
    (out / "shard-00001.json").unlink()  # interrupted after the arrays, before the marker
    for f in out.glob("shard-00002.*"):
        f.unlink()
    partial = FeatureShards(out)  # index.json lists 3 shards, 1 marker is left: the reader falls back to markers
    assert len(partial) == 3 and partial.num_skipped == 1 and partial.shards == [0]
    assert _extract(setup, out) == 0
    report = json.loads((out / "extraction_report.json").read_text())
    assert report["this_run"]["samples"] == 3 + 2  # shard 1: records 4, 5, 7 (6 is missing); shard 2: 8, 9
    for name in ("tokens", "moments", "mask", "input_ids"):
        a, b = FeatureShards(out).gather(name, np.arange(8)), FeatureShards(setup["feats"]).gather(name, np.arange(8))
        _assert_same_rows(a, b, name)
    assert _extract(setup, out) == 0  # nothing left to do
    assert json.loads((out / "extraction_report.json").read_text())["this_run"]["samples"] == 0
    assert _extract(setup, out, "--dtype", "float32") == 2  # different settings are refused, naming the key


def test_limit_then_continue(setup, tmp_path: Path) -> None:
    out = tmp_path / "feats"
    assert _extract(setup, out, "--limit", "3") == 0  # whole shard 0 (records 0-3)
    assert len(FeatureShards(out)) == 3 and not json.loads((out / "index.json").read_text())["complete"]
    assert _extract(setup, out) == 0
    assert FeatureShards(out).prompts == FeatureShards(setup["feats"]).prompts


def test_parts_share_one_directory(setup, tmp_path: Path) -> None:
    out = tmp_path / "feats"
    assert _extract(setup, out, "--part", "1/2") == 0  # shard 1 only
    assert sorted(p.name for p in out.glob("shard-*.json")) == ["shard-00001.json"]
    assert _extract(setup, out, "--part", "0/2") == 0  # shards 0 and 2
    assert json.loads((out / "index.json").read_text())["complete"]
    _assert_same_rows(FeatureShards(out).gather("moments", np.arange(8)),
                      FeatureShards(setup["feats"]).gather("moments", np.arange(8)), "moments")
    assert _extract(setup, out, "--part", "2/2") == 2  # i must be < n


def test_training_from_shards(setup, tmp_path: Path) -> None:
    cfg, task_cls = load_experiment(setup["cfg"])
    task = task_cls(cfg)
    assert task.target_spec().shape == (4, 4, 4) and task.source_spec().dim == 32
    data = task.train_dataset()
    assert isinstance(data, PreparesBatches)  # a fresh latent from the stored moments, every step
    batch = data.prepare(data.__getitems__([0, 1, 2, 3]), torch.device("cpu"))
    again = data.prepare(data.__getitems__([0, 1, 2, 3]), torch.device("cpu"))
    assert batch["target"].shape == (4, 4, 4, 4) and not torch.equal(batch["target"], again["target"])
    result = Trainer(cfg, task, tmp_path / "run").fit()
    assert result.step == 3 and np.isfinite(result.final_loss)
    assert (tmp_path / "run" / "export" / "model.safetensors").is_file()
    preview = Image.open(tmp_path / "run" / "previews" / "step-0000003.png")
    assert preview.size[0] > 2 * 32  # a grid of 4 decoded 32 px images
    # generation: prompts → LM → flow in the SD-VAE latent space → the VAE decoder
    pipe = Pipeline.from_pretrained(tmp_path / "run", device="cpu")
    out = pipe(["a photo of the cat", "a red car"], steps=2)
    assert isinstance(out, ImageOutput) and out.images.shape == (2, 3, 32, 32) and out.latents.shape == (2, 4, 4, 4)
    torch.testing.assert_close(out.images, SDVAECodec(str(setup["vae"]), device="cpu").decode(out.latents))


def test_config_checks_features(setup, tmp_path: Path) -> None:
    for override, key in (("task.language_model.max_length=12", "task.language_model.max_length"),
                          ("task.resolution=64", "task.resolution")):
        cfg, task_cls = load_experiment(setup["cfg"], [override])
        with pytest.raises(ConfigError, match=key):
            task_cls(cfg).train_dataset()
    cfg, task_cls = load_experiment(setup["cfg"], [f"task.features_dir={tmp_path / 'none'}"])
    with pytest.raises(FileNotFoundError, match="crossflow extract"):
        task_cls(cfg).train_dataset()


def test_coco_prompt_features(setup, tmp_path: Path) -> None:
    coco = {"images": [{"id": 5, "file_name": "x.jpg"}, {"id": 1, "file_name": "y.jpg"}],
            "annotations": [{"image_id": 5, "caption": "a red car"}, {"image_id": 1, "caption": "a blue tree"},
                            {"image_id": 5, "caption": "a small car"}]}
    (tmp_path / "captions.json").write_text(json.dumps(coco))
    out = tmp_path / "coco"
    assert cli_main(["extract", str(setup["cfg"]), "--coco-captions", str(tmp_path / "captions.json"),
                     "--prompts-only", "--out", str(out), "--device", "cpu"]) == 0
    data = FeatureShards(out)
    assert data.prompts == ["a blue tree", "a red car", "a small car"] and "moments" not in data.field_specs
    assert [r["image_id"] for r in data.records] == [1, 5, 5] and set(data[0]) == {"source", "source_mask", "input_ids"}
    every = [json.loads(line) for line in (out / "prompts.jsonl").read_text().splitlines()]
    one = [json.loads(line) for line in (out / "prompts_one_per_image.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in every] == data.prompts and sorted(r["image_id"] for r in one) == [1, 5]
    cfg, task_cls = load_experiment(setup["cfg"], [f"task.features_dir={out}"])
    with pytest.raises(ConfigError, match="prompt features only"):
        task_cls(cfg).train_dataset()


def test_extract_help(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        cli_main(["extract", "--help"])
    assert exc.value.code == 0 and "--image-root" in capsys.readouterr().out


def test_fid_reference_statistics(setup, tmp_path: Path) -> None:
    fid = pytest.importorskip("crossflow.metrics.fid")
    from crossflow.metrics.fid_inception import FIDInceptionV3, load_fid_inception

    torch.manual_seed(0)
    weights = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    torch.save({k: v for k, v in FIDInceptionV3().state_dict().items() if not k.endswith("num_batches_tracked")},
               weights)
    names = [r["img_path"] for r in setup["records"]]
    # Images 0, 1, 2 (image 0 captioned twice), 3 (corrupt) and 6 (missing).
    coco = {"images": [{"id": i, "file_name": names[i]} for i in (0, 1, 2, 3, 6)],
            "annotations": [{"image_id": i, "caption": "a cat"} for i in (0, 0, 1, 2, 3, 6)]}
    (tmp_path / "captions.json").write_text(json.dumps(coco))
    result_code = cli_main(["extract", str(setup["cfg"]), "--coco-captions", str(tmp_path / "captions.json"),
                            "--image-root", str(setup["images"]), "--prompts-only", "--out", str(tmp_path / "coco"),
                            "--device", "cpu", "--num-workers", "0", "--fid-stats", str(tmp_path / "ref.npz"),
                            "--inception-weights", str(weights), "--fid-resolution", "64"])
    assert result_code == 0
    mu, sigma = fid.load_statistics(tmp_path / "ref.npz")
    assert int(np.load(tmp_path / "ref.npz")["count"]) == 3
    crops = np.stack([center_crop_lanczos(Image.open(setup["images"] / names[i]).convert("RGB"), 64) for i in range(3)])
    direct = fid.batch_statistics([crops], load_fid_inception(weights), progress=False)
    np.testing.assert_allclose(mu, direct.mu, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(sigma, direct.sigma, rtol=1e-3, atol=1e-6)
