"""The on-disk embedding cache: order, duplicates, reuse across instances, recovery from corrupt files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from crossflow.language.cache import EmbeddingCache, prompt_key


class _Counter:
    def __init__(self) -> None:
        self.calls, self.prompts = 0, []

    def __call__(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        self.calls += 1
        self.prompts += prompts
        h = torch.stack([torch.full((4, 3), float(len(p))) + torch.arange(4.0)[:, None] / 7 for p in prompts])
        mask = torch.stack([torch.arange(4) < min(len(p), 4) for p in prompts])
        return h, mask


def test_cache_roundtrip_order_duplicates(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path, "my/model:len4")
    fn = _Counter()
    prompts = ["bb", "a", "ccc", "a", "bb"]
    h, mask = cache.get_or_compute(prompts, fn, batch_size=2)
    assert fn.prompts == ["bb", "a", "ccc"] and fn.calls == 2
    ref_h, ref_m = _Counter()(prompts)
    torch.testing.assert_close(h, ref_h, atol=1e-3, rtol=1e-3)
    assert torch.equal(mask, ref_m) and mask.dtype == torch.bool
    h2, mask2 = cache.get_or_compute(["ccc", "a", "dddd"], fn)
    assert fn.prompts[-1:] == ["dddd"] and fn.calls == 3
    h3, _ = EmbeddingCache(tmp_path, "my/model:len4").get_or_compute(prompts, fn)
    assert fn.calls == 3 and torch.equal(h3, h)
    torch.testing.assert_close(h2[:2], h[[2, 1]])
    assert EmbeddingCache(tmp_path, "a/b").dir != EmbeddingCache(tmp_path, "a_b").dir


def test_cache_corruption_recomputes(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path, "m")
    fn = _Counter()
    h, _ = cache.get_or_compute(["x", "yy"], fn)
    (cache.dir / "index.json").write_text('{"version": 1, "entr')
    with pytest.warns(UserWarning, match="index.json"):
        h2, _ = cache.get_or_compute(["x", "yy"], fn)
    assert fn.calls == 2 and torch.equal(h, h2)
    shard = next(cache.dir.glob("shard-*.safetensors"))
    for s in cache.dir.glob("shard-*.safetensors"):
        s.write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="shard-"):
        h3, _ = cache.get_or_compute(["yy"], fn)
    assert fn.calls == 3 and torch.equal(h3, h[1:]) and shard.name in str(shard)
    index = json.loads((cache.dir / "index.json").read_text())
    shard_name, row = index["entries"][prompt_key("yy")]
    index["entries"][prompt_key("yy")] = [shard_name, row + 5]  # index points at a row the shard does not hold
    (cache.dir / "index.json").write_text(json.dumps(index))
    with pytest.warns(UserWarning, match="indexed row"):
        h4, _ = cache.get_or_compute(["yy"], fn)
    assert fn.calls == 4 and torch.equal(h4, h[1:])
