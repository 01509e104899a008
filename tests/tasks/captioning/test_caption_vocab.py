"""The caption tokenizer: every toy caption round-trips; length limits and unknown words."""

from __future__ import annotations

import itertools

import pytest
import torch

from tasks.captioning.vocab import CaptionTokenizer
from tasks.toyworld.scenes import PALETTE, POSITIONS, SHAPES, SIZES, TEMPLATES, Scene, caption


def all_toy_captions() -> list[str]:
    scenes = [Scene(c, s, z, p) for c, s, z, p in itertools.product(PALETTE, SHAPES, SIZES, POSITIONS)]
    return [caption(scene, t) for scene in scenes for t in range(len(TEMPLATES))]


def test_tokenizer_round_trips_every_toy_caption():
    tok = CaptionTokenizer(max_length=16)
    captions = all_toy_captions()
    assert len(captions) == 6 * 3 * 2 * 5 * 8
    ids, mask = tok.encode(captions)
    assert ids.shape == mask.shape == (len(captions), 16)
    assert tok.decode(ids) == captions
    assert torch.equal(mask, ids != tok.pad_id)  # words and <eos> are real, the rest is padding
    assert int(tok.unk_id) not in ids.tolist()
    with pytest.raises(ValueError, match="max_length=4"):
        CaptionTokenizer(max_length=4).encode(["a large red circle in the center"])
    unknown, _ = tok.encode(["a huge red circle"])
    assert tok.decode(unknown) == ["a red circle"]  # unknown words are dropped when decoding
