"""CLIP and T5 through TextEmbedder: the right model class, official masking and scaling, dtypes (tiny, offline)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

from crossflow.language.hf import TextEmbedder  # noqa: E402
from crossflow.language.loading import resolve_kind  # noqa: E402
from helpers.subprocess_env import child_env  # noqa: E402

PROMPTS = ["a photo of the cat", "a big red dog sat on the mat", "tree"]


def test_resolve_kind() -> None:
    assert resolve_kind("auto", "clip") == "clip" and resolve_kind("auto", "clip_text_model") == "clip"
    assert resolve_kind("auto", "t5") == "t5" and resolve_kind("auto", "umt5") == "t5"
    assert resolve_kind("auto", "bert") == "encoder" and resolve_kind("encoder", "t5") == "encoder"
    with pytest.raises(ValueError, match="kind='t5'.*bert"):
        resolve_kind("t5", "bert")
    with pytest.raises(ValueError, match="one of"):
        resolve_kind("llama", "bert")


def test_clip_matches_official_pipeline(tiny_clip_text: Path) -> None:
    emb = TextEmbedder(str(tiny_clip_text), max_length=77, local_files_only=True)
    assert emb.kind == "clip" and type(emb.model).__name__ == "CLIPTextModel" and not emb.model_attention_mask
    h, mask = emb(PROMPTS)
    assert h.shape == (3, 77, 32) and mask.shape == (3, 77)
    # The official FrozenCLIPEmbedder: max_length padding, input ids only (no attention mask), last_hidden_state.
    tok = transformers.CLIPTokenizer.from_pretrained(tiny_clip_text)
    batch = tok(PROMPTS, padding="max_length", truncation=True, max_length=77, return_tensors="pt")
    ref_model = transformers.CLIPTextModel.from_pretrained(tiny_clip_text).eval()
    with torch.no_grad():
        ref = ref_model(input_ids=batch["input_ids"]).last_hidden_state
    torch.testing.assert_close(h, ref, rtol=0, atol=0)
    assert torch.equal(mask, batch["attention_mask"].bool())
    assert mask.sum(1).tolist()[:2] == [7, 10]  # BOS + one token per word + EOS; padding (EOS ids) masked
    assert (batch["input_ids"][0, 7:] == 1).all()  # CLIP pads with the EOS id
    # Causal attention: passing the mask changes only the padded positions' states.
    masked = TextEmbedder(str(tiny_clip_text), max_length=77, local_files_only=True, model_attention_mask=True)
    h2, _ = masked(PROMPTS)
    torch.testing.assert_close(h2[mask], h[mask], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(h2[~mask], h[~mask], atol=1e-3)
    assert masked.identifier != emb.identifier


def test_clip_whole_checkpoint_loads_text_tower(tiny_clip: Path) -> None:  # a whole CLIPModel (text + vision)
    emb = TextEmbedder(str(tiny_clip), max_length=16, local_files_only=True)
    assert type(emb.model).__name__ == "CLIPTextModel" and emb.dim == 32
    full = transformers.CLIPModel.from_pretrained(tiny_clip).eval()
    ids = emb.tokenizer(PROMPTS, padding="max_length", max_length=16, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        ref = full.text_model(input_ids=ids).last_hidden_state
    torch.testing.assert_close(emb(PROMPTS)[0], ref, rtol=0, atol=0)


def test_clip_truncation_and_batching(tiny_clip_text: Path) -> None:
    emb = TextEmbedder(str(tiny_clip_text), max_length=6, local_files_only=True)
    states, mask, ids, truncated = emb.embed_batch(PROMPTS)
    assert truncated == [0, 1] and mask[:2].all() and ids.shape == (3, 6) and ids[0, -1] == 1  # EOS kept
    with pytest.warns(UserWarning, match="2 of 3 prompts"):
        h, _ = emb.encode(PROMPTS, batch_size=2)
    torch.testing.assert_close(h, states)


def test_t5_encoder_only_with_official_scaling(tiny_t5: Path) -> None:
    emb = TextEmbedder(str(tiny_t5), max_length=77, local_files_only=True, output_scale=10.0)
    assert emb.kind == "t5" and type(emb.model).__name__ == "T5EncoderModel" and emb.model_attention_mask
    assert not any("decoder" in k for k in emb.model.state_dict())
    h, mask = emb(PROMPTS)
    tok = transformers.AutoTokenizer.from_pretrained(tiny_t5)
    batch = tok(PROMPTS, padding="max_length", truncation=True, max_length=77, return_tensors="pt")
    ref_model = transformers.T5EncoderModel.from_pretrained(tiny_t5).eval()
    with torch.no_grad():
        ref = ref_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    torch.testing.assert_close(h, 10.0 * ref, rtol=1e-6, atol=1e-6)
    assert mask.sum(1).tolist() == [6, 9, 2]  # words + </s>
    hb, mb = emb.encode(PROMPTS * 2, batch_size=4)
    torch.testing.assert_close(hb, torch.cat([h, h]), rtol=1e-5, atol=1e-5)


_HALF_SCRIPT = """
import json, sys, torch
from crossflow.language.hf import TextEmbedder
prompts = json.loads(sys.argv[2])
out, states = {}, {}
for name in ("bfloat16", "float16"):  # half precision first: the guard must run before any CPU matmul
    emb = TextEmbedder(sys.argv[1], max_length=16, local_files_only=True, dtype=name)
    states[name], _ = emb(prompts)
    out[name] = {"param_dtypes": sorted({str(p.dtype) for p in emb.model.parameters()}),
                 "out_dtype": str(states[name].dtype), "finite": bool(torch.isfinite(states[name]).all())}
ref, _ = TextEmbedder(sys.argv[1], max_length=16, local_files_only=True)(prompts)
for name in out:
    out[name]["rel_err"] = float((states[name] - ref).norm() / ref.norm())
print(json.dumps(out))
"""


def test_t5_half_precision_load(tiny_t5: Path) -> None:
    # A subprocess: on VMs that advertise AMX but fault on it, oneDNN must be capped before its first use
    # (the embedder's guard does that in a fresh process, as in `crossflow extract`; this test process has
    # long since run other matmuls). The cap is preset to skip the guard's slow crash probe.
    env = child_env(ONEDNN_MAX_CPU_ISA=os.environ.get("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16"))
    run = subprocess.run([sys.executable, "-c", _HALF_SCRIPT, str(tiny_t5), json.dumps(PROMPTS)], env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    for name in ("bfloat16", "float16"):
        r = out[name]
        # transformers keeps T5's FFN output projections in fp32 when loading in fp16 (overflow guard)
        assert r["param_dtypes"] == ([f"torch.{name}"] if name == "bfloat16" else ["torch.float16", "torch.float32"])
        assert r["out_dtype"] == "torch.float32" and r["finite"]
        assert r["rel_err"] < 0.05, r


def test_kind_mismatch_is_named(tiny_t5: Path) -> None:
    with pytest.raises(OSError, match="kind='clip'"):
        TextEmbedder(str(tiny_t5), local_files_only=True, kind="clip")
