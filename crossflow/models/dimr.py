"""DiMR: a multi-resolution velocity network (Transformer stage, then ConvNeXt stages).

Each stage sees the whole state ``x_t`` at its own grid (patchified more coarsely for lower
resolutions) and, after the first, the concatenated block outputs of the previous stage
("external skips"), pixel-shuffled up to its grid. Every stage predicts the velocity at its own
resolution; the network returns them lowest resolution first, and the last one is the velocity
used for sampling. Inside a stage the blocks form a U-ViT: in-blocks, a middle block and out-blocks,
each out-block fed ``Linear(cat[x, skip])`` with the skip of the mirrored in-block. Norms are
time-dependent (:mod:`crossflow.nn.td_norms`), which is how time enters the network; the CFG
indicator is one learned scalar per branch, broadcast to a token prepended in Transformer stages.

Time: ``t ∈ [0, 1]`` at the interface (0 = source, 1 = target); internally ``τ = 1 − 2t``
(DiMR's ``log_snr/4`` with ``log_snr = 4 − 8t``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from crossflow.nn import SelfAttention
from crossflow.nn.mlp import GatedMlp
from crossflow.nn.td_norms import TDLayerNorm, TDRMSNorm, time_condition
from crossflow.schema import DiMRStageConfig

#: Official multi-scale loss weights by number of stages (lowest resolution first).
OFFICIAL_LOSS_WEIGHTS: dict[int, tuple[float, ...]] = {1: (1.0,), 2: (0.25, 1.0), 3: (0.25, 0.5, 1.0)}


class TransformerBlock(nn.Module):
    """``x += attn(RMS_τ(x))``, ``x += mlp(RMS_τ(x))`` on tokens ``(B, N, D)``."""

    def __init__(self, dim: int, hidden_dim: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.attn_norm = TDRMSNorm(dim)
        self.attn = SelfAttention(dim, num_heads, qkv_bias=False)
        self.mlp_norm = TDRMSNorm(dim)
        self.mlp = GatedMlp(dim, hidden_dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, tau: Tensor) -> Tensor:
        x = x + self.drop(self.attn(self.attn_norm(x, tau)))
        return x + self.drop(self.mlp(self.mlp_norm(x, tau)))


class ConvNeXtBlock(nn.Module):
    """``x += depthwise_conv(x)`` (no norm before it), ``x += mlp(RMS_τ(x))`` on a grid ``(B, H, W, D)``."""

    def __init__(self, dim: int, hidden_dim: int, kernel_size: int, dropout: float) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.mlp_norm = TDRMSNorm(dim)
        self.mlp = GatedMlp(dim, hidden_dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, tau: Tensor) -> Tensor:
        x = x + self.drop(self.dwconv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))
        return x + self.drop(self.mlp(self.mlp_norm(x, tau)))


class PixelShuffleUpsample(nn.Module):
    """``Linear(in, out·r²)`` then pixel shuffle on channel-last grids: ``(B, h, w, in) -> (B, h·r, w·r, out)``.

    Output pixel ``(i·r + a, j·r + c)`` takes features ``[(a·r + c)·out, (a·r + c + 1)·out)`` of the
    linear map at low-res pixel ``(i, j)``.
    """

    def __init__(self, in_dim: int, out_dim: int, ratio: int) -> None:
        super().__init__()
        self.ratio = ratio
        self.proj = nn.Linear(in_dim, out_dim * ratio * ratio)

    def forward(self, x: Tensor) -> Tensor:
        r = self.ratio
        return rearrange(self.proj(x), "b h w (p q c) -> b (h p) (w q) c", p=r, q=r)


class SkipUpsample(nn.Module):
    """TD-LayerNorm → pixel shuffle → TD-LayerNorm: the previous stage's external skips at this grid."""

    def __init__(self, in_dim: int, out_dim: int, ratio: int) -> None:
        super().__init__()
        self.norm_in = TDLayerNorm(in_dim)
        self.shuffle = PixelShuffleUpsample(in_dim, out_dim, ratio)
        self.norm_out = TDLayerNorm(out_dim)

    def forward(self, x: Tensor, tau: Tensor) -> Tensor:
        return self.norm_out(self.shuffle(self.norm_in(x, tau)), tau)


class DiMRStage(nn.Module):
    """One resolution of DiMR.

    Args:
        channels: latent channels ``C`` (input and output).
        grid: ``(h, w)`` token grid of this stage.
        cfg: the stage's sizes.
        lowres_dim: channels of the previous stage's concatenated skips (None for the first stage).
        lowres_ratio: upsampling factor from the previous stage's grid.
        indicator: whether Transformer stages prepend the CFG indicator token.
    """

    def __init__(self, channels: int, grid: tuple[int, int], cfg: DiMRStageConfig, *,
                 lowres_dim: Optional[int] = None, lowres_ratio: int = 1, indicator: bool = True) -> None:
        super().__init__()
        self.grid = grid
        self.dim = cfg.dim
        self.is_transformer = cfg.block == "transformer"
        self.input_downsample = cfg.input_downsample
        self.patch_embed = nn.Conv2d(channels, cfg.dim, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.pos_embed = nn.Embedding(grid[0] * grid[1], cfg.dim)
        self.upsample = SkipUpsample(lowres_dim, cfg.dim, lowres_ratio) if lowres_dim is not None else None
        num_blocks = cfg.num_blocks // 2 * 2 + 1
        if self.is_transformer:
            blocks = [TransformerBlock(cfg.dim, cfg.hidden_dim, cfg.num_heads, cfg.dropout) for _ in range(num_blocks)]
        else:
            blocks = [ConvNeXtBlock(cfg.dim, cfg.hidden_dim, cfg.kernel_size, cfg.dropout) for _ in range(num_blocks)]
        self.blocks = nn.ModuleList(blocks)
        self.skip_proj = nn.ModuleList(nn.Linear(2 * cfg.dim, cfg.dim) for _ in range(num_blocks // 2))
        # Indicator values (null, conditional) start at (-1, +1); only Transformer stages have them.
        with_indicator = indicator and self.is_transformer
        self.indicator_null = nn.Parameter(torch.tensor([-1.0])) if with_indicator else None
        self.indicator_cond = nn.Parameter(torch.tensor([1.0])) if with_indicator else None
        self.out_norm = TDLayerNorm(cfg.dim)
        k = cfg.final_kernel_size
        self.out_conv = nn.Conv2d(cfg.dim, channels, k, padding=k // 2)
        self.gradient_checkpointing = False

    @property
    def skip_channels(self) -> int:
        """Channels of the concatenated external skips handed to the next stage."""
        return self.dim * (len(self.blocks) + 1)

    def _run(self, block: nn.Module, x: Tensor, tau: Tensor) -> Tensor:
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(block, x, tau, use_reentrant=False)
        return block(x, tau)

    def forward(self, x_t: Tensor, tau: Tensor, lowres_skips: Optional[Tensor],
                null_indicator: Optional[Tensor]) -> tuple[Tensor, Tensor]:
        """Run the stage.

        Args:
            x_t: ``(B, C, H, W)`` the full state.
            tau: ``(B,)`` time condition.
            lowres_skips: ``(B, h', w', D')`` previous stage's concatenated skips, or None.
            null_indicator: ``(B,)`` bool (True = null branch), or None for no indicator token.

        Returns:
            ``(velocity (B, C, h·p, w·p), skips (B, h, w, (num_blocks+1)·dim))``.
        """
        if self.input_downsample > 1:
            h, w = x_t.shape[-2:]
            x_t = F.interpolate(x_t, size=(h // self.input_downsample, w // self.input_downsample), mode="area")
        x = self.patch_embed(x_t).permute(0, 2, 3, 1).contiguous()  # channel-last, dense (fast depthwise convs)
        b, h, w, d = x.shape
        rows = torch.arange(h, device=x.device)[:, None]
        cols = torch.arange(w, device=x.device)[None, :]
        x = x + self.pos_embed(rows * self.grid[1] + cols)
        if lowres_skips is not None:
            x = x + self.upsample(lowres_skips, tau)
        extra = 0
        if self.is_transformer:
            x = x.reshape(b, h * w, d)
            if null_indicator is not None and self.indicator_null is not None:
                token = torch.where(null_indicator.view(b, 1, 1), self.indicator_null, self.indicator_cond)
                x = torch.cat([token.to(x.dtype).expand(b, 1, d), x], dim=1)
                extra = 1
        skips_out = [x]
        half = len(self.blocks) // 2
        long_skips = []
        for block in self.blocks[:half]:
            x = self._run(block, x, tau)
            skips_out.append(x)
            long_skips.append(x)
        x = self._run(self.blocks[half], x, tau)
        skips_out.append(x)
        for proj, block in zip(self.skip_proj, self.blocks[half + 1:]):
            x = self._run(block, proj(torch.cat([x, long_skips.pop()], dim=-1)), tau)
            skips_out.append(x)
        skips = torch.cat(skips_out, dim=-1)
        if self.is_transformer:
            x = x[:, extra:].reshape(b, h, w, d)
            skips = skips[:, extra:].reshape(b, h, w, -1)
        velocity = self.out_conv(self.out_norm(x, tau).permute(0, 3, 1, 2))
        return velocity, skips


class DiMR(nn.Module):
    """Multi-resolution velocity network ``v(x_t, t, null_indicator) -> [v_lowres, ..., v_highres]``.

    Args:
        latent_shape: ``(C, H, W)`` of ``x_t``.
        stages: stage sizes, lowest resolution first. Stage ``i``'s grid is
            ``H / (input_downsample·patch_size)`` and must be an integer multiple of stage ``i-1``'s.
        indicator: whether the CFG indicator exists (Transformer stages prepend its token).
        gradient_checkpointing: recompute each block in backward.
        loss_weights: multi-scale loss weight per stage output (None: the official values for 1–3 stages).
    """

    def __init__(self, latent_shape: tuple[int, int, int], stages: Sequence[DiMRStageConfig], *,
                 indicator: bool = True, gradient_checkpointing: bool = False,
                 loss_weights: Optional[Sequence[float]] = None) -> None:
        super().__init__()
        if not stages:
            raise ValueError("DiMR needs at least one stage")
        channels, height, width = latent_shape
        self.latent_shape = tuple(latent_shape)
        if loss_weights is None:
            if len(stages) not in OFFICIAL_LOSS_WEIGHTS:
                raise ValueError(f"no default multi-scale loss weights for {len(stages)} stages; set "
                                 "loss_weights (one per stage, lowest resolution first)")
            loss_weights = OFFICIAL_LOSS_WEIGHTS[len(stages)]
        if len(loss_weights) != len(stages):
            raise ValueError(f"loss_weights has {len(loss_weights)} entries for {len(stages)} stages")
        self.loss_weights = tuple(float(w) for w in loss_weights)
        modules, prev_grid, prev_channels = [], None, None
        for i, cfg in enumerate(stages):
            step = cfg.input_downsample * cfg.patch_size
            if height % step or width % step:
                raise ValueError(f"stages[{i}]: latent {height}x{width} is not divisible by "
                                 f"input_downsample·patch_size = {step}")
            grid = (height // step, width // step)
            ratio = 1
            if prev_grid is not None:
                ratio = grid[0] // prev_grid[0]
                if grid[0] != prev_grid[0] * ratio or grid[1] != prev_grid[1] * ratio or ratio < 1:
                    raise ValueError(f"stages[{i}]: grid {grid} is not an integer upscaling of "
                                     f"stage {i - 1}'s grid {prev_grid}")
            stage = DiMRStage(channels, grid, cfg, lowres_dim=prev_channels, lowres_ratio=ratio, indicator=indicator)
            modules.append(stage)
            prev_grid, prev_channels = grid, stage.skip_channels
        self.stages = nn.ModuleList(modules)
        self.set_gradient_checkpointing(gradient_checkpointing)
        self.initialize_weights()

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        for stage in self.stages:
            stage.gradient_checkpointing = enabled

    def initialize_weights(self) -> None:
        """Linear and embedding weights ~ N(0, 0.02²) (truncated at ±2), zero biases; convolutions keep
        PyTorch's default; TD parameters start time-independent (norm weights 1, biases 0)."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)) and not module.weight.is_meta:
                nn.init.trunc_normal_(module.weight, std=0.02)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, x: Tensor, t: Tensor, null_indicator: Optional[Tensor] = None) -> list[Tensor]:
        """Predict the velocity at every stage's resolution.

        Args:
            x: ``(B, C, H, W)`` state ``x_t``.
            t: ``(B,)`` (or scalar) times in [0, 1] (0 = source, 1 = target).
            null_indicator: ``(B,)`` bool, True for the null branch. None = all conditional.

        Returns:
            Velocities ``(B, C, h_i, w_i)``, lowest resolution first; the last is at ``(H, W)``.
        """
        b = x.shape[0]
        t = t.expand(b) if t.dim() == 0 else t
        tau = time_condition(t)
        if null_indicator is None:
            null_indicator = torch.zeros(b, dtype=torch.bool, device=x.device)
        outputs, skips = [], None
        for stage in self.stages:
            velocity, skips = stage(x, tau, skips, null_indicator)
            outputs.append(velocity)
        return outputs

