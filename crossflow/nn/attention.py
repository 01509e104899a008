"""Multi-head self-attention with a fused qkv projection and PyTorch SDPA."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class SelfAttention(nn.Module):
    """Self-attention over a token sequence.

    One ``Linear(dim, 3*dim)`` produces q, k and v together (one GEMM instead of three), and
    ``F.scaled_dot_product_attention`` picks the fastest kernel available (flash / memory-efficient
    on GPUs, a fused CPU kernel otherwise).

    Args:
        dim: token width.
        num_heads: number of heads; must divide ``dim``.
        qkv_bias: whether the fused projection has a bias.
        dropout: attention-probability dropout (training only).
    """

    def __init__(self, dim: int, num_heads: int, *, qkv_bias: bool = True, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"attention width {dim} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.dropout = dropout

    def forward(self, x: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        """Attend.

        Args:
            x: ``(B, N, dim)`` tokens.
            key_padding_mask: optional ``(B, N)`` bool, True where the key is a real token.
                Padded keys are never attended to; padded queries still produce outputs.

        Returns:
            ``(B, N, dim)``.
        """
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        mask = None if key_padding_mask is None else key_padding_mask[:, None, None, :].to(torch.bool)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))
