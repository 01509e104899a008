"""Toy training sets in the real formats: layouts, list files, the MATLAB 7.3 / 5 files, the registry."""

from __future__ import annotations

import inspect

import h5py
import numpy as np
import pytest
import scipy.io
from PIL import Image

from tasks.depth.toy_training import (TOY_TRAINING_FORMATS, open_toy, write_toy_hypersim, write_toy_kitti_train,
                                      write_toy_nyu_mat, write_toy_nyu_sync, write_toy_training_data)


def test_registry_writers_share_one_signature():
    assert set(TOY_TRAINING_FORMATS) == {"hypersim", "vkitti", "kitti_train", "nyu_mat", "nyu_sync"}
    for writer in TOY_TRAINING_FORMATS.values():
        params = inspect.signature(writer).parameters
        assert list(params)[0] == "out_dir"
        assert {"num", "resolution", "seed"} <= {n for n, p in params.items() if p.kind is p.KEYWORD_ONLY}
    with pytest.raises(ValueError, match="unknown toy training format 'hyper'.*hypersim"):
        write_toy_training_data("hyper", "unused")


def test_toy_hypersim_is_marigolds_preprocessed_layout(tmp_path):
    info = write_toy_hypersim(tmp_path, num=5, resolution=(24, 32), seed=1)
    listing = (tmp_path / "train" / "filename_list_train.txt").read_text()
    assert not listing.endswith("\n") and len(listing.split("\n")) == 5
    first = listing.split("\n")[0].split()
    assert first == ["ai_001_001/rgb_cam_00_fr0000.png", "ai_001_001/depth_plane_cam_00_fr0000.png"]
    depth = Image.open(tmp_path / "train" / first[1])
    assert depth.mode == "I;16" and depth.size == (32, 24)
    stored = np.asarray(depth)
    assert (stored == 0).any() and (stored == 65535).any()  # holes and an over-the-cap patch
    assert 1000 <= stored[(stored > 0) & (stored < 65535)].min() and stored[stored < 65535].max() < 10_000  # mm
    assert Image.open(tmp_path / "train" / first[0]).mode == "RGB"
    again = write_toy_hypersim(tmp_path / "again", num=5, resolution=(24, 32), seed=1)
    assert np.array_equal(open_toy(again)[3]["depth"].numpy(), open_toy(info)[3]["depth"].numpy())


def test_toy_nyu_mat_is_matlab_73_with_hdf5_axis_order_and_a_matlab5_split(tmp_path):
    info = write_toy_nyu_mat(tmp_path, num=6, resolution=(48, 64))
    mat, splits = tmp_path / "nyu_depth_v2_labeled.mat", tmp_path / "splits.mat"
    assert scipy.io.matlab.matfile_version(str(mat))[0] == 2  # v7.3 (HDF5) header
    assert scipy.io.matlab.matfile_version(str(splits))[0] == 1  # MATLAB 5, as the official splits.mat
    with h5py.File(mat, "r") as f:
        assert f["images"].shape == (6, 3, 64, 48) and f["images"].dtype == np.uint8
        assert f["depths"].shape == f["rawDepths"].shape == (6, 64, 48) and f["depths"].dtype == np.float32
        scenes = ["".join(chr(c) for c in np.asarray(f[ref]).ravel()) for ref in f["scenes"][0]]  # as BTS reads
        assert scenes[0] == "kitchen_0000" and len(scenes) == 6
        assert (np.asarray(f["rawDepths"]) == 0).any() and (np.asarray(f["depths"]) > 0).all()
    raw = scipy.io.loadmat(splits)
    assert raw["trainNdxs"].dtype == np.uint16 and raw["trainNdxs"].shape == (info["num_train"], 1)
    ids = np.concatenate([raw["trainNdxs"].ravel(), raw["testNdxs"].ravel()])
    assert sorted(ids.tolist()) == list(range(1, 7))  # 1-based, disjoint, complete
    train = open_toy(info)
    assert len(train) == info["num_train"] and train[0]["rgb"].shape == (3, 48, 64)


def test_toy_kitti_and_nyu_sync_lists_are_bts_formats(tmp_path):
    info = write_toy_kitti_train(tmp_path / "k", num=2)
    lines = (tmp_path / "k" / "eigen_train_files_with_gt.txt").read_text().split("\n")
    image, depth, focal = lines[0].split()
    assert image == "2011_09_26/2011_09_26_drive_0001_sync/image_02/data/0000000000.png"
    assert depth == "2011_09_26_drive_0001_sync/proj_depth/groundtruth/image_02/0000000000.png" and focal == "721.5377"
    assert lines[-1].split()[1] == "None"
    reader = open_toy(info)
    assert len(reader) == 2 and reader.num_without_depth == 1
    valid = reader[0]["valid"][0]
    assert 0.05 < float(valid.float().mean()) < 0.5  # sparse LiDAR-like ground truth
    sync = write_toy_nyu_sync(tmp_path / "n", num=3)
    line = (tmp_path / "n" / "nyudepthv2_train_files_with_gt.txt").read_text().split("\n")[0].split()
    assert line[0].startswith("/living_room_0000/rgb_") and line[1].startswith("/living_room_0000/sync_depth_")
    assert line[2] == "518.8579" and open_toy(sync)[2]["depth"].shape == (1, 480, 640)
