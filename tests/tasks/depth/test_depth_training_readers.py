"""Training-data readers: exact decoding and valid ranges per format, KB/evaluation crops, None lines, tars,
the NYUv2 .mat axis order and 1-based splits, corrupt files named in SampleError."""

from __future__ import annotations

import pickle
import tarfile

import h5py
import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from tasks.depth.toy_training import open_toy, write_toy_hypersim
from tasks.depth.training import (HypersimDepth, KittiEigenTrain, NyuLabeledMat, NyuSyncTrain, SampleError,
                                  VirtualKittiDepth, read_nyu_splits)


def _pair(root, rgb_rel, depth_rel, stored):
    """Writes an RGB PNG/JPEG and a uint16 depth PNG of the same size under ``root``."""
    h, w = stored.shape
    for rel in (rgb_rel, depth_rel):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
    rgb = (np.arange(h * w * 3) % 251).astype(np.uint8).reshape(h, w, 3)
    Image.fromarray(rgb).save(root / rgb_rel)
    Image.fromarray(stored.astype(np.uint16)).save(root / depth_rel)
    return rgb


def _probe(h, w, values, at=(0, 0)):
    stored = np.zeros((h, w), np.uint16)
    stored[at[0], at[1]:at[1] + len(values)] = values
    return stored


def test_hypersim_millimetres_and_strict_range(tmp_path):
    values = [0, 1, 64999, 65000, 65535]  # mm
    _pair(tmp_path, "ai_001_001/rgb_cam_00_fr0000.png", "ai_001_001/depth_plane_cam_00_fr0000.png",
          _probe(4, 8, values))
    (tmp_path / "list.txt").write_text("ai_001_001/rgb_cam_00_fr0000.png ai_001_001/depth_plane_cam_00_fr0000.png")
    item = HypersimDepth(tmp_path, tmp_path / "list.txt", size=None)[0]
    depth, valid = item["depth"][0, 0, :5], item["valid"][0, 0, :5]
    assert item["depth"].dtype == torch.float32 and item["rgb"].dtype == torch.uint8 and item["rgb"].shape == (3, 4, 8)
    torch.testing.assert_close(depth, torch.tensor([0.0, 0.001, 64.999, 65.0, 65.535]))
    assert valid.tolist() == [False, True, True, False, False]  # 1e-5 < d < 65, strict


def test_hypersim_default_resize_is_marigolds_480x640_nearest_exact(tmp_path):
    info = write_toy_hypersim(tmp_path, num=1, seed=3)  # the real 768×1024
    native = open_toy(info, size=None)[0]
    item = open_toy(info, size=(480, 640))[0]
    default = HypersimDepth(info["reader_kwargs"]["root"], info["reader_kwargs"]["filenames"])
    assert default.size == (480, 640) and default[0]["depth"].shape == (1, 480, 640)
    expected = torch.nn.functional.interpolate(native["depth"][None], size=(480, 640), mode="nearest-exact")[0]
    torch.testing.assert_close(item["depth"], expected)  # torchvision NEAREST_EXACT, as Marigold's Resize
    valid = torch.nn.functional.interpolate(native["valid"][None].float(), size=(480, 640), mode="nearest-exact")[0]
    assert torch.equal(item["valid"], valid.bool())
    assert not item["valid"].all() and item["valid"].any()


def test_vkitti_centimetres_kb_crop_and_sky(tmp_path):
    stored = _probe(375, 1242, [1, 1, 8000, 65535, 0, 2500], at=(23, 13))  # (23, 13) = top-left of the KB crop
    stored[22, 13] = 777  # just above the crop: cut away
    _pair(tmp_path, "rgb/Scene02/clone/frames/rgb/Camera_0/rgb_00000.jpg",
          "depth/Scene02/clone/frames/depth/Camera_0/depth_00000.png", stored)
    (tmp_path / "vkitti_train.txt").write_text("rgb/Scene02/clone/frames/rgb/Camera_0/rgb_00000.jpg "
                                               "depth/Scene02/clone/frames/depth/Camera_0/depth_00000.png\n")
    item = VirtualKittiDepth(tmp_path, tmp_path / "vkitti_train.txt")[0]
    assert item["rgb"].shape == (3, 352, 1216) and item["depth"].shape == (1, 352, 1216)
    torch.testing.assert_close(item["depth"][0, 0, :6], torch.tensor([0.01, 0.01, 80.0, 655.35, 0.0, 25.0]))
    assert item["valid"][0, 0, :6].tolist() == [True, True, False, False, False, True]  # < 80 m: sky is invalid
    assert float(item["depth"].max()) == pytest.approx(655.35) and 7.77 not in item["depth"]


def test_kitti_list_skips_none_lines_divides_by_256_and_crops(tmp_path):
    stored = _probe(375, 1242, [256, 20480, 20479], at=(23 + 200, 13 + 600))
    _pair(tmp_path / "raw", "2011_09_26/2011_09_26_drive_0001_sync/image_02/data/0000000005.png",
          "unused.png", stored)
    gt_dir = tmp_path / "gt" / "2011_09_26_drive_0001_sync/proj_depth/groundtruth/image_02"
    gt_dir.mkdir(parents=True)
    Image.fromarray(stored).save(gt_dir / "0000000005.png")
    (tmp_path / "list.txt").write_text(
        "2011_09_26/2011_09_26_drive_0001_sync/image_02/data/0000000005.png "
        "2011_09_26_drive_0001_sync/proj_depth/groundtruth/image_02/0000000005.png 721.5377\n"
        "2011_09_26/2011_09_26_drive_0001_sync/image_02/data/0000000006.png None 721.5377\n")
    reader = KittiEigenTrain(tmp_path / "raw", tmp_path / "list.txt", depth_root=tmp_path / "gt")
    assert len(reader) == 1 and reader.num_without_depth == 1
    item = reader[0]
    assert item["focal"] == pytest.approx(721.5377) and item["depth"].shape == (1, 352, 1216)
    torch.testing.assert_close(item["depth"][0, 200, 600:603], torch.tensor([1.0, 80.0, 20479 / 256]))
    assert item["valid"][0, 200, 600:603].tolist() == [True, False, True]  # 1e-3 < d < 80
    assert int(item["valid"].sum()) == 2  # zeros (no LiDAR point) are invalid
    garg = KittiEigenTrain(tmp_path / "raw", tmp_path / "list.txt", depth_root=tmp_path / "gt", crop="garg")[0]
    window = np.zeros((352, 1216), bool)
    window[143:349, 43:1172] = True  # Garg fractions on the 352×1216 KB crop
    assert torch.equal(garg["valid"][0], item["valid"][0] & torch.from_numpy(window))
    with pytest.raises(ValueError, match="unknown crop 'nyu_eigen'"):
        KittiEigenTrain(tmp_path / "raw", tmp_path / "list.txt", crop="nyu_eigen")


def test_nyu_sync_list_leading_slash_mm_and_eigen_crop(tmp_path):
    stored = _probe(480, 640, [0, 1, 1000, 9999, 10000], at=(100, 100))
    _pair(tmp_path, "kitchen_0028b/rgb_00045.jpg", "kitchen_0028b/sync_depth_00045.png", stored)
    (tmp_path / "list.txt").write_text("/kitchen_0028b/rgb_00045.jpg /kitchen_0028b/sync_depth_00045.png 518.8579")
    item = NyuSyncTrain(tmp_path, tmp_path / "list.txt")[0]
    torch.testing.assert_close(item["depth"][0, 100, 100:105], torch.tensor([0.0, 0.001, 1.0, 9.999, 10.0]))
    assert item["valid"][0, 100, 100:105].tolist() == [False, False, True, True, False]  # 1e-3 < d < 10, strict
    stored[0, 0] = stored[45, 41] = 2000
    Image.fromarray(stored).save(tmp_path / "kitchen_0028b/sync_depth_00045.png")
    cropped = NyuSyncTrain(tmp_path, tmp_path / "list.txt", crop="nyu_eigen")[0]["valid"][0]
    assert not cropped[0, 0] and cropped[45, 41] and cropped[100, 102]


def test_tar_reads_like_the_directory(tmp_path):
    info = write_toy_hypersim(tmp_path, num=3, resolution=(24, 32), tar=True)
    from_dir, from_tar = open_toy(info), open_toy(info, root=info["tar_reader_kwargs"]["root"])
    with tarfile.open(info["tar_reader_kwargs"]["root"]) as t:
        assert all(name.startswith("./ai_") for name in t.getnames())
    for i in range(3):
        a, b = from_dir[i], from_tar[i]
        assert all(torch.equal(a[k], b[k]) for k in ("rgb", "depth", "valid"))
    copy = pickle.loads(pickle.dumps(from_tar))  # as DataLoader workers get it: the open tar stays behind
    assert copy.images._tar is None and torch.equal(copy[1]["depth"], from_dir[1]["depth"])


def test_corrupt_and_wrong_depth_files_raise_sample_error_naming_the_file(tmp_path):
    info = write_toy_hypersim(tmp_path, num=3, resolution=(24, 32))
    reader, root = open_toy(info), tmp_path / "train"
    first_depth = reader.rows[0][1]
    (root / first_depth).write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(SampleError, match="depth_plane_cam_00_fr0000.png"):
        reader[0]
    Image.fromarray(np.zeros((24, 32), np.uint8)).save(root / reader.rows[1][1])  # 8-bit: would decode wrongly
    with pytest.raises(SampleError, match="16-bit single-channel"):
        reader[1]
    (root / reader.rows[2][0]).unlink()
    with pytest.raises(SampleError, match="rgb_cam_00_fr0002.png"):
        reader[2]
    with pytest.raises(FileNotFoundError, match="nowhere"):
        HypersimDepth(tmp_path / "nowhere", info["reader_kwargs"]["filenames"])
    (tmp_path / "bad.txt").write_text("only_one_column.png\n")
    with pytest.raises(ValueError, match="bad.txt:1"):
        HypersimDepth(root, tmp_path / "bad.txt")


def _write_mat(path, rgb, depth, raw):
    """(N, H, W, 3) / (N, H, W) arrays in MATLAB's order, i.e. reversed axes as h5py sees them."""
    with h5py.File(path, "w", userblock_size=512) as f:
        f["images"] = rgb.transpose(0, 3, 2, 1)
        f["depths"] = depth.transpose(0, 2, 1)
        f["rawDepths"] = raw.transpose(0, 2, 1)


def test_nyu_mat_axis_order_and_one_based_splits(tmp_path):
    n, h, w = 3, 4, 6  # W != H, so a wrong transpose can't pass
    hh, ww, cc = np.meshgrid(np.arange(h), np.arange(w), np.arange(3), indexing="ij")
    rgb = np.stack([(k * 64 + hh * 12 + ww * 2 + cc * 0) + cc for k in range(n)]).astype(np.uint8)
    depth = np.stack([np.arange(h * w, dtype=np.float32).reshape(h, w) * 0.1 + k + 1 for k in range(n)])
    raw = depth.copy()
    raw[:, 0, 0] = 0.0
    raw[:, 1, 1] = 12.0  # beyond 10 m
    _write_mat(tmp_path / "nyu.mat", rgb, depth, raw)
    scipy.io.savemat(tmp_path / "splits.mat", {"trainNdxs": np.array([[2], [3]], np.uint16),
                                                "testNdxs": np.array([[1]], np.uint16)})
    splits = read_nyu_splits(tmp_path / "splits.mat")
    assert splits["train"].tolist() == [1, 2] and splits["test"].tolist() == [0]
    train = NyuLabeledMat(tmp_path / "nyu.mat", tmp_path / "splits.mat", split="train")
    test = NyuLabeledMat(tmp_path / "nyu.mat", tmp_path / "splits.mat", split="test", depth="filled")
    assert len(train) == 2 and len(test) == 1
    item = train[0]  # MATLAB index 2 → the second image
    assert item["name"] == "nyu_labeled/2" and item["index"] == 1
    assert torch.equal(item["rgb"], torch.from_numpy(rgb[1].transpose(2, 0, 1).copy()))
    assert torch.equal(item["depth"][0], torch.from_numpy(raw[1]))
    assert not item["valid"][0, 0, 0] and not item["valid"][0, 1, 1] and bool(item["valid"][0, 0, 1])
    assert torch.equal(test[0]["depth"][0], torch.from_numpy(depth[0]))
    assert torch.equal(pickle.loads(pickle.dumps(train))[1]["rgb"], train[1]["rgb"])  # h5py handle not pickled
    one = np.array([[1]], np.uint16)
    scipy.io.savemat(tmp_path / "zero.mat", {"trainNdxs": np.array([[0]], np.uint16), "testNdxs": one})
    with pytest.raises(ValueError, match="1-based"):
        read_nyu_splits(tmp_path / "zero.mat")
    scipy.io.savemat(tmp_path / "far.mat", {"trainNdxs": np.array([[4]], np.uint16), "testNdxs": one})
    with pytest.raises(ValueError, match="index 4"):
        NyuLabeledMat(tmp_path / "nyu.mat", tmp_path / "far.mat")
    with pytest.raises(ValueError, match="480×640"):
        NyuLabeledMat(tmp_path / "nyu.mat", split="all", crop="nyu_eigen")
