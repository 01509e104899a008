"""Build our models from the official CrossFlow configs and load the released checkpoints.

Contract:

* :func:`build_from_official_args` ``(model_args, arch, latent_shape)`` builds our model from the official
  config's ``model`` arguments (official field names, plain nested dict) for ``arch`` ``"dimr"`` or
  ``"dit"``; any sizes of that family work. For ``"dit"``, an optional ``dit: {depth, hidden_size,
  num_heads, patch_size, mlp_ratio}`` entry overrides the DiT-H/2 default (the only size the official
  code builds). Our extension: ``textVAE.head`` (``linear``/``adaptor``) overrides the official head rule.
* :func:`load_official_state_dict` ``(model, state_dict)`` loads an official state dict strictly for
  everything used at inference; the training-only image tower (``open_clip.*``, ``open_clip_output.*``)
  is reported and skipped (``open_clip.logit_scale`` is converted to our ``logit_scale``).
* On the returned :class:`OfficialCrossFlow`, ``model.source_encoder(tokens, mask)`` returns
  ``(z, mu, logvar)`` flattened to ``(B, C·H·W)`` and ``model.velocity_net(x_t, t, null_indicator)``
  returns the per-stage velocities ``(B, C, h, w)``, lowest resolution first (DiMR), or the velocity
  ``(B, C, H, W)`` (DiT); ``t ∈ [0, 1]`` with t=0 the source (DiMR derives log-SNR = 4 − 8t).
"""

from __future__ import annotations

import json
import logging
import math
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

import torch
from torch import Tensor, nn

from crossflow.build import build_model
from crossflow.encoders.reduction_ve import official_head
from crossflow.model import CrossFlow
from crossflow.official_layout import official_to_ours
from crossflow.schema import (ContrastiveConfig, CrossFlowModelConfig, DiMRConfig, DiMRStageConfig, DiTConfig,
                              FlowConfig, ReductionVEConfig)
from crossflow.specs import ImageSpec, TokenSpec

log = logging.getLogger(__name__)

#: DiT-H/2, the size ``utils.get_nnet('dit')`` always builds.
DIT_H2 = {"depth": 36, "hidden_size": 1280, "num_heads": 20, "patch_size": 2, "mlp_ratio": 4.0}
_BLOCKS = {"TransformerBlock": "transformer", "ConvNeXtBlock": "convnext"}


def _get(args: Mapping[str, Any], key: str, where: str = "model_args") -> Any:
    if key not in args:
        raise KeyError(f"{where}.{key}: missing from the official model arguments")
    return args[key]


def _source_encoder_config(args: Mapping[str, Any], latent_shape: tuple[int, int, int]) -> ReductionVEConfig:
    vae = _get(args, "textVAE")
    clip_dim = int(_get(args, "clip_dim"))
    head = vae.get("head", official_head(latent_shape))
    return ReductionVEConfig(width=1024 if clip_dim == 4096 else clip_dim,  # official: T5-XXL compressed to 1024
                             depth=int(_get(vae, "num_blocks", "model_args.textVAE")),
                             reduction_layers=int(vae.get("num_down_sample_block", 3)),
                             num_heads=int(_get(vae, "num_attention_heads", "model_args.textVAE")),
                             ffn_dim=int(_get(vae, "hidden_dim", "model_args.textVAE")),
                             dropout=float(vae.get("dropout_prob", 0.1)), head=head)


def _dimr_stages(args: Mapping[str, Any], latent_shape: tuple[int, int, int]) -> list[DiMRStageConfig]:
    if args.get("norm_type", "LN") != "TDRMSN":
        raise ValueError(f"model_args.norm_type={args.get('norm_type', 'LN')!r}: only 'TDRMSN' (every released "
                         "DiMR) is implemented")
    if args.get("pe_type", "APE") != "APE":
        raise ValueError(f"model_args.pe_type={args['pe_type']!r}: only learned absolute positions ('APE') are "
                         "implemented")
    if args.get("block_grad_to_lowres", False):
        raise ValueError("model_args.block_grad_to_lowres=True is not implemented (every released config uses False)")
    if int(_get(args, "channels")) != latent_shape[0]:
        raise ValueError(f"model_args.channels={args['channels']} does not match latent_shape {latent_shape}")
    stages = []
    for i, st in enumerate(_get(args, "stage_configs")):
        where = f"model_args.stage_configs[{i}]"
        block = _BLOCKS.get(_get(st, "block_type", where))
        if block is None:
            raise ValueError(f"{where}.block_type={st['block_type']!r}; valid: {', '.join(_BLOCKS)}")
        cfg = DiMRStageConfig(block=block, dim=int(_get(st, "dim", where)),
                              hidden_dim=int(_get(st, "hidden_dim", where)),
                              num_heads=int(st.get("num_attention_heads", 1)),
                              num_blocks=int(_get(st, "num_blocks", where)),
                              patch_size=int(_get(st, "input_feature_ratio", where)),
                              input_downsample=int(st.get("image_input_ratio", 1)),
                              kernel_size=int(st.get("kernel_size", 7)),
                              final_kernel_size=int(st.get("final_kernel_size", 3)),
                              dropout=float(st.get("dropout_prob", 0.0)))
        step = cfg.patch_size * cfg.input_downsample
        grid = (latent_shape[1] // step, latent_shape[2] // step)
        if (st.get("max_height", grid[0]), st.get("max_width", grid[1])) != grid:
            raise ValueError(f"{where}: max_height/max_width {st.get('max_height')}x{st.get('max_width')} differ from "
                             f"the grid {grid[0]}x{grid[1]} that latent {latent_shape} gives with patch {step}")
        stages.append(cfg)
    return stages


def official_model_config(model_args: Mapping[str, Any], arch: str,
                          latent_shape: tuple[int, int, int]) -> tuple[CrossFlowModelConfig, FlowConfig]:
    """Our ``model`` and ``flow`` config sections equivalent to an official ``model`` argument dict.

    The contrastive tower is disabled (the official SigLIP tower has no counterpart here); the flow
    section carries the indicator probability ``cfg_indicator``.
    """
    latent_shape = tuple(int(s) for s in latent_shape)
    ve = _source_encoder_config(model_args, latent_shape)
    if arch == "dimr":
        net = DiMRConfig(stages=_dimr_stages(model_args, latent_shape),
                         gradient_checkpointing=bool(model_args.get("gradient_checking", False)))
    elif arch == "dit":
        if model_args.get("learn_sigma", False):
            raise ValueError("model_args.learn_sigma=True is not implemented (the released DiT uses False)")
        size = {**DIT_H2, **model_args.get("dit", {})}
        if unknown := sorted(set(size) - set(DIT_H2)):
            raise KeyError(f"model_args.dit: unknown keys {unknown}; valid: {sorted(DIT_H2)}")
        if "latent_size" in model_args and int(model_args["latent_size"]) != latent_shape[1]:
            raise ValueError(f"model_args.latent_size={model_args['latent_size']} does not match latent_shape "
                             f"{latent_shape}")
        net = DiTConfig(patch_size=int(size["patch_size"]), hidden_size=int(size["hidden_size"]),
                        depth=int(size["depth"]), num_heads=int(size["num_heads"]), mlp_ratio=float(size["mlp_ratio"]),
                        indicator_init_std=0.02, pos_embed_order="wh", store_pos_embed=True)
    else:
        raise ValueError(f"unknown arch {arch!r}; valid: 'dimr', 'dit'")
    model = CrossFlowModelConfig(source_encoder=ve, velocity_net=net, contrastive=ContrastiveConfig(enabled=False))
    flow = FlowConfig(null_probability=float(model_args.get("cfg_indicator", 0.1)))
    return model, flow


class OfficialSourceEncoder:
    """The Text VE with the official call signature: ``(tokens, mask) -> (z, mu, logvar)``, each ``(B, C·H·W)``.

    ``z = mu + exp(logvar/2)·ε`` is drawn on every call, as the official model does at inference too.
    """

    def __init__(self, encoder: nn.Module) -> None:
        self.encoder = encoder

    def __call__(self, tokens: Tensor, mask: Optional[Tensor] = None, *,
                 generator: Optional[torch.Generator] = None) -> tuple[Tensor, Tensor, Tensor]:
        posterior = self.encoder(tokens, mask)
        z = posterior.sample(generator=generator)
        return z.flatten(1), posterior.mean.flatten(1), posterior.logvar.flatten(1)


class OfficialCrossFlow(nn.Module):
    """Our :class:`CrossFlow` seen through the official interfaces; ``.model`` is the CrossFlow itself.

    Attributes:
        model: the wrapped CrossFlow (its ``state_dict`` is what an export stores).
        model_config, flow_config: the config sections it was built from.
        arch: ``"dimr"`` or ``"dit"``.
    """

    def __init__(self, model: CrossFlow, model_config: CrossFlowModelConfig, flow_config: FlowConfig,
                 arch: str) -> None:
        super().__init__()
        self.model = model
        self.model_config, self.flow_config, self.arch = model_config, flow_config, arch

    @property
    def source_encoder(self) -> OfficialSourceEncoder:
        return OfficialSourceEncoder(self.model.source_encoder)

    @property
    def velocity_net(self) -> nn.Module:
        return self.model.velocity_net

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.model(*args, **kwargs)


def build_from_official_args(model_args: Mapping[str, Any], arch: str, latent_shape: tuple[int, int, int], *,
                             device: Optional[torch.device | str] = None) -> OfficialCrossFlow:
    """Our model for an official ``model`` argument dict (see the module docstring).

    Args:
        model_args: the official ``config.nnet.model_args`` as a plain nested dict.
        arch: ``"dimr"`` or ``"dit"``.
        latent_shape: ``(C, H, W)`` of the image latent (4×32×32 at 256 px, 4×64×64 at 512 px).
        device: build directly on this device (``"meta"`` allocates nothing).
    """
    model_cfg, flow_cfg = official_model_config(model_args, arch, latent_shape)
    with torch.device(device) if device is not None else nullcontext():
        model = build_model(model_cfg, flow_cfg, source=TokenSpec(int(model_args.get("num_clip_token", 77)),
                                                                   int(model_args["clip_dim"])),
                            target=ImageSpec.of(latent_shape))
    return OfficialCrossFlow(model, model_cfg, flow_cfg, arch)


@dataclass
class LoadReport:
    """What :func:`load_official_state_dict` did.

    Attributes:
        loaded: number of our tensors set.
        skipped: official training-only keys that were not loaded.
        kept: our keys that the checkpoint did not set (training-only, e.g. ``logit_scale``).
    """

    loaded: int = 0
    skipped: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)


def _inference_key(key: str) -> bool:
    return key.startswith(("source_encoder.", "velocity_net."))


def load_official_state_dict(model: nn.Module, state_dict: Mapping[str, Tensor], *,
                             arch: Optional[str] = None) -> LoadReport:
    """Load an official state dict into our model (strict for every tensor used at inference).

    Args:
        model: an :class:`OfficialCrossFlow` or a :class:`CrossFlow` (then ``arch`` is required). A model
            built on the meta device gets the checkpoint's tensors assigned.
        state_dict: the official ``nnet`` state dict.
        arch: ``"dimr"`` or ``"dit"`` (default: the wrapper's).

    Raises:
        KeyError: an official key with no counterpart, or one of our inference tensors left unset.
        ValueError: a shape mismatch (naming both keys and shapes).
    """
    target = model.model if isinstance(model, OfficialCrossFlow) else model
    arch = arch or getattr(model, "arch", None)
    if arch is None:
        raise ValueError("arch is required when loading into a plain CrossFlow model ('dimr' or 'dit')")
    converted = official_to_ours(dict(state_dict), arch)
    if converted.unknown:
        raise KeyError(f"{len(converted.unknown)} official keys have no counterpart in our {arch} model, e.g. "
                       f"{converted.unknown[:5]}")
    ours = target.state_dict()
    inverse = {new: old for old, new in converted.mapping.items()}
    for key, value in converted.state.items():
        if key not in ours:
            raise KeyError(f"official {inverse.get(key, key)} maps to {key}, which our model does not have "
                           "(was it built from the same model arguments?)")
        if tuple(ours[key].shape) != tuple(value.shape):
            raise ValueError(f"official {inverse.get(key, key)} {tuple(value.shape)} does not fit our {key} "
                             f"{tuple(ours[key].shape)}")
    missing = [k for k in ours if k not in converted.state]
    if bad := [k for k in missing if _inference_key(k)]:
        raise KeyError(f"{len(bad)} inference tensors of our model are not in the checkpoint, e.g. {bad[:5]}")
    assign = any(t.is_meta for t in ours.values())
    target.load_state_dict(converted.state, strict=False, assign=assign)
    report = LoadReport(loaded=len(converted.state), skipped=converted.skipped, kept=missing)
    if report.skipped:
        log.info("skipped %d training-only official tensors (%s)", len(report.skipped),
                 ", ".join(sorted({k.split(".")[0] + ".*" for k in report.skipped})))
    if report.kept:
        log.info("kept our own values for %d training-only tensors: %s", len(report.kept), report.kept[:5])
    return report


def read_official_checkpoint(path: str | Path) -> dict[str, Tensor]:
    """Read an official ``.pth`` (a plain state dict) without unpickling arbitrary objects (memory-mapped)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"official checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # legacy (non-zip) serialisation cannot be memory-mapped
        state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{path} is not a plain state dict of tensors (expected the official nnet .pth)")
    return dict(state)


def infer_source_dim(state_dict: Mapping[str, Tensor]) -> int:
    """LM width the checkpoint's Text VE expects (4096 T5-XXL through the compressor, else the layer width)."""
    if "context_encoder.compressor.fc1.weight" in state_dict:
        return int(state_dict["context_encoder.compressor.fc1.weight"].shape[1])
    key = "context_encoder.layers.0.attn.W_Q.weight"
    if key not in state_dict:
        raise KeyError(f"{key} missing: not an official CrossFlow checkpoint")
    return int(state_dict[key].shape[1])


def parameter_count(module: nn.Module) -> int:
    """Stored elements of parameters and persistent buffers (TDPs count their four tensors)."""
    return sum(math.prod(t.shape) for t in module.state_dict().values())


def convert_official_checkpoint(config: str | Path, checkpoint: str | Path, out_dir: str | Path,
                                overrides: list[str] = ()) -> dict[str, Any]:
    """``crossflow convert-official``: an official ``.pth`` → our export (``model.safetensors`` + ``config.yaml``).

    The model is built from our YAML ``config`` (e.g. ``configs/t2i/official/t2i_256px_clip_dimr.yaml``) on the
    meta device and gets the checkpoint's tensors (memory-mapped) assigned, so nothing is allocated twice.
    ``crossflow sample OUT_DIR`` then samples with the config's (official) sampler settings.

    Returns:
        A summary: output paths, tensors loaded and skipped.
    """
    from crossflow.registry import load_experiment
    from crossflow.train.trainer import export_model

    cfg, task_cls = load_experiment(config, list(overrides))
    arch = cfg.model.velocity_net.arch
    state = read_official_checkpoint(checkpoint)
    task = task_cls(cfg)
    source_dim = task.source_spec().dim  # t2i: task.language_model.dim, so the LM need not be present
    if infer_source_dim(state) != source_dim:
        raise ValueError(f"{checkpoint} expects {infer_source_dim(state)}-d token states, the config's language "
                         f"model gives {source_dim} (task.language_model.dim)")
    with torch.device("meta"):
        model = task.build_model()
    report = load_official_state_dict(model, state, arch=arch)
    unset = [k for k, v in model.state_dict().items() if v.is_meta]
    if unset:
        raise ValueError(f"the config builds tensors the checkpoint does not have: {unset[:5]} (the official "
                         "configs set model.contrastive.enabled=false)")
    out = Path(out_dir)
    export_model(model.state_dict(), cfg, out)
    summary = {"export": str(out), "weights": str(out / "model.safetensors"), "config": str(out / "config.yaml"),
               "arch": arch, "tensors_loaded": report.loaded, "skipped_training_only": len(report.skipped),
               "parameters": parameter_count(model)}
    (out / "conversion.json").write_text(json.dumps({**summary, "checkpoint": str(checkpoint),
                                                     "source_config": str(config)}, indent=2))
    return summary
