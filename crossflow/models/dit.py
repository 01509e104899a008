"""DiT velocity network: time, the CFG indicator, and optionally cross-attention to a context sequence.

CrossFlow's network is the plain DiT of Peebles & Xie with its class embedding replaced by a two-row
*indicator* embedding (0 = conditional, 1 = null), added to the time embedding and fed through
adaLN-Zero modulation: the source (text) reaches it only through the starting point ``z0``.

The paper's Table 1 baseline ("standard flow matching + cross-attention") is the same network with
``context_dim`` set: every block gets a pre-norm cross-attention to the projected LM tokens between
self-attention and the MLP, and the boolean ``null_indicator`` swaps a sample's tokens for a learned
null sequence (classic CFG) instead of selecting an indicator embedding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from crossflow.nn import Mlp, SelfAttention, TimestepEmbedder, sincos_2d_position_embedding
from crossflow.nn.cross_attention import CrossAttention


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """adaLN modulation: ``x·(1+scale) + shift`` with per-sample shift/scale ``(B, D)``."""
    return x * (1 + scale[:, None]) + shift[:, None]


class DiTBlock(nn.Module):
    """Transformer block with adaLN-Zero conditioning (six modulation vectors per sample).

    With ``cross_attention``, a pre-norm cross-attention to a context sequence sits between the
    self-attention and the MLP (its output projection is zero-initialised by :class:`DiT`).
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, *, cross_attention: bool = False) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = SelfAttention(dim, num_heads, qkv_bias=True)
        if cross_attention:
            self.norm_cross = nn.LayerNorm(dim, eps=1e-6)
            self.cross_attn = CrossAttention(dim, num_heads)
        else:
            self.norm_cross = self.cross_attn = None
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, x: Tensor, c: Tensor, context: Tensor | None = None,
                context_mask: Tensor | None = None) -> Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.adaLN_modulation(c).chunk(6, dim=-1)
        x = x + gate1[:, None] * self.attn(modulate(self.norm1(x), shift1, scale1))
        if self.cross_attn is not None:
            x = x + self.cross_attn(self.norm_cross(x), context, context_mask)
        return x + gate2[:, None] * self.mlp(modulate(self.norm2(x), shift2, scale2))


class FinalLayer(nn.Module):
    """adaLN shift/scale, then a linear map from tokens to patches."""

    def __init__(self, dim: int, patch_size: int, out_channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(dim, patch_size * patch_size * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=-1)
        return self.linear(modulate(self.norm(x), shift, scale))


class ConvOutputHead(nn.Module):
    """Pixel-level output head: 3×3 conv, GELU, 3×3 conv (zero-initialised) on the unpatchified features.

    The transformer emits ``k`` feature channels per pixel instead of the velocity itself; two small
    convolutions at full resolution turn them into the velocity. Neighbouring patches then share their
    border pixels' computation, which removes the patch seams of a large-patch DiT (U-ViT and DiMR end
    in a 3×3 convolution for the same reason).
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, in_channels, 3, padding=1)
        self.conv2 = nn.Conv2d(in_channels, out_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2(nn.functional.gelu(self.conv1(x)))


@dataclass(frozen=True)
class DiTSize:
    depth: int
    hidden_size: int
    num_heads: int


#: Size presets of the DiT paper (patch size is chosen separately).
DIT_SIZES: dict[str, DiTSize] = {
    "S": DiTSize(12, 384, 6),
    "B": DiTSize(12, 768, 12),
    "L": DiTSize(24, 1024, 16),
    "XL": DiTSize(28, 1152, 16),
    "H": DiTSize(36, 1280, 20),
}


class DiT(nn.Module):
    """Velocity network ``v(x_t, t, null_indicator)`` on a ``(C, H, W)`` latent.

    Args:
        latent_shape: ``(C, H, W)`` of ``x_t`` (and of the output velocity).
        patch_size: side of the square patches (H and W must be divisible by it).
        hidden_size, depth, num_heads, mlp_ratio: transformer size.
        indicator: whether the CFG indicator embedding exists (False gives an unconditional DiT, or the
            cross-attention one, whose null branch is the learned null context instead).
        gradient_checkpointing: recompute block activations in backward to save memory.
        indicator_init_std: std of the indicator embedding's initial rows (DiT's label embedding uses
            0.02); a larger value makes the null and conditional branches distinct from the first step.
        cond_channels: channels of a conditioning image concatenated to ``x`` before the patch embedding
            (concatenation-conditioned baselines); 0 for none.
        pos_embed_order: ``"hw"``: the first half of the sin-cos channels encodes the row, the second the
            column; ``"wh"``: the reverse (the official DiT / MAE table).
        store_pos_embed: keep the fixed position table in the state dict (key ``pos_embed``), as the
            official checkpoints do; otherwise it is a non-persistent buffer rebuilt at construction.
        time_scale: factor applied to ``t`` before the sinusoidal embedding (official: 1, raw ``t``).
        conv_head_channels: 0 for DiT's linear patch output; ``k > 0``: the final layer emits ``k``
            channels per pixel and a :class:`ConvOutputHead` maps them to the velocity.
        context_dim: width of a context token sequence (LM token states) that every block cross-attends
            to; None (default) for no cross-attention. Needs ``indicator=False``.
        null_tokens: length of the learned null context that replaces the tokens of null samples
            (``context_dim`` only).
    """

    def __init__(self, latent_shape: tuple[int, int, int], *, patch_size: int = 2, hidden_size: int = 384,
                 depth: int = 12, num_heads: int = 6, mlp_ratio: float = 4.0, indicator: bool = True,
                 gradient_checkpointing: bool = False, indicator_init_std: float = 0.02,
                 cond_channels: int = 0, pos_embed_order: str = "hw", store_pos_embed: bool = False,
                 time_scale: float = 1.0, conv_head_channels: int = 0, context_dim: int | None = None,
                 null_tokens: int = 1) -> None:
        super().__init__()
        channels, height, width = latent_shape
        if height % patch_size or width % patch_size:
            raise ValueError(f"latent size {height}x{width} is not divisible by patch_size={patch_size}")
        if context_dim is not None and indicator:
            raise ValueError("a DiT with context_dim uses null_indicator to select the learned null context; "
                             "build it with indicator=False")
        if null_tokens < 1:
            raise ValueError(f"null_tokens must be >= 1, got {null_tokens}")
        self.latent_shape = tuple(latent_shape)
        self.patch_size = patch_size
        self.grid = (height // patch_size, width // patch_size)
        self.gradient_checkpointing = gradient_checkpointing
        self.indicator_init_std = indicator_init_std
        self.cond_channels = cond_channels
        self.context_dim = context_dim
        self.time_scale = float(time_scale)
        self.x_embedder = nn.Conv2d(channels + cond_channels, hidden_size, kernel_size=patch_size, stride=patch_size)
        if pos_embed_order not in ("hw", "wh"):
            raise ValueError(f"unknown pos_embed_order {pos_embed_order!r}; valid: 'hw', 'wh'")
        pos_embed = sincos_2d_position_embedding(hidden_size, *self.grid)
        if pos_embed_order == "wh":
            pos_embed = torch.cat([pos_embed[:, hidden_size // 2:], pos_embed[:, : hidden_size // 2]], dim=1)
        self.register_buffer("pos_embed", pos_embed[None], persistent=store_pos_embed)
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.y_embedder = nn.Embedding(2, hidden_size) if indicator else None
        if context_dim is not None:
            self.context_embedder = nn.Sequential(nn.Linear(context_dim, hidden_size), nn.GELU(approximate="tanh"),
                                                  nn.Linear(hidden_size, hidden_size))
            self.null_context = nn.Parameter(torch.zeros(null_tokens, hidden_size))
        else:
            self.context_embedder = self.null_context = None
        cross = context_dim is not None
        self.blocks = nn.ModuleList(DiTBlock(hidden_size, num_heads, mlp_ratio, cross_attention=cross)
                                    for _ in range(depth))
        self.final_layer = FinalLayer(hidden_size, patch_size, conv_head_channels or channels)
        self.conv_head = ConvOutputHead(conv_head_channels, channels) if conv_head_channels else None
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """DiT initialisation: xavier linears, zeroed adaLN, cross-attention and output layers (each block
        starts as the identity and the velocity at zero)."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        w = self.x_embedder.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.x_embedder.bias)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        if self.y_embedder is not None:
            nn.init.normal_(self.y_embedder.weight, std=self.indicator_init_std)
        if self.null_context is not None:
            nn.init.normal_(self.null_context, std=0.02)
        for block in self.blocks:
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
            if block.cross_attn is not None:
                nn.init.zeros_(block.cross_attn.proj.weight)
                nn.init.zeros_(block.cross_attn.proj.bias)
        # The output starts at zero: through the final linear layer, or (conv head) through its last
        # convolution, so that the features feeding it still get gradients.
        last = self.final_layer.linear if self.conv_head is None else self.conv_head.conv2
        for layer in (self.final_layer.adaLN_modulation[-1], last):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def embed_context(self, context: Tensor, context_mask: Tensor | None,
                      null_indicator: Tensor | None) -> tuple[Tensor, Tensor]:
        """Project the context tokens and put the learned null sequence in the rows flagged null.

        Args:
            context: ``(B, L, context_dim)`` token states.
            context_mask: ``(B, L)`` bool (True = real token) or None (all real).
            null_indicator: ``(B,)`` bool, True where the context is dropped, or None.

        Returns:
            ``(B, L', hidden)`` tokens and their ``(B, L')`` mask, ``L' = max(L, null_tokens)``.
        """
        b, length, _ = context.shape
        if context.shape[-1] != self.context_dim:
            raise ValueError(f"context width {context.shape[-1]} does not match the network's "
                             f"context_dim={self.context_dim}")
        if context_mask is None:
            context_mask = torch.ones(b, length, dtype=torch.bool, device=context.device)
        tokens = self.context_embedder(context)
        n_null = self.null_context.shape[0]
        if length < n_null:  # pad so that the null sequence fits
            tokens = nn.functional.pad(tokens, (0, 0, 0, n_null - length))
            context_mask = nn.functional.pad(context_mask.bool(), (0, n_null - length), value=False)
            length = n_null
        if null_indicator is not None:
            null_tokens = nn.functional.pad(self.null_context.to(tokens.dtype), (0, 0, 0, length - n_null))
            null_mask = torch.arange(length, device=context.device) < n_null
            tokens = torch.where(null_indicator[:, None, None], null_tokens[None], tokens)
            context_mask = torch.where(null_indicator[:, None], null_mask[None], context_mask.bool())
        return tokens, context_mask.bool()

    def forward(self, x: Tensor, t: Tensor, null_indicator: Tensor | None = None, *, cond: Tensor | None = None,
                context: Tensor | None = None, context_mask: Tensor | None = None) -> Tensor:
        """Predict the velocity.

        Args:
            x: ``(B, C, H, W)`` state ``x_t``.
            t: ``(B,)`` times in [0, 1] (t=0 source, t=1 target).
            null_indicator: ``(B,)`` bool, True for the null (unconditional) branch: the indicator
                embedding's second row, or (``context_dim``) the learned null context. None = all conditional.
            cond: ``(B, cond_channels, H, W)`` conditioning image; required iff ``cond_channels > 0``.
            context: ``(B, L, context_dim)`` context tokens; required iff ``context_dim`` is set.
            context_mask: ``(B, L)`` bool, True for real tokens (None: all real); after the null rows are
                swapped in, every row needs one.

        Returns:
            ``(B, C, H, W)`` velocity.
        """
        b = x.shape[0]
        if (cond is None) != (self.cond_channels == 0):
            raise ValueError(f"DiT built with cond_channels={self.cond_channels} got cond="
                             f"{None if cond is None else tuple(cond.shape)}")
        if (context is None) != (self.context_dim is None):
            raise ValueError(f"DiT built with context_dim={self.context_dim} got context="
                             f"{None if context is None else tuple(context.shape)}")
        extra: tuple[Tensor, ...] = ()
        if context is not None:
            if context.shape[0] != b:
                raise ValueError(f"context batch {context.shape[0]} does not match x batch {b}")
            extra = self.embed_context(context, context_mask, null_indicator)
            if not bool(extra[1].any(dim=1).all()):
                raise ValueError("every sample needs at least one unmasked context token (a row of context_mask "
                                 "is all False)")
        if cond is not None:
            x = torch.cat([x, cond.to(x.dtype)], dim=1)
        tokens = self.x_embedder(x).flatten(2).transpose(1, 2) + self.pos_embed.to(x.dtype)
        c = self.t_embedder((t.expand(b) if t.dim() == 0 else t) * self.time_scale)
        if self.y_embedder is not None:
            if null_indicator is None:
                null_indicator = torch.zeros(b, dtype=torch.bool, device=x.device)
            c = c + self.y_embedder(null_indicator.long())
        for block in self.blocks:
            if self.gradient_checkpointing and self.training:
                tokens = checkpoint(block, tokens, c, *extra, use_reentrant=False)
            else:
                tokens = block(tokens, c, *extra)
        patches = self.final_layer(tokens, c)
        p = self.patch_size
        out = rearrange(patches, "b (h w) (p q c) -> b c (h p) (w q)", h=self.grid[0], w=self.grid[1], p=p, q=p)
        return out if self.conv_head is None else self.conv_head(out)
