"""Captioning image side: ImageEncoder (pixels / sd_vae / clip_vision), `crossflow extract` on a tiny Karpathy
split (resume, --part, skipped images, the skip limit) and CocoImageFeatures."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from crossflow.cli import main as cli_main
from crossflow.config import ConfigError
from crossflow.data.feature_shards import FeatureShards
from crossflow.specs import ImageSpec, TokenSpec
from tasks.captioning.config import ImageFeatureConfig
from tasks.captioning.images import CocoImageFeatures, ImageEncoder

CONFIG = str(Path(__file__).resolve().parents[3] / "configs" / "captioning" / "toy.yaml")
R = 16
#: (split, height, width) of the fixture's images; image 2 is missing and image 5 is corrupt.
IMAGES = [("train", 20, 28), ("train", 28, 20), ("train", 16, 16), ("restval", 33, 17),
          ("val", 24, 24), ("val", 30, 40), ("test", 17, 23), ("test", 40, 19)]
MISSING, CORRUPT = 2, 5


def _sentence(i: int, k: int) -> dict:
    raw = f"A photo of thing {i} number {k}."
    return {"tokens": raw.lower().strip(".").split(), "raw": raw, "imgid": i, "sentid": 5 * i + k}


@pytest.fixture(scope="module")
def coco(tmp_path_factory) -> dict:
    """A Karpathy-structured dataset_coco.json over 8 small JPEG/PNG images of several sizes."""
    root = tmp_path_factory.mktemp("coco")
    rng = np.random.default_rng(0)
    records, pixels = [], {}
    for i, (split, h, w) in enumerate(IMAGES):
        folder = "train2014" if split == "train" else "val2014"
        name = f"COCO_{folder}_{1000 + i:012d}.{'png' if i % 2 else 'jpg'}"
        (root / folder).mkdir(exist_ok=True)
        records.append({"filepath": folder, "filename": name, "imgid": i, "split": split, "cocoid": 1000 + i,
                        "sentids": [5 * i + k for k in range(5)], "sentences": [_sentence(i, k) for k in range(5)]})
        if i == CORRUPT:
            (root / folder / name).write_bytes(b"\x89PNG\r\n\x1a\n not a png")
        elif i != MISSING:
            arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / folder / name, quality=95)
            pixels[i] = np.asarray(Image.open(root / folder / name).convert("RGB"))  # as decoded (JPEG is lossy)
    dataset = root / "dataset_coco.json"
    dataset.write_text(json.dumps({"images": records, "dataset": "coco"}), encoding="utf-8")
    out = root / "feats"
    assert _extract(dataset, root, out) == 0
    return {"root": root, "json": dataset, "out": out, "pixels": pixels, "records": records}


def _extract(dataset: Path, root: Path, out: Path, *extra: str, skip: float = 0.3) -> int:
    return cli_main(["extract", CONFIG, "task.dataset=coco", f"task.coco.dataset_json={dataset}",
                     f"task.coco.image_root={root}", "task.image.kind=pixels", f"task.image.resolution={R}",
                     f"task.coco.max_skipped_fraction={skip}", "--out", str(out), "--shard-size", "3",
                     "--batch-size", "2", "--num-workers", "0", "--device", "cpu", *extra])


def _hand_crop(image: np.ndarray, size: int) -> np.ndarray:
    """Largest central square, LANCZOS (antialiased) resize, as (3, size, size) uint8."""
    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = Image.fromarray(image[top:top + side, left:left + side])
    return np.array(square.resize((size, size), Image.LANCZOS)).transpose(2, 0, 1)


def _rows(out: Path) -> tuple[list[dict], np.ndarray]:
    data = FeatureShards(out)
    return data.records, data.gather("image", np.arange(len(data)))


# ---------------------------------------------------------------------------------------------- extraction
def test_pixels_extraction_equals_hand_crop_and_lists_skipped_images(coco) -> None:
    records, stored = _rows(coco["out"])
    kept = [i for i in range(len(IMAGES)) if i not in (MISSING, CORRUPT)]
    assert [r["cocoid"] for r in records] == [1000 + i for i in kept]
    assert records[0] == {"index": 0, "cocoid": 1000, "split": "train", "filepath": "train2014",
                               "filename": coco["records"][0]["filename"],
                               "img_path": f"train2014/{coco['records'][0]['filename']}"}
    assert stored.dtype == np.uint8 and stored.shape == (len(kept), 3, R, R)
    for row, i in enumerate(kept):
        assert np.array_equal(stored[row], _hand_crop(coco["pixels"][i], R)), f"image {i}"
    report = json.loads((coco["out"] / "extraction_report.json").read_text())
    assert report["num_images"] == 6 and report["num_skipped"] == 2 and report["complete"]
    assert report["skipped_by_reason"] == {"corrupt": 1, "missing": 1}
    assert [(s["cocoid"], s["split"], s["reason"].split(":")[0]) for s in report["skipped"]] == \
        [(1000 + MISSING, "train", "missing"), (1000 + CORRUPT, "val", "corrupt")]
    assert report["splits"] == {"restval": 1, "test": 2, "train": 2, "val": 1}


def test_resume_redoes_only_missing_shards_and_refuses_other_image_settings(coco, tmp_path, capsys) -> None:
    out = tmp_path / "feats"
    shutil.copytree(coco["out"], out)
    (out / "shard-00001.json").unlink()  # interrupted after shard 1's arrays, before its marker
    for f in out.glob("shard-00002.*"):
        f.unlink()
    before = (out / "shard-00000.image.npy").stat().st_mtime_ns
    assert _extract(coco["json"], coco["root"], out) == 0
    report = json.loads((out / "extraction_report.json").read_text())
    assert report["this_run"]["images"] == 2 + 2  # shard 1: images 3, 4 (5 corrupt); shard 2: images 6, 7
    assert (out / "shard-00000.image.npy").stat().st_mtime_ns == before  # shard 0 was not redone
    assert report["num_skipped"] == 2 and report["complete"]
    (a_rec, a), (b_rec, b) = _rows(out), _rows(coco["out"])
    assert a_rec == b_rec and np.array_equal(a, b)
    capsys.readouterr()
    assert _extract(coco["json"], coco["root"], out, "task.image.resolution=8") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "task.image.resolution=16" in err and "now gives 8" in err


def test_two_parts_equal_one_run(coco, tmp_path) -> None:
    out = tmp_path / "feats"
    assert _extract(coco["json"], coco["root"], out, "--part", "0/2") == 0
    index = json.loads((out / "index.json").read_text())
    assert index["complete_shards"] == 2 and not index["complete"]  # shards 0 and 2 of 3
    assert _extract(coco["json"], coco["root"], out, "--part", "1/2") == 0
    assert json.loads((out / "index.json").read_text())["complete"]
    (a_rec, a), (b_rec, b) = _rows(out), _rows(coco["out"])
    assert a_rec == b_rec and np.array_equal(a, b)


def test_too_many_missing_images_stop_before_decoding(coco, tmp_path, capsys) -> None:
    out = tmp_path / "feats"
    assert _extract(coco["json"], coco["root"], out, skip=0.01) == 2  # 1 missing of 8 > 1 %
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "max_skipped_fraction=0.01" in err and "missing" in err
    assert not list(out.glob("shard-*.json"))  # nothing written (the missing file is seen before decoding)
    report = json.loads((out / "extraction_report.json").read_text())
    assert report["stopped"] and [s["cocoid"] for s in report["skipped"]] == [1000 + MISSING]


def test_too_many_corrupt_images_stop_before_their_shard(coco, tmp_path, capsys) -> None:
    out = tmp_path / "feats"
    rc = _extract(coco["json"], coco["root"], out, "--splits", "val", "--shard-size", "1", skip=0.4)
    assert rc == 2 and "1 of 2 images are missing or unreadable" in capsys.readouterr().err
    assert (out / "shard-00000.json").is_file() and not (out / "shard-00001.json").exists()
    report = json.loads((out / "extraction_report.json").read_text())
    assert [(s["cocoid"], s["reason"].split(":")[0]) for s in report["skipped"]] == [(1000 + CORRUPT, "corrupt")]


# ---------------------------------------------------------------------------------------------- encoders
def test_sd_vae_encoder_stores_moments_and_gives_scaled_latents(coco, tiny_vae) -> None:
    from crossflow.codecs.sd_vae import SDVAECodec
    from crossflow.data.transforms import to_model_input

    cfg = ImageFeatureConfig(kind="sd_vae", resolution=R)
    cfg.vae.name_or_path = str(tiny_vae)
    enc = ImageEncoder.from_config(cfg, device="cpu")
    assert enc.source_spec() == ImageSpec(4, R // 8, R // 8) and enc._codec is None  # no weights needed
    images = [coco["pixels"][0], coco["pixels"][1]]
    stored = enc.encode(images)
    assert stored.shape == (2, 8, R // 8, R // 8) and stored.dtype == np.float16
    crops = np.stack([_hand_crop(im, R).transpose(1, 2, 0) for im in images])
    moments = SDVAECodec(str(tiny_vae), device="cpu").encode_moments(to_model_input(crops))
    np.testing.assert_allclose(stored.astype(np.float32), moments.numpy(), atol=2e-3, rtol=2e-3)
    source = enc.to_source(torch.from_numpy(stored))
    torch.testing.assert_close(source, torch.from_numpy(stored[:, :4]).float() * cfg.vae.scale_factor)
    cfg.latent = "sample"
    draw = [ImageEncoder(cfg).to_source(torch.from_numpy(stored), torch.Generator().manual_seed(1)) for _ in range(2)]
    assert draw[0].shape == (2, 4, R // 8, R // 8) and torch.equal(draw[0], draw[1])
    with pytest.raises(ConfigError, match="task.image.resolution"):
        ImageEncoder(ImageFeatureConfig(kind="sd_vae", resolution=20))


def test_sd_vae_extraction_records_the_model_and_refuses_other_weights(coco, tiny_vae, tmp_path, capsys) -> None:
    from helpers.tiny_models import make_tiny_vae

    vae_dir, out = tmp_path / "vae", tmp_path / "feats"
    shutil.copytree(tiny_vae, vae_dir)
    vae = ["task.image.kind=sd_vae", f"task.image.vae.name_or_path={vae_dir}", "--splits", "test"]
    assert _extract(coco["json"], coco["root"], out, *vae) == 0
    data = FeatureShards(out)
    assert data.field_specs["image"] == {"shape": [8, R // 8, R // 8], "dtype": "float16"}
    assert data.meta["image"]["kind"] == "sd_vae" and data.meta["image"]["vae"] == str(vae_dir)
    make_tiny_vae(vae_dir, seed=1)  # same path, other weights
    capsys.readouterr()
    assert _extract(coco["json"], coco["root"], out, *vae) == 2
    assert "the model weights" in capsys.readouterr().err


def test_clip_vision_encoder_tokens_and_spec_without_weights(coco, tiny_clip, tmp_path) -> None:
    cfg = ImageFeatureConfig(kind="clip_vision", resolution=32, clip_vision=str(tiny_clip), clip_layer=-1)
    config_only = tmp_path / "clip_config_only"
    config_only.mkdir()
    shutil.copy(tiny_clip / "config.json", config_only / "config.json")
    spec = ImageEncoder(ImageFeatureConfig(kind="clip_vision", resolution=32, clip_vision=str(config_only)))
    assert spec.source_spec() == TokenSpec(5, 32)  # (32/16)² patches + CLS, width 32, from config.json alone
    enc = ImageEncoder.from_config(cfg, device="cpu")
    stored = enc.encode([coco["pixels"][0], coco["pixels"][3], coco["pixels"][4]])
    assert stored.shape == (3, 5, 32) and stored.dtype == np.float16
    from transformers import CLIPVisionModel

    model = CLIPVisionModel.from_pretrained(tiny_clip, local_files_only=True).eval()
    crop = torch.from_numpy(_hand_crop(coco["pixels"][0], 32)[None]).float() / 255.0
    mean, std = torch.tensor([0.48145466, 0.4578275, 0.40821073]), torch.tensor([0.26862954, 0.26130258, 0.27577711])
    with torch.no_grad():
        want = model(pixel_values=(crop - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)).last_hidden_state
    np.testing.assert_allclose(stored[0].astype(np.float32), want[0].numpy(), atol=5e-3, rtol=5e-3)
    assert torch.equal(enc.to_source(torch.from_numpy(stored)), torch.from_numpy(stored).float())
    with pytest.raises(ConfigError, match="task.image.resolution=32"):
        ImageEncoder(ImageFeatureConfig(kind="clip_vision", resolution=16, clip_vision=str(config_only)))
    with pytest.raises(ConfigError, match="task.image.clip_layer"):
        ImageEncoder(ImageFeatureConfig(kind="clip_vision", resolution=32, clip_vision=str(config_only), clip_layer=5))


def test_pixels_to_source_is_the_image_in_minus_one_one() -> None:
    enc = ImageEncoder(ImageFeatureConfig(kind="pixels", resolution=4))
    stored = torch.tensor([0, 255, 51], dtype=torch.uint8).view(1, 3, 1, 1).expand(1, 3, 4, 4)
    assert enc.source_spec() == ImageSpec(3, 4, 4)
    torch.testing.assert_close(enc.to_source(stored)[0, :, 0, 0], torch.tensor([-1.0, 1.0, -0.6]))


# ---------------------------------------------------------------------------------------------- dataset
def test_coco_image_features_select_splits_and_explain_missing_features(coco, tmp_path) -> None:
    train = CocoImageFeatures(coco["out"], ["train", "restval"])
    assert train.cocoids.tolist() == [1000, 1001, 1003] and len(train) == 3
    assert train.splits.tolist() == ["train", "train", "restval"]
    _, stored = _rows(coco["out"])
    assert torch.equal(train.features([2, 0]), torch.from_numpy(stored[[2, 0]]))
    item = CocoImageFeatures(coco["out"], ["test"])[1]
    assert item["cocoid"].item() == 1007 and torch.equal(item["image"], torch.from_numpy(stored[5]))
    assert len(CocoImageFeatures(coco["out"])) == 6
    train.check(ImageFeatureConfig(kind="pixels", resolution=R))
    with pytest.raises(ConfigError, match="resolution=32"):
        train.check(ImageFeatureConfig(kind="pixels", resolution=32))
    with pytest.raises(FileNotFoundError, match="crossflow extract") as missing:
        CocoImageFeatures(tmp_path / "nothing", ["train"])
    assert str(tmp_path / "nothing") in str(missing.value)
    with pytest.raises(FileNotFoundError, match="task.coco.features_dir"):
        CocoImageFeatures(None, ["train"])
    only_val = tmp_path / "val_only"
    assert _extract(coco["json"], coco["root"], only_val, "--splits", "test") == 0
    with pytest.raises(ValueError, match="no image of split"):
        CocoImageFeatures(only_val, ["train"])
