"""Typed configuration of an experiment.

Every magic number of the method is a field here with the paper/official value as its default and
a ``help`` string; ``crossflow train --help`` lists them all. Task adapters add their own
``task`` section (see :mod:`crossflow.task`).

``model.kind``, ``model.source_encoder.arch`` and ``model.velocity_net.arch`` each pick one dataclass
that holds only its own fields (tagged unions, see :mod:`crossflow.config`); the builders in
:mod:`crossflow.build` dispatch on those classes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Union


def _f(default: Any, help: str, **kw: Any) -> Any:  # noqa: A002 - "help" reads best here
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help}, **kw)
    return field(default=default, metadata={"help": help}, **kw)


# ---------------------------------------------------------------- source encoders (model.source_encoder)
@dataclass
class TokenVEConfig:
    """Token-sequence VE (``arch: tokens``): pre-LN transformer blocks, learned readout queries, a head."""

    arch: Literal["tokens"] = _f("tokens", "transformer VE over token embeddings (pre-LN blocks + learned readout "
                                           "queries + linear, tiled or convolutional head)")
    width: int = _f(256, "transformer width of the VE")
    depth: int = _f(4, "number of transformer blocks")
    num_heads: int = _f(4, "attention heads")
    num_queries: int = _f(8, "learned readout tokens whose outputs are flattened into the latent head")
    head_init_scale: float = _f(1.0, "scale of the latent head's initial weights (small: z0 starts near zero)")
    tile: int = _f(0, "0: full linear head; k>0: one C×k×k code tiled over the latent (+ learned bias); "
                      "k = the DiT patch size makes the code visible to every patch token")
    conv_head_channels: int = _f(0, "0 = linear head; c>0 = small convolutional decoder head of width c (Linear to "
                                    "c maps at H/4×W/4, two upsample+conv stages), which learns image-like latents "
                                    "much sooner; exclusive with tile")


@dataclass
class ReductionVEConfig:
    """The official Text VE (``arch: reduction``); defaults are the official CLIP-L 256 px sizes."""

    arch: Literal["reduction"] = _f("reduction", "the official Text VE: a compressor MLP when the source width "
                                                 "differs from `width`, `depth` post-LN layers over all tokens, "
                                                 "`reduction_layers` width-halving layers, flatten, linear head "
                                                 "or adaptor")
    width: int = _f(768, "transformer width (official: the LM width, T5-XXL's 4096 compressed to 1024)")
    depth: int = _f(11, "full-width post-LN layers over all tokens (official textVAE.num_blocks 11)")
    num_heads: int = _f(8, "attention heads (official 8)")
    reduction_layers: int = _f(3, "width-halving layers after the full-width ones (official 3)")
    ffn_dim: int = _f(1024, "feed-forward width of every layer (official textVAE.hidden_dim 1024)")
    dropout: float = _f(0.1, "dropout inside the VE (official 0.1)")
    head: Literal["auto", "linear", "adaptor"] = _f(
        "auto", "linear = one Linear to 2·C·H·W; adaptor = MLP to an H×W map + three 3×3 convs (official 512 px); "
                "auto = the official rule (linear iff 2·C·H·W is 4096 or 8192)")


@dataclass
class ImageVEConfig:
    """Convolutional VE (``arch: image``) from an image-shaped source of any channels/resolution."""

    arch: Literal["image"] = _f("image", "convolutional VE over an image-shaped source (pixels or latents, any "
                                         "channels/resolution) to the target latent's shape")
    widths: list[int] = _f([32, 64, 128], "channels per level, one stride-2 downsampling between levels (a "
                                          "U-Net-like decoder climbs back to the latent size)")
    blocks: int = _f(1, "residual blocks per level")
    input_skip: bool = _f(False, "the mean is the source resized to the latent shape plus a learned correction "
                                 "(source and latent channels must match); with head_init_scale 0, z0 starts as "
                                 "the source itself (super-resolution: the upsampled low-res image)")
    logvar_init: float = _f(0.0, "initial bias of the log-variance head (negative: start with a narrow posterior)")
    head_init_scale: float = _f(1.0, "scale of the latent head's initial weights (small: z0 starts near zero)")


@dataclass
class NoiseSourceConfig:
    """No encoder (``arch: noise``): z0 ~ N(0, I) whatever the source."""

    arch: Literal["noise"] = _f("noise", "N(0, I) ignoring the source, KL 0 (noise-to-target baselines, with "
                                         "velocity_net.concat_source and sample.z0=sample)")


#: ``model.source_encoder``: ``arch`` picks the class; a section without ``arch`` is a :class:`TokenVEConfig`.
SourceEncoderConfig = Union[TokenVEConfig, ReductionVEConfig, ImageVEConfig, NoiseSourceConfig]


# ---------------------------------------------------------------- velocity networks (model.velocity_net)
@dataclass
class DiTConfig:
    """DiT velocity network (``arch: dit``): patch transformer with adaLN-Zero, time and CFG indicator."""

    arch: Literal["dit"] = _f("dit", "patch transformer (DiT, adaLN-Zero blocks over latent patches)")
    patch_size: int = _f(2, "patch side in latent pixels")
    hidden_size: int = _f(384, "transformer width")
    depth: int = _f(12, "number of DiT blocks")
    num_heads: int = _f(6, "attention heads")
    mlp_ratio: float = _f(4.0, "MLP width / transformer width")
    gradient_checkpointing: bool = _f(False, "recompute block activations in backward (less memory, ~30% slower)")
    indicator_init_std: float = _f(0.02, "init std of the 2-row CFG indicator embedding (larger: branches differ "
                                         "sooner)")
    concat_source: bool = _f(False, "concatenate the image-shaped source to x_t at the input, as SR3-style "
                                    "conditioned baselines; the source must have the target's height and width")
    pos_embed_order: Literal["hw", "wh"] = _f("hw", "sin-cos table: hw = first half of the channels encodes the "
                                                    "row; wh = first half the column (official DiT)")
    store_pos_embed: bool = _f(False, "keep the fixed position table in the state dict as `pos_embed` (the "
                                      "official checkpoints do)")
    time_scale: float = _f(1.0, "t is multiplied by this before the sinusoidal time embedding (official 1: raw t in "
                                "[0, 1], which only the fastest frequencies resolve; 1000 as in DiT/SD3 makes every "
                                "frequency see t and conditions small models on time far sooner)")
    conv_head_channels: int = _f(0, "0 = linear patch output (official); k>0 = the final layer emits k channels per "
                                    "pixel, then 3x3 conv, GELU, 3x3 conv to the velocity (no patch seams; "
                                    "U-ViT/DiMR-style convolutional output)")

    def __post_init__(self) -> None:
        if self.conv_head_channels < 0:
            raise ValueError(f"conv_head_channels must be >= 0 (0: linear patch output), got {self.conv_head_channels}")


@dataclass
class DiMRStageConfig:
    """One resolution stage of DiMR (official defaults: the Transformer stage of the 256 px models)."""

    block: Literal["transformer", "convnext"] = _f("transformer", "block type of the stage")
    dim: int = _f(1024, "stage width")
    hidden_dim: int = _f(2048, "inner width of the gated-GELU MLPs")
    num_heads: int = _f(16, "attention heads (transformer stages)")
    num_blocks: int = _f(65, "blocks; num_blocks//2·2+1 are built (U-ViT: in-blocks, a middle block, out-blocks "
                             "with long skips)")
    patch_size: int = _f(2, "patchify stride: the stage's grid is H/(input_downsample·patch_size)")
    input_downsample: int = _f(1, "area downsampling of x_t before patchify (official image_input_ratio)")
    kernel_size: int = _f(7, "depthwise kernel of ConvNeXt blocks")
    final_kernel_size: int = _f(3, "kernel of the output convolution")
    dropout: float = _f(0.0, "dropout after each residual branch")

    def __post_init__(self) -> None:
        for name in ("dim", "hidden_dim", "num_heads", "num_blocks", "patch_size", "input_downsample"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.block == "transformer" and self.dim % self.num_heads:
            raise ValueError(f"dim={self.dim} is not divisible by num_heads={self.num_heads}")
        for name in ("kernel_size", "final_kernel_size"):
            if getattr(self, name) % 2 == 0:
                raise ValueError(f"{name} must be odd (same-size convolution), got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


def _official_dimr_256px() -> list[DiMRStageConfig]:
    return [DiMRStageConfig(),
            DiMRStageConfig(block="convnext", dim=512, hidden_dim=1024, num_blocks=33, patch_size=1)]


@dataclass
class DiMRConfig:
    """DiMR velocity network (``arch: dimr``): stages lowest resolution first, multi-scale loss weights."""

    arch: Literal["dimr"] = _f("dimr", "multi-resolution Transformer + ConvNeXt stages, one output per resolution "
                                       "(multi-scale loss)")
    stages: list[DiMRStageConfig] = field(default_factory=_official_dimr_256px, metadata={
        "help": "stages, lowest resolution first; each grid must be an integer upscaling of the previous one "
                "(default: the official 256 px 0.95B model)"})
    loss_weights: Optional[list[float]] = _f(None, "multi-scale loss weight per stage, lowest resolution first "
                                                   "(null: official [1/4, 1] for 2 stages, [1/4, 1/2, 1] for 3)")
    gradient_checkpointing: bool = _f(False, "recompute block activations in backward (less memory, slower)")


#: ``model.velocity_net``: ``arch`` picks the class; a section without ``arch`` is a :class:`DiTConfig`.
VelocityNetConfig = Union[DiTConfig, DiMRConfig]


# ---------------------------------------------------------------- models (model)
@dataclass
class ContrastiveConfig:
    """Image–text InfoNCE between z0 and a jointly trained target-feature tower."""

    enabled: bool = _f(True, "train the VE with the contrastive loss (without it the VE tends to collapse)")
    weight: float = _f(1.0, "weight of the contrastive loss")
    widths: list[int] = _f([32, 64, 128], "channels of the stride-2 conv stages of the target tower")
    hidden_dim: int = _f(512, "width of the target tower's projection MLP")
    init_temperature: float = _f(0.07, "initial InfoNCE temperature tau (logits = cos/tau)")
    learn_temperature: bool = _f(True, "learn the temperature jointly")


@dataclass
class CrossFlowModelConfig:
    """CrossFlow (``kind: crossflow``): source VE -> z0 -> velocity net with the CFG indicator (+ contrastive)."""

    kind: Literal["crossflow"] = _f("crossflow", "source VE -> z0 -> velocity net with the CFG indicator (the "
                                                 "method)")
    source_encoder: SourceEncoderConfig = field(default_factory=TokenVEConfig, metadata={
        "help": "source variational encoder; arch picks the kind"})
    velocity_net: VelocityNetConfig = field(default_factory=DiTConfig, metadata={
        "help": "velocity network; arch picks the kind"})
    contrastive: ContrastiveConfig = field(default_factory=ContrastiveConfig)


@dataclass
class XAttnBaselineConfig:
    """The paper's Table 1 baseline (``kind: xattn_baseline``): flow matching from Gaussian noise, the DiT
    cross-attending to the LM tokens.

    Sizes come from ``velocity_net`` (the paper gives the baseline fewer layers so that the parameter
    counts match). Guidance is classic CFG: dropped text is replaced by a learned null token sequence,
    and sampling mixes the text and null branches in one batched forward.
    """

    kind: Literal["xattn_baseline"] = _f("xattn_baseline", "Gaussian noise -> DiT with cross-attention to the LM "
                                                           "tokens (paper Table 1 baseline; token sources only)")
    velocity_net: DiTConfig = field(default_factory=DiTConfig, metadata={
        "help": "DiT sizes; every block gets a cross-attention to the tokens (no indicator embedding)"})
    cond_drop_probability: float = _f(0.1, "probability that a training sample's text is replaced by the learned "
                                           "null token sequence (classic CFG drop; 0.1 like the CrossFlow indicator)")
    null_tokens: int = _f(1, "length of the learned null token sequence (unconditional branch)")

    def __post_init__(self) -> None:
        if not 0.0 <= self.cond_drop_probability < 1.0:
            raise ValueError(f"cond_drop_probability must be in [0, 1), got {self.cond_drop_probability}")
        if self.null_tokens < 1:
            raise ValueError(f"null_tokens must be >= 1, got {self.null_tokens}")


@dataclass
class RegressionModelConfig:
    """The regression baseline (``kind: regression``): one network maps the image-shaped source to the target in
    a single forward, trained with the mean squared error (no noise, no ODE, no guidance).

    The network is the DiT of ``velocity_net`` called at ``t = 0`` (see :mod:`crossflow.regression`); the source
    must have the target's shape (super-resolution: the bicubic-upsampled low-res image).
    """

    kind: Literal["regression"] = _f("regression", "one DiT forward maps the source image to the target, MSE "
                                                   "(super-resolution regression baseline; image sources of the "
                                                   "target's shape only)")
    velocity_net: DiTConfig = field(default_factory=DiTConfig, metadata={
        "help": "DiT sizes of the regression network (no indicator embedding, no concat_source)"})
    residual: bool = _f(True, "predict source + net(source): the zero-initialised output starts as the source "
                              "itself (bicubic upsampling) and learns the correction; false: net(source) alone")


#: ``model``: ``kind`` picks the class; a section without ``kind`` is a :class:`CrossFlowModelConfig`.
ModelConfig = Union[CrossFlowModelConfig, XAttnBaselineConfig, RegressionModelConfig]


@dataclass
class FlowConfig:
    """Probability path, time sampling, indicator and loss weights."""

    sigma_min: float = _f(1e-5, "x_t = (1-(1-sigma_min) t) z0 + t z1 (official 1e-5)")
    time_sampler: Literal["logit_normal", "uniform"] = _f("logit_normal", "training time distribution")
    logit_mean: float = _f(0.0, "mean of the logit-normal time sampler")
    logit_std: float = _f(1.0, "std of the logit-normal time sampler")
    null_probability: float = _f(0.1, "probability that a sample is trained as null (CFG indicator)")
    kl_weight: float = _f(1e-4, "weight of KL(q(z0|source) || N(0, I)) (paper 1e-4; official code 1e-2, other form)")
    fm_grad_to_source: float = _f(1.0, "scale of the flow-matching gradient reaching the VE through z0 (1: joint "
                                       "training as in the paper; 0: the VE learns from the contrastive and KL "
                                       "terms only, like the paper's two-stage ablation)")
    source_recon_weight: float = _f(0.0, "weight of MSE(VE mean, target latent): the paper's depth recipe trains the "
                                         "image VE to map the source into the target's shape with a reconstruction "
                                         "loss; 0 disables")

    def __post_init__(self) -> None:
        if not 0.0 <= self.null_probability < 1.0:
            raise ValueError(f"null_probability must be in [0, 1), got {self.null_probability}")
        if not 0.0 <= self.sigma_min < 1.0:
            raise ValueError(f"sigma_min must be in [0, 1), got {self.sigma_min}")


@dataclass
class TrainConfig:
    """Optimisation, precision, checkpointing and logging."""

    batch_size: int = _f(64, "global batch per optimizer step (split over processes and accumulation steps)")
    grad_accum_steps: int = _f(1, "micro-batches accumulated per optimizer step")
    max_steps: int = _f(1000, "optimizer steps to train")
    max_minutes: Optional[float] = _f(None, "wall-clock budget; training stops (with a checkpoint) when it is spent")
    lr: float = _f(1e-4, "peak learning rate (paper 1e-4)")
    betas: tuple[float, float] = _f((0.9, 0.9), "AdamW betas (official (0.9, 0.9))")
    weight_decay: float = _f(0.03, "AdamW weight decay (official 0.03)")
    warmup_steps: int = _f(5000, "linear LR warm-up steps (official 5000)")
    lr_schedule: Literal["constant", "cosine"] = _f("constant", "LR after warm-up (official: constant)")
    min_lr_ratio: float = _f(0.0, "final LR / peak LR for the cosine schedule")
    fused_optimizer: bool = _f(True, "fused AdamW: one kernel over all parameters (same update rule; ~5x faster "
                                     "optimizer step on CPU, where the per-tensor loop dominated small models)")
    grad_clip: Optional[float] = _f(1.0, "max global gradient norm; null disables clipping")
    ema_decay: float = _f(0.9999, "EMA decay of the weights used for sampling (official 0.9999)")
    ema_warmup: bool = _f(True, "use min(ema_decay, (1+step)/(10+step)) so short runs get a useful EMA")
    mixed_precision: Literal["no", "bf16", "fp16"] = _f("no", "autocast precision (bf16 works on CPUs and GPUs)")
    seed: int = _f(0, "seed of weights, data order and all training randomness")
    num_workers: int = _f(0, "DataLoader worker processes")
    log_every: int = _f(10, "steps between JSONL log rows")
    sample_every: int = _f(0, "steps between preview sample grids (0 = only at the end)")
    checkpoint_every: int = _f(500, "steps between checkpoints (a final one is always written)")
    keep_checkpoints: int = _f(2, "complete checkpoints kept (at least 2)")
    compile: bool = _f(False, "torch.compile the model's compile_modules() in place: the velocity network of "
                              "CrossFlow and of the baseline, the encoder and decoder of the text VAE (slow first steps)")
    cpu: bool = _f(False, "force the CPU even when a GPU is visible")
    parallel: Literal["ddp", "fsdp"] = _f(
        "ddp", "several processes (torchrun / accelerate launch): ddp = every process holds the whole model, "
               "gradients and optimizer state; fsdp = torch FSDP2 (fully_shard): parameters, gradients, AdamW state "
               "and the EMA copy sharded over the processes, one unit per DiT/DiMR/encoder block, sharded "
               "checkpoints that resume on any number of processes (docs/training_at_scale.md)")
    fsdp_cpu_offload: bool = _f(False, "with parallel=fsdp on GPUs: keep the parameter shards, their gradients and the "
                                       "optimizer state in host memory (the optimizer steps on the CPU; slower)")
    log_with: list[str] = _f([], "experiment trackers fed through accelerate, besides metrics.jsonl (always written, "
                                 "needs nothing): tensorboard, wandb, comet_ml, aim, mlflow, clearml, dvclive, "
                                 "swanlab, trackio or all; each needs its package. Local trackers write under "
                                 "RUN_DIR/<project_name>")
    project_name: str = _f("crossflow", "project name given to the trackers (accelerate's init_trackers); the run is "
                                        "named after the run directory")
    tensorboard: bool = _f(False, "deprecated: the same as log_with: [tensorboard]")

    def __post_init__(self) -> None:
        if self.tensorboard and "tensorboard" not in self.log_with:  # configs written before log_with
            self.log_with = [*self.log_with, "tensorboard"]
        if self.keep_checkpoints < 2:
            raise ValueError(f"keep_checkpoints must be at least 2, got {self.keep_checkpoints}")
        for name in ("batch_size", "grad_accum_steps", "max_steps", "log_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_size % self.grad_accum_steps:
            raise ValueError(f"batch_size={self.batch_size} is not divisible by grad_accum_steps={self.grad_accum_steps}")


@dataclass
class SampleConfig:
    """Generation defaults (overridable on the command line)."""

    solver: Literal["euler", "heun", "midpoint", "rk4", "dopri5"] = _f("euler", "ODE solver")
    steps: int = _f(50, "solver steps (official: Euler, 50)")
    time_grid: Literal["uniform", "official"] = _f(
        "uniform", "uniform: steps on linspace(0, 1); official: the released Euler sampler (steps of (1-1e-5)/N, "
                   "velocity at linspace(0, 1-1e-5, N)); Euler only")
    guidance: float = _f(7.0, "CFG scale s in v_null + s (v_cond - v_null); 1 disables guidance (official 7)")
    z0: Literal["mean", "sample"] = _f("mean", "start from the VE mean, or from a sample of the VE posterior")
    temperature: float = _f(1.0, "scale of the VE posterior noise when z0 = sample")
    batch_size: int = _f(100, "samples generated per forward batch")
    seed: int = _f(0, "seed of generation noise")

    def __post_init__(self) -> None:  # checked when options are resolved, before any model runs
        for name in ("steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0: the VE mean), got {self.temperature}")


@dataclass
class ExperimentConfig:
    """A whole experiment. ``task`` is validated by the task adapter's own config class."""

    task: Any = _f({}, "task adapter section; 'name' picks the adapter (e.g. t2i)")
    model: ModelConfig = field(default_factory=CrossFlowModelConfig, metadata={
        "help": "the model; kind picks CrossFlow, the cross-attention baseline or the regression baseline"})
    flow: FlowConfig = field(default_factory=FlowConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
