"""``crossflow sample`` (one or many processes), ``crossflow interpolate`` and ``crossflow arithmetic``.

``sample`` runs under ``accelerate launch`` / ``torchrun`` as well as alone: the prompts are split
between the processes (each writes its own ``NNNN.png`` under the shared output folder, numbered by
the prompt's global index) and rank 0 writes ``prompts.jsonl`` and ``grid.png``. The other two act on
the source latent ``z0`` of a CrossFlow model before the ODE (see :mod:`crossflow.latent_ops`).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger("crossflow")
GRID_IMAGES = 64  # images shown in grid.png
MIN_FRAMES = 5    # the official interpolation demo asks for at least 5


def add_parsers(sub: Any, add_generation_options: Callable[[argparse.ArgumentParser], None]) -> None:
    """Register ``interpolate`` and ``arithmetic`` on the ``crossflow`` sub-parser set."""
    p = sub.add_parser("interpolate", help="images along the line between two prompts' z0",
                       description="Linear interpolation between the VE latents z0 of two prompts (before the ODE). "
                                   "Writes frame_NNN.png, interpolation.gif, strip.png and interpolation.json.")
    p.add_argument("model", help="run directory or export directory")
    p.add_argument("--from", dest="prompt_a", required=True, help="first prompt (frame 0)")
    p.add_argument("--to", dest="prompt_b", required=True, help="second prompt (last frame)")
    p.add_argument("--frames", type=int, default=8, help=f"number of frames, >= {MIN_FRAMES} (default 8; "
                                                         "the official demo recommends 40)")
    p.add_argument("--gif-ms", type=int, default=120, help="GIF frame duration in ms (default 120)")
    p.add_argument("--out", default="outputs/interpolation", help="output directory")
    add_generation_options(p)

    p = sub.add_parser("arithmetic", help="images of ori + add - sub on the prompts' z0",
                       description="Latent arithmetic on the VE latents z0 (before the ODE): "
                                   "z = ori + add_scale*add - sub_scale*sub, re-standardised to mean 0 / std 1 as "
                                   "the official demo does. Writes ori.png, add.png, sub.png, result.png, "
                                   "arithmetic.png (captioned row) and arithmetic.json.")
    p.add_argument("model", help="run directory or export directory")
    p.add_argument("--ori", required=True, help="original prompt")
    p.add_argument("--add", help="prompt whose latent is added")
    p.add_argument("--sub", help="prompt whose latent is subtracted")
    p.add_argument("--add-scale", type=float, default=1.0, help="factor of the added latent (paper Fig. 6: alpha)")
    p.add_argument("--sub-scale", type=float, default=1.0, help="factor of the subtracted latent")
    p.add_argument("--no-renormalize", action="store_true", help="skip the official re-standardisation")
    p.add_argument("--out", default="outputs/arithmetic", help="output directory")
    add_generation_options(p)


def _generation_overrides(args: argparse.Namespace) -> dict:
    return {k: v for k in ("steps", "solver", "guidance", "z0", "temperature", "seed")
            if (v := getattr(args, k, None)) is not None}


def _read_prompts(args: argparse.Namespace) -> list[str]:
    prompts = list(args.prompt)
    if args.prompts_file:
        path = Path(args.prompts_file)
        if not path.is_file():
            raise FileNotFoundError(f"--prompts-file {path} does not exist")
        prompts += [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not prompts:
        raise ValueError("no prompts: give --prompt TEXT (repeatable) or --prompts-file FILE")
    if args.num < 1:
        raise ValueError(f"--num must be >= 1, got {args.num}")
    return prompts


def _load(args: argparse.Namespace, device: str, method: str):
    from crossflow.inference import load_model

    model, task, cfg = load_model(args.model, device=device)
    if not hasattr(task, method):
        raise ValueError(f"task {cfg.task.name!r} does not generate from prompts (`crossflow {args.command}` "
                         f"needs its {method})")
    return model, task, cfg


def _local_device(name: str | None) -> str:
    import torch

    return name or ("cuda" if torch.cuda.is_available() else "cpu")


def cmd_sample(args: argparse.Namespace) -> dict:
    """Generate ``--num`` images per prompt, split over all launched processes."""
    import numpy as np
    import torch
    from accelerate import PartialState
    from accelerate.utils import gather_object

    from crossflow.utils.images import save_grid, save_png, to_uint8

    prompts = _read_prompts(args)
    state = PartialState(cpu=args.device == "cpu" or not torch.cuda.is_available())
    device = args.device if args.device and state.num_processes == 1 else str(state.device)
    model, task, cfg = _load(args, device, "generate_images")
    expanded = [p for p in prompts for _ in range(args.num)]
    opts = _generation_overrides(args)
    seed = opts.pop("seed", cfg.sample.seed)
    if state.num_processes > 1 and hasattr(task, "encode_prompts"):
        if state.is_main_process:  # fill the embedding cache once (it takes one writer at a time)
            unique = sorted(set(prompts))
            for i in range(0, len(unique), 1024):
                task.encode_prompts(unique[i:i + 1024])
        state.wait_for_everyone()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    width = max(4, len(str(len(expanded) - 1)))  # file names sort in prompt order
    shown = []
    with state.split_between_processes(list(enumerate(expanded))) as mine:
        batch = cfg.sample.batch_size
        for i in range(0, len(mine), batch):  # generate and write batch by batch (bounded memory)
            chunk = mine[i:i + batch]
            # One seed per process and batch: with --z0 sample the images depend on the process count.
            images = to_uint8(task.generate_images(model, [p for _, p in chunk],
                                                   seed=seed + 1_000_003 * state.process_index + i, **opts))
            for (index, _), img in zip(chunk, images):
                save_png(img, out / f"{index:0{width}d}.png")
                if index < GRID_IMAGES:
                    shown.append((index, img))
    shown = gather_object(shown) if state.num_processes > 1 else shown
    if state.is_main_process:
        with open(out / "prompts.jsonl", "w", encoding="utf-8") as fh:
            for index, prompt in enumerate(expanded):
                fh.write(json.dumps({"file": f"{index:0{width}d}.png", "prompt": prompt}) + "\n")
        grid = [img for _, img in sorted(shown, key=lambda item: item[0])]
        upscale = max(1, 128 // grid[0].shape[0])
        save_grid(np.stack(grid), out / "grid.png", nrow=args.num if args.num > 1 else None,
                  upscale=upscale)
    state.wait_for_everyone()
    return {"images": len(expanded), "processes": state.num_processes, "out": str(out)}


def _write_meta(path: Path, meta: dict) -> None:
    path.write_text(json.dumps(meta, indent=2), encoding="utf-8")


def cmd_interpolate(args: argparse.Namespace) -> dict:
    """Interpolate between two prompts' z0; write frames, a GIF and a strip."""
    from crossflow.utils.images import make_grid, save_gif, save_png, to_uint8

    if args.frames < MIN_FRAMES:
        raise ValueError(f"--frames must be >= {MIN_FRAMES}, got {args.frames}")
    model, task, _ = _load(args, _local_device(args.device), "interpolate_images")
    opts = _generation_overrides(args)
    images, _ = task.interpolate_images(model, args.prompt_a, args.prompt_b, args.frames, **opts)
    frames = to_uint8(images)
    out = Path(args.out)
    names = [save_png(img, out / f"frame_{i:03d}.png").name for i, img in enumerate(frames)]
    upscale = max(1, 128 // frames.shape[1])
    big = [make_grid(f[None], padding=0, upscale=upscale) for f in frames]
    save_gif(big + [big[-1]] * 3, out / "interpolation.gif", duration_ms=args.gif_ms)
    save_png(make_grid(frames, nrow=len(frames), upscale=upscale), out / "strip.png")
    meta = {"from": args.prompt_a, "to": args.prompt_b, "frames": names, "options": opts}
    _write_meta(out / "interpolation.json", meta)
    return {"frames": len(names), "gif": str(out / "interpolation.gif"), "out": str(out)}


def cmd_arithmetic(args: argparse.Namespace) -> dict:
    """``ori + add − sub`` on the prompts' z0; write each image and a captioned row."""
    import numpy as np

    from crossflow.utils.images import caption_under, make_grid, save_png, to_uint8

    if args.add is None and args.sub is None:
        raise ValueError("give --add PROMPT, --sub PROMPT, or both")
    model, task, _ = _load(args, _local_device(args.device), "arithmetic_images")
    opts = _generation_overrides(args)
    result = task.arithmetic_images(model, args.ori, args.add, args.sub, add_scale=args.add_scale,
                                    sub_scale=args.sub_scale, renormalize=not args.no_renormalize, **opts)
    out = Path(args.out)
    labels = {"ori": args.ori, "add": f"+ {args.add_scale:g} x {args.add}", "sub": f"- {args.sub_scale:g} x {args.sub}",
              "result": "= result"}
    panels, files = [], {}
    for name in ("ori", "add", "sub", "result"):
        if name not in result:
            continue
        img = to_uint8(result[name])[0]
        files[name] = save_png(img, out / f"{name}.png").name
        upscale = max(1, 128 // img.shape[0])
        panels.append(caption_under(make_grid(img[None], padding=0, upscale=upscale), labels[name]))
    height = max(p.shape[0] for p in panels)
    panels = [np.pad(p, ((0, height - p.shape[0]), (0, 0), (0, 0)), constant_values=255) for p in panels]
    save_png(make_grid(np.stack(panels), nrow=len(panels)), out / "arithmetic.png")
    z = result["result_z0"]
    meta = {"ori": args.ori, "add": args.add, "sub": args.sub, "add_scale": args.add_scale, "sub_scale": args.sub_scale,
            "renormalized": not args.no_renormalize, "result_z0_mean": float(z.mean()), "result_z0_std": float(z.std()),
            "files": files, "options": opts}
    _write_meta(out / "arithmetic.json", meta)
    return {"images": files, "out": str(out)}
