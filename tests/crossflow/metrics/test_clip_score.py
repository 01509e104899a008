"""CLIP score with a tiny random CLIPModel, against a hand computation of scale · max(cos, 0)."""

from __future__ import annotations

import pytest
import torch

from crossflow.metrics.clip_score import CLIP_MEAN, CLIP_STD, CLIPScorer


def _features(out):
    return out if isinstance(out, torch.Tensor) else out.pooler_output  # transformers 4 vs 5


def _hand_scores(scorer: CLIPScorer, images, prompts, scale):
    model = scorer.model
    mean, std = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    pixels = ((images + 1) / 2 - mean) / std  # 32×32 inputs need no resizing
    img = _features(model.get_image_features(pixel_values=pixels))
    tok = scorer.tokenizer(prompts, padding=True, return_tensors="pt")
    txt = _features(model.get_text_features(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"]))
    cos = (img * txt).sum(-1) / (img.norm(dim=-1) * txt.norm(dim=-1))
    return scale * torch.clamp(cos, min=0)


@pytest.mark.parametrize("scale", [1.0, 100.0])
def test_score_is_the_scaled_clipped_cosine(tiny_clip, scale):
    scorer = CLIPScorer(str(tiny_clip), scale=scale, batch_size=3)
    g = torch.Generator().manual_seed(0)
    images = torch.rand(5, 3, 32, 32, generator=g) * 2 - 1
    prompts = ["a red cat", "blue dog", "green", "a tree by the sea", "xyz"]
    scores = scorer.score(images, prompts)
    torch.testing.assert_close(scores, _hand_scores(scorer, images, prompts, scale), atol=1e-5, rtol=1e-4)
    with torch.no_grad():  # flipping the text projection flips every cosine: the positive ones are clipped to 0
        scorer.model.text_projection.weight.neg_()
    flipped = scorer.score(images, prompts)
    torch.testing.assert_close(flipped, _hand_scores(scorer, images, prompts, scale), atol=1e-5, rtol=1e-4)
    assert bool((scores >= 0).all()) and bool((flipped >= 0).all())
    # every pair has exactly one clipped side (the sign of a random cosine is never exactly 0)
    assert torch.equal(scores > 0, flipped == 0) and torch.equal(flipped > 0, scores == 0)


def test_long_prompts_are_truncated_to_77_tokens_and_the_settings_are_stated(tiny_clip):
    scorer = CLIPScorer(str(tiny_clip))
    words = [chr(ord("a") + i % 26) for i in range(120)]  # one token per letter word
    image = torch.zeros(2, 3, 32, 32)
    long, cut = scorer.score(image, [" ".join(words), " ".join(words[:75])])  # 75 + start + end = 77
    assert long == pytest.approx(float(cut), abs=1e-6)
    info = scorer.describe()
    assert info["scale"] == 1.0 and info["max_tokens"] == 77 and "77 tokens" in info["truncation"]


def test_preprocessing_resizes_the_shorter_side_and_centre_crops(tiny_clip):
    scorer = CLIPScorer(str(tiny_clip))
    x = torch.zeros(1, 3, 48, 96)
    x[..., :, :8] = 1.0  # a white stripe on the left edge is cropped away
    pixels = scorer.preprocess(x)
    assert pixels.shape == (1, 3, 32, 32)
    expected = ((0.5 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)).view(1, 3, 1, 1).expand(1, 3, 32, 32)
    torch.testing.assert_close(pixels, expected, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="2 images but 1 prompts"):
        scorer.score(torch.zeros(2, 3, 32, 32), ["a"])


def test_missing_model_directory_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        CLIPScorer(str(tmp_path / "nowhere"))
