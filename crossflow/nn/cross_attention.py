"""Multi-head cross-attention from image tokens to a (padded) context sequence, with PyTorch SDPA."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class CrossAttention(nn.Module):
    """Queries from ``x``, keys and values from ``context``.

    Keys and values come from one fused ``Linear(context_dim, 2*dim)`` (one GEMM), and
    ``F.scaled_dot_product_attention`` picks the fastest kernel for the device.

    Args:
        dim: query token width (and output width).
        num_heads: number of heads; must divide ``dim``.
        context_dim: context token width (default ``dim``).
        qkv_bias: whether the q and kv projections have a bias.
    """

    def __init__(self, dim: int, num_heads: int, *, context_dim: int | None = None, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"attention width {dim} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(context_dim or dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, context: Tensor, context_mask: Tensor | None = None) -> Tensor:
        """Attend from ``x`` to ``context``.

        Args:
            x: ``(B, N, dim)`` query tokens.
            context: ``(B, L, context_dim)`` context tokens.
            context_mask: optional ``(B, L)`` bool, True where the context token is real. Every row
                needs at least one True entry (a fully masked row has no defined attention).

        Returns:
            ``(B, N, dim)``.
        """
        b, n, d = x.shape
        length, h = context.shape[1], self.num_heads
        q = self.q(x).view(b, n, h, d // h).transpose(1, 2)
        k, v = self.kv(context).view(b, length, 2, h, d // h).permute(2, 0, 3, 1, 4)
        mask = None if context_mask is None else context_mask[:, None, None, :].to(torch.bool)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))
