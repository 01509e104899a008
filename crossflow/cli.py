"""The ``crossflow`` command: train, sample, eval, demo, extract, params, plot.

Config and user errors end with one line on stderr and a non-zero exit code, no traceback
(set ``CROSSFLOW_DEBUG=1`` to see it); Python warnings print as one line each.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from crossflow.cli_memory import add_memory_options, cmd_params_memory
from crossflow.cli_sampling import add_generation_options, add_parsers as add_sampling_parsers
from crossflow.cli_sampling import check_device, cmd_arithmetic, cmd_interpolate, cmd_sample, generation_overrides
from crossflow.config import ConfigError, parse_overrides
from crossflow.train.preemption import EXIT_PREEMPTED

log = logging.getLogger("crossflow")
DEMO_CONFIG = "t2i/toy"  # a shipped config name (crossflow/config_names.py): works outside the clone too


def _options_epilog(config: str | None = None) -> str:
    """Every config key of ``train --help``; with ``config`` (``train CONFIG --help``) its task's keys too."""
    from crossflow.cli_help import config_keys_epilog

    return config_keys_epilog(config)


def _build_parser(help_config: str | None = None) -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(prog="crossflow", description="Cross-modal flow matching (CrossFlow).")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model from a YAML config", formatter_class=fmt,
                       description="Train a CrossFlow model. Checkpoints, metrics.jsonl, previews and the "
                                   "inference export go to the run directory. Several processes: torchrun or "
                                   "accelerate launch (train.parallel ddp or fsdp). SIGTERM or SIGUSR1 (preemption) "
                                   "finishes the current step, writes a checkpoint and exits with code "
                                   f"{EXIT_PREEMPTED}; --resume continues exactly.", epilog=_options_epilog(help_config))
    p.add_argument("config", nargs="?", help="YAML config, e.g. configs/t2i/toy.yaml (optional with --resume)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides, e.g. train.max_steps=200")
    p.add_argument("--run-dir", help="output directory (default: runs/<config name>); a directory that already holds "
                                     "a run is refused unless --resume or --overwrite is given")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --run-dir from its newest complete checkpoint, with the run's saved "
                        "config.yaml; overrides (and CONFIG, if given) may change only train.max_steps, max_minutes, "
                        "the log/checkpoint/preview cadence, sample.*, task.metrics.* and file paths")
    p.add_argument("--no-fallback", dest="fallback", action="store_false",
                   help="with --resume: refuse (one line, nothing changed) when the newest checkpoint fails to load; "
                        "by default it is set aside as checkpoints/damaged-step-N and the previous one is used")
    p.add_argument("--overwrite", action="store_true", help="start over in a --run-dir that holds a run (deletes it "
                                                             "once the new run has started)")
    p.add_argument("--eval", action="store_true", help="evaluate the EMA model on held-out data after training")
    p.add_argument("--smoke", action="store_true",
                   help="shrink the config to a short CPU run that learns (tiny VE/velocity net/contrastive tower, "
                        "batch 16, 200 steps, warm-up 10, EMA warm-up, lr >= 5e-4, no workers, fp32); the task "
                        "section and your key=value overrides are kept (docs/configs.md, 'Smoke runs')")

    add_sampling_parsers(sub)  # sample, interpolate, arithmetic

    p = sub.add_parser("eval", help="evaluate a trained model on its task's held-out data",
                       description="Run the task's evaluation; writes metrics.json and pictures to --out.")
    p.add_argument("model", help="run directory or export directory")
    p.add_argument("--out", help="output directory (default: MODEL/eval)")
    p.add_argument("--num", type=int, help="evaluate only the first N held-out items")
    p.add_argument("--split", help="the split to evaluate where the task has named splits (captioning on COCO: "
                                   "test or val of Karpathy's split; sets task.coco.eval_split)")
    p.add_argument("--benchmark", help="score on a benchmark of the field instead of the held-out data (depth: "
                                       "nyu_v2, kitti, eth3d, scannet, diode, in Marigold's layout and protocol)")
    p.add_argument("--data", help="--benchmark: the dataset directory or .tar")
    p.add_argument("--filenames", help="--benchmark: the dataset's filename list")
    p.add_argument("--ensemble", type=int, help="--benchmark (depth): predictions per image from posterior samples, "
                                                "combined Marigold-style (default: the model's task.ensemble)")
    p.add_argument("--alignment", choices=["auto", "least_square", "least_square_disparity", "none"], default="auto",
                   help="--benchmark (depth): auto = least squares for affine-invariant models (zero-shot, toy), "
                        "none for in-domain metric models")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="overrides of the saved config, e.g. task.metrics.inception_weights=PATH (t2i FID/CLIP)")
    add_generation_options(p)

    p = sub.add_parser("toy-data", help="write toy scenes in a real dataset's on-disk format (to smoke-test a pipeline)",
                       description="Toy-world scenes written in the format the field distributes a dataset in, so the "
                                   "real data path (readers, training, benchmark evaluation) runs end to end on a CPU. "
                                   "Formats come from the registered tasks (`crossflow toy-data --list`).")
    p.add_argument("format", nargs="?", help="format name, e.g. nyu, kitti, hypersim")
    p.add_argument("out", nargs="?", help="output directory")
    p.add_argument("--num", type=int, help="scenes to write (default: the writer's)")
    p.add_argument("--seed", type=int, help="scene seed (default 0)")
    p.add_argument("--resolution", help="size the scenes are written at: one side (evaluation formats: the render "
                                        "size) or HxW (training formats), e.g. 120x160")
    p.add_argument("--tar", action="store_true", help="write a .tar (members with a ./ prefix) where the format has one")
    p.add_argument("--list", action="store_true", help="list the formats and exit")

    p = sub.add_parser("demo", help="train, sample and evaluate the toy text-to-image model on a CPU",
                       description="The main job on the built-in toy world: trains configs/t2i/toy.yaml, samples "
                                   "the held-out prompts, scores them, and writes everything under --out.")
    p.add_argument("--out", default="outputs/demo", help="output directory (default outputs/demo)")
    p.add_argument("--overwrite", action="store_true", help="start over when --out already holds a demo run "
                                                             "(`make demo` passes it)")
    p.add_argument("--config", default=DEMO_CONFIG, help="config to run, a file or a shipped name (default: t2i/toy)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")

    p = sub.add_parser("extract", add_help=False,
                       help="precompute a task's features (t2i: LM token states + VAE moments into memory-mapped "
                            "shards); `crossflow extract CONFIG --help` lists the options")
    p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    p = sub.add_parser("params", help="build a config's model on the meta device (no memory) and count parameters; "
                                      "--memory: estimate the peak memory per training process")
    p.add_argument("config", help="YAML config")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")
    add_memory_options(p)
    p = sub.add_parser("plot", help="draw the loss curves of one or several runs into one PNG",
                       description="Read each run's metrics.jsonl and draw one panel per metric, one colour per "
                                   "run (faint: the logged values; solid: their moving average).")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directory (or its metrics.jsonl)")
    p.add_argument("--out", default="outputs/loss.png", help="PNG to write (default outputs/loss.png)")
    p.add_argument("--keys", help="comma-separated metrics, e.g. loss,loss_fm,grad_norm; 'all' for every logged "
                                  "number (default: loss and every loss_* term)")
    p.add_argument("--smooth", type=float, default=0.9, help="moving-average factor in [0, 1) (default 0.9)")
    p = sub.add_parser("convert-official", help="convert a released CrossFlow .pth into our export (for sample/eval)",
                       description="Load an official CrossFlow checkpoint (DiMR or DiT) into the model of --config "
                                   "(configs/t2i/official/*.yaml) and write OUT/model.safetensors + config.yaml; the "
                                   "training-only image tower is skipped. Then: crossflow sample OUT --prompt ...")
    p.add_argument("--config", required=True, help="our config of that checkpoint, e.g. "
                                                    "configs/t2i/official/t2i_256px_clip_dimr.yaml")
    p.add_argument("--checkpoint", required=True, help="the official nnet .pth (a plain state dict)")
    p.add_argument("--out", required=True, help="export directory to write")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides (e.g. model paths)")
    return parser


def _evaluate(model_dir: str | Path, out: Path, args: argparse.Namespace, overrides=()) -> dict:
    """Load a model into the pipeline and run its task's evaluator with the command line's sampling options."""
    from crossflow.pipeline import Pipeline

    device = check_device(getattr(args, "device", None))  # one line naming --device, before anything loads
    pipe = Pipeline.from_pretrained(model_dir, device=device, overrides=overrides)
    options = pipe.options(**generation_overrides(args))
    evaluator = pipe.task.evaluator()
    if getattr(args, "benchmark", None):
        from crossflow.task import BenchmarkEvaluator

        if not isinstance(evaluator, BenchmarkEvaluator):
            raise ValueError(f"--benchmark: task {pipe.task.name!r} has no benchmarks")
        if args.benchmark not in evaluator.benchmarks():
            raise ValueError(f"--benchmark {args.benchmark!r}: unknown; valid: {', '.join(evaluator.benchmarks())}")
        if not args.data or not args.filenames:
            raise ValueError("--benchmark needs --data (directory or .tar) and --filenames (the filename list)")
        alignment = None if args.alignment == "none" else args.alignment
        return evaluator.evaluate_benchmark(pipe, args.benchmark, data=args.data, filenames=args.filenames,
                                            out_dir=out / args.benchmark, num=args.num, options=options,
                                            ensemble=args.ensemble, alignment=alignment)
    return evaluator.evaluate(pipe, out, num=getattr(args, "num", None), options=options)


def toy_data_writers() -> dict[str, tuple[str, Any]]:
    """``{format: (task name, writer)}`` over the registered tasks that write toy data."""
    from crossflow.registry import load_task_class, registered_tasks
    from crossflow.task import ToyDataFormats

    writers: dict[str, tuple[str, Any]] = {}
    for name in sorted(registered_tasks()):
        cls = load_task_class(name)
        if isinstance(cls, ToyDataFormats):
            for fmt, writer in cls.toy_data_formats().items():
                writers.setdefault(fmt, (name, writer))
    return writers


def cmd_toy_data(args: argparse.Namespace) -> dict:
    """Write toy scenes in a real dataset's format (``crossflow toy-data FORMAT OUT``)."""
    writers = toy_data_writers()
    if args.list or not args.format:
        return {fmt: task for fmt, (task, _) in writers.items()}
    if args.format not in writers:
        raise ValueError(f"unknown toy-data format {args.format!r}; valid: {', '.join(writers)}")
    if not args.out:
        raise ValueError("give the output directory: crossflow toy-data FORMAT OUT")
    kwargs: dict[str, Any] = {k: v for k, v in (("num", args.num), ("seed", args.seed)) if v is not None}
    if args.resolution:
        try:
            parts = [int(x) for x in args.resolution.lower().split("x")]
        except ValueError:
            raise ValueError(f"--resolution {args.resolution!r}: give one side (32) or HxW (120x160)") from None
        kwargs["resolution"] = parts[0] if len(parts) == 1 else tuple(parts)
    if args.tar:
        kwargs["tar"] = True
    task, writer = writers[args.format]
    try:
        summary = writer(args.out, **kwargs)
    except TypeError as exc:  # an option this format does not take
        raise ValueError(f"toy-data {args.format}: {exc}") from None
    summary = dataclasses.asdict(summary) if dataclasses.is_dataclass(summary) else summary
    return {"format": args.format, "task": task, "out": args.out, **summary}


def cmd_train(args: argparse.Namespace) -> dict:
    from crossflow.registry import load_experiment
    from crossflow.train.run_dir import RunDirectoryError, resume_config
    from crossflow.train.trainer import Trainer

    config, overrides = args.config, list(args.overrides)
    if config is not None and "=" in config and not Path(config).exists():  # `train --resume --run-dir R k=v`
        config, overrides = None, [config, *overrides]
    if args.resume and args.overwrite:
        raise RunDirectoryError("give either --resume (continue the run) or --overwrite (start over), not both")
    if config is None and not (args.resume and args.run_dir):
        raise RunDirectoryError("give a CONFIG to start a run, or --resume --run-dir DIR to continue one")
    run_dir = Path(args.run_dir or Path("runs") / Path(config).stem)
    if args.resume:
        cfg, task_cls = resume_config(run_dir, config, overrides)
    else:  # a used --run-dir is refused by the Trainer, before anything is built
        cfg, task_cls = load_experiment(config, overrides, smoke=args.smoke)
    result = Trainer(cfg, task_cls(cfg), run_dir, resume=args.resume, overwrite=args.overwrite,
                     fallback=args.fallback).fit()
    summary = {"step": result.step, "run_dir": str(run_dir), "export": str(result.export_dir),
               "samples_per_s": round(result.samples_per_second, 1), "final_loss": result.final_loss}
    if args.eval:
        summary["metrics"] = _evaluate(result.export_dir, run_dir / "eval", args)
    return summary


def cmd_eval(args: argparse.Namespace) -> dict:
    overrides = parse_overrides(getattr(args, "overrides", []))
    if args.split:
        overrides.append(("task.coco.eval_split", args.split))
    out = Path(args.out or Path(args.model) / ("eval" if not args.split else f"eval_{args.split}"))
    return _evaluate(args.model, out, args, overrides)


def cmd_demo(args: argparse.Namespace) -> dict:
    from crossflow.registry import load_experiment
    from crossflow.train.trainer import Trainer

    start = time.time()
    out = Path(args.out)
    cfg, task_cls = load_experiment(args.config, args.overrides)
    result = Trainer(cfg, task_cls(cfg), out, overwrite=args.overwrite).fit()  # the trainer draws loss.png
    train_seconds = time.time() - start
    metrics = _evaluate(result.export_dir, out, args)
    metrics["train_seconds"] = round(train_seconds, 1)
    metrics["train_steps"] = result.step
    metrics["total_seconds"] = round(time.time() - start, 1)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    keys = ("color_accuracy", "shape_accuracy", "size_accuracy", "position_accuracy", "all_accuracy")
    summary = {k: round(metrics[k], 3) for k in keys}
    summary["null_branch_color"] = round(metrics["null_branch"]["color_accuracy"], 3)
    summary["no_guidance_all"] = round(metrics["no_guidance"]["all_accuracy"], 3)
    summary |= {"train_steps": result.step, "total_seconds": metrics["total_seconds"], "out": str(out)}
    return summary


def cmd_extract(args: argparse.Namespace) -> dict:
    """Hand the arguments to the feature extractor of the config's task (default t2i)."""
    from crossflow.config import load_yaml
    from crossflow.registry import load_task_class
    from crossflow.task import ExtractsFeatures

    config = next((a for a in args.rest if a.endswith((".yaml", ".yml"))), None)
    name = str((load_yaml(config).get("task") or {}).get("name", "t2i")) if config else "t2i"
    task_cls = load_task_class(name)
    if not isinstance(task_cls, ExtractsFeatures):
        raise ValueError(f"task {name!r} has no feature extractor")
    return task_cls.extract_features(list(args.rest))


def cmd_params(args: argparse.Namespace) -> dict:
    from crossflow.utils.params import config_parameter_counts

    if (estimate := cmd_params_memory(args)) is not None:
        return estimate
    return config_parameter_counts(args.config, args.overrides)


def cmd_plot(args: argparse.Namespace) -> dict:
    from crossflow.train.plots import plot_runs

    keys = None if args.keys is None else [k.strip() for k in args.keys.split(",") if k.strip()]
    out = plot_runs(args.runs, args.out, keys=keys, smooth=args.smooth)
    return {"plot": str(out), "runs": list(args.runs)}


def cmd_convert_official(args: argparse.Namespace) -> dict:
    from crossflow.official import convert_official_checkpoint

    return convert_official_checkpoint(args.config, args.checkpoint, args.out, args.overrides)


COMMANDS = {"train": cmd_train, "sample": cmd_sample, "eval": cmd_eval, "demo": cmd_demo,
            "extract": cmd_extract, "params": cmd_params, "plot": cmd_plot, "toy-data": cmd_toy_data,
            "interpolate": cmd_interpolate, "arithmetic": cmd_arithmetic, "convert-official": cmd_convert_official}


def _warning_line(message, category, filename, lineno, file=None, line=None) -> None:
    """Python warnings as one line, ``crossflow: warning: MESSAGE`` (no source path, no source line)."""
    text = " ".join(str(message).split()) or category.__name__
    print(f"crossflow: warning: {text}", file=file or sys.stderr)


def main(argv: list[str] | None = None) -> int:
    import warnings

    from crossflow.cli_help import help_config

    argv = sys.argv[1:] if argv is None else list(argv)
    with warnings.catch_warnings():  # restores the previous hook when main returns (tests call it repeatedly)
        warnings.showwarning = _warning_line
        return _main(argv, _build_parser(help_config(argv)))


def _main(argv: list[str], parser: argparse.ArgumentParser) -> int:
    # Overrides may come after options (``train CFG --run-dir D a.b=1``), which argparse cannot
    # interleave with a positional list: collect stray key=value tokens here.
    args, extra = parser.parse_known_args(argv)
    if args.command == "extract":  # the extractor parses its own options
        args.rest, extra = list(args.rest) + extra, []
    stray = [tok for tok in extra if tok.startswith("-")]  # the rest are overrides; bad ones are named later
    if stray or (extra and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
    if extra:
        args.overrides = list(args.overrides) + extra
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("httpx", "urllib3", "filelock", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from crossflow.train.checkpoint import CheckpointError
    from crossflow.train.preemption import TrainingPreempted
    from crossflow.train.trainer import NonFiniteLossError

    try:
        result = COMMANDS[args.command](args)
    except (ConfigError, CheckpointError, NonFiniteLossError, FileNotFoundError, ValueError, OSError) as exc:
        if os.environ.get("CROSSFLOW_DEBUG"):
            raise
        print(f"crossflow {args.command}: error: {' '.join(str(exc).split())}", file=sys.stderr)  # one line
        return 2
    except TrainingPreempted as exc:
        print(f"crossflow {args.command}: preempted: {exc}", file=sys.stderr)
        return EXIT_PREEMPTED
    except KeyboardInterrupt:
        print(f"crossflow {args.command}: interrupted", file=sys.stderr)
        return 130
    if os.environ.get("RANK", "0") == "0":  # one summary under torchrun / accelerate launch
        print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
