"""The trained part of CrossFlow-T2I captioning: a text decoder on a frozen T2I model's text latents.

* :class:`FrozenModel`: a model held outside the state dict (not saved, trained or averaged; copies share it).
* :class:`InversionCaptioner`: the decoder (:class:`~crossflow.codecs.text_vae.TokenDecoder`) trained with token
  cross-entropy; ``generate`` inverts the frozen T2I CrossFlow (image z1 at t=1 → z0 at t=0).
* :class:`CaptionLatents`: the training data, captions with the T2I Text VE posterior of each.
* :class:`InversionCodec`: z0 → words through the decoder of the model its task is bound to.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from crossflow.codecs.text_vae import TokenDecoder
from crossflow.outputs import TextOutput
from crossflow.schema import SampleConfig
from crossflow.train.protocol import TrainOutput
from tasks.captioning.vocab import CaptionTokenizer


class FrozenModel:
    """A frozen model loaded on first use and kept out of the state dict, the optimizer and the EMA average.

    A deep copy (the trainer's EMA copy) shares the same model instead of copying it.

    Args:
        load: returns the model (called once, on the first :meth:`get`).
    """

    def __init__(self, load: Callable[[], nn.Module]) -> None:
        self._load = load
        self._model: Optional[nn.Module] = None

    def get(self, device: torch.device | str) -> nn.Module:
        """The model, frozen, in eval mode, on ``device``."""
        if self._model is None:
            self._model = self._load().requires_grad_(False).eval()
        return self._model.to(device)

    def __deepcopy__(self, memo: dict) -> "FrozenModel":
        return self


class InversionCaptioner(nn.Module):
    """Caption decoder over a frozen text-to-image CrossFlow's text latent space.

    Training (:meth:`forward`): token cross-entropy of ``decoder(latent)`` against the caption's ids, where the
    latent is the T2I model's Text VE posterior of the caption (mean or draw, made by :class:`CaptionLatents`).
    Generation (:meth:`generate`): the T2I ODE run backwards from the image to z0; the codec decodes z0.

    Args:
        decoder: latent ``(B, C, H, W)`` → logits ``(B, L, V)``.
        t2i: the frozen T2I CrossFlow (kept outside this module's state dict).
    """

    def __init__(self, decoder: TokenDecoder, t2i: FrozenModel) -> None:
        super().__init__()
        self.decoder = decoder
        self.t2i = t2i  # a plain attribute: not a sub-module, so not saved, trained or moved with this module

    def compile_modules(self) -> list[nn.Module]:
        """``train.compile`` compiles the decoder."""
        return [self.decoder]

    def forward(self, batch: dict[str, Tensor], generator: Optional[torch.Generator] = None) -> TrainOutput:
        """Token cross-entropy (mean over the masked positions: words and end-of-text).

        Args:
            batch: ``latent`` ``(B, C, H, W)``, ``ids`` ``(B, L)`` int64, ``mask`` ``(B, L)`` bool.
            generator: unused (the latent draws are made by the dataset's ``prepare``).

        Returns:
            :class:`TrainOutput` with logs ``loss`` and ``token_accuracy``.
        """
        ids, weights = batch["ids"], batch["mask"].float()
        logits = self.decoder(batch["latent"])
        ce = F.cross_entropy(logits.float().flatten(0, 1), ids.flatten(), reduction="none").view_as(ids)
        denominator = weights.sum().clamp(min=1.0)
        loss = (ce * weights).sum() / denominator
        accuracy = ((logits.argmax(-1) == ids).float() * weights).sum() / denominator
        return TrainOutput(loss=loss, logs={"loss": loss.detach(), "token_accuracy": accuracy.detach()})

    @torch.no_grad()
    def decode(self, z: Tensor) -> Tensor:
        """Latent ``(B, C, H, W)`` → most likely token ids ``(B, L)`` (every position at once)."""
        return self.decoder(z.float()).argmax(dim=-1)

    @torch.no_grad()
    def generate(self, source: Tensor, source_mask: Optional[Tensor] = None, *,
                 options: Optional[SampleConfig] = None, noise: Optional[Tensor] = None, mode: str = "guided",
                 callback: Optional[Callable] = None) -> Tensor:
        """Images ``(B, 3, H, W)`` in [-1, 1] (the T2I model's target z1) → z0 ``(B, C, H, W)`` by
        :meth:`CrossFlow.invert <crossflow.model.CrossFlow.invert>` (``options``: solver, steps, guidance).

        ``source_mask`` and ``noise`` are unused: the inversion is deterministic. ``callback`` gets
        ``{"step": -1, "t": 1.0, "x": z1}`` first, then the solver's per-step reports.
        """
        s = options or SampleConfig()
        t2i = self.t2i.get(source.device)
        if callback is not None:
            callback({"step": -1, "t": 1.0, "x": source, "method": s.solver})
        return t2i.invert(source.float(), s, mode=mode, callback=callback)


class CaptionLatents(Dataset):
    """Batches of caption ``ids`` ``(B, L)``, ``mask`` ``(B, L)`` and the T2I Text VE posterior of each caption
    (``latent_mean``, ``latent_logvar``, ``(B, C, H, W)``); :meth:`prepare` makes the decoder's input on the
    device: the posterior mean, or a draw ``mean + temperature·std·ε`` (fresh every step).

    Args:
        ids, mask: tokenised captions, ``(N, L)``.
        means, logvars: their posteriors, ``(N, C, H, W)``.
        latent: ``"mean"`` or ``"sample"``.
        temperature: scale of the posterior noise for ``"sample"``.
    """

    def __init__(self, ids: Tensor, mask: Tensor, means: Tensor, logvars: Tensor, latent: str = "sample",
                 temperature: float = 1.0) -> None:
        if latent not in ("mean", "sample"):
            raise ValueError(f"unknown latent {latent!r}; valid: 'mean', 'sample'")
        self.ids, self.mask, self.means, self.logvars = ids, mask, means, logvars
        self.latent, self.temperature = latent, temperature

    def __len__(self) -> int:
        return self.ids.shape[0]

    def __getitems__(self, indices: list[int]) -> dict[str, Tensor]:
        idx = torch.as_tensor(indices)
        return {"ids": self.ids[idx], "mask": self.mask[idx], "latent_mean": self.means[idx],
                "latent_logvar": self.logvars[idx]}

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {k: v[0] for k, v in self.__getitems__([index]).items()}

    def prepare(self, batch: dict[str, Any], device: torch.device) -> dict[str, Tensor]:
        """``latent`` (mean or draw), ``ids`` and ``mask`` on ``device``."""
        latent = batch["latent_mean"].to(device, non_blocking=True)
        if self.latent == "sample" and self.temperature > 0:
            std = torch.exp(0.5 * batch["latent_logvar"].to(device, non_blocking=True))
            latent = latent + self.temperature * std * torch.randn_like(latent)
        return {"latent": latent, "ids": batch["ids"].to(device, non_blocking=True),
                "mask": batch["mask"].to(device, non_blocking=True)}


class InversionCodec:
    """z0 ``(B, C, H, W)`` → words, through the decoder of the model returned by ``model()`` (the model the task
    built, loaded, or was bound to last) and the tokenizer."""

    def __init__(self, model: Callable[[], InversionCaptioner], tokenizer: CaptionTokenizer) -> None:
        self.model, self.tokenizer = model, tokenizer

    @torch.no_grad()
    def decode(self, latents: Tensor) -> TextOutput:
        model = self.model()
        device = next(model.decoder.parameters()).device
        ids = model.decode(latents.to(device)).cpu()
        return TextOutput(texts=self.tokenizer.decode(ids), token_ids=ids)
