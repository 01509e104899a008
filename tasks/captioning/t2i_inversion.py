"""CrossFlow-T2I captioning (paper Table 4, second row): caption an image by running a trained text-to-image
CrossFlow backwards, then decoding the text latent it arrives at.

Image z1 (t=1) → ``CrossFlow.invert`` of the frozen T2I model → z0 (t=0), a point of that model's text-latent
space (the space of its Text VE posterior) → a text decoder → words. The T2I model stays frozen, outside this
run's weights, in ``task.t2i_dir``; what this task trains is the decoder alone
(:class:`~tasks.captioning.inversion_decoder.InversionCaptioner`): token cross-entropy from the T2I Text VE's
posterior of each training caption (a draw, or the mean: ``task.latent``; the captions of ``task.templates``) to
the caption's token ids, through the one trainer. The experiment's ``sample`` section holds the inversion's
options (solver, steps, guidance).

Toy world only: the T2I model must be a toy-world CrossFlow, whose target is the image itself (pixel space).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import torch
from torch import Tensor

from crossflow.codecs.text_vae import TokenDecoder, token_accuracy
from crossflow.config import ConfigError, load_yaml
from crossflow.encoders import DiagonalGaussian
from crossflow.outputs import TextOutput
from crossflow.pipeline import Pipeline
from crossflow.schema import ExperimentConfig, SampleConfig, _f
from crossflow.specs import ImageSpec
from tasks.captioning.inversion_decoder import CaptionLatents, FrozenModel, InversionCaptioner, InversionCodec
from tasks.captioning.metrics import attribute_accuracy
from tasks.captioning.task import toy_caption_picture, toy_caption_scores, write_toy_captions
from tasks.captioning.vocab import CaptionTokenizer
from tasks.image_source import HeldOutEvaluator, ImageSourceTask
from tasks.t2i.task import TextToImageTask
from tasks.toyworld.config import ToyWorldSplitConfig
from tasks.toyworld.dataset import Example, make_split
from tasks.toyworld.pairs import RenderedSplit, render_split
from tasks.toyworld.scenes import TEMPLATES, caption, parse_caption

log = logging.getLogger(__name__)

T2I_TRAIN_HINT = "train one with `crossflow train configs/t2i/toy.yaml --run-dir DIR`"


@dataclass
class CaptionDecoderConfig:
    """Sizes of the caption decoder (:class:`~crossflow.codecs.text_vae.TokenDecoder`: the latent read as a few
    memory tokens, learned position queries, pre-LN transformer blocks, every token at once)."""

    width: int = _f(128, "transformer width")
    depth: int = _f(2, "transformer blocks")
    num_heads: int = _f(4, "attention heads")
    memory_tokens: int = _f(4, "tokens the latent is read as")
    dropout: float = _f(0.0, "dropout in the blocks")

    def __post_init__(self) -> None:
        for name in ("width", "depth", "num_heads", "memory_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


@dataclass
class T2IInversionConfig:
    """CrossFlow-T2I captioning: a frozen toy T2I model inverted, a caption decoder trained on its text latents."""

    name: str = _f("captioning.t2i_inversion", "task adapter (captioning by inverting a text-to-image model)")
    t2i_dir: str = _f("runs/t2i_toy", "run or export directory of the trained toy text-to-image CrossFlow (relative "
                                      "paths are relative to the working directory); frozen, never written")
    t2i_config: Optional[str] = _f("configs/t2i/toy.yaml", "config the T2I model was trained from, read for the "
                                                           "latent shape while t2i_dir holds none yet (crossflow "
                                                           "params); null: t2i_dir must hold it")
    toyworld: ToyWorldSplitConfig = field(default_factory=ToyWorldSplitConfig)
    max_length: int = _f(16, "tokens per caption, end-of-text included")
    templates: list[int] = _f([], "toy templates (indices into tasks.toyworld.scenes.TEMPLATES) of the captions the "
                                  "decoder learns; []: all. The decoder writes every word at once, so when z0 does not "
                                  "say which template (an inverted image carries none) it mixes templates word by "
                                  "word; one template gives whole sentences")
    decoder: CaptionDecoderConfig = field(default_factory=CaptionDecoderConfig)
    latent: Literal["sample", "mean"] = _f(
        "sample", "decoder input while training: a fresh draw from the T2I Text VE posterior of the caption every "
                  "step (the T2I flow starts from such draws, so inverted images land among them), or its mean")
    temperature: float = _f(1.0, "scale of the posterior noise of latent=sample")
    references: Literal["all_templates", "own"] = _f(
        "all_templates", "reference captions of a held-out scene: its caption under every toy template, or only the "
                         "caption it was drawn with")
    picture_items: int = _f(24, "held-out images in the evaluation picture (captions written under them)")
    preview_items: int = _f(8, "held-out images in the periodic preview picture")

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if bad := [i for i in self.templates if not 0 <= i < len(TEMPLATES)]:
            raise ValueError(f"templates {bad} out of range; valid: 0..{len(TEMPLATES) - 1}")


class T2IInversionEvaluator(HeldOutEvaluator):
    """Held-out toy images inverted through the T2I model and decoded.

    Metrics: the attributes parsed back from the captions and COCO caption metrics (top level); the decoder on the
    true captions' VE means (``decoder_on_true_latents``, captions in a template it learned); the decoder on the
    images themselves, without inversion (``decoder_on_image``, a control); and the training caption whose VE mean
    is nearest (L2) to each inverted z0 (``nearest_caption``: what the inversion carries, whatever the decoder).
    Writes ``metrics.json``, ``captions.jsonl`` and ``captions.png``."""

    picture_name = "captions.png"
    task: "T2IInversionTask"

    def evaluate(self, pipe: Pipeline, out_dir: Path, *, num: Optional[int] = None,
                 options: Optional[SampleConfig] = None) -> dict[str, Any]:
        """As :meth:`HeldOutEvaluator.evaluate`, decoding with ``pipe.model``'s decoder."""
        self.task.bind(pipe.model)
        return super().evaluate(pipe, out_dir, num=num, options=options)

    def preview(self, pipe: Pipeline, path: Path) -> None:
        """As :meth:`HeldOutEvaluator.preview` (the trainer's EMA model decodes)."""
        self.task.bind(pipe.model)
        super().preview(pipe, path)

    def score(self, pipe: Pipeline, output: TextOutput, inputs: Tensor, test: RenderedSplit, n: int,
              options: SampleConfig, out_dir: Path) -> dict[str, Any]:
        examples, generated = test.examples[:n], output.texts
        truth = [ex.attributes for ex in examples]
        metrics = toy_caption_scores(examples, generated, self.task.tc.references)
        model: InversionCaptioner = pipe.model
        device = next(model.decoder.parameters()).device
        captions = [self.task.decoder_caption(ex) for ex in examples]
        ids, mask = self.task.tokenizer.encode(captions)
        pred = model.decode(self.task.caption_posteriors(captions).mean.to(device)).cpu()
        decoded = self.task.tokenizer.decode(pred)
        metrics["decoder_on_true_latents"] = {
            "token_accuracy": token_accuracy(pred, ids, mask),
            "caption_accuracy": sum(d == c for d, c in zip(decoded, captions)) / n,
            **attribute_accuracy([parse_caption(c) for c in decoded], truth)}
        direct = self.task.tokenizer.decode(model.decode(test.images_float(slice(0, n)).to(device)).cpu())
        metrics["decoder_on_image"] = attribute_accuracy([parse_caption(c) for c in direct], truth)
        train, _ = self.task.caption_split()
        bank = sorted({ex.caption for ex in train})
        nearest = torch.cdist(output.latents.flatten(1), self.task.caption_posteriors(bank).mean.flatten(1)).argmin(1)
        metrics["nearest_caption"] = attribute_accuracy([parse_caption(bank[i]) for i in nearest.tolist()], truth)
        metrics["unique_captions"] = len(set(generated))
        metrics["references"] = self.task.tc.references
        metrics["t2i_dir"] = str(self.task.tc.t2i_dir)
        write_toy_captions(out_dir / "captions.jsonl", examples, generated)
        return metrics

    def picture(self, inputs: Tensor, output: TextOutput, test: RenderedSplit, k: int, path: Path) -> Path:
        """Each image (×4) with the caption of its inversion and the true caption written under it."""
        return toy_caption_picture(inputs, output.texts, test.examples, k, path)

    def summary(self, metrics: dict[str, Any]) -> str:
        acc = " / ".join(f"{metrics[f'{a}_accuracy']:.2f}" for a in ("color", "shape", "size", "position"))
        near = metrics["nearest_caption"]["all_accuracy"]
        return (f"inversion captions: colour/shape/size/position {acc}, all {metrics['all_accuracy']:.3f}, "
                f"BLEU-4 {metrics['BLEU-4']:.3f}, CIDEr {metrics['CIDEr']:.3f}; nearest training caption all "
                f"{near:.3f}")


class T2IInversionTask(ImageSourceTask):
    """Image → caption by inverting a frozen toy T2I CrossFlow. Source: the image (the T2I model's z1); target
    latent: z0 of the T2I model (its Text VE's space); trained model: the caption decoder."""

    config_class = T2IInversionConfig

    def __init__(self, config: ExperimentConfig) -> None:
        super().__init__(config)
        self.tc: T2IInversionConfig = config.task
        self.tokenizer = CaptionTokenizer(max_length=self.tc.max_length)
        self._t2i: Optional[tuple[torch.nn.Module, Any]] = None
        self._t2i_cfg: Optional[ExperimentConfig] = None
        self._bound: Optional[InversionCaptioner] = None

    # -------------------------------------------------------------- the frozen T2I model
    def t2i_config(self) -> ExperimentConfig:
        """The T2I model's experiment config: the one saved in ``task.t2i_dir``, else ``task.t2i_config``.

        Raises:
            FileNotFoundError: neither exists.
            ConfigError: it is not a toy-world text-to-image CrossFlow.
        """
        from crossflow.registry import experiment_from_dict, load_experiment

        if self._t2i_cfg is not None:
            return self._t2i_cfg
        run_dir = Path(self.tc.t2i_dir)
        saved = [p for p in (run_dir / "export" / "config.yaml", run_dir / "config.yaml") if p.is_file()]
        if saved:
            where = f"task.t2i_dir={str(run_dir)!r} ({saved[0]})"
            cfg, task_cls = experiment_from_dict(load_yaml(saved[0]))
        elif self.tc.t2i_config is not None:
            where = f"task.t2i_config={self.tc.t2i_config!r}"
            cfg, task_cls = load_experiment(self.tc.t2i_config)
        else:
            raise FileNotFoundError(f"task.t2i_dir={str(run_dir)!r} holds no text-to-image model and task.t2i_config "
                                    f"is null; {T2I_TRAIN_HINT}")
        if not issubclass(task_cls, TextToImageTask):
            raise ConfigError(f"{where} holds a model of task {cfg.task.name!r}, not a text-to-image model (task t2i)")
        if getattr(cfg.model, "kind", "crossflow") != "crossflow":
            raise ConfigError(f"{where} holds a {cfg.model.kind} model: only a CrossFlow T2I model has a text latent "
                              "to invert into (model.kind: crossflow)")
        if cfg.task.dataset != "toyworld":
            raise ConfigError(f"{where} holds a T2I model of task.dataset={cfg.task.dataset!r} (SD-VAE latents); "
                              "captioning by inversion supports toy-world T2I models (pixel space) only")
        self._t2i_cfg = cfg
        return cfg

    def t2i(self) -> tuple[torch.nn.Module, Any]:
        """The frozen T2I CrossFlow of ``task.t2i_dir`` and its task (gives the prompt encoder), loaded once."""
        if self._t2i is None:
            from crossflow.pipeline import load_model
            from crossflow.train.checkpoint import CheckpointError

            self.t2i_config()  # a wrong kind of model is named before its weights are read
            try:
                model, task = load_model(self.tc.t2i_dir)
            except (FileNotFoundError, CheckpointError) as exc:
                raise FileNotFoundError(f"task.t2i_dir={self.tc.t2i_dir!r}: no trained text-to-image model ({exc}); "
                                        f"{T2I_TRAIN_HINT}") from None
            self._t2i = (model.requires_grad_(False).eval(), task)
        return self._t2i

    @torch.no_grad()
    def caption_posteriors(self, captions: list[str], batch_size: int = 256) -> DiagonalGaussian:
        """The T2I Text VE posterior of ``captions`` (LM token states → VE): mean/logvar ``(N, C, H, W)``, CPU."""
        model, task = self.t2i()
        device = next(model.parameters()).device
        encoder = task.source_processor()
        means, logvars = [], []
        for i in range(0, len(captions), batch_size):
            source = encoder(captions[i:i + batch_size], device)
            posterior = model.encode_source(source.values, source.mask)
            means.append(posterior.mean.float().cpu())
            logvars.append(posterior.logvar.float().cpu())
        return DiagonalGaussian(torch.cat(means), torch.cat(logvars))

    # -------------------------------------------------------------- data
    def caption_split(self) -> tuple[list[Example], list[Example]]:
        """``(train, test)`` toy-world scenes of ``task.toyworld`` (use the T2I model's seed and ``num_test`` to hold
        out the same scenes it was evaluated on)."""
        d = self.tc.toyworld
        return make_split(d.num_train, d.num_test, d.seed)

    def decoder_caption(self, example: Example) -> str:
        """The scene's caption in a template the decoder learned: its own caption when ``task.templates`` is empty or
        holds its template, else the caption under the first of ``task.templates``."""
        chosen = self.tc.templates
        return example.caption if not chosen or example.template_index in chosen else caption(example.scene, chosen[0])

    def splits(self) -> tuple[RenderedSplit, RenderedSplit]:
        """``(train, test)`` with only the held-out split rendered: the decoder learns from captions alone, so the
        training split is returned empty (its scenes are in :meth:`caption_split`)."""
        if self._splits is None:
            _, test = self.caption_split()
            self._splits = (render_split([], self.resolution), render_split(test, self.resolution))
        return self._splits

    def train_dataset(self) -> CaptionLatents:
        train, _ = self.caption_split()
        chosen = set(self.tc.templates or range(len(TEMPLATES)))
        unique = sorted({ex.caption for ex in train if ex.template_index in chosen})
        if not unique:
            raise ValueError(f"task.templates={self.tc.templates}: no training caption uses them "
                             f"(task.toyworld.num_train={self.tc.toyworld.num_train})")
        ids, mask = self.tokenizer.encode(unique)
        posterior = self.caption_posteriors(unique)
        log.info("T2I inversion: decoder trained on %d unique captions (templates %s), %s latents of the T2I Text VE "
                 "in %s", len(unique), sorted(chosen), self.tc.latent, self.tc.t2i_dir)
        return CaptionLatents(ids, mask, posterior.mean, posterior.logvar, latent=self.tc.latent,
                              temperature=self.tc.temperature)

    # -------------------------------------------------------------- the contract
    def target_spec(self) -> ImageSpec:
        """z0's shape: the T2I model's latent, read from its config (no weights)."""
        spec = TextToImageTask(self.t2i_config()).target_spec()
        if spec != self.source_spec():
            raise ConfigError(f"task.toyworld.resolution={self.resolution}: the T2I model of task.t2i_dir makes "
                              f"{spec.shape} images; set task.toyworld.resolution={spec.height}")
        return spec

    def build_model(self) -> InversionCaptioner:
        """The caption decoder (weights to train) over the frozen T2I model (loaded when first used)."""
        decoder = TokenDecoder(self.target_spec().shape, len(self.tokenizer), self.tc.max_length,
                               width=self.tc.decoder.width, depth=self.tc.decoder.depth,
                               num_heads=self.tc.decoder.num_heads, memory_tokens=self.tc.decoder.memory_tokens,
                               dropout=self.tc.decoder.dropout)
        return self.bind(InversionCaptioner(decoder, FrozenModel(lambda: self.t2i()[0])))

    def bind(self, model: InversionCaptioner) -> InversionCaptioner:
        """Make ``model`` the one whose decoder the codec uses (done by :meth:`build_model`, so a loaded model is
        bound; the evaluator binds the pipeline's model, e.g. the trainer's EMA copy). Returns ``model``."""
        if not isinstance(model, InversionCaptioner):
            raise TypeError(f"task {self.name!r} decodes with an InversionCaptioner, got {type(model).__name__}")
        self._bound = model
        return model

    def bound_model(self) -> InversionCaptioner:
        if self._bound is None:
            raise ValueError(f"task {self.name!r}: no caption decoder yet (build_model() or bind() it first)")
        return self._bound

    def codec(self) -> InversionCodec:
        return InversionCodec(self.bound_model, self.tokenizer)

    def evaluator(self) -> T2IInversionEvaluator:
        return T2IInversionEvaluator(self)
