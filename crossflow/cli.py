"""The ``crossflow`` command: train, sample, eval, demo, extract, params.

Config and user errors end with one line on stderr and a non-zero exit code, no traceback
(set ``CROSSFLOW_DEBUG=1`` to see it).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from crossflow.cli_sampling import add_generation_options, add_parsers as add_sampling_parsers
from crossflow.cli_sampling import cmd_arithmetic, cmd_interpolate, cmd_sample, generation_overrides
from crossflow.config import ConfigError, describe, parse_overrides

log = logging.getLogger("crossflow")
REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_CONFIG = REPO_ROOT / "configs" / "t2i" / "toy.yaml"


def _options_epilog() -> str:
    from crossflow.schema import ExperimentConfig

    rows = [r for r in describe(ExperimentConfig) if not r[0].startswith("task")]
    width = max(len(r[0]) for r in rows)
    lines = ["config keys (override any as key=value; the task section is the adapter's, see its config):"]
    lines += [f"  {key:<{width}}  {typ} = {default}  {help_}" for key, typ, default, help_ in rows]
    return "\n".join(lines)


def _build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(prog="crossflow", description="Cross-modal flow matching (CrossFlow).")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model from a YAML config", formatter_class=fmt,
                       description="Train a CrossFlow model. Checkpoints, metrics.jsonl, previews and the "
                                   "inference export go to the run directory.", epilog=_options_epilog())
    p.add_argument("config", nargs="?", help="YAML config, e.g. configs/t2i/toy.yaml (optional with --resume)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides, e.g. train.max_steps=200")
    p.add_argument("--run-dir", help="output directory (default: runs/<config name>); a directory that already holds "
                                     "a run is refused unless --resume or --overwrite is given")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --run-dir from its newest complete checkpoint, with the run's saved "
                        "config.yaml; overrides (and CONFIG, if given) may change only train.max_steps, max_minutes, "
                        "the log/checkpoint/preview cadence, sample.*, task.metrics.* and file paths")
    p.add_argument("--overwrite", action="store_true", help="start over in a --run-dir that holds a run (deletes it "
                                                             "once the new run has started)")
    p.add_argument("--eval", action="store_true", help="evaluate the EMA model on held-out data after training")

    add_sampling_parsers(sub)  # sample, interpolate, arithmetic

    p = sub.add_parser("eval", help="evaluate a trained model on its task's held-out data",
                       description="Run the task's evaluation; writes metrics.json and pictures to --out.")
    p.add_argument("model", help="run directory or export directory")
    p.add_argument("--out", help="output directory (default: MODEL/eval)")
    p.add_argument("--num", type=int, help="evaluate only the first N held-out items")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="overrides of the saved config, e.g. task.metrics.inception_weights=PATH (t2i FID/CLIP)")
    add_generation_options(p)

    p = sub.add_parser("demo", help="train, sample and evaluate the toy text-to-image model on a CPU",
                       description="The main job on the built-in toy world: trains configs/t2i/toy.yaml, samples "
                                   "the held-out prompts, scores them, and writes everything under --out.")
    p.add_argument("--out", default="outputs/demo", help="output directory (default outputs/demo)")
    p.add_argument("--overwrite", action="store_true", help="start over when --out already holds a demo run "
                                                             "(`make demo` passes it)")
    p.add_argument("--config", default=str(DEMO_CONFIG), help="config to run (default: configs/t2i/toy.yaml)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")

    p = sub.add_parser("extract", add_help=False,
                       help="precompute a task's features (t2i: LM token states + VAE moments into memory-mapped "
                            "shards); `crossflow extract CONFIG --help` lists the options")
    p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    p = sub.add_parser("params", help="build a config's model on the meta device (no memory) and count parameters")
    p.add_argument("config", help="YAML config")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")
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

    device = getattr(args, "device", None) or None
    pipe = Pipeline.from_pretrained(model_dir, device=device, overrides=overrides)
    options = pipe.options(**generation_overrides(args))
    return pipe.task.evaluator().evaluate(pipe, out, num=getattr(args, "num", None), options=options)


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
        cfg, task_cls = load_experiment(config, overrides)
    result = Trainer(cfg, task_cls(cfg), run_dir, resume=args.resume, overwrite=args.overwrite).fit()
    summary = {"step": result.step, "run_dir": str(run_dir), "export": str(result.export_dir),
               "samples_per_s": round(result.samples_per_second, 1), "final_loss": result.final_loss}
    if args.eval:
        summary["metrics"] = _evaluate(result.export_dir, run_dir / "eval", args)
    return summary


def cmd_eval(args: argparse.Namespace) -> dict:
    out = Path(args.out or Path(args.model) / "eval")
    return _evaluate(args.model, out, args, parse_overrides(getattr(args, "overrides", [])))


def cmd_demo(args: argparse.Namespace) -> dict:
    from crossflow.registry import load_experiment
    from crossflow.train.trainer import Trainer

    if not Path(args.config).is_file():
        raise FileNotFoundError(f"demo config {args.config} not found (run from a source checkout)")
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

    return config_parameter_counts(args.config, args.overrides)


def cmd_convert_official(args: argparse.Namespace) -> dict:
    from crossflow.official import convert_official_checkpoint

    return convert_official_checkpoint(args.config, args.checkpoint, args.out, args.overrides)


COMMANDS = {"train": cmd_train, "sample": cmd_sample, "eval": cmd_eval, "demo": cmd_demo,
            "extract": cmd_extract, "params": cmd_params,
            "interpolate": cmd_interpolate, "arithmetic": cmd_arithmetic, "convert-official": cmd_convert_official}


def main(argv: list[str] | None = None) -> int:
    parser = _build_parser()
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
    from crossflow.train.trainer import NonFiniteLossError

    try:
        result = COMMANDS[args.command](args)
    except (ConfigError, CheckpointError, NonFiniteLossError, FileNotFoundError, ValueError, OSError) as exc:
        if os.environ.get("CROSSFLOW_DEBUG"):
            raise
        print(f"crossflow {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"crossflow {args.command}: interrupted", file=sys.stderr)
        return 130
    if os.environ.get("RANK", "0") == "0":  # one summary under torchrun / accelerate launch
        print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
