"""Configurations of the captioning adapter and of its text-VAE pre-stage."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from crossflow.codecs.text_vae import TextVAEConfig
from crossflow.schema import _f
from tasks.t2i.config import LanguageModelConfig, VAEConfig
from tasks.toyworld.config import ToyWorldSplitConfig

KARPATHY_SPLITS = ("train", "restval", "val", "test")


@dataclass
class CocoCaptionsConfig:
    """COCO captions in Karpathy's split (``dataset_coco.json`` + the COCO image folders)."""

    dataset_json: Optional[str] = _f(None, "Karpathy's dataset_coco.json (from caption_datasets.zip)")
    image_root: Optional[str] = _f(None, "COCO image root: images are <image_root>/<filepath>/<filename> "
                                         "(train2014/, val2014/)")
    train_splits: list[str] = _f(["train", "restval"], "Karpathy splits trained on (standard: train + restval, "
                                                       "113,287 images)")
    eval_split: Literal["train", "restval", "val", "test"] = _f("test", "split `crossflow eval` captions and scores "
                                                                        "(`--split` overrides)")
    features_dir: Optional[str] = _f(None, "image features of every split, written by `crossflow extract CONFIG`")
    max_skipped_fraction: float = _f(0.01, "extraction stops when more than this fraction of the images is missing "
                                           "or unreadable (they are skipped, counted and listed below that)")

    def __post_init__(self) -> None:
        for split in [*self.train_splits, self.eval_split]:
            if split not in KARPATHY_SPLITS:
                raise ValueError(f"unknown Karpathy split {split!r}; valid: {', '.join(KARPATHY_SPLITS)}")


@dataclass
class TextSideConfig:
    """How captions become token ids for the text VAE (and ids become captions again)."""

    kind: Literal["toy", "words", "lm"] = _f(
        "toy", "toy: the closed vocabulary of the toy templates; words: a word vocabulary built from the training "
               "split's Karpathy tokens (min_count, max_length); lm: a transformers language model's tokenizer ids "
               "and token states (language_model), the decoder predicting that model's ids")
    min_count: int = _f(5, "words: keep words seen more than min_count times in the training split (the common "
                           "convention: > 5), the rest become <unk>")
    vocabulary: list[str] = _f([], "words: the vocabulary; filled from the training split when empty and saved with "
                                   "the run, so a trained text VAE decodes without the dataset")
    language_model: LanguageModelConfig = field(default_factory=LanguageModelConfig)


@dataclass
class ImageFeatureConfig:
    """How a COCO image becomes CrossFlow's source (extracted once by `crossflow extract`)."""

    kind: Literal["pixels", "sd_vae", "clip_vision"] = _f(
        "pixels", "pixels: the RGB image (central square crop, resized) through the image VE; sd_vae: SD-VAE "
                  "latents (diffusers AutoencoderKL, vae) through the image VE; clip_vision: CLIPVisionModel patch "
                  "tokens (transformers, clip_vision) through the token VE")
    resolution: int = _f(32, "side of the central square crop fed to the encoder (sd_vae: 256 gives 32x32 "
                             "latents; clip_vision: the model's image_size)")
    vae: VAEConfig = field(default_factory=VAEConfig)
    clip_vision: str = _f("openai/clip-vit-large-patch14", "clip_vision: HF hub name or local directory of a CLIP "
                                                           "(vision) checkpoint")
    clip_layer: int = _f(-1, "clip_vision: hidden layer whose tokens are kept (-1: last; -2: penultimate)")
    local_files_only: bool = _f(True, "clip_vision: never touch the network when loading")
    latent: Literal["mean", "sample"] = _f("mean", "sd_vae: the source is the posterior mean, or a fresh draw "
                                                   "from the stored moments every step")
    dtype: Literal["float16", "float32"] = _f("float16", "storage dtype of extracted sd_vae / clip_vision features "
                                                         "(pixels are stored as uint8)")


@dataclass
class TextVAEStageConfig:
    """Stage 1: train the text VAE on the toy captions (``crossflow train configs/captioning/toy_text_vae.yaml``).

    The ``model`` and ``flow`` sections of such a config are unused; ``train`` drives the trainer as usual.
    """

    name: str = _f("captioning.text_vae_stage", "task adapter (the text-VAE pre-stage of captioning)")
    dataset: Literal["toyworld", "coco"] = _f("toyworld", "captions of: toyworld (built in) or coco (Karpathy's "
                                                          "dataset_coco.json, task.coco)")
    toyworld: ToyWorldSplitConfig = field(default_factory=ToyWorldSplitConfig)
    coco: CocoCaptionsConfig = field(default_factory=CocoCaptionsConfig)
    text: TextSideConfig = field(default_factory=TextSideConfig)
    max_length: int = _f(16, "tokens per caption, end-of-text included (longer captions are truncated, except "
                             "on the toy vocabulary where they are refused)")
    text_vae: TextVAEConfig = field(default_factory=TextVAEConfig)


@dataclass
class CaptioningConfig:
    """Stage 2: CrossFlow from the image (image VE) to the frozen text VAE's latent."""

    name: str = _f("captioning", "task adapter")
    dataset: Literal["toyworld", "coco"] = _f("toyworld", "images and captions of: toyworld (built in) or coco "
                                                          "(Karpathy split, task.coco; stage 1 gets the same)")
    toyworld: ToyWorldSplitConfig = field(default_factory=ToyWorldSplitConfig)
    coco: CocoCaptionsConfig = field(default_factory=CocoCaptionsConfig)
    image: ImageFeatureConfig = field(default_factory=ImageFeatureConfig)
    text_vae_dir: str = _f("runs/captioning_text_vae", "run or export directory of the trained text VAE (relative "
                                                       "paths are relative to the working directory)")
    text_vae_config: Optional[str] = _f("configs/captioning/toy_text_vae.yaml",
                                        "config that trains the text VAE into text_vae_dir first when that holds "
                                        "no trained text VAE; null: require it to exist")
    text_vae_overrides: list[str] = _f([], "dotted key=value overrides applied to text_vae_config when training it "
                                           "here (e.g. train.max_steps=100)")
    target: Literal["sample", "mean"] = _f("mean", "flow target: the text posterior mean, or a fresh draw from the "
                                                   "text posterior every step (as the official code redraws image-VAE "
                                                   "latents; learned slower on the toy captions)")
    references: Literal["all_templates", "own"] = _f(
        "all_templates", "reference captions of a held-out scene: its caption under every toy template (several "
                         "references per image, as COCO's five) or only the caption it was drawn with")
    picture_items: int = _f(24, "held-out images in the evaluation picture (captions written under them)")
    preview_items: int = _f(8, "held-out images in the periodic preview picture")
