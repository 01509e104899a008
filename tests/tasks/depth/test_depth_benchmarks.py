"""The five zero-shot benchmarks read from tiny fixtures in their real formats (directory and ``./`` tar alike),
and ``evaluate_benchmark`` end to end: oracle, mean-depth predictor, per-image averaging, CSV, ``None`` lines."""

from __future__ import annotations

import csv
import io
import json
import math
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tasks.depth.benchmarks import BENCHMARKS, BenchmarkData, DataRoot, evaluate_benchmark
from tasks.depth.metrics import BENCHMARK_METRIC_KEYS, pixel_metrics
from tasks.depth.toy_formats import pack_tar, png_bytes

PERFECT = {"abs_rel": 0.0, "sq_rel": 0.0, "rmse": 0.0, "rmse_log": 0.0, "log10": 0.0, "delta1": 1.0,
           "delta2": 1.0, "delta3": 1.0, "i_rmse": 0.0, "silog_rmse": 0.0}


def _write(root: Path, rel: str, payload: bytes) -> str:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(payload)
    return rel


def _jpg(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _rgb(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _finish(tmp_path: Path, root: Path, lines: list[str], tar: bool) -> tuple[Path, Path]:
    filenames = tmp_path / "list.txt"
    filenames.write_text("\n".join(lines) + "\n")
    return (pack_tar(root, tmp_path / "data.tar") if tar else root), filenames


# ----------------------------------------------------------------------------------------- fixtures


def make_nyu(tmp_path: Path, tar: bool = False):
    """Two 480×640 samples: raw depth 2 m with edge cases; the filled map is 3 m everywhere (must be ignored)."""
    root, lines, expected = tmp_path / "nyu", [], []
    for i in (1, 2):
        raw = np.full((480, 640), 2000 + 500 * i, np.uint16)
        raw[100, 100] = 0  # a hole
        raw[101, 100] = 10000  # 10 m: not < 10
        raw[102, 100] = 1  # 1 mm = 1e-3: not > 1e-3
        raw[103, 100] = 2  # 2 mm: valid
        valid = np.zeros((480, 640), bool)
        valid[45:471, 41:601] = True
        valid[100:103, 100] = False
        names = [_write(root, f"test/kitchen_000{i}/{k}_{i:04d}.png", png_bytes(a)) for k, a in
                 (("rgb", _rgb(480, 640, i)), ("depth", raw), ("filled", np.full((480, 640), 3000, np.uint16)))]
        lines.append(" ".join(names))
        expected.append((raw / 1000.0, valid))
    return (*_finish(tmp_path, root, lines, tar), expected)


def make_kitti(tmp_path: Path, tar: bool = False):
    """Two 375×1242 frames with GT (RGB encodes row, column, frame) and one ``None`` line between them."""
    root, lines, expected = tmp_path / "kitti", [], []
    rows, cols = np.mgrid[0:375, 0:1242]
    for i in (1, 2):
        rgb = np.stack([rows % 256, cols % 256, cols // 256 + 10 * i], -1).astype(np.uint8)
        gt = np.zeros((375, 1242), np.uint16)
        gt[150:360:2, 50:1200:3] = 256 * (10 + i)  # sparse 11 m / 12 m
        gt[200, 500] = 80 * 256  # 80 m: not < 80
        gt[202, 500] = 79 * 256 + 255  # just below 80: valid
        gt[150, 40] = 256 * 5  # in the KB crop (cols 13:1229) but left of Eigen's columns (43 of the crop)
        rgb_rel = _write(root, f"2011_09_26/2011_09_26_drive_000{i}_sync/image_02/data/{i:010d}.png", png_bytes(rgb))
        depth_rel = _write(root, f"2011_09_26_drive_000{i}_sync/proj_depth/groundtruth/image_02/{i:010d}.png",
                           png_bytes(gt))
        lines.append(f"{rgb_rel} {depth_rel} 721.5377")
        if i == 1:
            lines.append(f"2011_09_26/2011_09_26_drive_0001_sync/image_02/data/{9:010d}.png None 721.5377")
        full = gt / 256.0
        crop = full[23:375, 13:1229]  # top = 375 - 352, left = (1242 - 1216) // 2
        valid = (crop > 1e-5) & (crop < 80)
        eigen = np.zeros_like(valid)
        eigen[117:321, 43:1172] = True  # int(0.3324324·352) ... int(0.96405229·1216)
        expected.append((crop, valid & eigen))
    return (*_finish(tmp_path, root, lines, tar), expected)


def make_eth3d(tmp_path: Path, tar: bool = False):
    """One 6×8 sample: raw float32 depth with +inf (no measurement) and a value below 1e-5."""
    root = tmp_path / "eth3d"
    depth = np.linspace(0.5, 30.0, 48, dtype=np.float32).reshape(6, 8)
    depth[0, 0], depth[1, 1] = np.inf, 1e-6
    rgb_rel = _write(root, "rgb/office/images/dslr_images/DSC_0219.JPG", _jpg(_rgb(6, 8, 0)))
    depth_rel = _write(root, "depth/office_dslr_depth/office/ground_truth_depth/dslr_images/DSC_0219.JPG",
                       depth.astype("<f4").tobytes())
    expected_depth = np.where(np.isinf(depth), 0, depth)
    valid = expected_depth > 1e-5
    return (*_finish(tmp_path, root, [f"{rgb_rel} {depth_rel}"], tar), [(expected_depth, valid)])


def make_scannet(tmp_path: Path, tar: bool = False, sizes=((4, 5),)):
    root, lines, expected = tmp_path / "scannet", [], []
    for i, (h, w) in enumerate(sizes):
        depth = np.full((h, w), 1500 + 100 * i, np.uint16)
        depth[0, 0], depth[0, 1] = 0, 10000  # no measurement; 10 m is not < 10
        rgb_rel = _write(root, f"scene0406_02/color/{i:06d}.jpg", _jpg(_rgb(h, w, i)))
        depth_rel = _write(root, f"scene0406_02/depth/{i:06d}.png", png_bytes(depth))
        lines.append(f"{rgb_rel} {depth_rel}")
        valid = np.ones((h, w), bool)
        valid[0, :2] = False
        expected.append((depth / 1000.0, valid))
    return (*_finish(tmp_path, root, lines, tar), expected)


def make_diode(tmp_path: Path, tar: bool = False):
    """One 4×5 sample; validity comes from the mask file (even for 0.5 m, below DIODE's 0.6)."""
    root = tmp_path / "diode"
    depth = np.full((4, 5, 1), 7.5, np.float32)
    depth[0, 0, 0] = 0.5
    mask = np.ones((4, 5), np.float32)
    mask[3, 4] = 0.0
    stem = "indoors/scene_00021/scan_00189/00021_00189_indoors_200_010"
    names = [_write(root, stem + ".png", png_bytes(_rgb(4, 5, 0))), _write(root, stem + "_depth.npy", _npy(depth)),
             _write(root, stem + "_depth_mask.npy", _npy(mask))]
    return (*_finish(tmp_path, root, [" ".join(names)], tar), [(depth[..., 0], mask.astype(bool))])


FIXTURES = {"nyu_v2": make_nyu, "kitti": make_kitti, "eth3d": make_eth3d, "scannet": make_scannet,
            "diode": make_diode}


# ----------------------------------------------------------------------------------------- reading


@pytest.mark.parametrize("tar", [False, True], ids=["dir", "tar"])
@pytest.mark.parametrize("name", list(FIXTURES))
def test_each_benchmark_decodes_depth_and_builds_its_evaluation_mask(tmp_path, name, tar):
    data, filenames, expected = FIXTURES[name](tmp_path, tar)
    with BenchmarkData(name, data, filenames) as bench:
        assert bench.root.is_tar == tar and len(bench) == len(expected)
        for sample, (depth, valid) in zip(bench, expected):
            assert sample.rgb.dtype == np.uint8 and sample.rgb.shape == (*depth.shape, 3)
            assert sample.depth.dtype == np.float32
            np.testing.assert_allclose(sample.depth, depth, rtol=1e-6)
            np.testing.assert_array_equal(sample.valid, valid)


def test_tar_members_carry_the_dot_slash_prefix_and_plain_members_are_found_too(tmp_path):
    data, _, _ = make_scannet(tmp_path, tar=True)
    with tarfile.open(data) as archive:
        assert all(n.startswith("./") for n in archive.getnames())
    plain = tmp_path / "plain.tar"
    with tarfile.open(plain, "w") as archive:
        info = tarfile.TarInfo("a/b.txt")
        info.size = 2
        archive.addfile(info, io.BytesIO(b"hi"))
    with DataRoot(plain) as root:
        assert root.read("a/b.txt") == b"hi"
        with pytest.raises(FileNotFoundError, match="no member ./a/c.txt"):
            root.read("a/c.txt")


def test_nyu_is_scored_against_the_raw_depth_file_not_the_filled_one(tmp_path):
    data, filenames, expected = make_nyu(tmp_path)
    sample = BenchmarkData("nyu_v2", data, filenames)[0]
    assert sample.depth[200, 200] == pytest.approx(2.5)  # depth_0001 (2.5 m), not filled_0001 (3 m)
    assert sample.depth[103, 100] == pytest.approx(0.002) and sample.valid[103, 100]


def test_kitti_benchmark_crop_applies_to_rgb_and_gt_and_none_lines_are_skipped_and_counted(tmp_path):
    data, filenames, _ = make_kitti(tmp_path)
    bench = BenchmarkData("kitti", data, filenames)
    assert (len(bench), bench.skipped) == (2, 1)
    sample = bench[0]
    assert sample.rgb.shape == (352, 1216, 3)
    assert tuple(sample.rgb[0, 0]) == (23, 13, 10)  # the crop's corner is row 23, column 13 of the frame
    assert tuple(sample.rgb[-1, -1]) == (374 % 256, 1228 % 256, 1228 // 256 + 10)
    assert not sample.valid[127, 27]  # frame (150, 40): inside the KB crop, left of the Eigen columns
    assert sample.valid[179, 487] and not sample.valid[177, 487]  # 79.996 m valid; 80 m not


def test_reader_errors_name_the_problem(tmp_path):
    data, filenames, _ = make_scannet(tmp_path)
    with pytest.raises(ValueError, match="unknown depth benchmark 'nyu'.*nyu_v2"):
        BenchmarkData("nyu", data, filenames)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        BenchmarkData("scannet", tmp_path / "missing", filenames)
    short = tmp_path / "short.txt"
    short.write_text("only_rgb.jpg\n")
    with pytest.raises(ValueError, match="short.txt:1: scannet lines need 2 fields"):
        BenchmarkData("scannet", data, short)
    wrong_size = tmp_path / "wrong"
    rgb = _write(wrong_size, "a.png", png_bytes(_rgb(4, 5, 0)))
    _write(wrong_size, "a.raw", np.ones(7, "<f4").tobytes())
    (tmp_path / "eth.txt").write_text(f"{rgb} a.raw\n")
    with pytest.raises(ValueError, match="a.raw has 28 bytes; its RGB is 4×5"):
        BenchmarkData("eth3d", wrong_size, tmp_path / "eth.txt")[0]
    (tmp_path / "nyu.txt").write_text("a.png a.png a.png\n")
    _write(wrong_size, "a.png", png_bytes(np.ones((4, 5), np.uint16)))
    with pytest.raises(ValueError, match="Eigen crop .* 480×640"):
        BenchmarkData("nyu_v2", wrong_size, tmp_path / "nyu.txt")[0]


def test_specs_hold_marigolds_ranges_and_counts():
    ranges = {k: (s.min_depth, s.max_depth, s.marigold_count) for k, s in BENCHMARKS.items()}
    assert ranges == {"nyu_v2": (1e-3, 10.0, 654), "kitti": (1e-5, 80.0, 652), "eth3d": (1e-5, math.inf, 454),
                      "scannet": (1e-3, 10.0, 800), "diode": (0.6, 350.0, 771),
                      "kitti_garg": (1e-3, 80.0, 652)}  # the in-domain protocol of the same test set
    assert BENCHMARKS["eth3d"].alignment_max_res == 1024
    assert [k for k, s in BENCHMARKS.items() if s.alignment_max_res] == ["eth3d"]


# ----------------------------------------------------------------------------------------- evaluation


def _oracle(data, filenames, name):
    with BenchmarkData(name, data, filenames) as bench:
        table = {s.rgb.tobytes(): s.depth.copy() for s in bench}
    return lambda rgb: table[rgb.tobytes()]


@pytest.mark.parametrize("name", ["nyu_v2", "kitti", "eth3d", "scannet"])
def test_an_oracle_scores_perfectly_with_and_without_alignment(tmp_path, name):
    data, filenames, expected = FIXTURES[name](tmp_path, tar=True)
    oracle = _oracle(data, filenames, name)
    for alignment in ("least_square", None):
        result = evaluate_benchmark(name, data, filenames, oracle, alignment=alignment)
        for key, value in PERFECT.items():
            assert result[key] == pytest.approx(value, abs=1e-9), (alignment, key)
        assert result["count"] == len(expected)
    affine = evaluate_benchmark(name, data, filenames, lambda rgb: 0.25 * oracle(rgb).astype(float) - 3.0)
    assert affine["abs_rel"] == pytest.approx(0.0, abs=1e-9)  # any affine copy of the truth is perfect


def test_diode_mask_comes_from_the_file_and_predictions_are_still_clipped_to_its_range(tmp_path):
    data, filenames, expected = make_diode(tmp_path, tar=True)
    result = evaluate_benchmark("diode", data, filenames, _oracle(data, filenames, "diode"))
    assert result["abs_rel"] == pytest.approx((0.6 - 0.5) / 0.5 / 19)  # 0.5 m ground truth, prediction ≥ 0.6
    assert result["rmse"] == pytest.approx(math.sqrt(0.1**2 / 19))


def test_a_mean_depth_predictor_gets_the_metrics_of_the_mean(tmp_path):
    data, filenames, expected = make_nyu(tmp_path)
    result = evaluate_benchmark("nyu_v2", data, filenames, lambda rgb: np.zeros(rgb.shape[:2]))
    per_image = []
    for depth, valid in expected:
        g = depth[valid].astype(np.float32).astype(np.float64)  # decoded as float32, like Marigold
        per_image.append(pixel_metrics(np.full_like(g, g.mean()), g))  # a constant aligns to the mean
    for key in BENCHMARK_METRIC_KEYS:
        assert result[key] == pytest.approx(np.mean([m[key] for m in per_image]), rel=1e-9), key
    assert result["abs_rel"] > 0 and result["delta1"] < 1 and result["count"] == 2 and result["skipped"] == 0
    first = evaluate_benchmark("nyu_v2", data, filenames, lambda rgb: np.zeros(rgb.shape[:2]), num=1)
    assert first["count"] == 1 and first["abs_rel"] == pytest.approx(per_image[0]["abs_rel"], rel=1e-9)


def test_results_average_per_image_not_over_pixels(tmp_path):
    data, filenames, expected = make_scannet(tmp_path, sizes=((4, 5), (8, 10)))
    truths = [d for d, _ in expected]

    def predict(rgb):  # doubles the small image (abs_rel 1 on 18 pixels), exact on the big one (78 pixels)
        return truths[0] * 2.0 if rgb.shape[0] == 4 else truths[1]

    result = evaluate_benchmark("scannet", data, filenames, predict, alignment=None)
    assert result["abs_rel"] == pytest.approx(0.5)  # (1 + 0) / 2; pooled over pixels it would be 18 / 96
    assert result["delta1"] == pytest.approx(0.5)


def test_per_image_csv_and_summary(tmp_path):
    data, filenames, expected = make_kitti(tmp_path)
    out = tmp_path / "eval"
    result = evaluate_benchmark("kitti", data, filenames, lambda rgb: rgb[..., 0].astype(float) + 1.0, out_dir=out)
    with open(out / "per_sample_metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["filename", *BENCHMARK_METRIC_KEYS, "scale", "shift"]
    assert [r["filename"].split("/")[-1] for r in rows] == ["0000000001.png", "0000000002.png"]
    for key in BENCHMARK_METRIC_KEYS:
        assert np.mean([float(r[key]) for r in rows]) == pytest.approx(result[key])
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["count"] == 2 and summary["skipped"] == 1
    assert summary["settings"]["alignment"] == "least_square" and summary["settings"]["max_depth"] == 80.0


def test_predictions_of_another_size_are_resized_to_the_ground_truth(tmp_path):
    data, filenames, expected = make_scannet(tmp_path)
    result = evaluate_benchmark("scannet", data, filenames, lambda rgb: np.full((2, 3), 1.5), alignment=None)
    g = expected[0][0][expected[0][1]]
    assert result["abs_rel"] == pytest.approx(np.mean(np.abs(1.5 - g) / g))


def test_evaluation_errors_name_the_sample_or_setting(tmp_path):
    data, filenames, _ = make_scannet(tmp_path)
    with pytest.raises(ValueError, match="unknown alignment 'median'"):
        evaluate_benchmark("scannet", data, filenames, lambda rgb: rgb[..., 0], alignment="median")
    with pytest.raises(ValueError, match="non-finite values for scene0406_02/color/000000.jpg"):
        evaluate_benchmark("scannet", data, filenames, lambda rgb: np.full(rgb.shape[:2], np.nan))
    with pytest.raises(ValueError, match=r"\(H, W\) depth map; .* shape \(4, 5, 3\)"):
        evaluate_benchmark("scannet", data, filenames, lambda rgb: rgb.astype(float))
    empty = tmp_path / "empty"
    rgb = _write(empty, "c.jpg", _jpg(_rgb(4, 5, 0)))
    _write(empty, "d.png", png_bytes(np.zeros((4, 5), np.uint16)))
    (tmp_path / "e.txt").write_text(f"{rgb} d.png\n")
    with pytest.raises(ValueError, match="c.jpg: no valid ground-truth pixel"):
        evaluate_benchmark("scannet", empty, tmp_path / "e.txt", lambda x: np.ones(x.shape[:2]))


def test_in_domain_kitti_uses_gargs_crop_and_1e_3_to_80_metres():
    from tasks.depth.benchmarks.datasets import kitti_garg_crop

    spec = BENCHMARKS["kitti_garg"]
    assert (spec.min_depth, spec.max_depth, spec.kb_crop, spec.skip_missing_gt) == (1e-3, 80.0, True, True)
    assert kitti_garg_crop((352, 1216)) == (143, 349, 43, 1172)  # the protocol file's numbers on the KB crop
    assert kitti_garg_crop((375, 1242)) == (153, 371, 44, 1197)  # and on a full frame
