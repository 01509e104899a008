"""Caption metrics against pycocoevalcap called directly; attribute accuracy of parsed captions."""

from __future__ import annotations

import pytest

from tasks.captioning.metrics import SCORE_KEYS, attribute_accuracy, caption_scores, spice_unavailable_reason
from tasks.toyworld.scenes import parse_caption


def test_caption_scores_equal_pycocoevalcap_called_directly():
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    refs = {1: ["A large red circle in the center.", "there is a red circle at the center, it is large"],
            2: ["a small blue square in the top left"],
            3: ["in the bottom right of the picture sits a small green triangle", "small green triangle, bottom right"]}
    cands = {1: "a large red circle in the center", 2: "a small blue circle in the top right",
             3: "a small green triangle at the bottom right"}
    scores = caption_scores(refs, cands)
    assert tuple(scores) == SCORE_KEYS

    tok = PTBTokenizer()
    gts = tok.tokenize({k: [{"caption": r} for r in v] for k, v in refs.items()})
    res = tok.tokenize({k: [{"caption": v}] for k, v in cands.items()})
    bleu, _ = Bleu(4).compute_score(gts, res)
    for n in range(4):
        assert scores[f"BLEU-{n + 1}"] == pytest.approx(bleu[n])
    assert scores["METEOR"] == pytest.approx(Meteor().compute_score(gts, res)[0])
    assert scores["ROUGE-L"] == pytest.approx(Rouge().compute_score(gts, res)[0])
    assert scores["CIDEr"] == pytest.approx(Cider().compute_score(gts, res)[0])
    if spice_unavailable_reason() is not None:  # offline: no CoreNLP jars; SPICE is None, the rest still returns
        assert scores["SPICE"] is None
    assert scores["BLEU-1"] > scores["BLEU-4"] > 0

    with pytest.raises(ValueError, match="same ids"):
        caption_scores(refs, {1: "x"})


def test_attribute_accuracy_from_parsed_captions():
    truth = [{"color": "red", "shape": "circle", "size": "large", "position": "top left"},
             {"color": "blue", "shape": "square", "size": "small", "position": "center"}]
    parsed = [parse_caption("top left: one large circle, colored red"), parse_caption("a small blue circle")]
    acc = attribute_accuracy(parsed, truth)
    assert acc == {"color_accuracy": 1.0, "shape_accuracy": 0.5, "size_accuracy": 1.0, "position_accuracy": 0.5,
                   "all_accuracy": 0.5}
