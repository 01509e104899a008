"""Side-by-side check against the official CrossFlow code: same weights, same inputs, same outputs.

    python tools/compare_official.py --official-repo /path/to/CrossFlow [--cases dimr256 dimr512 t5 dit]

Builds small models of the released families with the *official* code (imported from the checkout
you point to, outside this repository), perturbs every parameter randomly (time-dependent ones
included, so that time matters), loads that state dict into our models with
:func:`crossflow.official.load_official_state_dict`, and compares the Text VE's ``mu``/``logvar``, every
DiMR stage output (or the DiT velocity) and the multi-scale targets. Prints one Markdown row per case.

Official dependencies that are absent here are stubbed: ``open_clip`` (the training-only image tower),
``torchvision`` (an unused import), ``absl`` (logging in ``sde.py``) and, without timm, ``trunc_normal_``
(init only) and timm's ``PatchEmbed``/``Attention``/``Mlp``, written here with timm's semantics (the official
DiT is built from them; with the real timm installed, the real modules are used).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from crossflow.flow.multiscale import multiscale_targets  # noqa: E402
from crossflow.official import build_from_official_args, load_official_state_dict  # noqa: E402


class _TimmMlp(nn.Module):
    """timm ``Mlp``: fc1 → act → (norm) → fc2 (dropout 0)."""

    def __init__(self, in_features, hidden_features, out_features=None, act_layer=nn.GELU, norm_layer=None, drop=0.0):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = act_layer()
        self.norm = norm_layer(hidden_features) if norm_layer else nn.Identity()
        self.fc2 = nn.Linear(hidden_features, out_features or in_features)

    def forward(self, x):
        return self.fc2(self.norm(self.act(self.fc1(x))))


class _TimmAttention(nn.Module):
    """timm ``Attention``: fused qkv split as (3, heads, head_dim), SDPA, output projection."""

    def __init__(self, dim, num_heads=8, qkv_bias=False, **kwargs):
        super().__init__()
        self.num_heads = num_heads
        self.qkv, self.proj = nn.Linear(dim, 3 * dim, bias=qkv_bias), nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        return self.proj(nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, c))


class _TimmPatchEmbed(nn.Module):
    """timm ``PatchEmbed``: a strided convolution, flattened to tokens row-major."""

    def __init__(self, img_size, patch_size, in_chans, embed_dim, bias=True):
        super().__init__()
        self.patch_size = (patch_size, patch_size)
        self.num_patches = (img_size // patch_size) ** 2
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride=patch_size, bias=bias)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


def _stub_missing_modules() -> list[str]:
    stubbed = []

    class _Tower(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.text, self.logit_bias = nn.Identity(), nn.Parameter(torch.zeros(()))
            self.logit_scale = nn.Parameter(torch.tensor(2.659))

    def create_model_and_transforms(*args, **kwargs):
        return _Tower(), None, None

    try:
        import open_clip  # noqa: F401
    except ImportError:
        sys.modules["open_clip"] = types.SimpleNamespace(create_model_and_transforms=create_model_and_transforms)
        stubbed.append("open_clip")
    try:
        import torchvision.transforms  # noqa: F401
    except Exception:
        tv = types.ModuleType("torchvision")
        tv.transforms = types.ModuleType("torchvision.transforms")
        sys.modules["torchvision"], sys.modules["torchvision.transforms"] = tv, tv.transforms
        stubbed.append("torchvision")
    try:
        import absl.logging  # noqa: F401
    except ImportError:  # sde.py logs through absl
        import logging

        sys.modules["absl"] = types.SimpleNamespace(logging=logging)
        stubbed.append("absl (logging)")
    try:
        import timm  # noqa: F401
    except Exception:
        layers = types.ModuleType("timm.models.layers")
        layers.trunc_normal_, layers.Mlp = nn.init.trunc_normal_, _TimmMlp
        vit = types.ModuleType("timm.models.vision_transformer")
        vit.PatchEmbed, vit.Attention, vit.Mlp = _TimmPatchEmbed, _TimmAttention, _TimmMlp
        timm = types.ModuleType("timm")
        timm.models = types.ModuleType("timm.models")
        timm.models.layers, timm.models.vision_transformer = layers, vit
        sys.modules.update({"timm": timm, "timm.models": timm.models, "timm.models.layers": layers,
                            "timm.models.vision_transformer": vit})
        stubbed.append("timm (standard PatchEmbed/Attention/Mlp semantics, written here)")
    return stubbed


def _ns(obj):
    return SimpleNamespace(**{k: _ns(v) for k, v in obj.items()}) if isinstance(obj, dict) else (
        [_ns(v) for v in obj] if isinstance(obj, list) else obj)


def _stage(block, dim, hidden, blocks, grid, patch, heads=4):
    st = {"block_type": block, "dim": dim, "hidden_dim": hidden, "num_blocks": blocks, "max_height": grid,
          "max_width": grid, "image_input_ratio": 1, "input_feature_ratio": patch, "final_kernel_size": 3,
          "dropout_prob": 0}
    st.update({"num_attention_heads": heads} if block == "TransformerBlock" else {"kernel_size": 7})
    return st


def _args(clip_dim, stages, vae_blocks=2, down=3, channels=4):
    vae = {"num_blocks": vae_blocks, "hidden_dim": 64, "hidden_token_length": 256, "num_attention_heads": 4,
           "dropout_prob": 0.1, "num_down_sample_block": down}
    return {"channels": channels, "block_grad_to_lowres": False, "norm_type": "TDRMSN", "use_t2i": True,
            "clip_dim": clip_dim, "num_clip_token": 77, "gradient_checking": False, "cfg_indicator": 0.1,
            "textVAE": vae, "stage_configs": stages}


CASES = {
    "dimr256": ("dimr", (4, 32, 32), _args(64, [_stage("TransformerBlock", 64, 128, 3, 16, 2),
                                                 _stage("ConvNeXtBlock", 32, 64, 3, 32, 1)])),
    "dimr512": ("dimr", (4, 64, 64), _args(64, [_stage("TransformerBlock", 64, 128, 3, 16, 4),
                                                 _stage("ConvNeXtBlock", 32, 64, 3, 32, 2),
                                                 _stage("ConvNeXtBlock", 16, 32, 1, 64, 1)])),
    "t5": ("dimr", (4, 32, 32), _args(4096, [_stage("TransformerBlock", 64, 128, 3, 16, 2),
                                             _stage("ConvNeXtBlock", 32, 64, 3, 32, 1)], vae_blocks=1, down=5)),
    "dit": ("dit", (4, 64, 64), {**_args(64, []), "latent_size": 64, "learn_sigma": False,
                                 "dit": {"depth": 2, "hidden_size": 64, "num_heads": 4, "patch_size": 8}}),
}


@torch.no_grad()
def _perturb(model: nn.Module, generator: torch.Generator) -> None:
    for name, p in model.named_parameters():
        scale = 0.5 if "nodecay" in name or name.endswith(("param0", "param1")) else 0.05
        p.add_(scale * torch.randn(p.shape, generator=generator))


def _official_model(repo: Path, arch: str, args: dict):
    if arch == "dimr":
        return importlib.import_module("libs.model.dimr_t2i").MRModel(_ns(args))
    dit = importlib.import_module("libs.model.dit_t2i")
    size = args["dit"]
    return dit.DiT(_ns(args), patch_size=size["patch_size"], hidden_size=size["hidden_size"], depth=size["depth"],
                   num_heads=size["num_heads"])


def compare(repo: Path, case: str, seed: int = 0) -> dict:
    arch, latent, args = CASES[case]
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    official = _official_model(repo, arch, args).eval()
    _perturb(official, gen)
    ours = build_from_official_args(args, arch, latent)
    report = load_official_state_dict(ours, official.state_dict())
    ours.eval()
    b = 4
    tokens = torch.randn(b, 77, args["clip_dim"], generator=gen)
    mask = (torch.arange(77)[None] < torch.tensor([77, 20, 5, 1])[:, None]).long()
    _, mu_o, lv_o = official(tokens, text_encoder=True, mask=mask)
    _, mu, lv = ours.source_encoder(tokens, mask)
    x = torch.randn(b, *latent, generator=gen)
    t = torch.tensor([0.0, 0.3, 0.7, 1.0])
    null = torch.tensor([False, True, False, True])
    if arch == "dimr":
        outs_o = official(x, log_snr=4 - 8 * t, null_indicator=null)
        outs = ours.velocity_net(x, t, null)
        same_t = official(x, log_snr=torch.full((b,), 4 - 8 * 0.3), null_indicator=null)[-1]
        outs_same = ours.velocity_net(x, torch.full((b,), 0.3), null)[-1]
        net_diff = max(max((a - c).abs().max().item() for a, c in zip(outs_o, outs)),
                       (same_t - outs_same).abs().max().item())
        scale = max(o.abs().max().item() for o in outs_o)
        sde = importlib.import_module("sde") if (repo / "sde.py").is_file() else None
        target_diff = float("nan")
        if sde is not None:
            ref = sde.multi_scale_targets(x, levels=len(outs), scale_correction=True)
            mine = multiscale_targets(x, len(outs))
            target_diff = max((ref[k] - mine[k]).abs().max().item() for k in ref)
    else:
        out_o, out = official(x, t=t, null_indicator=null)[0], ours.velocity_net(x, t, null)
        net_diff, scale, target_diff = (out_o - out).abs().max().item(), out_o.abs().max().item(), float("nan")
    ve_diff = max((mu_o - mu).abs().max().item(), (lv_o - lv).abs().max().item())
    return {"case": case, "arch": arch, "latent": "x".join(map(str, latent)), "loaded": report.loaded,
            "skipped": len(report.skipped), "ve_max_abs_diff": ve_diff, "ve_scale": mu_o.abs().max().item(),
            "net_max_abs_diff": net_diff, "net_scale": scale, "targets_max_abs_diff": target_diff}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official-repo", required=True, type=Path, help="checkout of qihao067/CrossFlow")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    args = parser.parse_args()
    if not (args.official_repo / "libs" / "model" / "dimr_t2i.py").is_file():
        parser.error(f"{args.official_repo} is not a CrossFlow checkout (libs/model/dimr_t2i.py missing)")
    stubbed = _stub_missing_modules()
    sys.path.insert(0, str(args.official_repo.resolve()))
    print(f"stubbed: {', '.join(stubbed) or 'nothing'}; torch {torch.__version__}")
    print("| case | arch | latent | tensors loaded | skipped (image tower) | VE max abs diff (max abs) | "
          "net max abs diff (max abs) | multi-scale targets max abs diff |")
    print("|---|---|---|---|---|---|---|---|")
    for case in args.cases:
        r = compare(args.official_repo, case)
        print(f"| {r['case']} | {r['arch']} | {r['latent']} | {r['loaded']} | {r['skipped']} | "
              f"{r['ve_max_abs_diff']:.2e} ({r['ve_scale']:.2f}) | "
              f"{r['net_max_abs_diff']:.2e} ({r['net_scale']:.2f}) | "
              f"{r['targets_max_abs_diff']:.1e} |")


if __name__ == "__main__":
    main()
