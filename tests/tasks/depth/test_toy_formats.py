"""Toy scenes written in Marigold's NYUv2 and KITTI layouts read back by the benchmark readers."""

from __future__ import annotations

import tarfile

import numpy as np
import pytest
from PIL import Image

from tasks.depth.benchmarks import BenchmarkData, evaluate_benchmark
from tasks.depth.toy_formats import (KITTI_FOCAL, TOY_DEPTH_RANGE, TOY_FORMATS, write_toy, write_toy_kitti,
                                     write_toy_nyu)


@pytest.mark.parametrize("tar", [False, True], ids=["dir", "tar"])
def test_toy_nyu_reads_back_as_nyu_v2(tmp_path, tar):
    toy = write_toy_nyu(tmp_path, num=3, resolution=16, seed=1, tar=tar)
    assert (toy.name, toy.count, toy.skipped) == ("nyu_v2", 3, 0)
    assert toy.data.name == ("nyu_labeled_extracted.tar" if tar else "nyu_labeled_extracted")
    lines = toy.filenames.read_text().splitlines()
    assert len(lines) == 3 and all(len(line.split()) == 3 for line in lines)
    rgb, depth, filled = lines[0].split()
    assert rgb.startswith("test/toy_") and rgb.endswith("/rgb_0001.png")
    assert depth.endswith("/depth_0001.png") and filled.endswith("/filled_0001.png")
    with BenchmarkData("nyu_v2", toy.data, toy.filenames) as bench:
        assert len(bench) == 3
        for sample in bench:
            assert sample.rgb.shape == (480, 640, 3) and sample.depth.shape == (480, 640)
            inside = sample.depth[45:471, 41:601]
            assert not sample.valid[:45].any() and not sample.valid[:, 601:].any()  # Eigen crop
            assert 0.05 < (inside == 0).mean() < 0.2  # raw depth has holes
            d = sample.depth[sample.valid]
            assert 1.0 <= d.min() and d.max() <= 9.0 and d.max() - d.min() > 2.0
    if not tar:
        raw = np.asarray(Image.open(toy.data / depth))
        full = np.asarray(Image.open(toy.data / filled))
        assert raw.dtype == np.uint16 and (full > 0).all() and (raw[raw > 0] == full[raw > 0]).all()


@pytest.mark.parametrize("tar", [False, True], ids=["dir", "tar"])
def test_toy_kitti_reads_back_with_sparse_ground_truth_and_none_lines(tmp_path, tar):
    toy = write_toy_kitti(tmp_path, num=5, resolution=16, seed=2, tar=tar)
    assert (toy.name, toy.count, toy.skipped) == ("kitti", 5, 2)  # a None line after frames 4 and 5
    lines = [line.split() for line in toy.filenames.read_text().splitlines()]
    assert [f[1] == "None" for f in lines] == [False, False, False, False, True, False, True]
    assert all(float(f[2]) == KITTI_FOCAL for f in lines)
    with BenchmarkData("kitti", toy.data, toy.filenames) as bench:
        assert (len(bench), bench.skipped) == (5, 2)
        for sample in bench:
            assert sample.rgb.shape == (352, 1216, 3) and sample.depth.shape == (352, 1216)
            assert (sample.depth > 0).mean() < 0.3  # sparse like LiDAR
            d = sample.depth[sample.valid]
            assert d.size > 1000 and 5.0 <= d.min() and d.max() <= 75.0
    if tar:
        with tarfile.open(toy.data) as archive:
            names = archive.getnames()
        assert all(n.startswith("./") for n in names) and len(names) == 7 + 5  # 7 RGB, 5 depth
    else:
        frame = np.asarray(Image.open(toy.data / lines[0][0]))
        assert frame.shape == (376, 1241, 3)


def test_toy_writers_are_deterministic_and_registered(tmp_path):
    a = write_toy("nyu", tmp_path / "a", num=2, resolution=8, seed=5)
    b = write_toy("nyu", tmp_path / "b", num=2, resolution=8, seed=5)
    for line in a.filenames.read_text().split():
        assert (a.data / line).read_bytes() == (b.data / line).read_bytes()
    assert TOY_FORMATS == {"nyu": write_toy_nyu, "kitti": write_toy_kitti}
    with pytest.raises(ValueError, match="unknown toy data format 'eth3d'; valid: nyu, kitti"):
        write_toy("eth3d", tmp_path / "c")
    with pytest.raises(ValueError, match="resolution must be >= 8"):
        write_toy_kitti(tmp_path / "d", resolution=4)


def test_toy_benchmarks_run_the_protocol_end_to_end(tmp_path):
    toy = write_toy_kitti(tmp_path, num=3, resolution=16, seed=0, tar=True)
    with BenchmarkData("kitti", toy.data, toy.filenames) as bench:
        truths = {s.rgb.tobytes(): s.depth for s in bench}
    lo, hi = TOY_DEPTH_RANGE

    def toy_units(rgb):  # the renderer's own depth scale: an affine map of the written depth
        return lo + (truths[rgb.tobytes()].astype(np.float64) - 5.0) * (hi - lo) / 70.0

    result = evaluate_benchmark("kitti", toy.data, toy.filenames, toy_units, out_dir=tmp_path / "eval")
    assert result["abs_rel"] == pytest.approx(0.0, abs=1e-9) and result["delta1"] == 1.0
    assert (result["count"], result["skipped"]) == (3, 1)
    assert len((tmp_path / "eval" / "per_sample_metrics.csv").read_text().splitlines()) == 4
    flat = evaluate_benchmark("kitti", toy.data, toy.filenames, lambda rgb: np.ones(rgb.shape[:2]))
    assert flat["abs_rel"] > 0.05 and flat["delta1"] < 1.0
