"""``crossflow sample`` (one or many processes), ``crossflow interpolate`` and ``crossflow arithmetic``.

All three go through :class:`~crossflow.pipeline.Pipeline`. ``sample`` runs under ``accelerate launch`` /
``torchrun`` as well as alone: the inputs are split between the processes (each writes its own
``NNNN.*`` under the shared output folder, numbered by the input's global index, whose noise is seeded
by that index, so the images do not depend on the number of processes) and rank 0 writes the index
(``prompts.jsonl`` or ``inputs.jsonl``) and ``grid.png``. Several samples per input (``--num`` > 1) start
from posterior draws of ``z0`` unless ``--z0`` says otherwise, so they differ; one sample per input starts
from the model's ``sample.z0`` (the VE mean by default). The other two commands act on the source latent
``z0`` of a CrossFlow model before the ODE (see :mod:`crossflow.latent_ops`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger("crossflow")
GRID_ITEMS = 64   # samples shown in grid.png
MIN_FRAMES = 5    # the official interpolation demo asks for at least 5
SOLVERS = ["euler", "heun", "midpoint", "rk4", "dopri5"]


def add_generation_options(q: argparse.ArgumentParser) -> None:
    """Sampling options shared by sample, eval, interpolate and arithmetic (default: the model's config)."""
    q.add_argument("--steps", type=int, help="ODE solver steps (default: the model's sample.steps)")
    q.add_argument("--solver", choices=SOLVERS, help="ODE solver (default: the model's sample.solver)")
    q.add_argument("--guidance", type=float, help="CFG scale; 1 disables guidance (default: the model's sample.guidance)")
    q.add_argument("--z0", choices=["mean", "sample"], help="start from the VE mean (one image per input: the "
                                                            "best quality) or a posterior sample, seeded per image "
                                                            "(default: the model's sample.z0)")
    q.add_argument("--temperature", type=float, help="posterior noise scale when --z0 sample "
                                                     "(default: the model's sample.temperature)")
    q.add_argument("--seed", type=int, help="generation seed; sample i's noise is seeded by (seed, i) "
                                            "(default: the model's sample.seed)")
    q.add_argument("--batch-size", type=int, help="samples per forward batch; does not change the results "
                                                  "(default: the model's sample.batch_size)")
    q.add_argument("--device", default=None, help="torch device, checked against this machine (default: cuda if "
                                                  "available, else cpu)")


def generation_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The sampling options given on the command line (None: not given)."""
    return {k: getattr(args, k, None) for k in ("steps", "solver", "guidance", "z0", "temperature", "seed",
                                                "batch_size")}


def add_parsers(sub: Any) -> None:
    """Register ``sample``, ``interpolate`` and ``arithmetic`` on the ``crossflow`` sub-parser set."""
    p = sub.add_parser("sample", help="generate from prompts (or input images) with a trained model",
                       description="Generate with a trained model of any task. Text tasks take --prompt / "
                                   "--prompts-file; image-source tasks (depth, super_resolution, captioning) take "
                                   "--input image files. Writes one output per input and per --num (NNNN.png, "
                                   "+ NNNN.npy for depth), the index prompts.jsonl or inputs.jsonl (captions are "
                                   "in it), and grid.png. Under accelerate launch / torchrun the inputs are split "
                                   "over the processes.")
    p.add_argument("model", help="run directory or export directory")
    p.add_argument("--input", action="append", default=[], help="an input file, e.g. an image (repeatable)")
    p.add_argument("--prompt", action="append", default=[], help="a prompt (repeatable)")
    p.add_argument("--prompts-file", help="text file with one prompt per line; blank lines and lines starting "
                                          "with # are skipped")
    p.add_argument("--num", type=int, default=1, help="samples per prompt or input (default 1). With --num > 1 "
                                                      "and no --z0, each sample starts from its own posterior "
                                                      "draw of z0 (--z0 sample, seeded by (seed, index)), so "
                                                      "the samples differ; --z0 mean gives the single "
                                                      "best-quality image (the VE mean) --num times")
    p.add_argument("--out", default="outputs/samples", help="output directory (default outputs/samples)")
    p.add_argument("--show-defaults", action="store_true",
                   help="print the model's sample config and the options this command line resolves to, "
                        "then exit without generating")
    add_generation_options(p)

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


def read_prompt_lines(path: str | Path, what: str = "--prompts-file") -> list[str]:
    """The prompts of a text file: one per line, stripped; blank lines and ``#`` comment lines skipped."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _read_prompts(args: argparse.Namespace) -> list[str]:
    prompts = list(args.prompt)
    if args.prompts_file:
        prompts += read_prompt_lines(args.prompts_file)
    return prompts


def available_devices() -> list[str]:
    """The torch devices this machine can run on (``cpu``, ``cuda:N`` for each visible GPU, ``mps``)."""
    import torch

    found = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count() if torch.cuda.is_available() else 0)]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        found.append("mps")
    return found


def check_device(name: str | None) -> str:
    """``--device``: ``name`` checked against this machine, or ``cuda`` when visible, else ``cpu``.

    Raises:
        ValueError: ``name`` is not a torch device, or this machine cannot run on it (naming what it can).
    """
    import torch

    if not name:
        return "cuda" if torch.cuda.is_available() else "cpu"
    available = ", ".join(available_devices())
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ValueError(f"--device {name!r} is not a torch device; available here: {available}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise ValueError(f"--device {name}: {why} (torch {torch.__version__}); available here: {available}")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) visible; "
                             f"available here: {available}")
    elif device.type != "cpu" and name not in available_devices():
        backend = getattr(torch, device.type, None)
        if not callable(getattr(backend, "is_available", None)) or not backend.is_available():
            raise ValueError(f"--device {name}: not available on this machine; available here: {available}")
    return name


def _text_pipeline(args: argparse.Namespace, what: str):
    """A pipeline whose task takes prompts (interpolation and arithmetic need one)."""
    from crossflow.pipeline import Pipeline
    from crossflow.task import TakesText

    pipe = Pipeline.from_pretrained(args.model, device=check_device(args.device))
    if not isinstance(pipe.processor, TakesText):
        raise ValueError(f"task {pipe.task.name!r} does not take prompts; `crossflow {what}` needs a text-source task")
    return pipe


def _sample_tiles(output: Any, inputs: list[Any] | None) -> list[list[Any]]:
    """Per sample, the tiles shown in grid.png: its output, or ``input | output`` when the inputs are images."""
    import numpy as np
    from PIL import Image

    tiles = output.tiles()
    if inputs is None:
        return [[tile] for tile in tiles]
    w = tiles.shape[2]
    return [[np.asarray(Image.fromarray(image).resize((w, w * image.shape[0] // image.shape[1]), Image.NEAREST)), tile]
            for image, tile in zip(inputs, tiles)]


def _save_grid(groups: list[list[Any]], path: Path, per_row: int) -> None:
    import numpy as np

    from crossflow.utils.images import save_grid

    tiles = [t for group in groups for t in group]
    h, w = max(t.shape[0] for t in tiles), max(t.shape[1] for t in tiles)
    tiles = [np.pad(t, ((0, h - t.shape[0]), (0, w - t.shape[1]), (0, 0)), constant_values=255) for t in tiles]
    save_grid(np.stack(tiles), path, nrow=per_row, upscale=max(1, 128 // w))


def sample_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The sampling options of ``crossflow sample``: those given, and ``z0=sample`` when ``--num > 1`` leaves
    ``--z0`` out (several samples of one input must differ; ``--z0 mean`` asks for the single best image)."""
    overrides = generation_overrides(args)
    if overrides["z0"] is None and args.num > 1:
        overrides["z0"] = "sample"
    return overrides


def _show_defaults(args: argparse.Namespace) -> dict:
    """``sample --show-defaults``: the model's ``sample`` config and what this command line makes of it
    (reads the saved config only; no weights, no language model)."""
    from crossflow.config import from_dict, load_yaml, to_dict
    from crossflow.pipeline import resolve_weights
    from crossflow.registry import experiment_from_dict
    from crossflow.schema import SampleConfig

    _, config_path = resolve_weights(args.model)
    cfg, _ = experiment_from_dict(load_yaml(config_path))
    given = {k: v for k, v in sample_overrides(args).items() if v is not None}
    resolved = from_dict(SampleConfig, to_dict(cfg.sample) | given, path="sample")
    return {"config": str(config_path), "model_sample_config": to_dict(cfg.sample),
            "this_command": to_dict(resolved), "given": given,
            "num_rule": "with --num > 1 and no --z0, z0 = sample (seeded per image); --z0 mean: the VE mean"}


def _check_out(out: Path) -> bool:
    """Refuse an ``--out`` that is a file; return whether the folder exists already."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out} is a file; give a directory")
    return out.exists()


def cmd_sample(args: argparse.Namespace) -> dict:
    """Generate ``--num`` outputs per prompt or input file, split over all launched processes.

    Every input and option is checked before the model or a language model loads; a failed run removes
    the ``--out`` folder it created if it is still empty.
    """
    if args.show_defaults:
        return _show_defaults(args)
    prompts = _read_prompts(args)
    if args.input and prompts:
        raise ValueError("give either --input files or prompts, not both")
    if not args.input and not prompts:
        raise ValueError("nothing to sample: give --prompt TEXT (repeatable), --prompts-file FILE or --input FILE")
    if args.num < 1:
        raise ValueError(f"--num must be >= 1, got {args.num}")
    for path in args.input:
        if not Path(path).is_file():
            raise FileNotFoundError(f"--input {path} does not exist")
    device = check_device(args.device)
    out = Path(args.out)
    existed = _check_out(out)
    try:
        return _sample(args, prompts, device, out)
    except BaseException:
        if not existed and out.is_dir() and not any(out.iterdir()):
            with contextlib.suppress(OSError):  # another process may have removed or filled it
                out.rmdir()  # leave no empty folder behind
        raise


def _sample(args: argparse.Namespace, prompts: list[str], device: str, out: Path) -> dict:
    import torch
    from accelerate import PartialState
    from accelerate.utils import gather_object

    from crossflow.config import to_dict
    from crossflow.pipeline import Pipeline, resolve_weights
    from crossflow.task import CachesInputs, TakesImages, TakesText

    resolve_weights(args.model)  # a wrong path is named before accelerate starts
    state = PartialState(cpu=device == "cpu" or not torch.cuda.is_available())
    device = args.device if args.device and state.num_processes == 1 else str(state.device)
    pipe = Pipeline.from_pretrained(args.model, device=device)
    options = pipe.options(**sample_overrides(args))  # validated here, before a language model loads
    processor = pipe.processor
    if prompts:
        if not isinstance(processor, TakesText):
            hint = ": use --input FILE" if isinstance(processor, TakesImages) else ""
            raise ValueError(f"task {pipe.task.name!r} does not take prompts{hint}")
        names, items, shown_inputs = prompts, processor.check_texts(prompts), None
        index_name, key = "prompts.jsonl", "prompt"
    else:
        if not isinstance(processor, TakesImages):
            hint = ": give --prompt TEXT instead" if isinstance(processor, TakesText) else ""
            raise ValueError(f"task {pipe.task.name!r} does not take input files{hint}")
        names, items = [str(p) for p in args.input], processor.load_images(args.input)
        shown_inputs, index_name, key = items, "inputs.jsonl", "input"
    expanded = [(name, item) for name, item in zip(names, items) for _ in range(args.num)]
    if state.num_processes > 1 and isinstance(processor, CachesInputs):
        if state.is_main_process:  # fill the cache once (it takes one writer at a time)
            processor.fill_cache(list(items))
        state.wait_for_everyone()
    width = max(4, len(str(len(expanded) - 1)))  # file names sort in input order
    records, shown = [], []
    with state.split_between_processes(list(range(len(expanded)))) as mine:
        for start in range(0, len(mine), options.batch_size):  # generate and write batch by batch
            chunk = mine[start:start + options.batch_size]
            output = pipe([expanded[i][1] for i in chunk], options=options, first_index=chunk[0])
            out.mkdir(parents=True, exist_ok=True)
            saved = output.save(out, [f"{i:0{width}d}" for i in chunk])
            records += [(i, {key: expanded[i][0], "index": i} | rec) for i, rec in zip(chunk, saved)]
            groups = _sample_tiles(output, None if shown_inputs is None else [expanded[i][1] for i in chunk])
            shown += [(i, group) for i, group in zip(chunk, groups) if i < GRID_ITEMS]
    if state.num_processes > 1:
        records, shown = gather_object(records), gather_object(shown)
    settings = to_dict(options)
    if state.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        with open(out / index_name, "w", encoding="utf-8") as fh:
            for _, rec in sorted(records, key=lambda r: r[0]):
                fh.write(json.dumps(rec | {"settings": settings}) + "\n")
        groups = [group for _, group in sorted(shown, key=lambda s: s[0])]
        per_row = len(groups[0]) * args.num if args.num > 1 else None
        _save_grid(groups, out / "grid.png", per_row or (len(groups[0]) * 4 if shown_inputs is not None else None))
    state.wait_for_everyone()
    z0_from = "--z0" if args.z0 else "--num > 1 (--z0 mean for the VE mean)" if args.num > 1 else "the model's sample.z0"
    return {"outputs": len(expanded), "processes": state.num_processes, "out": str(out), "settings": settings,
            "z0_from": z0_from}


def _write_meta(path: Path, meta: dict) -> None:
    path.write_text(json.dumps(meta, indent=2), encoding="utf-8")


def cmd_interpolate(args: argparse.Namespace) -> dict:
    """Interpolate between two prompts' z0; write frames, a GIF and a strip."""
    from crossflow.config import to_dict
    from crossflow.latent_ops import interpolate_latents
    from crossflow.utils.images import make_grid, save_gif, save_png

    if args.frames < MIN_FRAMES:
        raise ValueError(f"--frames must be >= {MIN_FRAMES}, got {args.frames}")
    pipe = _text_pipeline(args, "interpolate")
    options = pipe.options(**generation_overrides(args))
    z = pipe.initial_latents([args.prompt_a, args.prompt_b], options=options)
    frames = pipe.from_latents(interpolate_latents(z[0], z[1], args.frames), options=options).tiles()
    out = Path(args.out)
    names = [save_png(img, out / f"frame_{i:03d}.png").name for i, img in enumerate(frames)]
    upscale = max(1, 128 // frames.shape[1])
    big = [make_grid(f[None], padding=0, upscale=upscale) for f in frames]
    save_gif(big + [big[-1]] * 3, out / "interpolation.gif", duration_ms=args.gif_ms)
    save_png(make_grid(frames, nrow=len(frames), upscale=upscale), out / "strip.png")
    _write_meta(out / "interpolation.json", {"from": args.prompt_a, "to": args.prompt_b, "frames": names,
                                             "options": to_dict(options)})
    return {"frames": len(names), "gif": str(out / "interpolation.gif"), "out": str(out)}


def cmd_arithmetic(args: argparse.Namespace) -> dict:
    """``ori + add − sub`` on the prompts' z0; write each image and a captioned row."""
    import numpy as np
    import torch

    from crossflow.config import to_dict
    from crossflow.latent_ops import latent_arithmetic
    from crossflow.utils.images import caption_under, make_grid, save_png

    if args.add is None and args.sub is None:
        raise ValueError("give --add PROMPT, --sub PROMPT, or both")
    pipe = _text_pipeline(args, "arithmetic")
    options = pipe.options(**generation_overrides(args))
    named = {"ori": args.ori} | ({"add": args.add} if args.add is not None else {}) | \
            ({"sub": args.sub} if args.sub is not None else {})
    z = dict(zip(named, pipe.initial_latents(list(named.values()), options=options).split(1)))
    result = latent_arithmetic(z["ori"], z.get("add"), z.get("sub"), add_scale=args.add_scale,
                               sub_scale=args.sub_scale, renormalize=not args.no_renormalize)
    tiles = pipe.from_latents(torch.cat(list(z.values()) + [result]), options=options).tiles()
    out = Path(args.out)
    labels = {"ori": args.ori, "add": f"+ {args.add_scale:g} x {args.add}", "sub": f"- {args.sub_scale:g} x {args.sub}",
              "result": "= result"}
    panels, files = [], {}
    for name, img in zip(list(named) + ["result"], tiles):
        files[name] = save_png(img, out / f"{name}.png").name
        upscale = max(1, 128 // img.shape[0])
        panels.append(caption_under(make_grid(img[None], padding=0, upscale=upscale), labels[name]))
    height = max(p.shape[0] for p in panels)
    panels = [np.pad(p, ((0, height - p.shape[0]), (0, 0), (0, 0)), constant_values=255) for p in panels]
    save_png(make_grid(np.stack(panels), nrow=len(panels)), out / "arithmetic.png")
    meta = {"ori": args.ori, "add": args.add, "sub": args.sub, "add_scale": args.add_scale, "sub_scale": args.sub_scale,
            "renormalized": not args.no_renormalize, "result_z0_mean": float(result.mean()),
            "result_z0_std": float(result.std()), "files": files, "options": to_dict(options)}
    _write_meta(out / "arithmetic.json", meta)
    return {"images": files, "out": str(out)}
