"""COCO images → the stored features of captioning stage 2, and stored features → CrossFlow's source.

Three kinds (``task.image.kind``), all starting from the largest central square of the image resized to
``task.image.resolution`` with an antialiasing LANCZOS filter (:func:`crossflow.data.transforms.center_crop_lanczos`):

- ``pixels``: the crop itself, stored ``(3, R, R)`` uint8; the source is the image in [-1, 1] (image VE).
- ``sd_vae``: the SD-VAE posterior moments (mean ‖ logvar), stored ``(2C, R/f, R/f)`` in ``task.image.dtype``; the
  source is the mean (or a fresh draw) × ``vae.scale_factor``, as the text-to-image features (image VE).
- ``clip_vision``: the tokens of one hidden layer of a transformers ``CLIPVisionModel``, CLS included, stored
  ``(T, D)`` with ``T = (R/patch)² + 1`` in ``task.image.dtype`` (token VE). The crop is normalised with the
  checkpoint's ``image_mean``/``image_std`` (``preprocessor_config.json``, else OpenAI CLIP's); unlike CLIP's own
  processor (bicubic short-side resize, then a central crop) the square is cut first, then resized.

Models load on the first :meth:`ImageEncoder.encode`; :meth:`ImageEncoder.source_spec` and
:meth:`ImageEncoder.to_source` need no weights (CLIP's token count and width come from its ``config.json``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from crossflow.codecs.sd_vae import SDVAECodec, sample_latent
from crossflow.config import ConfigError
from crossflow.data.feature_shards import INDEX, FeatureShards
from crossflow.data.transforms import center_crop_lanczos, to_model_input
from crossflow.specs import ImageSpec, TokenSpec
from tasks.captioning.config import ImageFeatureConfig

log = logging.getLogger(__name__)

#: Format tag of the shard meta written by ``crossflow extract`` (:mod:`tasks.captioning.extract`).
FEATURES_FORMAT = "crossflow-caption-images/1"
#: Storage dtypes of float features (``task.image.dtype``).
STORAGE_DTYPES = {"float16": np.float16, "float32": np.float32}
#: OpenAI CLIP's normalisation, used when a checkpoint has no ``preprocessor_config.json``.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def center_square(image: np.ndarray | Image.Image, resolution: int) -> np.ndarray:
    """The largest central square of an RGB image, LANCZOS-resized to ``(resolution, resolution, 3)`` uint8.

    An image that already is ``resolution`` px square comes back unchanged.
    """
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"images must be (H, W, 3) uint8 arrays, got {image.shape} {image.dtype}")
        if image.shape[:2] == (resolution, resolution):
            return image
        image = Image.fromarray(image)
    return center_crop_lanczos(image.convert("RGB"), resolution)


def clip_vision_config(name_or_path: str, local_files_only: bool = True):
    """The ``CLIPVisionConfig`` of a CLIP vision checkpoint or of a whole CLIP checkpoint (no weights read).

    Raises:
        ConfigError: the config cannot be read (naming ``task.image.clip_vision``).
    """
    from transformers import CLIPVisionConfig

    try:
        return CLIPVisionConfig.from_pretrained(name_or_path, local_files_only=local_files_only)
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"task.image.clip_vision: cannot read the config of {name_or_path!r} "
                          f"(local_files_only={local_files_only}): {first}") from None


def _clip_normalisation(name_or_path: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(image_mean, image_std)`` of a local checkpoint's ``preprocessor_config.json``, else OpenAI CLIP's."""
    path = os.path.join(os.path.expanduser(name_or_path), "preprocessor_config.json")
    if os.path.isfile(path):
        pre = json.loads(Path(path).read_text(encoding="utf-8"))
        if "image_mean" in pre and "image_std" in pre:
            return tuple(pre["image_mean"]), tuple(pre["image_std"])
    return CLIP_MEAN, CLIP_STD


def _weights_hash(module: torch.nn.Module, name_or_path: str) -> str:
    """Model basename + a short hash of a few weights (tells checkpoints apart in the shard meta)."""
    h = hashlib.sha1()
    for name, p in module.state_dict().items():
        h.update(name.encode())
        h.update(p.detach().flatten()[:16].float().cpu().numpy().tobytes())
    return f"{os.path.basename(name_or_path.rstrip('/')) or 'model'}-{h.hexdigest()[:8]}"


class ImageEncoder:
    """Images → stored features (:meth:`encode`) and stored features → the model's source (:meth:`to_source`).

    Args:
        config: ``task.image``.
        device: device of the VAE / CLIP model (default: CUDA when visible, else CPU).
    """

    def __init__(self, config: ImageFeatureConfig, device: Optional[str | torch.device] = None) -> None:
        self.config = config
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self._codec: Optional[SDVAECodec] = None
        self._clip = None
        self.source_spec()  # refuse an inconsistent config before any image is read

    @classmethod
    def from_config(cls, config: ImageFeatureConfig, device: Optional[str | torch.device] = None) -> "ImageEncoder":
        """The encoder of ``task.image`` (models load on the first :meth:`encode`)."""
        return cls(config, device)

    # ------------------------------------------------------------------ shapes (no weights)
    def source_spec(self) -> ImageSpec | TokenSpec:
        """The spec of :meth:`to_source`'s output per image.

        pixels ``ImageSpec(3, R, R)``; sd_vae ``ImageSpec(C, R/f, R/f)`` (``vae.latent_channels``, ``vae.downsample``);
        clip_vision ``TokenSpec((R/patch)² + 1, hidden_size)`` from the checkpoint's ``config.json``.

        Raises:
            ConfigError: the resolution does not fit the VAE's downsampling or the CLIP model's image size, or
                ``clip_layer`` is not a hidden layer of the model.
        """
        c, r = self.config, self.config.resolution
        if r < 1:
            raise ConfigError(f"task.image.resolution must be >= 1, got {r}")
        if c.kind == "pixels":
            return ImageSpec(3, r, r)
        if c.kind == "sd_vae":
            f = c.vae.downsample
            if r % f:
                raise ConfigError(f"task.image.resolution: {r} is not divisible by task.image.vae.downsample={f} "
                                  f"(e.g. {max(f, r - r % f)})")
            return ImageSpec(c.vae.latent_channels, r // f, r // f)
        vc = clip_vision_config(c.clip_vision, c.local_files_only)
        if r != vc.image_size:
            raise ConfigError(f"task.image.resolution: {r}, but the CLIP vision model {c.clip_vision!r} takes "
                              f"{vc.image_size} px images; set task.image.resolution={vc.image_size}")
        if not -(vc.num_hidden_layers + 1) <= c.clip_layer <= vc.num_hidden_layers:
            raise ConfigError(f"task.image.clip_layer: {c.clip_layer} is not a hidden layer of {c.clip_vision!r} "
                              f"(valid: -{vc.num_hidden_layers + 1}..{vc.num_hidden_layers}; -1 = last)")
        return TokenSpec((r // vc.patch_size) ** 2 + 1, int(vc.hidden_size))

    @property
    def stored_shape(self) -> tuple[int, ...]:
        """Shape of one stored feature: pixels ``(3, R, R)``, sd_vae ``(2C, R/f, R/f)``, clip_vision ``(T, D)``."""
        spec = self.source_spec()
        if self.config.kind == "sd_vae":
            return (2 * spec.channels, spec.height, spec.width)
        return tuple(spec.shape)

    @property
    def stored_dtype(self) -> np.dtype:
        """uint8 for pixels, ``task.image.dtype`` otherwise."""
        return np.dtype(np.uint8 if self.config.kind == "pixels" else STORAGE_DTYPES[self.config.dtype])

    def config_meta(self) -> dict[str, Any]:
        """What the stored features depend on, read from the config alone (see :func:`config_meta`)."""
        return config_meta(self.config)

    def meta(self) -> dict[str, Any]:
        """:meth:`config_meta` plus the loaded model's weight hash and the stored shape (loads the model)."""
        meta = self.config_meta() | {"shape": list(self.stored_shape), "dtype": str(self.stored_dtype)}
        if self.config.kind == "sd_vae":
            meta["identifier"] = self.codec.identifier
        elif self.config.kind == "clip_vision":
            meta["identifier"] = _weights_hash(self.clip, self.config.clip_vision)
        return meta

    # ------------------------------------------------------------------ models (loaded on first use)
    @property
    def codec(self) -> SDVAECodec:
        """The SD-VAE codec of ``task.image.vae``, checked against its latent channels and downsampling."""
        if self._codec is None:
            v = self.config.vae
            codec = SDVAECodec(v.name_or_path, subfolder=v.subfolder, scale_factor=v.scale_factor, dtype=v.dtype,
                               local_files_only=v.local_files_only, decode_batch_size=v.decode_batch_size,
                               device=self.device)
            if codec.latent_channels != v.latent_channels or codec.downsample_factor != v.downsample:
                raise ConfigError(f"task.image.vae: {v.name_or_path} has {codec.latent_channels} latent channels and "
                                  f"downsamples {codec.downsample_factor}x, the config says latent_channels="
                                  f"{v.latent_channels}, downsample={v.downsample}")
            self._codec = codec
        return self._codec

    @property
    def clip(self):
        """The frozen ``CLIPVisionModel`` of ``task.image.clip_vision`` (float32)."""
        if self._clip is None:
            from transformers import CLIPVisionModel

            c = self.config
            try:
                model = CLIPVisionModel.from_pretrained(c.clip_vision, local_files_only=c.local_files_only)
            except (OSError, ValueError) as e:
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise OSError(f"could not load CLIP vision model {c.clip_vision!r} (task.image.clip_vision, "
                              f"local_files_only={c.local_files_only}): {first}") from None
            self._clip = model.eval().requires_grad_(False).to(self.device)
            mean, std = _clip_normalisation(c.clip_vision)
            self._clip_mean = torch.tensor(mean, device=self.device).view(1, 3, 1, 1)
            self._clip_std = torch.tensor(std, device=self.device).view(1, 3, 1, 1)
            log.info("loaded CLIP vision model %s (%s), hidden layer %d", c.clip_vision, self.device, c.clip_layer)
        return self._clip

    # ------------------------------------------------------------------ images → stored features
    def crop(self, images: Sequence[np.ndarray | Image.Image]) -> np.ndarray:
        """``(N, R, R, 3)`` uint8 central squares of the images (see :func:`center_square`)."""
        return np.stack([center_square(im, self.config.resolution) for im in images])

    @torch.no_grad()
    def encode(self, images: Sequence[np.ndarray | Image.Image]) -> np.ndarray:
        """Stored features of ``N`` RGB images (``(H, W, 3)`` uint8 arrays of any size, or PIL images).

        Returns:
            ``(N, *stored_shape)``: pixels uint8 ``(3, R, R)``; sd_vae posterior moments ``(2C, R/f, R/f)``;
            clip_vision tokens ``(T, D)`` of hidden layer ``clip_layer``, CLS first (``task.image.dtype``).

        Raises:
            ValueError: a feature overflows the float16 storage dtype (use ``task.image.dtype=float32``).
        """
        if len(images) == 0:
            return np.zeros((0, *self.stored_shape), dtype=self.stored_dtype)
        crops = self.crop(images)
        kind = self.config.kind
        if kind == "pixels":
            return np.ascontiguousarray(crops.transpose(0, 3, 1, 2))
        if kind == "sd_vae":
            return self._store(self.codec.encode_moments(to_model_input(crops)), "SD-VAE moments")
        model = self.clip
        x = (to_model_input(crops).to(self.device) + 1.0) / 2.0  # [0, 1], then CLIP's normalisation
        out = model(pixel_values=(x - self._clip_mean) / self._clip_std, output_hidden_states=True)
        return self._store(out.hidden_states[self.config.clip_layer], "CLIP tokens")

    def _store(self, x: Tensor, what: str) -> np.ndarray:
        a = x.detach().float().cpu().numpy().astype(self.stored_dtype)
        if not np.isfinite(a).all():
            raise ValueError(f"{what} overflow the storage dtype {self.stored_dtype} (max |x| = "
                             f"{float(x.abs().max()):.4g}); set task.image.dtype=float32")
        return a

    # ------------------------------------------------------------------ stored features → source
    def to_source(self, stored: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        """Stored features ``(B, *stored_shape)`` → the model's source (float32, on ``stored``'s device).

        pixels → ``(B, 3, R, R)`` in [-1, 1]; sd_vae → ``(B, C, R/f, R/f)``: the posterior mean ×
        ``vae.scale_factor`` (``latent=mean``) or a draw from the moments (``latent=sample``, with ``generator``);
        clip_vision → ``(B, T, D)`` as stored.
        """
        kind = self.config.kind
        if kind == "pixels":
            return stored.float() / 127.5 - 1.0
        if kind == "clip_vision":
            return stored.float()
        if self.config.latent == "sample":
            return sample_latent(stored, self.config.vae.scale_factor, generator)
        return stored.float().chunk(2, dim=1)[0] * self.config.vae.scale_factor


def config_meta(config: ImageFeatureConfig) -> dict[str, Any]:
    """The settings of ``task.image`` that the stored features depend on (the key under ``"image"`` in the shard
    meta; a resume, or training, with different values is refused). Sampling-time settings (``latent``,
    ``vae.scale_factor``) are not among them."""
    meta: dict[str, Any] = {"kind": config.kind, "resolution": config.resolution}
    if config.kind == "sd_vae":
        v = config.vae
        meta |= {"vae": v.name_or_path, "vae_subfolder": v.subfolder, "vae_dtype": v.dtype,
                 "storage_dtype": config.dtype}
    elif config.kind == "clip_vision":
        meta |= {"clip_vision": config.clip_vision, "clip_layer": config.clip_layer, "storage_dtype": config.dtype}
    return meta


class CocoImageFeatures(Dataset):
    """The extracted image features of some Karpathy splits (rows in extraction order).

    Items are ``{"image": stored feature (uint8 / float16 / float32 tensor), "cocoid": int}``; turn stored features
    into the source with :meth:`ImageEncoder.to_source`.

    Args:
        features_dir: directory written by ``crossflow extract`` (``task.coco.features_dir``).
        splits: Karpathy splits to keep (default: every extracted row).

    Raises:
        FileNotFoundError: ``features_dir`` is unset, missing or holds no shards (naming it).
        ValueError: it holds other features, or no row of ``splits``.
    """

    def __init__(self, features_dir: Optional[str | os.PathLike], splits: Optional[Sequence[str]] = None) -> None:
        hint = "run `crossflow extract CONFIG` (it writes task.coco.features_dir) first"
        if not features_dir:
            raise FileNotFoundError(f"task.coco.features_dir is not set; {hint}")
        self.root = features_dir
        try:
            self.shards = FeatureShards(features_dir)
        except FileNotFoundError:
            raise FileNotFoundError(f"task.coco.features_dir={str(features_dir)!r} holds no extracted image features "
                                    f"(no shard-*.json); {hint}") from None
        if self.shards.meta.get("format") != FEATURES_FORMAT:
            raise ValueError(f"task.coco.features_dir={str(features_dir)!r} holds features of format "
                             f"{self.shards.meta.get('format')!r}, not captioning image features ({FEATURES_FORMAT}); "
                             f"{hint}")
        self.shards.select(["image"])
        records = self.shards.records
        row_splits = np.array([r["split"] for r in records])
        keep = np.ones(len(records), bool) if splits is None else np.isin(row_splits, list(splits))
        if not keep.any():
            stored = {s: int((row_splits == s).sum()) for s in sorted(set(row_splits.tolist()))}
            raise ValueError(f"task.coco.features_dir={str(features_dir)!r} holds no image of split(s) "
                             f"{', '.join(splits or [])} (it holds {stored}); extract them with `crossflow extract "
                             f"CONFIG --splits {','.join(splits or [])}`")
        self.rows = np.nonzero(keep)[0]
        self.cocoids = np.array([int(records[i]["cocoid"]) for i in self.rows], dtype=np.int64)
        self.splits = row_splits[self.rows]
        index = Path(features_dir) / INDEX
        if index.is_file() and not json.loads(index.read_text(encoding="utf-8")).get("complete", True):
            log.warning("%s: the extraction is not complete (see its index.json); re-run `crossflow extract` to "
                        "finish it", features_dir)

    @property
    def meta(self) -> dict[str, Any]:
        """The stored image settings (``kind``, ``resolution``, model, ``shape``, ``dtype`` ...)."""
        return dict(self.shards.meta["image"])

    def check(self, config: ImageFeatureConfig) -> None:
        """Raise ``ConfigError`` naming the first ``task.image`` setting the features were not extracted with."""
        for key, want in config_meta(config).items():
            if self.meta.get(key) != want:
                raise ConfigError(f"task.image: the config gives {key}={want!r} but the features in {self.root} "
                                  f"were extracted with {key}={self.meta.get(key)!r}; re-extract or match the config")

    def __len__(self) -> int:
        return len(self.rows)

    def features(self, indices: Sequence[int] | np.ndarray) -> Tensor:
        """Stored features ``(len(indices), *shape)`` of rows ``indices`` of this selection (stored dtype)."""
        return torch.from_numpy(self.shards.gather("image", self.rows[np.asarray(indices, dtype=np.int64)]))

    def __getitems__(self, indices: list[int]) -> dict[str, Tensor]:
        return {"image": self.features(indices), "cocoid": torch.from_numpy(self.cocoids[np.asarray(indices)])}

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {k: v[0] for k, v in self.__getitems__([index]).items()}
