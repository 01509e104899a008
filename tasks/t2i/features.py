"""Real image–text data for the text-to-image adapter: precomputed features + the SD-VAE codec.

Training reads LM token states and VAE posterior moments that ``crossflow extract`` stored (or
official per-sample ``.npy`` files); every step draws a fresh latent from the moments
(:func:`~crossflow.codecs.sd_vae.sample_latent`), so neither the LM nor the VAE is loaded to train.
The VAE is loaded only to decode previews and samples.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Optional

import torch
from torch import Tensor
from torch.utils.data import Dataset

from crossflow.codecs.sd_vae import SDVAECodec, sample_latent
from crossflow.config import ConfigError
from crossflow.data.feature_shards import FeatureShards
from crossflow.data.official_npy import OfficialFeatureFolder
from crossflow.language import resolve_model_path
from tasks.t2i.config import TextToImageConfig

log = logging.getLogger(__name__)

#: Format tag written into every shard's meta by the extractor.
FEATURES_FORMAT = "crossflow-t2i-features/1"


def latent_shape(tc: TextToImageConfig) -> tuple[int, int, int]:
    """``(C, H, W)`` of the SD-VAE latent of ``tc.resolution`` px images."""
    f = tc.vae.downsample
    if tc.resolution % f:
        raise ConfigError(f"task.resolution: {tc.resolution} is not divisible by task.vae.downsample={f}")
    return (tc.vae.latent_channels, tc.resolution // f, tc.resolution // f)


def checkpoint_dim(name_or_path: str, local_files_only: bool) -> int:
    """Token-state width from a checkpoint's ``config.json`` (no weights are read)."""
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(resolve_model_path(name_or_path), local_files_only=local_files_only)
    cfg = getattr(cfg, "text_config", None) or cfg  # a whole CLIP checkpoint: its text tower
    return int(getattr(cfg, "hidden_size", None) or cfg.d_model)


def features_meta(tc: TextToImageConfig) -> Optional[dict[str, Any]]:
    """Meta of the extracted features in ``tc.features_dir`` (``None`` if not a features directory yet)."""
    if tc.dataset != "features" or not tc.features_dir:
        return None
    try:
        return FeatureShards(tc.features_dir).meta
    except FileNotFoundError:
        return None


#: Token-state widths of the paper's language models by hub name, so that a paper config builds (e.g. on the
#: meta device for `crossflow params`) where neither its features nor the model files are at hand.
KNOWN_WIDTHS = {"openai/clip-vit-large-patch14": 768, "DeepFloyd/t5-v1_1-xxl": 4096, "google/t5-v1_1-xxl": 4096}


def language_model_dim(tc: TextToImageConfig) -> int:
    """Width of the source tokens, read where it already is: the extracted features' ``index.json``, else
    ``language_model.dim``, else the LM checkpoint's ``config.json`` (else the width of a known hub model).

    Raises:
        ConfigError: ``language_model.dim`` is set and disagrees with the features (naming both), or the
            width cannot be found.
    """
    lm = tc.language_model
    meta = features_meta(tc)
    if meta is not None:
        stored = int(meta["language_model"]["dim"])
        if lm.dim is not None and lm.dim != stored:
            raise ConfigError(f"task.language_model.dim: the config says {lm.dim} but the features in "
                              f"{tc.features_dir} were extracted with {stored}-wide token states (their index.json); "
                              "drop the key (the width is read from the features) or re-extract")
        return stored
    if lm.dim is not None:
        return lm.dim
    if tc.dataset == "official_npy":
        return {"clip": 768, "t5": 4096}[tc.official_lm]
    try:
        return checkpoint_dim(lm.name_or_path, lm.local_files_only)
    except (OSError, ValueError) as e:
        if lm.name_or_path in KNOWN_WIDTHS:
            return KNOWN_WIDTHS[lm.name_or_path]
        raise ConfigError(f"task.language_model.dim: not set and the config of {lm.name_or_path!r} cannot be read "
                          f"({str(e).splitlines()[0] if str(e) else type(e).__name__}); set the width explicitly "
                          "(CLIP-L 768, T5-XXL 4096)") from e


def build_codec(tc: TextToImageConfig, device: Optional[str] = None) -> SDVAECodec:
    """The SD-VAE codec of ``tc.vae`` (the VAE itself loads on first encode/decode; default device: cuda if visible)."""
    v = tc.vae
    return SDVAECodec(v.name_or_path, subfolder=v.subfolder, scale_factor=v.scale_factor, dtype=v.dtype,
                      local_files_only=v.local_files_only, decode_batch_size=v.decode_batch_size, device=device)


def check_codec(codec: SDVAECodec, tc: TextToImageConfig) -> None:
    """Raise if the loaded VAE does not have the latent channels / downsampling the config states."""
    if codec.latent_channels != tc.vae.latent_channels or codec.downsample_factor != tc.vae.downsample:
        raise ConfigError(f"task.vae: {tc.vae.name_or_path} has {codec.latent_channels} latent channels and "
                          f"downsamples {codec.downsample_factor}x, the config says latent_channels="
                          f"{tc.vae.latent_channels}, downsample={tc.vae.downsample}")


def check_meta(meta: dict[str, Any], tc: TextToImageConfig, *, source_dim: int) -> None:
    """Check extracted features against the training config; mismatches raise naming the key."""
    root = tc.features_dir
    if meta.get("format") != FEATURES_FORMAT:
        raise ConfigError(f"task.features_dir: {root} has format {meta.get('format')!r}, expected {FEATURES_FORMAT!r}")
    lm, stored = tc.language_model, meta["language_model"]
    expected = {"task.language_model.max_length": (lm.max_length, stored["max_length"]),
                "task.language_model.output_scale": (lm.output_scale, stored["output_scale"]),
                "task.language_model.dim": (source_dim, stored["dim"])}
    vae = meta.get("vae")
    if vae is None:
        raise ConfigError(f"task.features_dir: {root} holds prompt features only (no VAE moments); "
                          "extract training features with images")
    shape = latent_shape(tc)
    expected["task.resolution"] = (tc.resolution, meta["resolution"])
    expected["task.vae.latent_channels"] = (shape[0], vae["latent_channels"])
    expected["task.vae.downsample"] = (tc.vae.downsample, vae["downsample"])
    for key, (want, got) in expected.items():
        if not math.isclose(float(want), float(got)):
            raise ConfigError(f"{key}: the config says {want} but the features in {root} were extracted with {got}")
    if Path(resolve_model_path(lm.name_or_path)).name != Path(stored["name_or_path"]).name:
        log.warning("features in %s were embedded by %s; the config names %s (prompts at sampling time go through "
                    "the config's model)", root, stored["name_or_path"], lm.name_or_path)


def open_dataset(tc: TextToImageConfig, *, source_dim: int, max_tokens: int) -> "LatentFeatures":
    """The training dataset of ``tc.dataset`` (``features`` or ``official_npy``), checked against the config."""
    if not tc.features_dir:
        raise ConfigError(f"task.features_dir: required with task.dataset={tc.dataset!r}")
    if tc.dataset == "features":
        data = FeatureShards(tc.features_dir)
        check_meta(data.meta, tc, source_dim=source_dim)
        data.select(["tokens", "mask", "moments"])
        log.info("features %s: %d samples in %d shards (%d skipped at extraction)", tc.features_dir, len(data),
                 len(data.shards), data.num_skipped)
        return LatentFeatures(data, tc.vae.scale_factor)
    data = OfficialFeatureFolder(tc.features_dir, lm=tc.official_lm, resolution=tc.resolution)
    row = data.sample(0)
    want_moments = (2 * tc.vae.latent_channels, *latent_shape(tc)[1:])
    if row["tokens"].shape != (max_tokens, source_dim) or tuple(row["moments"].shape) != want_moments:
        raise ConfigError(f"task.features_dir: {data.files[0]} holds tokens {row['tokens'].shape} and moments "
                          f"{row['moments'].shape}; the config needs ({max_tokens}, {source_dim}) and {want_moments}")
    return LatentFeatures(data, tc.vae.scale_factor)


class LatentFeatures(Dataset):
    """Extracted features (:class:`FeatureShards` or :class:`OfficialFeatureFolder`) as training batches.

    Collated batches hold ``source``, ``source_mask`` and the stored VAE ``moments``; :meth:`prepare` draws the
    target latent z1 from the moments on the device, fresh every step (as the official pipeline does).

    Args:
        data: the features dataset.
        scale_factor: the VAE latent scale (``task.vae.scale_factor``).
    """

    def __init__(self, data: Dataset, scale_factor: float) -> None:
        self.data, self.scale_factor = data, scale_factor

    def __len__(self) -> int:
        return len(self.data)

    def __getitems__(self, indices: list[int]) -> dict[str, Tensor]:
        return self.data.__getitems__(indices)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return self.data[index]

    def prepare(self, batch: dict[str, Any], device: torch.device) -> dict[str, Tensor]:
        """Move tokens/mask to ``device`` and draw the target latent z1 from the stored VAE moments."""
        return {"source": batch["source"].to(device, non_blocking=True),
                "source_mask": batch["source_mask"].to(device, non_blocking=True),
                "target": sample_latent(batch["moments"].to(device, non_blocking=True), self.scale_factor)}

    def head_prompts(self, n: int) -> list[str]:
        """The first ``n`` prompts (for preview grids)."""
        if isinstance(self.data, FeatureShards):
            return self.data.head_prompts(n)
        return [self.data.sample(i)["prompt"] for i in range(min(n, len(self.data)))]
