"""Golden outputs of the official CrossFlow code on small models with reproducible weights.

Weights are drawn from a seeded generator over the official key list (sorted), so the test can rebuild
the exact official-layout state dict without storing it; only inputs' seeds and (subsampled) outputs of
the official code are stored, in ``tests/data/official/golden_<case>.safetensors``.

Regenerate (needs a checkout of qihao067/CrossFlow outside this repository; missing official
dependencies are stubbed as in ``tools/compare_official.py``):

    python tests/helpers/official_golden.py --official-repo /path/to/CrossFlow
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import torch
from torch import Tensor

DATA = Path(__file__).resolve().parents[1] / "data" / "official"
SAMPLE = 1024  # stored elements per output tensor (evenly strided)


def _stage(block: str, dim: int, hidden: int, blocks: int, grid: int, patch: int) -> dict:
    st = {"block_type": block, "dim": dim, "hidden_dim": hidden, "num_blocks": blocks, "max_height": grid,
          "max_width": grid, "image_input_ratio": 1, "input_feature_ratio": patch, "final_kernel_size": 3,
          "dropout_prob": 0}
    st.update({"num_attention_heads": 2} if block == "TransformerBlock" else {"kernel_size": 7})
    return st


def _args(clip_dim: int, stages: list, *, channels: int = 4, vae_blocks: int = 2, down: int = 3,
          heads: int = 2) -> dict:
    args = {"channels": channels, "block_grad_to_lowres": False, "norm_type": "TDRMSN", "use_t2i": True,
            "clip_dim": clip_dim, "num_clip_token": 77, "gradient_checking": False, "cfg_indicator": 0.1,
            "textVAE": {"num_blocks": vae_blocks, "hidden_dim": 32, "hidden_token_length": 256,
                        "num_attention_heads": heads, "dropout_prob": 0.1, "num_down_sample_block": down}}
    if stages:
        args["stage_configs"] = stages
    return args


#: name -> (arch, latent shape, official model arguments). Sizes are small members of the released families:
#: linear VE head (2·C·H·W = 4096), MLP+CNN adaptor (4×64×64, three stages), the T5 compressor, DiT.
CASES: dict[str, tuple[str, tuple[int, int, int], dict]] = {
    "dimr256": ("dimr", (2, 32, 32), _args(16, [_stage("TransformerBlock", 16, 32, 3, 16, 2),
                                                _stage("ConvNeXtBlock", 8, 16, 3, 32, 1)], channels=2)),
    "dimr512_t5": ("dimr", (4, 64, 64), _args(4096, [_stage("TransformerBlock", 16, 32, 3, 16, 4),
                                                     _stage("ConvNeXtBlock", 8, 16, 3, 32, 2),
                                                     _stage("ConvNeXtBlock", 8, 16, 1, 64, 1)],
                                              vae_blocks=1, down=7, heads=8)),
    "dit": ("dit", (4, 64, 64), _args(16, [], heads=2) | {
        "latent_size": 64, "learn_sigma": False,
        "dit": {"depth": 2, "hidden_size": 32, "num_heads": 2, "patch_size": 8}}),
}

_NORM_WEIGHT = re.compile(r"(\.g|ln_\w+\.weight|scale\.param[01]|(upsample\.[02]|output_layer\.0)\.weight\.param[01])$")
_TDP_SLOPE = re.compile(r"nodecay_(weight|bias)$")


def synthetic_state(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, Tensor]:
    """Reproducible official-layout weights: norm gains ``1 + 0.1·n``, TDP slopes/offsets ``0.5·n``,
    matrices ``n/sqrt(fan_in)``, other vectors ``0.1·n`` (``n`` standard normal, keys in sorted order; the
    image tower ``open_clip*`` gets constants so that its layout does not shift the stream)."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key in sorted(shapes):
        shape = tuple(shapes[key])
        if key.startswith("open_clip"):  # training-only image tower: constant, outside the random stream
            out[key] = torch.full(shape, 2.5 if key == "open_clip.logit_scale" else 0.01)
            continue
        n = torch.randn(shape, generator=gen)
        if _NORM_WEIGHT.search(key):
            out[key] = 1 + 0.1 * n
        elif _TDP_SLOPE.search(key):
            out[key] = 0.5 * n
        elif len(shape) >= 2 and key != "pos_embed":
            out[key] = n / max(1, int(torch.tensor(shape[1:]).prod())) ** 0.5
        else:
            out[key] = 0.1 * n
    return out


def inputs(case: str, batch: int = 2) -> dict[str, Tensor]:
    """Seeded inputs: tokens ``(B, 77, D)``, mask (77 and 9 real tokens), ``x_t``, ``t`` and the indicator."""
    _, latent, args = CASES[case]
    gen = torch.Generator().manual_seed(1)
    lengths = torch.tensor([77, 9][:batch])
    return {"tokens": torch.randn(batch, 77, args["clip_dim"], generator=gen),
            "mask": (torch.arange(77)[None] < lengths[:, None]).long(),
            "x": torch.randn(batch, *latent, generator=gen), "t": torch.tensor([0.25, 0.8][:batch]),
            "null": torch.tensor([False, True][:batch])}


def subsample(x: Tensor) -> Tensor:
    flat = x.detach().float().flatten()
    return flat[:: max(1, flat.numel() // SAMPLE)][:SAMPLE].clone()


def _official_outputs(case: str, repo: Path) -> dict[str, Tensor]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    import compare_official as tool  # noqa: E402 - the stubs for absent official dependencies

    tool._stub_missing_modules()
    sys.path.insert(0, str(repo.resolve()))
    arch, _, args = CASES[case]
    official = tool._official_model(repo, arch, args).eval()
    shapes = {k: tuple(v.shape) for k, v in official.state_dict().items()}
    official.load_state_dict(synthetic_state(shapes))
    inp = inputs(case)
    with torch.no_grad():
        _, mu, logvar = official(inp["tokens"], text_encoder=True, mask=inp["mask"])
        if arch == "dimr":
            outs = official(inp["x"], log_snr=4 - 8 * inp["t"], null_indicator=inp["null"])
        else:
            outs = official(inp["x"], t=inp["t"], null_indicator=inp["null"])
    result = {"mu": subsample(mu), "logvar": subsample(logvar)}
    result |= {f"velocity_{i}": subsample(v) for i, v in enumerate(outs)}
    result |= {f"velocity_{i}_sum": v.double().sum().float()[None] for i, v in enumerate(outs)}
    return result


def main() -> None:
    from safetensors.torch import save_file

    parser = argparse.ArgumentParser(description="write the golden official outputs")
    parser.add_argument("--official-repo", required=True, type=Path)
    args = parser.parse_args()
    for case in CASES:
        save_file(_official_outputs(case, args.official_repo), str(DATA / f"golden_{case}.safetensors"))
        print("wrote", DATA / f"golden_{case}.safetensors")


if __name__ == "__main__":
    main()
