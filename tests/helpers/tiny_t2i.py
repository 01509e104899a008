"""A tiny untrained text-to-image export (real MiniLM tokens → tiny VE/DiT on 3×32×32) for tool and eval tests."""

from __future__ import annotations

from pathlib import Path

import torch

from crossflow.task import experiment_from_dict
from crossflow.train.trainer import export_model


def tiny_t2i_raw(cache_dir: Path, kind: str = "crossflow") -> dict:
    return {
        "task": {"name": "t2i", "dataset": "toyworld", "language_model": {"max_length": 16},
                 "toyworld": {"num_train": 64, "num_test": 6}, "cache_dir": str(cache_dir), "preview_prompts": 2},
        "model": {"kind": kind,
                  "source_encoder": {"width": 32, "depth": 1, "num_heads": 2, "num_queries": 2},
                  "velocity_net": {"patch_size": 8, "hidden_size": 32, "depth": 1, "num_heads": 2},
                  "contrastive": {"enabled": kind == "crossflow", "widths": [8], "hidden_dim": 16}},
        "train": {"batch_size": 8, "max_steps": 2, "warmup_steps": 1, "checkpoint_every": 10, "log_every": 1},
        "sample": {"steps": 3, "guidance": 2.0, "batch_size": 4},
    }


def export_tiny_t2i(out_dir: Path, kind: str = "crossflow", seed: int = 0) -> Path:
    """Build the tiny model with perturbed weights (so outputs depend on the prompt) and write an export."""
    cfg, task_cls = experiment_from_dict(tiny_t2i_raw(out_dir / "cache", kind))
    torch.manual_seed(seed)
    model = task_cls(cfg).build_model()
    with torch.no_grad():  # zero-initialised output layers would make every image identical
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return export_model(model.state_dict(), cfg, out_dir / "export")


def make_tiny_clip(out_dir: Path, image_size: int = 32) -> Path:
    """A random-init CLIPModel with a letters-only BPE tokenizer (no merges), saved like a hub checkout."""
    import json

    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    out_dir.mkdir(parents=True, exist_ok=True)
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    vocab |= {c: i + 2 for i, c in enumerate(letters)}
    vocab |= {c + "</w>": i + 2 + len(letters) for i, c in enumerate(letters)}
    (out_dir / "vocab.json").write_text(json.dumps(vocab))
    (out_dir / "merges.txt").write_text("#version: 0.2\n")
    CLIPTokenizer(str(out_dir / "vocab.json"), str(out_dir / "merges.txt"),
                  pad_token="<|endoftext|>").save_pretrained(out_dir)
    cfg = CLIPConfig(text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=2, max_position_embeddings=77, bos_token_id=0,
                                      eos_token_id=1, pad_token_id=1),
                     vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                        image_size=image_size, patch_size=8),
                     projection_dim=16)
    torch.manual_seed(0)
    CLIPModel(cfg).save_pretrained(out_dir)
    return out_dir
