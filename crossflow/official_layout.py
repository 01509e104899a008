"""Key layout of the released CrossFlow state dicts and its translation to ours (both directions).

The official ``.pth`` files are plain state dicts of the official ``MRModel`` (DiMR) or ``DiT``.
Our :class:`~crossflow.model.CrossFlow` keeps the velocity network under ``velocity_net.`` and the
Text VE under ``source_encoder.``, with its own module names; the official Text VE's separate
``W_Q``/``W_K``/``W_V`` projections become one fused ``qkv`` projection (rows ``[Q; K; V]``).
The image tower (``open_clip.visual.*``, ``open_clip_output.*``) exists only for the training loss and
has no counterpart here; ``open_clip.logit_scale`` (a raw multiplier of the cosine similarities) maps
to our ``logit_scale`` (its logarithm: we multiply by ``exp(logit_scale)``).
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field

import torch
from torch import Tensor

#: Prefixes of the training-only image tower of the official checkpoints.
TRAINING_ONLY_PREFIXES = ("open_clip.", "open_clip_output.")
LOGIT_SCALE_KEY = "open_clip.logit_scale"

_TDP = r"(param0|param1|nodecay_weight|nodecay_bias)"
_VN = "velocity_net."
_VE = "source_encoder."

#: (official regex, our replacement) for the DiMR backbone; tried in order, first match wins.
DIMR_RULES: list[tuple[str, str]] = [
    (r"^stages\.(\d+)\.tensor_true$", _VN + r"stages.\1.indicator_null"),
    (r"^stages\.(\d+)\.tensor_false$", _VN + r"stages.\1.indicator_cond"),
    (r"^stages\.(\d+)\.input_layer\.1\.(weight|bias)$", _VN + r"stages.\1.patch_embed.\2"),
    (r"^stages\.(\d+)\.input_layer\.3\.position_embeddings\.weight$", _VN + r"stages.\1.pos_embed.weight"),
    (rf"^stages\.(\d+)\.upsample\.0\.(weight|bias)\.{_TDP}$", _VN + r"stages.\1.upsample.norm_in.\2.\3"),
    (r"^stages\.(\d+)\.upsample\.1\.kernel\.(weight|bias)$", _VN + r"stages.\1.upsample.shuffle.proj.\2"),
    (rf"^stages\.(\d+)\.upsample\.2\.(weight|bias)\.{_TDP}$", _VN + r"stages.\1.upsample.norm_out.\2.\3"),
    (rf"^stages\.(\d+)\.blocks\.(\d+)\.block1\.norm\.scale\.{_TDP}$", _VN + r"stages.\1.blocks.\2.attn_norm.scale.\3"),
    (r"^stages\.(\d+)\.blocks\.(\d+)\.block1\.query_key_value\.weight$", _VN + r"stages.\1.blocks.\2.attn.qkv.weight"),
    (r"^stages\.(\d+)\.blocks\.(\d+)\.block1\.dense\.(weight|bias)$", _VN + r"stages.\1.blocks.\2.attn.proj.\3"),
    (r"^stages\.(\d+)\.blocks\.(\d+)\.block1\.1\.(weight|bias)$", _VN + r"stages.\1.blocks.\2.dwconv.\3"),
    (rf"^stages\.(\d+)\.blocks\.(\d+)\.block2\.norm\.scale\.{_TDP}$", _VN + r"stages.\1.blocks.\2.mlp_norm.scale.\3"),
    (r"^stages\.(\d+)\.blocks\.(\d+)\.block2\.w0\.(weight|bias)$", _VN + r"stages.\1.blocks.\2.mlp.gate.\3"),
    (r"^stages\.(\d+)\.blocks\.(\d+)\.block2\.w1\.(weight|bias)$", _VN + r"stages.\1.blocks.\2.mlp.up.\3"),
    (r"^stages\.(\d+)\.blocks\.(\d+)\.block2\.w2\.(weight|bias)$", _VN + r"stages.\1.blocks.\2.mlp.down.\3"),
    (r"^stages\.(\d+)\.skip_denses\.(\d+)\.(weight|bias)$", _VN + r"stages.\1.skip_proj.\2.\3"),
    (rf"^stages\.(\d+)\.output_layer\.0\.(weight|bias)\.{_TDP}$", _VN + r"stages.\1.out_norm.\2.\3"),
    (r"^stages\.(\d+)\.output_layer\.2\.(weight|bias)$", _VN + r"stages.\1.out_conv.\2"),
]

#: (official regex, our replacement) for the DiT-H/2 backbone.
DIT_RULES: list[tuple[str, str]] = [
    (r"^pos_embed$", _VN + "pos_embed"),
    (r"^x_embedder\.proj\.(weight|bias)$", _VN + r"x_embedder.\1"),
    (r"^t_embedder\.mlp\.(0|2)\.(weight|bias)$", _VN + r"t_embedder.mlp.\1.\2"),
    (r"^y_embedder\.embedding_table\.weight$", _VN + "y_embedder.weight"),
    (r"^blocks\.(\d+)\.(attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2|adaLN_modulation\.1)\.(weight|bias)$",
     _VN + r"blocks.\1.\2.\3"),
    (r"^final_layer\.(linear|adaLN_modulation\.1)\.(weight|bias)$", _VN + r"final_layer.\1.\2"),
]

_LAYER = r"^context_encoder\.(layers|reduction_layers)\.(\d+)\."
#: (official regex, our replacement) for the Text VE (``W_Q/W_K/W_V`` are fused separately).
TEXT_VE_RULES: list[tuple[str, str]] = [
    (r"^context_encoder\.compressor\.(fc1|fc2)\.(weight|bias)$", _VE + r"compressor.\1.\2"),
    (r"^context_encoder\.compressor\.ln_fc1\.(weight|bias)$", _VE + r"compressor.norm.\1"),
    (_LAYER + r"attn\.W_O\.(weight|bias)$", _VE + r"\1.\2.attn.proj.\3"),
    (_LAYER + r"feed_forward\.ffn_1\.(weight|bias)$", _VE + r"\1.\2.mlp.fc1.\3"),
    (_LAYER + r"feed_forward\.ffn_2\.(weight|bias)$", _VE + r"\1.\2.mlp.fc2.\3"),
    (_LAYER + r"(norm1|norm2)\.g$", _VE + r"\1.\2.\3.weight"),
    (_LAYER + r"(norm1|norm2)\.b$", _VE + r"\1.\2.\3.bias"),
    (r"^context_encoder\.reduction_layers\.(\d+)\.reduction\.(weight|bias)$",
     _VE + r"reduction_layers.\1.reduction.\2"),
    (r"^context_encoder\.linear\.(weight|bias)$", _VE + r"head.\1"),
    (r"^context_encoder\.adaptor\.(fc1|ln_fc1|fc2|ln_fc2|conv1|ln_conv1|conv2|ln_conv2|conv3)\.(weight|bias)$",
     _VE + r"head.\1.\2"),
]
_QKV = re.compile(_LAYER + r"attn\.W_(Q|K|V)\.(weight|bias)$")


@dataclass
class ConvertedState:
    """Result of translating an official state dict.

    Attributes:
        state: our keys → tensors (everything used at inference, plus ``logit_scale`` when available).
        skipped: official training-only keys that have no counterpart here.
        unknown: official keys that match no rule (an error for a strict load).
        mapping: official key → our key for every translated key (fused keys map to one target).
    """

    state: dict[str, Tensor] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    mapping: dict[str, str] = field(default_factory=dict)


def _compile(rules: list[tuple[str, str]]) -> list[tuple[re.Pattern, str]]:
    return [(re.compile(p), r) for p, r in rules]


_RULES = {"dimr": _compile(DIMR_RULES + TEXT_VE_RULES), "dit": _compile(DIT_RULES + TEXT_VE_RULES)}


def _logit_scale_to_ours(raw: Tensor) -> Tensor:
    """Official logits use ``raw·cos``, ours ``exp(s)·cos``: ``s = log(raw)`` (raw must be positive)."""
    if not raw.is_meta and float(raw) <= 0:
        raise ValueError(f"{LOGIT_SCALE_KEY} = {float(raw)} is not positive; it has no log-space equivalent")
    return torch.log(raw.float()).reshape(1)  # our parameter has one element (FSDP shards no 0-d tensor)


def official_to_ours(state_dict: dict[str, Tensor], arch: str) -> ConvertedState:
    """Translate an official state dict (``arch`` ``"dimr"`` or ``"dit"``) to our key layout."""
    if arch not in _RULES:
        raise ValueError(f"unknown arch {arch!r}; valid: 'dimr', 'dit'")
    out = ConvertedState()
    qkv: dict[tuple[str, str, str], dict[str, Tensor]] = {}
    for key, value in state_dict.items():
        if key == LOGIT_SCALE_KEY:
            try:
                out.state["logit_scale"] = _logit_scale_to_ours(value)
                out.mapping[key] = "logit_scale"
            except ValueError:
                out.skipped.append(key)
            continue
        if key.startswith(TRAINING_ONLY_PREFIXES):
            out.skipped.append(key)
            continue
        match = _QKV.match(key)
        if match:
            group, index, which, kind = match.groups()
            qkv.setdefault((group, index, kind), {})[which] = value
            out.mapping[key] = f"{_VE}{group}.{index}.attn.qkv.{kind}"
            continue
        for pattern, repl in _RULES[arch]:
            if pattern.match(key):
                new = pattern.sub(repl, key)
                out.state[new] = value
                out.mapping[key] = new
                break
        else:
            out.unknown.append(key)
    for (group, index, kind), parts in qkv.items():
        if set(parts) != {"Q", "K", "V"}:
            missing = sorted({"Q", "K", "V"} - set(parts))
            raise KeyError(f"context_encoder.{group}.{index}.attn: W_{'/W_'.join(missing)}.{kind} missing "
                           "(the Q, K and V projections are fused and must all be present)")
        out.state[f"{_VE}{group}.{index}.attn.qkv.{kind}"] = torch.cat([parts["Q"], parts["K"], parts["V"]], dim=0)
    return out


_GROUP = re.compile(r"\((?!\?)[^()]*\)")


def _inverse(rules: list[tuple[str, str]]) -> list[tuple[re.Pattern, str]]:
    r"""Invert anchored rules whose replacement uses every capture group once, in order (true above).

    ``(^stages\.(\d+)\.tensor_true$, velocity_net.stages.\1.indicator_null)`` becomes
    ``(^velocity_net\.stages\.(\d+)\.indicator_null$, stages.\1.tensor_true)``.
    """
    inverse = []
    for pattern, repl in rules:
        groups = _GROUP.findall(pattern)
        parts = re.split(r"\\(\d)", repl)  # literal, group number, literal, ...
        ours = "".join(re.escape(p) if i % 2 == 0 else groups[int(p) - 1] for i, p in enumerate(parts))
        numbers = itertools.count(1)
        official = _GROUP.sub(lambda _: f"\\{next(numbers)}", pattern.strip("^$")).replace("\\.", ".")
        inverse.append((re.compile(f"^{ours}$"), official))
    return inverse


_INVERSE = {"dimr": _inverse(DIMR_RULES + TEXT_VE_RULES), "dit": _inverse(DIT_RULES + TEXT_VE_RULES)}
_OUR_QKV = re.compile(r"^source_encoder\.(layers|reduction_layers)\.(\d+)\.attn\.qkv\.(weight|bias)$")


def ours_to_official(state: dict[str, Tensor], arch: str) -> dict[str, Tensor]:
    """Our inference state dict → the official layout (without the image tower).

    ``logit_scale`` becomes ``open_clip.logit_scale = exp(logit_scale)``; keys of ours that the official
    model does not have (e.g. our contrastive tower) are dropped.
    """
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if key == "logit_scale":
            out[LOGIT_SCALE_KEY] = value.float().exp().reshape(())  # 0-d there, one element here
            continue
        match = _OUR_QKV.match(key)
        if match:
            group, index, kind = match.groups()
            for name, part in zip("QKV", value.chunk(3, dim=0)):
                out[f"context_encoder.{group}.{index}.attn.W_{name}.{kind}"] = part.clone()
            continue
        for pattern, repl in _INVERSE[arch]:
            if pattern.match(key):
                out[pattern.sub(repl, key)] = value
                break
    return out
