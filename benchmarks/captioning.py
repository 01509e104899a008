"""Captioning throughput: image-feature extraction (images/s) and caption generation (captions/s).

    python benchmarks/captioning.py [--config configs/captioning/coco_karpathy.yaml] [--num 32] [--batch 8]
                                    [--device cpu] [--kinds pixels,sd_vae] [--steps N]

Extraction: toy scenes written in COCO's format (`crossflow toy-data coco`, 256×256 JPEGs) through
`ImageEncoder.encode` for each kind (pixels at 32 px; sd_vae at 256 px with an SD kl-f8 AutoencoderKL of the
real architecture and random weights — the real weights cost the same). Generation: the config's CrossFlow
model and text VAE with random weights (same FLOPs as trained ones), `--batch` images per call, the config's
solver steps (or ``--steps``), image VE → ODE → text decoder → ids. Prints Markdown rows for RESULTS.md.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

import common  # noqa: F401 - puts the repository root on sys.path

from crossflow.registry import load_experiment  # noqa: E402
from tasks.captioning.coco import image_path, read_karpathy  # noqa: E402
from tasks.captioning.config import ImageFeatureConfig  # noqa: E402
from tasks.captioning.images import ImageEncoder  # noqa: E402
from tasks.captioning.toy_coco import write_toy_coco  # noqa: E402
from tasks.image_source import load_image  # noqa: E402


def _random_sd_vae(root: Path) -> str:
    from diffusers import AutoencoderKL

    path = root / "sd_vae_random"
    AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, sample_size=256,
                  block_out_channels=(128, 256, 512, 512), layers_per_block=2,
                  down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4
                  ).save_pretrained(path)
    return str(path)


def extraction_rows(root: Path, num: int, batch: int, device: str, kinds: list[str]) -> list[str]:
    info = write_toy_coco(root / "coco", num=num, resolution=256, num_val=0, num_test=0)
    images = read_karpathy(info["dataset_json"])
    arrays = [load_image(image_path(info["image_root"], im)) for im in images]
    rows = []
    for kind in kinds:
        cfg = ImageFeatureConfig(kind=kind, resolution=32 if kind == "pixels" else 256)
        if kind == "sd_vae":
            cfg.vae.name_or_path = _random_sd_vae(root)
        encoder = ImageEncoder.from_config(cfg, device=device)
        encoder.encode(arrays[:1])  # load the model outside the timing
        start = time.perf_counter()
        for i in range(0, len(arrays), batch):
            encoder.encode(arrays[i:i + batch])
        seconds = time.perf_counter() - start
        rows.append(f"| extraction: {kind} at {cfg.resolution} px (decoded 256×256 JPEGs, batch {batch}) | {device} "
                    f"| {len(arrays)} | {len(arrays) / seconds:.2f} images/s |")
    return rows


@torch.no_grad()
def generation_row(config: str, num: int, batch: int, device: str, steps: int | None) -> str:
    from crossflow.codecs.text_vae import TextVAE

    cfg, task_cls = load_experiment(config, [])
    task = task_cls(cfg)
    model = task.build_model().to(device)  # the model's own initialisation (no weights needed for timing)
    stage_cfg = task.text_vae_config()
    words = stage_cfg.task.text.vocabulary  # + 3 special tokens; COCO's ~9.5k words when not built yet
    vocab = len(words) + 3 if words else 9490
    vae = TextVAE(vocab, stage_cfg.task.max_length, stage_cfg.task.text_vae).to(device).eval()
    model.eval()
    options = cfg.sample
    if steps:
        options.steps = steps
    source_shape = task.source_spec().shape
    source = torch.randn(batch, *source_shape, device=device)
    model.generate(source, options=options, noise=torch.randn(batch, *task.target_spec().shape,
                                                              device=device))  # warm-up
    start, done = time.perf_counter(), 0
    while done < num:
        noise = torch.randn(batch, *task.target_spec().shape, device=device)
        vae.decode(model.generate(source, options=options, noise=noise))
        done += batch
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    params = sum(p.numel() for p in model.parameters()) / 1e6
    return (f"| caption generation: {Path(config).name} ({params:.1f}M, {options.solver} {options.steps} steps, "
            f"batch {batch}, random weights) | {device} | {done} | {done / seconds:.3f} captions/s |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/captioning/coco_karpathy.yaml", help="captioning config to time")
    p.add_argument("--num", type=int, default=32, help="images to extract / captions to generate (default 32)")
    p.add_argument("--batch", type=int, default=8, help="images per encoder / generation call (default 8)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--kinds", default="pixels,sd_vae", help="extraction kinds to time (default pixels,sd_vae)")
    p.add_argument("--steps", type=int, help="solver steps (default: the config's)")
    args = p.parse_args()
    print("| stage | device | items | throughput |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for row in extraction_rows(Path(tmp), args.num, args.batch, args.device, args.kinds.split(",")):
            print(row, flush=True)
    print(generation_row(args.config, args.num, args.batch, args.device, args.steps), flush=True)


if __name__ == "__main__":
    main()
