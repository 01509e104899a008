"""DiT with cross-attention to language-model tokens: the velocity network of the baseline.

The paper's Table 1 compares CrossFlow with "standard flow matching + cross-attention": the
flow starts from Gaussian noise and every block attends to the (projected) LM token states.
Blocks are DiT's adaLN-Zero blocks (time only in the modulation) with a pre-norm cross-attention
between self-attention and the MLP. Dropped text (classic CFG) is replaced by a learned null
token sequence, selected per sample by the same boolean ``null_indicator`` the CrossFlow DiT takes.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from crossflow.models.dit import FinalLayer, modulate
from crossflow.nn import Mlp, SelfAttention, TimestepEmbedder, sincos_2d_position_embedding
from crossflow.nn.cross_attention import CrossAttention


class CrossAttentionDiTBlock(nn.Module):
    """adaLN-Zero self-attention, pre-norm cross-attention to the context, adaLN-Zero MLP."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = SelfAttention(dim, num_heads, qkv_bias=True)
        self.norm_cross = nn.LayerNorm(dim, eps=1e-6)
        self.cross_attn = CrossAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, x: Tensor, c: Tensor, context: Tensor, context_mask: Tensor) -> Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.adaLN_modulation(c).chunk(6, dim=-1)
        x = x + gate1[:, None] * self.attn(modulate(self.norm1(x), shift1, scale1))
        x = x + self.cross_attn(self.norm_cross(x), context, context_mask)
        return x + gate2[:, None] * self.mlp(modulate(self.norm2(x), shift2, scale2))


class CrossAttentionDiT(nn.Module):
    """Velocity network ``v(x_t, t, null_indicator, context, context_mask)`` on a ``(C, H, W)`` latent.

    Args:
        latent_shape: ``(C, H, W)`` of ``x_t`` (and of the output velocity).
        context_dim: width of the LM token states.
        patch_size, hidden_size, depth, num_heads, mlp_ratio: transformer size (as :class:`DiT`).
        null_tokens: length of the learned null sequence used for dropped text.
        gradient_checkpointing: recompute block activations in backward to save memory.
    """

    def __init__(self, latent_shape: tuple[int, int, int], context_dim: int, *, patch_size: int = 2,
                 hidden_size: int = 384, depth: int = 12, num_heads: int = 6, mlp_ratio: float = 4.0,
                 null_tokens: int = 1, gradient_checkpointing: bool = False) -> None:
        super().__init__()
        channels, height, width = latent_shape
        if height % patch_size or width % patch_size:
            raise ValueError(f"latent size {height}x{width} is not divisible by patch_size={patch_size}")
        self.latent_shape = tuple(latent_shape)
        self.context_dim = context_dim
        self.patch_size = patch_size
        self.grid = (height // patch_size, width // patch_size)
        self.gradient_checkpointing = gradient_checkpointing
        self.x_embedder = nn.Conv2d(channels, hidden_size, kernel_size=patch_size, stride=patch_size)
        self.register_buffer("pos_embed", sincos_2d_position_embedding(hidden_size, *self.grid)[None], persistent=False)
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.context_embedder = nn.Sequential(nn.Linear(context_dim, hidden_size), nn.GELU(approximate="tanh"),
                                              nn.Linear(hidden_size, hidden_size))
        self.null_context = nn.Parameter(torch.zeros(null_tokens, hidden_size))
        self.blocks = nn.ModuleList(CrossAttentionDiTBlock(hidden_size, num_heads, mlp_ratio) for _ in range(depth))
        self.final_layer = FinalLayer(hidden_size, patch_size, channels)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """DiT initialisation, plus zeroed cross-attention outputs so that every block starts as the identity."""
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
        nn.init.normal_(self.null_context, std=0.02)
        for block in self.blocks:
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
            nn.init.zeros_(block.cross_attn.proj.weight)
            nn.init.zeros_(block.cross_attn.proj.bias)
        for layer in (self.final_layer.adaLN_modulation[-1], self.final_layer.linear):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def embed_context(self, context: Tensor, context_mask: Tensor | None,
                      null_indicator: Tensor | None) -> tuple[Tensor, Tensor]:
        """Project the LM tokens and put the learned null sequence in the rows flagged null.

        Args:
            context: ``(B, L, context_dim)`` token states.
            context_mask: ``(B, L)`` bool (True = real token) or None (all real).
            null_indicator: ``(B,)`` bool, True where the text is dropped, or None.

        Returns:
            ``(B, L', hidden)`` tokens and their ``(B, L')`` mask, ``L' = max(L, null_tokens)``.
        """
        b, length, _ = context.shape
        if context.shape[-1] != self.context_dim:
            raise ValueError(f"context width {context.shape[-1]} does not match the network's context_dim={self.context_dim}")
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

    def forward(self, x: Tensor, t: Tensor, null_indicator: Tensor | None = None, context: Tensor | None = None,
                context_mask: Tensor | None = None) -> Tensor:
        """Predict the velocity.

        Args:
            x: ``(B, C, H, W)`` state ``x_t``.
            t: ``(B,)`` times in [0, 1] (t=0 noise, t=1 target).
            null_indicator: ``(B,)`` bool, True for the unconditional (null text) branch. None = all conditional.
            context: ``(B, L, context_dim)`` LM token states (required).
            context_mask: ``(B, L)`` bool, True for real tokens; every row needs one.

        Returns:
            ``(B, C, H, W)`` velocity.
        """
        if context is None:
            raise ValueError("CrossAttentionDiT needs the LM token states as `context`")
        b = x.shape[0]
        if context.shape[0] != b:
            raise ValueError(f"context batch {context.shape[0]} does not match x batch {b}")
        ctx, ctx_mask = self.embed_context(context, context_mask, null_indicator)
        if not bool(ctx_mask.any(dim=1).all()):
            raise ValueError("every sample needs at least one unmasked context token (a row of context_mask is all False)")
        tokens = self.x_embedder(x).flatten(2).transpose(1, 2) + self.pos_embed.to(x.dtype)
        c = self.t_embedder(t.expand(b) if t.dim() == 0 else t)
        for block in self.blocks:
            if self.gradient_checkpointing and self.training:
                tokens = checkpoint(block, tokens, c, ctx, ctx_mask, use_reentrant=False)
            else:
                tokens = block(tokens, c, ctx, ctx_mask)
        patches = self.final_layer(tokens, c)
        p = self.patch_size
        return rearrange(patches, "b (h w) (p q c) -> b c (h p) (w q)", h=self.grid[0], w=self.grid[1], p=p, q=p)
