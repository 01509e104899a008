"""Text VAE: token ids ⇄ a Gaussian text latent of image-like shape ``(C, H, W)``.

The encoder is the token-sequence VE, over a learned token-embedding table or, with ``input_dim``, over
the token states of a frozen language model (read through a linear in-projection); the decoder is a stack of
transformer blocks that reads the latent as a few memory tokens and predicts every position's token at
once (non-autoregressive), trained with token cross-entropy plus a KL term. It defines the text latent
space that CrossFlow flows into for captioning (the paper trains such a text VE and a separate text
decoder with a reconstruction loss) and turns generated latents back into token ids. Nothing here knows
a vocabulary: ids are ids; a task's tokenizer maps them to words.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from crossflow.encoders.gaussian import DiagonalGaussian
from crossflow.encoders.token_ve import EncoderBlock, TokenSequenceVE
from crossflow.schema import _f
from crossflow.train.protocol import TrainOutput


@dataclass
class TextVAEConfig:
    """Sizes and loss weights of a text VAE."""

    latent_channels: int = _f(4, "channels C of the text latent (C, H, W)")
    latent_size: int = _f(4, "side H = W of the text latent")
    embed_dim: int = _f(128, "width of the learned token embeddings fed to the encoder (unused when the encoder "
                             "reads a language model's token states)")
    width: int = _f(128, "transformer width of encoder and decoder")
    encoder_depth: int = _f(2, "encoder transformer blocks")
    decoder_depth: int = _f(2, "decoder transformer blocks")
    num_heads: int = _f(4, "attention heads")
    num_queries: int = _f(4, "encoder readout tokens")
    memory_tokens: int = _f(4, "tokens the decoder reads the latent as")
    dropout: float = _f(0.0, "dropout in encoder and decoder")
    kl_weight: float = _f(1e-3, "weight of KL(q(z|text) || N(0, I)) (summed over the latent) against the "
                                "token cross-entropy (mean over real tokens)")
    logvar_init: float = _f(-2.0, "initial bias of the encoder's log-variance head")

    def __post_init__(self) -> None:
        for name in ("latent_channels", "latent_size", "embed_dim", "width", "encoder_depth", "decoder_depth",
                     "num_heads", "num_queries", "memory_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return (self.latent_channels, self.latent_size, self.latent_size)


class TokenDecoder(nn.Module):
    """Latent ``(B, C, H, W)`` → token logits ``(B, L, V)``, every position at once.

    The flattened latent is mapped to ``memory_tokens`` tokens; ``L`` learned position queries attend to
    them and to each other through pre-LN transformer blocks; a linear head gives the logits.
    """

    def __init__(self, latent_shape: tuple[int, int, int], vocab_size: int, max_length: int, *, width: int,
                 depth: int, num_heads: int, memory_tokens: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.memory_tokens, self.width = memory_tokens, width
        self.latent_proj = nn.Linear(math.prod(latent_shape), memory_tokens * width)
        self.queries = nn.Parameter(torch.zeros(1, max_length, width))
        self.memory_pos = nn.Parameter(torch.zeros(1, memory_tokens, width))
        self.blocks = nn.ModuleList(EncoderBlock(width, num_heads, 4.0, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab_size)
        nn.init.trunc_normal_(self.queries, std=0.02)
        nn.init.trunc_normal_(self.memory_pos, std=0.02)

    def forward(self, z: Tensor) -> Tensor:
        b = z.shape[0]
        memory = self.latent_proj(z.flatten(1)).view(b, self.memory_tokens, self.width) + self.memory_pos
        x = torch.cat([memory, self.queries.expand(b, -1, -1).to(memory.dtype)], dim=1)
        for block in self.blocks:
            x = block(x, None)
        return self.head(self.norm(x[:, self.memory_tokens:]))


class TextVAE(nn.Module):
    """Token ids (or a language model's token states) ⇄ Gaussian latent; the decoder always predicts ids.

    Args:
        vocab_size: number of token ids (including padding and end-of-text).
        max_length: tokens per sequence ``L`` (padded).
        cfg: sizes and loss weights.
        pad_id: id of padding; padded positions are masked in the encoder and the loss.
        input_dim: ``None``: the encoder embeds ids with a learned table (``embed``, ``cfg.embed_dim`` wide).
            ``D``: the encoder reads ``(B, L, D)`` token states (of a frozen LM) through its linear
            in-projection, and there is no embedding table; batches then carry ``states`` next to ``ids``.
    """

    def __init__(self, vocab_size: int, max_length: int, cfg: TextVAEConfig, *, pad_id: int = 0,
                 input_dim: Optional[int] = None) -> None:
        super().__init__()
        self.vocab_size, self.max_length, self.pad_id = vocab_size, max_length, pad_id
        self.latent_shape = cfg.latent_shape
        self.kl_weight = cfg.kl_weight
        self.input_dim = input_dim
        if input_dim is None:  # the only case with an `embed` entry: older checkpoints keep their keys
            self.embed = nn.Embedding(vocab_size, cfg.embed_dim)
            nn.init.normal_(self.embed.weight, std=1.0)
        elif input_dim < 1:
            raise ValueError(f"input_dim must be >= 1 (the width of the token states), got {input_dim}")
        self.encoder = TokenSequenceVE(input_dim or cfg.embed_dim, cfg.latent_shape, max_tokens=max_length,
                                       width=cfg.width, depth=cfg.encoder_depth, num_heads=cfg.num_heads,
                                       dropout=cfg.dropout, num_queries=cfg.num_queries, logvar_init=cfg.logvar_init)
        self.decoder = TokenDecoder(cfg.latent_shape, vocab_size, max_length, width=cfg.width,
                                    depth=cfg.decoder_depth, num_heads=cfg.num_heads, memory_tokens=cfg.memory_tokens,
                                    dropout=cfg.dropout)

    def _check(self, ids: Tensor) -> None:
        if ids.dim() != 2 or ids.shape[1] != self.max_length:
            raise ValueError(f"expected token ids of shape (B, {self.max_length}), got {tuple(ids.shape)}")

    def encode(self, inputs: Tensor, mask: Optional[Tensor] = None) -> DiagonalGaussian:
        """Posterior ``(B, C, H, W)`` of ``(B, L)`` ids, or of ``(B, L, D)`` token states when ``input_dim`` is
        set; ``mask`` ``(B, L)`` bool, True on real tokens (default: ``ids != pad``; all real for states)."""
        if self.input_dim is None:
            if inputs.dim() != 2 or inputs.is_floating_point():
                raise ValueError(f"this text VAE embeds token ids (B, {self.max_length}); got a "
                                 f"{inputs.dtype} tensor of shape {tuple(inputs.shape)}")
            self._check(inputs)
            return self.encoder(self.embed(inputs), inputs != self.pad_id if mask is None else mask)
        if inputs.dim() != 3 or tuple(inputs.shape[1:]) != (self.max_length, self.input_dim):
            raise ValueError(f"this text VAE reads token states (B, {self.max_length}, {self.input_dim}) "
                             f"(input_dim={self.input_dim}); got shape {tuple(inputs.shape)}")
        return self.encoder(inputs.float(), mask)

    def logits(self, z: Tensor) -> Tensor:
        """Latent ``(B, C, H, W)`` → logits ``(B, L, V)``."""
        return self.decoder(z)

    @torch.no_grad()
    def decode(self, z: Tensor) -> Tensor:
        """Latent ``(B, C, H, W)`` → most likely token ids ``(B, L)``."""
        return self.logits(z.float()).argmax(dim=-1)

    def compile_modules(self) -> list[nn.Module]:
        """``train.compile`` compiles the encoder and the decoder in place."""
        return [self.encoder, self.decoder]

    def forward(self, batch: dict[str, Tensor], generator: Optional[torch.Generator] = None) -> TrainOutput:
        """Reconstruction loss of ``batch["ids"]`` ``(B, L)`` with ``batch["mask"]`` ``(B, L)`` (True on the
        positions to reconstruct: the tokens and the end-of-text token), through a posterior sample. With
        ``input_dim`` the encoder reads ``batch["states"]`` ``(B, L, D)`` (the token states of those ids)."""
        ids, mask = batch["ids"], batch["mask"].bool()
        if self.input_dim is not None and "states" not in batch:
            raise ValueError(f"this text VAE reads token states (input_dim={self.input_dim}): the batch needs "
                             f"'states' (B, L, D) next to 'ids'; it has {sorted(batch)}")
        posterior = self.encode(ids if self.input_dim is None else batch["states"], mask)
        logits = self.logits(posterior.sample(generator=generator))
        ce = F.cross_entropy(logits.float().flatten(0, 1), ids.flatten(), reduction="none").view_as(ids)
        weights = mask.float()
        recon = (ce * weights).sum() / weights.sum().clamp(min=1.0)
        kl = posterior.kl().mean()
        accuracy = ((logits.argmax(-1) == ids).float() * weights).sum() / weights.sum().clamp(min=1.0)
        loss = recon + self.kl_weight * kl
        return TrainOutput(loss=loss, logs={"loss": loss.detach(), "loss_recon": recon.detach(),
                                            "loss_kl": kl.detach(), "token_accuracy": accuracy.detach()})


def token_accuracy(pred: Tensor, ids: Tensor, mask: Tensor) -> float:
    """Fraction of masked positions where ``pred == ids``; all ``(B, L)``."""
    weights = mask.float()
    return float(((pred == ids).float() * weights).sum() / weights.sum().clamp(min=1.0))
