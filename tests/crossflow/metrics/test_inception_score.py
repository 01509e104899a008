"""Inception Score: closed forms, consecutive splits, std over splits, and the Inception's unbiased logits."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch

import crossflow.metrics
from crossflow.metrics.fid_inception import FIDInceptionV3
from crossflow.metrics.inception_score import inception_score


def _one_hot_logits(classes: list[int], num_classes: int = 1008, value: float = 60.0) -> torch.Tensor:
    logits = torch.zeros(len(classes), num_classes)
    logits[torch.arange(len(classes)), torch.tensor(classes)] = value
    return logits


def _reference_is(logits: np.ndarray, splits: int) -> tuple[float, float]:
    """Direct definition with numpy: consecutive splits of N // splits rows, exp(mean KL(p(y|x) || p(y)))."""
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    size = len(p) // splits
    scores = []
    for i in range(splits):
        part = p[i * size:(i + 1) * size]
        py = part.mean(0, keepdims=True)
        scores.append(np.exp(np.mean(np.sum(part * (np.log(part) - np.log(py)), 1))))
    return float(np.mean(scores)), float(np.std(scores))


def test_uniform_logits_score_one():
    mean, std = inception_score(torch.zeros(40, 1008), splits=10)
    assert mean == pytest.approx(1.0, abs=1e-12) and std == pytest.approx(0.0, abs=1e-12)
    shifted = torch.arange(40.0)[:, None].expand(40, 1008)  # a per-row offset does not change the softmax
    assert inception_score(shifted, splits=4)[0] == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("k", [1, 2, 5])
def test_balanced_one_hot_over_k_classes_scores_k(k):
    logits = _one_hot_logits([i % k for i in range(10 * k)])  # every split holds each class once
    mean, std = inception_score(logits, splits=10)
    assert mean == pytest.approx(k, rel=1e-12) and std == pytest.approx(0.0, abs=1e-9)
    assert inception_score(logits, splits=1) == pytest.approx((k, 0.0), rel=1e-12, abs=1e-9)


def test_splits_are_consecutive_and_not_shuffled():
    """Classes [0, 1, 2, 2]: consecutive splits {0, 1} → 2 and {2, 2} → 1, so mean 1.5 and std 0.5.
    Interleaved splits ({0, 2}, {1, 2}) would give 2 and 2, a shuffle anything in between."""
    logits = _one_hot_logits([0, 1, 2, 2], num_classes=3)
    assert inception_score(logits, splits=2) == pytest.approx((1.5, 0.5), rel=1e-12)
    assert inception_score(logits.flip(0), splits=2) == pytest.approx((1.5, 0.5), rel=1e-12)


def test_soft_probabilities_hand_computed():
    """p1 = (1/2, 1/2), p2 = (1, 0): p(y) = (3/4, 1/4), KL1 = ½ log(4/3), KL2 = log(4/3) → IS = (4/3)^(3/4)."""
    logits = torch.tensor([[0.0, 0.0], [0.0, -math.inf]])
    mean, std = inception_score(logits, splits=1)
    assert mean == pytest.approx((4 / 3) ** 0.75, rel=1e-12) and std == 0.0
    two = torch.cat([logits, torch.zeros(2, 2)])  # second split uniform → 1; std over splits is ddof=0
    expected = np.array([(4 / 3) ** 0.75, 1.0])
    assert inception_score(two, splits=2) == pytest.approx((expected.mean(), expected.std()), rel=1e-12)


def test_matches_the_numpy_definition_on_random_logits():
    logits = np.random.default_rng(0).normal(scale=3.0, size=(30, 1008))
    assert inception_score(logits, splits=3) == pytest.approx(_reference_is(logits, 3), rel=1e-10)
    assert inception_score(torch.from_numpy(logits).float(), splits=3) == pytest.approx(_reference_is(logits, 3),
                                                                                        rel=1e-5)


def test_remainder_is_left_out_with_a_warning(caplog):
    logits = torch.from_numpy(np.random.default_rng(1).normal(size=(7, 10)))
    with caplog.at_level(logging.WARNING, logger="crossflow.metrics.inception_score"):
        assert inception_score(logits, splits=2) == inception_score(logits[:6], splits=2)
    assert "the last 1 are left out" in caplog.text


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="splits=10 needs at least 10 samples, got 4"):
        inception_score(torch.zeros(4, 1008))
    with pytest.raises(ValueError, match=r"\(N, C\) logits"):
        inception_score(torch.zeros(1008))
    with pytest.raises(ValueError, match="NaN"):
        inception_score(torch.full((2, 3), float("nan")), splits=1)
    with pytest.raises(ValueError, match="positive integer"):
        inception_score(torch.zeros(2, 3), splits=0)


def test_exported_from_the_metrics_package():
    assert crossflow.metrics.inception_score is inception_score


def test_one_forward_gives_pool3_features_and_logits_without_bias():
    torch.manual_seed(0)
    model = FIDInceptionV3(resize_input=False).eval()
    torch.nn.init.normal_(model.fc.bias)  # a nonzero bias that must not enter the logits
    x = torch.rand(2, 3, 80, 80)
    with torch.no_grad():
        features, logits = model.features_and_logits(x)
        assert torch.equal(features, model(x))  # the FID path is the same forward, bit for bit
        assert logits.shape == (2, 1008)
        torch.testing.assert_close(logits, features @ model.fc.weight.T)
        assert not torch.allclose(logits, model.fc(features))
