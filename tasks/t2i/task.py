"""Text-to-image task adapter: LM token states → (VE) → z0 → flow → image (pixel space on the toy world)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Optional

import torch
from torch import Tensor

from crossflow.codecs import IdentityCodec
from crossflow.language import resolve_model_path
from crossflow.language.cache import embed_prompts
from crossflow.language.hf import TextEmbedder, validate_prompts
from crossflow.model import CrossFlow
from crossflow.task import Task
from crossflow.utils.images import make_grid, save_gif, save_grid, save_png, to_uint8
from tasks.t2i import features as real_data
from tasks.t2i.config import TextToImageConfig
from tasks.t2i.data import CaptionedImages
from tasks.t2i.evaluation import evaluate_prompt_file, score_generated
from tasks.t2i.tools import PromptLatentTools
from tasks.toyworld import checker
from tasks.toyworld.dataset import make_split

log = logging.getLogger(__name__)


class TextToImageTask(PromptLatentTools, Task):
    """Text → image. The source is the frozen LM's token states; the target is the image itself."""

    config_class = TextToImageConfig

    def __init__(self, config, *, cache_dir: Optional[Path] = None) -> None:
        super().__init__(config, cache_dir=cache_dir)
        self.tc: TextToImageConfig = config.task
        if self.tc.cache_dir is not None:
            self.cache_dir = Path(self.tc.cache_dir)
        self.real = self.tc.dataset != "toyworld"  # real images: SD-VAE latents from extracted features
        self.codec = real_data.build_codec(self.tc) if self.real else IdentityCodec()
        self._embedder: Optional[TextEmbedder] = None
        self._split = None
        self._dataset = None

    # -------------------------------------------------------------- shapes
    @property
    def latent_shape(self) -> tuple[int, int, int]:
        if self.real:
            return real_data.latent_shape(self.tc)
        r = self.tc.toyworld.resolution
        return (3, r, r)

    @property
    def source_dim(self) -> int:
        if self._embedder is None and (self.real or self.tc.language_model.dim is not None):
            return real_data.language_model_dim(self.tc)  # without loading the LM
        return self.embedder.dim

    @property
    def max_tokens(self) -> int:
        return self.tc.language_model.max_length

    # -------------------------------------------------------------- text
    @property
    def embedder(self) -> TextEmbedder:
        if self._embedder is None:
            lm = self.tc.language_model
            device = lm.device or ("cuda" if torch.cuda.is_available() else "cpu")
            self._embedder = TextEmbedder(resolve_model_path(lm.name_or_path), max_length=lm.max_length,
                                          local_files_only=lm.local_files_only, dtype=lm.dtype,
                                          output_scale=lm.output_scale, kind=lm.kind,
                                          model_attention_mask=lm.model_attention_mask, device=device)
            if lm.dim is not None and lm.dim != self._embedder.dim:
                raise ValueError(f"task.language_model.dim={lm.dim}, but {lm.name_or_path} gives "
                                 f"{self._embedder.dim}-wide token states")
        return self._embedder

    def encode_prompts(self, prompts: list[str], device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
        """Prompts → ``(B, L, D)`` token states and ``(B, L)`` mask (cached on disk)."""
        prompts = validate_prompts(prompts)
        emb, mask = embed_prompts(self.embedder, prompts, cache_dir=self.cache_dir / "embeddings",
                                  batch_size=self.tc.language_model.batch_size)
        return emb.float().to(device), mask.bool().to(device)

    def decode(self, latents: Tensor) -> Tensor:
        """Generated latents → images in [-1, 1], ``(B, 3, H, W)``."""
        if self.real:
            real_data.check_codec(self.codec, self.tc)
        return self.codec.decode(latents.float())

    def prepare_batch(self, batch: dict[str, Any], device: torch.device) -> dict[str, Tensor]:
        """Move a batch to ``device``; real data draws a fresh VAE latent from the stored moments."""
        if "moments" in batch:
            return real_data.prepare_feature_batch(batch, device, self.tc.vae.scale_factor)
        return super().prepare_batch(batch, device)

    @classmethod
    def extract_features(cls, argv: list[str]) -> dict:
        """``crossflow extract``: LM token states + VAE moments into memory-mapped shards."""
        from tasks.t2i.extract import main

        return main(argv)

    # -------------------------------------------------------------- data
    def split(self):
        if self._split is None:
            d = self.tc.toyworld
            self._split = make_split(d.num_train, d.num_test, d.seed)
        return self._split

    def train_dataset(self) -> CaptionedImages:
        if self.real:
            self._dataset = real_data.open_dataset(self.tc, source_dim=self.source_dim, max_tokens=self.max_tokens)
            return self._dataset
        train, _ = self.split()
        captions = [ex.caption for ex in train]
        unique = sorted(set(captions))
        row = {c: i for i, c in enumerate(unique)}
        emb, mask = self.encode_prompts(unique)
        index = torch.tensor([row[c] for c in captions])
        log.info("toy world: %d training scenes, %d unique captions", len(train), len(unique))
        return CaptionedImages(train, emb.half(), mask, index, self.tc.toyworld.resolution)

    # -------------------------------------------------------------- generation
    @torch.no_grad()
    def generate_images(self, model: CrossFlow, prompts: list[str], *, mode: str = "guided", seed: int = 0,
                        **overrides: Any) -> Tensor:
        """Prompts → images in [-1, 1] ``(B, 3, H, W)``, batched by ``sample.batch_size``."""
        device = next(model.parameters()).device
        model.eval()
        gen = torch.Generator(device=device).manual_seed(seed)
        sample = self.config.sample
        out = []
        for i in range(0, len(prompts), sample.batch_size):
            src, mask = self.encode_prompts(prompts[i:i + sample.batch_size], device)
            out.append(self.decode(model.generate(src, mask, sample=sample, mode=mode, generator=gen, **overrides)).cpu())
        return torch.cat(out)

    @torch.no_grad()
    def write_trajectory_gif(self, model: CrossFlow, prompts: list[str], path: Path, *, frames: int = 12,
                             **overrides: Any) -> Path:
        """Animate the ODE from z0 (t=0) to the image (t=1) for ``prompts`` as a grid GIF."""
        device = next(model.parameters()).device
        s = self.config.sample
        src, mask = self.encode_prompts(prompts, device)
        states: list[Tensor] = []  # the start (z0, or noise for the cross-attention baseline), then every step
        model.generate(src, mask, sample=s, generator=torch.Generator(device=device).manual_seed(s.seed),
                       callback=lambda info: states.append(info["x"]), **overrides)
        keep = sorted({round(i * (len(states) - 1) / (frames - 1)) for i in range(frames)})
        grids = [make_grid(to_uint8(self.decode(states[i])), upscale=4) for i in keep]
        return save_gif(grids + [grids[-1]] * 4, path, duration_ms=150)

    def preview(self, model: CrossFlow, path: Path) -> None:
        if self.real:  # the first prompts of the training features
            prompts = real_data.preview_prompts(self._dataset, self.tc.preview_prompts)
            if prompts:
                save_grid(to_uint8(self.generate_images(model, prompts, steps=min(self.config.sample.steps, 25))), path)
            return
        _, test = self.split()
        prompts = [ex.caption for ex in test[: self.tc.preview_prompts]]
        images = self.generate_images(model, prompts, steps=min(self.config.sample.steps, 25))
        save_grid(to_uint8(images), path, upscale=4)

    # -------------------------------------------------------------- evaluation
    def evaluate(self, model: CrossFlow, out_dir: Path, *, num: Optional[int] = None, **overrides: Any) -> dict:
        """Sample the held-out prompts, score them with the analytic checker, write pictures and metrics.

        Writes ``metrics.json`` (the checker's accuracies at the configured guidance, plus the same
        under ``no_guidance``, ``null_branch`` and ``z0_sample``), ``samples/NNNN.png``,
        ``samples/prompts.jsonl`` and ``grid.png`` under ``out_dir``.
        """
        if self.tc.dataset != "toyworld":  # real data: generate from task.metrics.prompts_file, FID + CLIP
            return evaluate_prompt_file(self, model, Path(out_dir), num=num, **overrides)
        out_dir = Path(out_dir)
        _, test = self.split()
        test = test[:num] if num else test
        prompts = [ex.caption for ex in test]
        attrs = [ex.attributes for ex in test]
        s = self.config.sample
        settings = {"solver": overrides.get("solver", s.solver), "steps": overrides.get("steps", s.steps),
                    "guidance": overrides.get("guidance", s.guidance), "z0": overrides.get("z0", s.z0),
                    "temperature": overrides.get("temperature", s.temperature), "seed": overrides.pop("seed", s.seed),
                    "num_prompts": len(prompts)}
        base = {k: settings[k] for k in ("solver", "steps", "guidance", "z0", "temperature")}
        # The other start (mean vs sample) is reported under its own key; the default start is not rerun.
        other_z0 = "sample" if base["z0"] == "mean" else "mean"
        variants = {
            "default": (base, "guided"),
            "no_guidance": (base | {"guidance": 1.0}, "guided"),
            "null_branch": (base, "null"),
            f"z0_{other_z0}": (base | {"z0": other_z0}, "guided"),
        }
        metrics: dict[str, Any] = {}
        start = time.time()
        for name, (opts, mode) in variants.items():
            images = self.generate_images(model, prompts, mode=mode, seed=settings["seed"], **opts)
            uint8 = to_uint8(images)
            scores = checker.score(uint8, attrs)
            described = scores | {k: v for k, v in opts.items() if k in ("guidance", "z0", "temperature")}
            if name == "default":
                metrics |= scores
                metrics[f"z0_{base['z0']}"] = described
                self._write_samples(out_dir, uint8, test)
                metrics |= score_generated(self.tc.metrics, images, prompts, next(model.parameters()).device)
            else:
                metrics[name] = described
            log.info("%s: %s", name, {k: round(v, 3) for k, v in scores.items() if isinstance(v, float)})
        self.write_trajectory_gif(model, prompts[:16], out_dir / "trajectory.gif", **base)
        metrics["settings"] = settings
        metrics["seconds"] = round(time.time() - start, 2)
        (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
        return metrics

    @staticmethod
    def _write_samples(out_dir: Path, images, examples) -> None:
        samples = out_dir / "samples"
        samples.mkdir(parents=True, exist_ok=True)
        with open(samples / "prompts.jsonl", "w", encoding="utf-8") as fh:
            for i, (img, ex) in enumerate(zip(images, examples)):
                name = f"{i:04d}.png"
                save_png(img, samples / name)
                fh.write(json.dumps({"file": name, "prompt": ex.caption, **ex.attributes}) + "\n")
        save_grid(images[:64], out_dir / "grid.png", nrow=8, upscale=4)
