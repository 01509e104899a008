"""ImageNet super-resolution data: listing, SR3's crop, 8-bit low-res, the dataset's drop/skip accounting."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from tasks.image_source import upsample_bicubic
from tasks.super_resolution.data import downsample
from tasks.super_resolution.imagenet import ImageNetSR, list_images, lr_from_hr, sr_crop

HR, SCALE = 32, 4
#: name → (height, width): landscape, portrait, too small (shorter side 24 < 32), exactly hr_size
SIZES = {"landscape": (48, 80), "portrait": (72, 40), "small": (60, 24), "exact": (32, 32)}


def _picture(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _save(picture: np.ndarray, path) -> None:
    # PNG: lossless, so crops of the files equal crops of the arrays
    Image.fromarray(picture).save(path, format="PNG")


@pytest.fixture
def pictures() -> dict[str, np.ndarray]:
    return {name: _picture(h, w, seed) for seed, (name, (h, w)) in enumerate(SIZES.items())}


@pytest.fixture
def wnid_folder(tmp_path, pictures):
    """``<wnid>/`` layout: two classes, the four sizes, suffixes in several cases, plus files to ignore."""
    root = tmp_path / "train"
    for wnid, names in (("n01", ["landscape", "small"]), ("n02", ["portrait", "exact"])):
        (root / wnid).mkdir(parents=True)
        for name in names:
            suffix = {"landscape": ".JPEG", "small": ".jpg", "portrait": ".PNG", "exact": ".png"}[name]
            _save(pictures[name], root / wnid / f"{name}{suffix}")
    (root / "n01" / "notes.txt").write_text("not an image")
    _save(pictures["exact"], root / "n02" / ".exact.png.1234.tmp")  # a partial write: hidden
    return root


def test_list_images_reads_both_layouts_sorted(tmp_path, wnid_folder, pictures):
    listed = list_images(wnid_folder)
    assert [p.relative_to(wnid_folder).as_posix() for p in listed] == [
        "n01/landscape.JPEG", "n01/small.jpg", "n02/exact.png", "n02/portrait.PNG"]
    flat = tmp_path / "flat"
    flat.mkdir()
    for name in ("portrait", "exact"):
        _save(pictures[name], flat / f"{name}.jpeg")
    assert [p.name for p in list_images(flat)] == ["exact.jpeg", "portrait.jpeg"]
    with pytest.raises(FileNotFoundError, match="missing"):
        list_images(tmp_path / "missing")


def test_sr_crop_takes_the_largest_central_square(pictures):
    exact = pictures["exact"]
    np.testing.assert_array_equal(sr_crop(exact, HR), exact)  # an exact hr_size square comes back unchanged
    assert sr_crop(pictures["small"], HR) is None  # shorter side 24 < 32
    land = pictures["landscape"]  # 48 x 80: central 48-square at columns 16..64, resized to 32
    expected = np.asarray(Image.fromarray(np.ascontiguousarray(land[:, 16:64])).resize((HR, HR), Image.BICUBIC))
    np.testing.assert_array_equal(sr_crop(land, HR), expected)
    np.testing.assert_array_equal(sr_crop(Image.fromarray(land), HR), expected)  # PIL inputs too
    port = pictures["portrait"]  # 72 x 40: central 40-square at rows 16..56
    out = sr_crop(port, HR)
    assert out.shape == (HR, HR, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(sr_crop(port, 40), port[16:56])  # shorter side == size: cropped, not resized
    with pytest.raises(ValueError, match="uint8"):
        sr_crop(exact.astype(np.float32), HR)


def test_sr_crop_resize_is_antialiased():
    """A one-pixel checkerboard shrunk 4x averages to grey; a resize without a low-pass filter would alias."""
    board = (np.indices((128, 128)).sum(0) % 2 * 255).astype(np.uint8)
    out = sr_crop(np.repeat(board[..., None], 3, axis=2), HR).astype(np.float64)
    assert abs(out.mean() - 127.5) < 2 and out.std() < 3


def test_lr_from_hr_is_8bit_antialiased_downsampling():
    hr = torch.from_numpy(_picture(32, 32, 7)).permute(2, 0, 1)[None].repeat(2, 1, 1, 1)
    lr = lr_from_hr(hr, SCALE)
    assert lr.shape == (2, 3, 8, 8) and lr.dtype == torch.uint8
    assert torch.equal(lr, downsample(hr, SCALE))
    flat = torch.full((1, 3, 32, 32), 200, dtype=torch.uint8)
    assert torch.equal(lr_from_hr(flat, SCALE), torch.full((1, 3, 8, 8), 200, dtype=torch.uint8))
    with pytest.raises(ValueError, match="uint8"):
        lr_from_hr(hr.float(), SCALE)


def test_dataset_items_shapes_ranges_and_dropped(wnid_folder, pictures):
    data = ImageNetSR(wnid_folder, HR, SCALE)
    assert [p.stem for p in data.paths] == ["landscape", "exact", "portrait"] and len(data) == 3
    assert data.dropped_small == 1 and data.skipped == 0
    hr = data.hr([0, 1, 2])
    assert hr.shape == (3, 3, HR, HR) and hr.dtype == torch.uint8
    assert torch.equal(hr[1], torch.from_numpy(pictures["exact"]).permute(2, 0, 1))
    assert torch.equal(hr[0], torch.from_numpy(sr_crop(pictures["landscape"], HR)).permute(2, 0, 1))
    assert data.lr([1]).shape == (1, 3, HR // SCALE, HR // SCALE)
    batch = data.__getitems__([2, 0])
    for key in ("source", "target"):
        assert batch[key].shape == (2, 3, HR, HR) and batch[key].dtype == torch.float32
        assert batch[key].min() >= -1.0 and batch[key].max() <= 1.0
    hr20 = data.hr([2, 0])
    assert torch.allclose(batch["target"], hr20.float() / 127.5 - 1.0)
    assert torch.allclose(batch["source"], upsample_bicubic(downsample(hr20, SCALE), (HR, HR)))
    item = data[1]
    assert item["target"].shape == (3, HR, HR)
    assert len(ImageNetSR(wnid_folder, HR, SCALE, num=2)) == 2  # first N usable images (evaluation subsets)


def test_flat_and_wnid_layouts_give_the_same_crops(tmp_path, wnid_folder):
    flat = tmp_path / "flat"
    flat.mkdir()
    for path in list_images(wnid_folder):
        (flat / f"{path.parent.name}_{path.name}").write_bytes(path.read_bytes())
    a, b = ImageNetSR(wnid_folder, HR, SCALE), ImageNetSR(flat, HR, SCALE)
    assert len(a) == len(b) == 3 and b.dropped_small == 1
    assert torch.equal(a.hr(range(3)), b.hr(range(3)))


def test_dataset_rejects_bad_sizes_and_empty_folders(tmp_path, wnid_folder):
    with pytest.raises(ValueError, match="hr_size=30 must be divisible by task.scale=4"):
        ImageNetSR(wnid_folder, 30, SCALE)
    with pytest.raises(ValueError, match="shorter side of at least task.imagenet.hr_size=128"):
        ImageNetSR(wnid_folder, 128, SCALE)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images in"):
        ImageNetSR(tmp_path / "empty", HR, SCALE)


def test_unreadable_headers_are_skipped_and_counted(wnid_folder, caplog):
    bad = wnid_folder / "n01" / "broken.JPEG"
    bad.write_bytes(b"not a jpeg at all")
    with caplog.at_level(logging.WARNING):
        data = ImageNetSR(wnid_folder, HR, SCALE, max_skipped_fraction=0.25)  # 1 of 5 allowed
    assert data.skipped == 1 and data.dropped_small == 1 and len(data) == 3 and bad not in data.paths
    assert "broken.JPEG" in caplog.text
    with pytest.raises(ValueError, match=r"task.imagenet.max_skipped_fraction=0.1 .*broken.JPEG"):
        ImageNetSR(wnid_folder, HR, SCALE, max_skipped_fraction=0.1)  # 0 of 5 allowed


def test_undecodable_images_give_way_to_the_next_within_the_budget(tmp_path, pictures):
    root = tmp_path / "flat"
    root.mkdir()
    for i in range(4):
        Image.fromarray(_picture(40, 40, 10 + i)).save(root / f"img{i}.JPEG", quality=95)
    whole = (root / "img1.JPEG").read_bytes()
    (root / "img1.JPEG").write_bytes(whole[: len(whole) // 2])  # header fine, pixels truncated
    data = ImageNetSR(root, HR, SCALE, max_skipped_fraction=0.25)  # 1 of 4 allowed
    assert len(data) == 4 and data.skipped == 0  # the header still reads
    batch = data.hr([1, 2])
    assert data.skipped == 1
    assert torch.equal(batch[0], batch[1])  # index 1 was replaced by the next image, 2
    data.hr([1])  # the same file again: still one skipped file
    assert data.skipped == 1
    strict = ImageNetSR(root, HR, SCALE, max_skipped_fraction=0.0)
    with pytest.raises(ValueError, match=r"1 of 4 images .* task.imagenet.max_skipped_fraction=0.0 .*img1.JPEG"):
        strict.__getitems__([1])


def test_an_evaluation_subset_is_spread_over_the_classes(tmp_path):
    for wnid in ("n01", "n02", "n03"):
        (tmp_path / wnid).mkdir()
        for i in range(4):
            Image.new("RGB", (HR, HR), (60 * i, 0, 0)).save(tmp_path / wnid / f"{wnid}_{i}.JPEG")
    data = ImageNetSR(tmp_path, HR, SCALE, num=3)
    assert sorted(p.parent.name for p in data.paths) == ["n01", "n02", "n03"]  # not the first class's three
