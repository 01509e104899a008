"""Tiny random-init CLIP / T5 / AutoencoderKL checkpoints, built offline, saved like hub checkouts.

The one tiny CLIP of the tests is :func:`make_tiny_clip`: its BPE spells every word of :data:`WORDS` as one
token and every other lowercase letter as one token, so prompts of single letters have one token per letter.
"""

from __future__ import annotations

import string
from pathlib import Path

import torch

WORDS = "a photo of the cat dog red blue green sat on mat big small car tree".split()


def _clip_vocab() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A byte-level BPE vocabulary that spells every word of WORDS as one token (CLIP style, ``</w>`` ends)."""
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    chars = sorted(set("".join(WORDS)) | set(string.ascii_lowercase))
    for t in chars + [c + "</w>" for c in chars]:
        vocab.setdefault(t, len(vocab))
    merges: list[tuple[str, str]] = []
    for w in WORDS:
        parts = list(w[:-1]) + [w[-1] + "</w>"]
        while len(parts) > 1:
            merges.append((parts[0], parts[1]))
            vocab.setdefault(parts[0] + parts[1], len(vocab))
            parts = [parts[0] + parts[1]] + parts[2:]
    return vocab, list(dict.fromkeys(merges))


def make_tiny_clip(path: Path, *, full_clip: bool = False, max_positions: int = 77, image_size: int = 32,
                   seed: int = 0) -> Path:
    """Save a tiny CLIP text model + tokenizer; ``full_clip`` saves a whole ``CLIPModel`` (text + a vision tower
    on ``image_size`` px images, as the CLIP score needs)."""
    import transformers

    vocab, merges = _clip_vocab()
    tok = transformers.CLIPTokenizer(vocab=vocab, merges=merges)
    text = dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=2, max_position_embeddings=max_positions, bos_token_id=0, eos_token_id=1,
                pad_token_id=1)
    torch.manual_seed(seed)
    if full_clip:
        vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                      image_size=image_size, patch_size=16)
        cfg = transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)
        model = transformers.CLIPModel(cfg)
    else:
        model = transformers.CLIPTextModel(transformers.CLIPTextConfig(**text))
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return Path(path)


def make_tiny_t5(path: Path, *, encoder_decoder: bool = True, seed: int = 0) -> Path:
    """Save a tiny T5 (whole encoder-decoder by default, as t5-v1_1 checkpoints are) + a unigram tokenizer."""
    import transformers

    chars = sorted(set("".join(WORDS)))
    pieces = ([("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [("▁" + w, -1.0) for w in WORDS]
              + [(c, -5.0) for c in chars] + [("▁", -3.0)])
    tok = transformers.T5Tokenizer(vocab=pieces, extra_ids=0)
    cfg = transformers.T5Config(vocab_size=len(pieces), d_model=32, d_ff=64, d_kv=16, num_layers=2, num_heads=2,
                                pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
                                feed_forward_proj="gated-gelu")
    torch.manual_seed(seed)
    model = transformers.T5ForConditionalGeneration(cfg) if encoder_decoder else transformers.T5EncoderModel(cfg)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return Path(path)


def make_tiny_vae(path: Path, *, seed: int = 0, subfolder: str = "") -> Path:
    """Save a tiny 4-level AutoencoderKL (8× downsampling, 4 latent channels, like SD's kl-f8)."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    vae = AutoencoderKL(block_out_channels=(8, 8, 8, 8), down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=1, norm_num_groups=4,
                        latent_channels=4, sample_size=32)
    vae.save_pretrained(Path(path) / subfolder if subfolder else path)
    return Path(path)
