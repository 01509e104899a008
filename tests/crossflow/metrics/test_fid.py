"""FID: Fréchet distance against independent computations, streaming statistics, the Inception layout and loading."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from crossflow.metrics.fid import (ActivationStatistics, batch_statistics, folder_statistics, frechet_distance,
                                   load_statistics, save_statistics, uint8_to_input)
from crossflow.metrics.fid_inception import FIDInceptionV3, load_fid_inception, pool3x3
from helpers.paths import DATA_DIR, REPO_ROOT

KEYS_FILE = DATA_DIR / "fid_inception_v3_keys.txt"


def _random_stats(rng: np.random.Generator, dim: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    x = rng.normal(size=(n, dim)) @ rng.normal(size=(dim, dim)) + rng.normal(size=dim)
    return x.mean(0), np.cov(x, rowvar=False)


def _reference_fid(mu1, s1, mu2, s2) -> float:
    """Independent of sqrtm: tr((S1 S2)^½) = Σ sqrt(eig(S1^½ S2 S1^½)), a symmetric PSD matrix."""
    w, v = np.linalg.eigh(s1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    inner = np.clip(np.linalg.eigvalsh(root1 @ s2 @ root1), 0, None)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.sum(np.sqrt(inner)))


def test_identical_statistics_give_zero():
    mu, sigma = _random_stats(np.random.default_rng(0), 16, 200)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-8)


def test_matches_an_eigenvalue_computation_on_random_statistics():
    rng = np.random.default_rng(1)
    a, b = _random_stats(rng, 32, 300), _random_stats(rng, 32, 300)
    assert frechet_distance(*a, *b) == pytest.approx(_reference_fid(*a, *b), rel=1e-8)


def test_matches_the_closed_form_for_diagonal_covariances():
    rng = np.random.default_rng(2)
    mu1, mu2 = rng.normal(size=8), rng.normal(size=8)
    v1, v2 = rng.uniform(0.1, 3, 8), rng.uniform(0.1, 3, 8)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(v1 + v2 - 2 * np.sqrt(v1 * v2))
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected, rel=1e-10)


def test_singular_covariances_give_a_finite_value_close_to_the_reference():
    rng = np.random.default_rng(3)
    a, b = _random_stats(rng, 40, 12), _random_stats(rng, 40, 12)  # rank 11 in 40 dimensions
    value = frechet_distance(*a, *b)
    assert np.isfinite(value) and value == pytest.approx(_reference_fid(*a, *b), rel=1e-3)


def test_mismatched_shapes_are_named():
    with pytest.raises(ValueError, match=r"\(3,\) vs \(4,\)"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def test_streaming_statistics_equal_numpy_mean_and_cov():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(37, 6)) * 3 + 10
    stats = ActivationStatistics(6)
    for chunk in (x[:1], x[1:11], torch.from_numpy(x[11:30]), x[30:]):  # uneven batches, numpy and torch
        stats.update(chunk)
    assert stats.count == 37
    np.testing.assert_allclose(stats.mu, x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(stats.sigma, np.cov(x, rowvar=False), rtol=1e-10)


def test_statistics_npz_round_trip_and_missing_key(tmp_path):
    mu, sigma = np.arange(3.0), np.eye(3)
    save_statistics(tmp_path / "ref.npz", mu, sigma)
    got = load_statistics(tmp_path / "ref.npz")
    np.testing.assert_array_equal(got[0], mu) and np.testing.assert_array_equal(got[1], sigma)
    np.savez(tmp_path / "bad.npz", mu=mu, cov=sigma)
    with pytest.raises(ValueError, match=r"\['sigma'\]"):
        load_statistics(tmp_path / "bad.npz")


def test_state_dict_keys_and_shapes_match_the_torchvision_inception3_layout():
    expected = []
    for line in KEYS_FILE.read_text().splitlines():
        key, shape = line.split("\t")
        expected.append((key, tuple(ast.literal_eval(shape))))
    ours = [(k, tuple(v.shape)) for k, v in FIDInceptionV3().state_dict().items()
            if not k.endswith("num_batches_tracked")]
    assert ours == expected  # same keys, same shapes, same order (472 entries, fc 1008 classes)


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """A random FID Inception saved like the real file: a plain state dict without num_batches_tracked."""
    torch.manual_seed(0)
    model = FIDInceptionV3()
    state = {}
    for k, v in model.state_dict().items():
        if k.endswith("num_batches_tracked"):
            continue
        if k.endswith("running_mean"):
            v = 0.1 * torch.randn_like(v)
        elif k.endswith("running_var"):
            v = 0.5 + torch.rand_like(v)
        state[k] = v
    path = tmp_path_factory.mktemp("fid") / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(state, path)
    return path


def test_random_weights_file_loads_strictly_and_gives_pool3_features(weights):
    model = load_fid_inception(weights)
    saved = torch.load(weights, weights_only=True)
    torch.testing.assert_close(model.state_dict()["Mixed_6e.branch_pool.bn.running_var"],
                               saved["Mixed_6e.branch_pool.bn.running_var"])
    x = torch.rand(2, 3, 299, 299)
    feats = model(x)
    assert feats.shape == (2, 2048) and torch.isfinite(feats).all() and bool((feats >= 0).all())  # after ReLU
    small = model(torch.rand(1, 3, 64, 64))  # any size is resized to 299 first
    assert small.shape == (1, 2048)
    resized = torch.nn.functional.interpolate(x[:1], size=(299, 299), mode="bilinear", align_corners=False)
    torch.testing.assert_close(model(x[:1]), model(resized))


def test_weights_with_wrong_keys_or_shapes_are_rejected_by_name(weights, tmp_path):
    state = torch.load(weights, weights_only=True)
    bad = dict(state)
    bad["fc.weight"] = torch.zeros(1000, 2048)
    del bad["Mixed_7c.branch_pool.conv.weight"]
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match=r"missing \(1\): \['Mixed_7c.branch_pool.conv.weight'\].*wrong shape \(1\): \['fc.weight'\]"):
        load_fid_inception(tmp_path / "bad.pth")
    with pytest.raises(FileNotFoundError, match="pt_inception"):
        load_fid_inception(tmp_path / "absent.pth")


def test_fid_pooling_variants():
    ones = torch.ones(1, 2, 5, 5)
    torch.testing.assert_close(pool3x3(ones, "avg"), ones)  # padded zeros are not averaged in (TF)
    x = torch.randn(1, 2, 6, 6)
    torch.testing.assert_close(pool3x3(x, "max")[..., 2:4, 2:4],
                               torch.nn.functional.max_pool2d(x, 3, 1)[..., 1:3, 1:3])
    model = FIDInceptionV3()
    assert (model.Mixed_7b.pool, model.Mixed_7c.pool) == ("avg", "max")


def test_official_preprocessing_resizes_only_512_images():
    imgs = uint8_to_input(np.zeros((1, 512, 512, 3), np.uint8)) + uint8_to_input(np.full((1, 40, 48, 3), 255, np.uint8))
    assert imgs[0].shape == (3, 256, 256) and imgs[1].shape == (3, 40, 48) and float(imgs[1].max()) == 1.0
    assert uint8_to_input(np.zeros((1, 512, 512, 3), np.uint8), resize_512=False)[0].shape == (3, 512, 512)


def test_folder_statistics_and_reference_tool(weights, tmp_path, monkeypatch):
    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, size=(3, 40, 40, 3), dtype=np.uint8)
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, img in enumerate(images):
        Image.fromarray(img).save(folder / f"{i}.png")
    (folder / "notes.txt").write_text("not an image")
    model = load_fid_inception(weights)
    from_folder = folder_statistics(folder, model, batch_size=2, progress=False)
    from_batches = batch_statistics([images[:1], images[1:]], model, progress=False)
    assert from_folder.count == 3
    np.testing.assert_allclose(from_folder.mu, from_batches.mu, rtol=1e-5, atol=1e-7)

    monkeypatch.syspath_prepend(str(REPO_ROOT / "tools"))
    from fid_reference_stats import main as tool

    out = tool([str(folder), "--weights", str(weights), "--out", str(tmp_path / "ref.npz"), "--num-workers", "0",
                "--device", "cpu"])
    mu, sigma = load_statistics(tmp_path / "ref.npz")
    assert out["count"] == 3 and mu.shape == (2048,) and sigma.shape == (2048, 2048)
    np.testing.assert_allclose(mu, from_folder.mu, rtol=1e-5, atol=1e-7)


@pytest.mark.slow
def test_reference_tool_scores_a_folder_against_its_own_statistics(weights, tmp_path, monkeypatch):
    """Two 2048-d matrix square roots (singular: 3 images) take ~45 s on one CPU thread."""
    monkeypatch.syspath_prepend(str(REPO_ROOT / "tools"))
    from fid_reference_stats import main as tool

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, img in enumerate(np.random.default_rng(6).integers(0, 256, size=(3, 32, 32, 3), dtype=np.uint8)):
        Image.fromarray(img).save(folder / f"{i}.png")
    common = ["--weights", str(weights), "--num-workers", "0", "--device", "cpu"]
    tool([str(folder), "--out", str(tmp_path / "ref.npz"), *common])
    out = tool([str(folder), "--fid-against", str(tmp_path / "ref.npz"), *common])
    assert out["count"] == 3 and json.loads(json.dumps(out))["fid"] == pytest.approx(0.0, abs=1e-3)
