"""The one training loop of the toolkit, on accelerate.

Owns devices, precision, the optimizer and LR schedule, EMA, gradient accumulation and clipping,
checkpoints and exact resume, logging, previews and the inference export. Task code only supplies
a :class:`~crossflow.task.Task`; the model it builds honours :class:`~crossflow.train.protocol.Trainable`.

Several processes: DDP through accelerate (``train.parallel: ddp``) or FSDP2 sharding of the model and its EMA
copy (``fsdp``, :mod:`crossflow.train.sharding`). Everything a checkpoint holds is named once, in
:attr:`Trainer.parts`; checkpoints are whole or sharded (:mod:`crossflow.train.checkpoint`) and resume on any
number of processes. SIGTERM / SIGUSR1 end training after the current step with a checkpoint
(:mod:`crossflow.train.preemption`); ``--resume`` falls back past a damaged newest checkpoint.

A step never waits for the device: logged scalars are summed on the device and read every
``train.log_every`` steps; a non-finite loss or gradient norm marks the step on the device, where the
fused AdamW step and the EMA update then skip it (and every later step), and the marker is read at the
next log row, checkpoint or the end, which stop with :class:`NonFiniteLossError` naming the first bad
step. (The unfused optimizer and fp16 loss scaling check each step on the host instead.)
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from safetensors.torch import save_file
from torch.utils.data import DataLoader, default_collate
from tqdm.auto import tqdm

from crossflow.config import save_yaml, to_dict
from crossflow.data.sampler import ResumableBatchSampler, check_batch_fits
from crossflow.schema import ExperimentConfig
from crossflow.smoke import check_schedule
from crossflow.task import PreparesBatches, Task
from crossflow.train import checkpoint as ckpt
from crossflow.train.ema import EMA
from crossflow.train.logger import MetricsLogger, resolve_trackers
from crossflow.train.plots import plot_loss_curves
from crossflow.train.protocol import Trainable
from crossflow.train.preemption import PreemptionWatch, TrainingPreempted, ignore_stop_signals
from crossflow.train.run_dir import prepare_fresh_run, run_entries
from crossflow.train.sharding import apply_fsdp, full_value
from crossflow.train.state import ModuleState, OptimizerState, PlainState, Processes
from crossflow.train.schedule import build_scheduler
from crossflow.utils.cpu import ensure_cpu_bf16

log = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN/inf; raised before the optimizer step so no weights are touched."""


@dataclass
class TrainResult:
    step: int
    run_dir: Path
    export_dir: Path
    last_checkpoint: Optional[Path]
    samples_per_second: float
    final_loss: float


def export_model(model_state: dict[str, torch.Tensor], cfg: ExperimentConfig, out_dir: Path) -> Path:
    """Write an inference export: ``model.safetensors`` (weights) and ``config.yaml``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / "model.safetensors.tmp"
    save_file(ckpt.contiguous_cpu(model_state), str(tmp))
    tmp.replace(out_dir / "model.safetensors")
    save_yaml(cfg, out_dir / "config.yaml")
    return out_dir


class Trainer:
    """Train a task's CrossFlow model.

    Args:
        cfg: validated experiment config.
        task: the task adapter instance.
        run_dir: where checkpoints, logs, previews and the export go.
        resume: continue from the newest complete checkpoint in ``run_dir`` (if any). A newest checkpoint that
            fails to load (truncated file, bad header) is reported naming the file and set aside as
            ``checkpoints/damaged-step-NNNNNNN``, and the previous complete one is used.
        fallback: with ``resume``, fall back past a damaged checkpoint as above; ``False`` refuses instead
            (:class:`~crossflow.train.checkpoint.CheckpointError`, nothing changed).
        overwrite: start over in a ``run_dir`` that holds a run (it is deleted when training starts); without
            it, and without ``resume``, such a directory is refused (:class:`RunDirectoryError`) before anything
            is built or written.
    """

    def __init__(self, cfg: ExperimentConfig, task: Task, run_dir: Path, *, resume: bool = False,
                 overwrite: bool = False, fallback: bool = True) -> None:
        self.cfg, self.task, self.run_dir, self.resume, self.fallback = cfg, task, Path(run_dir), resume, fallback
        self.overwrite = overwrite and not resume
        if not resume and bool(run_entries(self.run_dir)) != overwrite:
            # a used directory without --overwrite raises, naming --resume and --overwrite; --overwrite on a
            # directory holding other files raises too (never deleted); the deletion itself waits for fit()
            prepare_fresh_run(self.run_dir, overwrite=overwrite)
        tc = cfg.train
        if tc.mixed_precision == "bf16" and (tc.cpu or not torch.cuda.is_available()):
            ensure_cpu_bf16()
        # Without a GPU accelerate only sets up multi-process CPU training (gloo DDP under
        # torchrun) when told it runs on the CPU.
        self.accelerator = Accelerator(mixed_precision=tc.mixed_precision,
                                       cpu=tc.cpu or not torch.cuda.is_available(),
                                       log_with=resolve_trackers(tc.log_with), project_dir=self.run_dir)
        acc = self.accelerator
        if acc.is_main_process:
            for note in check_schedule(cfg):  # paper schedules in short runs
                log.warning(note)
        if tc.batch_size % (acc.num_processes * tc.grad_accum_steps):
            raise ValueError(f"train.batch_size={tc.batch_size} is not divisible by processes×accumulation "
                             f"= {acc.num_processes}×{tc.grad_accum_steps}")
        self.micro_batch = tc.batch_size // (acc.num_processes * tc.grad_accum_steps)
        set_seed(tc.seed)  # identical initial weights on every rank
        model = task.build_model()
        if not isinstance(model, Trainable):
            raise TypeError(f"{type(model).__name__} (built by task {task.name!r}) is not trainable: it needs "
                            "forward(batch, generator=None) -> TrainOutput and compile_modules()")
        self.ema = EMA(model, tc.ema_decay, tc.ema_warmup)
        self.sharded = tc.parallel == "fsdp"
        if self.sharded:  # before the optimizer, which then holds this process's shards
            apply_fsdp([model, self.ema.model], acc.device, mixed_precision=tc.mixed_precision,
                       cpu_offload=tc.fsdp_cpu_offload)
        elif tc.fsdp_cpu_offload:
            raise ValueError("train.fsdp_cpu_offload=true needs train.parallel=fsdp")
        self.processes = Processes()
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=tc.lr,
                                      betas=tuple(tc.betas), weight_decay=tc.weight_decay, fused=tc.fused_optimizer)
        self.scheduler = build_scheduler(optimizer, warmup_steps=tc.warmup_steps, total_steps=tc.max_steps,
                                         schedule=tc.lr_schedule, min_ratio=tc.min_lr_ratio)
        if tc.compile:
            modules = model.compile_modules()
            if not modules:
                raise ValueError(f"train.compile=true: {type(model).__name__} names no modules to compile; "
                                 "set train.compile=false")
            for module in modules:
                module.compile()  # in place: state-dict keys stay unchanged
        if self.sharded:  # sharded already: accelerate must not wrap it in DDP
            self.model, self.optimizer = model, acc.prepare(optimizer)
        else:
            self.model, self.optimizer = acc.prepare(model, optimizer)
        # The fused AdamW skips a step on the device when its ``found_inf`` is set: no host sync per step.
        self._device_skip = tc.fused_optimizer and acc.scaler is None
        self._base_optimizer = optimizer
        if not self.sharded:
            self.ema.model.to(acc.device)
        self.dataset = task.train_dataset()
        check_batch_fits(len(self.dataset), tc.batch_size, acc.num_processes, tc.grad_accum_steps)
        self.sampler = ResumableBatchSampler(len(self.dataset), self.micro_batch, seed=tc.seed,
                                             rank=acc.process_index, world_size=acc.num_processes)
        self.step = 0
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.logger = MetricsLogger(self.run_dir / "metrics.jsonl", enabled=acc.is_main_process, accelerator=acc,
                                    project_name=tc.project_name, config=to_dict(cfg))
        self._first_bad = torch.full((), -1, dtype=torch.long, device=acc.device)  # first non-finite step, or -1
        self._log_sums: dict[str, torch.Tensor] = {}
        self._log_steps = 0
        self._pipeline = None  # for previews, made on first use
        self._watch = PreemptionWatch()  # SIGTERM / SIGUSR1 while fit() runs
        self._preview_model: Optional[torch.nn.Module] = None  # FSDP: an unsharded EMA copy on the main process
        # Everything a checkpoint holds, in one place: name -> (stateful object, file, sharded under FSDP).
        self.parts = {
            "model": ckpt.Part(ModuleState(self.model), "model.safetensors", sharded=True),
            "ema": ckpt.Part(ModuleState(self.ema.model), "ema.safetensors", sharded=True),
            "optimizer": ckpt.Part(OptimizerState(self.model, optimizer), "optimizer.pt", sharded=True),
            "scheduler": ckpt.Part(PlainState(self.scheduler), "scheduler.pt"),
            "state": ckpt.Part(_Progress(self), "state.json"),
        }

    # ------------------------------------------------------------------ state
    def _unwrapped(self) -> torch.nn.Module:
        return self.accelerator.unwrap_model(self.model)

    def save(self) -> Path:
        """Write a checkpoint of the current step (collective: every process calls it).

        Full layout (one process, DDP): the main process writes whole state dicts. Sharded layout (FSDP):
        every process writes its shards through torch's distributed checkpoint. RNG states of all ranks.
        A failed write raises :class:`~crossflow.train.checkpoint.CheckpointWriteError` on every process,
        the earlier checkpoints intact.
        """
        gathered = self.processes.gather(ckpt.rng_state())
        return ckpt.save_checkpoint(self.ckpt_dir, self.step, self.parts, rng=dict(enumerate(gathered)),
                                    sharded=self.sharded, keep=self.cfg.train.keep_checkpoints,
                                    group=self.processes)

    def load(self, path: Path) -> None:
        """Restore every part (model, EMA, optimizer, scheduler, step, data position) and RNG from ``path``.

        Either layout, written by any number of processes; collective under FSDP.
        """
        acc = self.accelerator
        written_by = ckpt.read_state(path).get("num_processes", 1)
        rng = ckpt.load_checkpoint(path, self.parts, rank=acc.process_index)
        if written_by != acc.num_processes:
            log.warning("checkpoint was written by %s processes, resuming on %s: the data order changes",
                        written_by, acc.num_processes)
        if rng is not None:
            ckpt.set_rng_state(rng)
        log.info("resumed from %s at step %d", path, self.step)

    def _resume(self) -> None:
        """Load the newest complete checkpoint; past a damaged one, the previous one (unless ``fallback`` is off)."""
        candidates = ckpt.list_checkpoints(self.ckpt_dir)[::-1]
        if not candidates:
            log.info("no complete checkpoint in %s; starting from scratch", self.ckpt_dir)
            return
        for i, path in enumerate(candidates):
            error: Optional[ckpt.CheckpointError] = None
            try:
                self.load(path)
            except ckpt.CheckpointError as exc:
                error = exc
            if not self.processes.any(error is not None):
                return
            error = error or ckpt.CheckpointError(f"{path} failed to load on another process")
            if not self.fallback:
                raise ckpt.CheckpointError(f"{error} (refusing to fall back to an earlier checkpoint: drop "
                                           "--no-fallback to resume from the previous complete one)") from None
            if i + 1 == len(candidates):
                raise ckpt.CheckpointError(f"{error} (and no earlier complete checkpoint loads)") from None
            log.warning("could not load checkpoint %s: %s; falling back to %s", path, error, candidates[i + 1])
            if self.processes.is_main:  # out of the way of pruning and of the next resume; kept to look at
                path.rename(path.with_name(f"damaged-{path.name}"))
            self.processes.barrier()

    # ------------------------------------------------------------------ loop
    def _prepare(self, batch: dict) -> dict[str, torch.Tensor]:
        device = self.accelerator.device
        if isinstance(self.dataset, PreparesBatches):
            return self.dataset.prepare(batch, device)
        return {k: v.to(device, non_blocking=True) for k, v in batch.items() if isinstance(v, torch.Tensor)}

    def _batches(self):
        """Endless iterator over prepared micro-batches, advancing the resumable position."""
        while True:
            # The loader's own generator keeps worker seeding off the global RNG, whose state is
            # part of the checkpoint: creating a loader after a resume must not shift it.
            loader_rng = torch.Generator().manual_seed(self.cfg.train.seed * 1_000_003 + self.sampler.epoch)
            workers = self.cfg.train.num_workers
            loader = DataLoader(self.dataset, batch_sampler=self.sampler, collate_fn=_collate,
                                num_workers=workers, generator=loader_rng,
                                worker_init_fn=ignore_stop_signals if workers else None,
                                pin_memory=self.accelerator.device.type == "cuda")
            for batch in loader:
                self.sampler.advance()  # wraps to the next epoch after the last batch
                yield self._prepare(batch)

    def _mark_nonfinite(self, value: torch.Tensor, step: int) -> torch.Tensor:
        """Record on the device whether ``value`` is non-finite at ``step`` (1-based); True once any step was."""
        bad = ~torch.isfinite(value.detach().float())
        if self.accelerator.num_processes > 1:  # every rank skips the same steps
            bad = self.accelerator.reduce(bad.float(), reduction="sum") > 0
        self._first_bad = torch.where((self._first_bad < 0) & bad, step, self._first_bad)
        return self._first_bad >= 0

    def _raise_if_nonfinite(self) -> None:
        """Read the device-side marker (one sync); stop naming the first bad step and the last good checkpoint."""
        bad = int(self._first_bad)
        if bad < 0:
            return
        self.step = bad - 1  # steps from the bad one on were skipped: the weights are those after step bad-1
        terms = ", ".join(f"{k}={v:.4g}" for k, v in self._read_logs().items())
        raise NonFiniteLossError(
            f"non-finite loss or gradient at step {bad} (mean since the last log row: {terms}); stopped before "
            f"the optimizer step. Last good checkpoint: {ckpt.latest_checkpoint(self.ckpt_dir) or 'none'}. "
            "Lower train.lr or enable train.grad_clip.")

    def _read_logs(self) -> dict[str, float]:
        """Means of the logged scalars since the last read over all processes' micro-batches (one device→host
        copy; collective: every process calls it at the same step), then reset."""
        if not self._log_sums:
            return {}
        keys = list(self._log_sums)
        values = torch.stack([self._log_sums[k].float() for k in keys]).div(max(self._log_steps, 1))
        if self.accelerator.num_processes > 1:  # the global batch's loss, not the main process's share
            values = self.accelerator.reduce(values, reduction="mean")
        values = values.tolist()
        self._log_sums, self._log_steps = {}, 0
        return dict(zip(keys, values))

    def fit(self) -> TrainResult:
        """Train until ``train.max_steps`` (or ``train.max_minutes``), then checkpoint and export."""
        tc, acc = self.cfg.train, self.accelerator
        if self.overwrite and acc.is_main_process and run_entries(self.run_dir):
            prepare_fresh_run(self.run_dir, overwrite=True)
            log.info("--overwrite: deleted the previous run in %s", self.run_dir)
        acc.wait_for_everyone()
        # Training randomness (time, indicator, reparameterisation, dropout) differs per rank.
        set_seed(tc.seed * 7919 + acc.process_index)
        if self.resume:
            self._resume()  # restores the RNG states too; a checkpoint that does not fit raises before any write
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if acc.is_main_process:  # written once the run has started: a failed start leaves the directory as it was
            save_yaml(self.cfg, self.run_dir / "config.yaml.tmp")
            (self.run_dir / "config.yaml.tmp").replace(self.run_dir / "config.yaml")
            log.info("run directory %s: checkpoints in %s, the export in %s, the log in %s", self.run_dir,
                     self.ckpt_dir, self.run_dir / "export", self.run_dir / "metrics.jsonl")
        start_step = self.step
        n_params = sum(p.numel() for p in self._unwrapped().parameters())
        if acc.is_main_process:
            log.info("model: %.2fM parameters; device %s; %d process(es); micro-batch %d", n_params / 1e6,
                     acc.device, acc.num_processes, self.micro_batch)
        start_time = time.time()
        bar = tqdm(total=tc.max_steps, initial=self.step, disable=not acc.is_main_process, desc="train",
                   dynamic_ncols=True)
        self.model.train()
        try:
            with self._watch:
                last_saved, last_loss = self._loop(self._batches(), bar, start_time)
        finally:
            bar.close()
        self._raise_if_nonfinite()
        if last_saved is None or not last_saved.name.endswith(f"{self.step:07d}"):
            last_saved = self.save()
        export_dir = self.run_dir / "export"
        ema_state = self._ema_full_state()  # collective under FSDP
        if acc.is_main_process:
            export_model(ema_state, self.cfg, export_dir)
            self._preview(ema_state)
            try:
                plot_loss_curves(self.run_dir / "metrics.jsonl", self.run_dir / "loss.png")
            except (ValueError, OSError) as exc:  # e.g. no log row yet: the run itself is fine
                log.warning("no loss.png: %s", exc)
            (self.run_dir / "train_summary.json").write_text(json.dumps(
                {"step": self.step, "steps_this_run": self.step - start_step,
                 "seconds": round(time.time() - start_time, 2), "final_loss": last_loss,
                 "parameters": n_params}, indent=2))
            log.info("trained to step %d: checkpoint %s, export %s, loss curves %s", self.step, last_saved,
                     export_dir, self.run_dir / "loss.png")
        acc.wait_for_everyone()
        self.logger.close()
        elapsed = max(time.time() - start_time, 1e-9)  # this run's steps over this run's time (resumes too)
        return TrainResult(self.step, self.run_dir, export_dir, last_saved,
                           (self.step - start_step) * tc.batch_size / elapsed, last_loss)

    def _loop(self, batches, bar, start_time: float) -> tuple[Optional[Path], float]:
        """Steps until max_steps / max_minutes; on SIGTERM / SIGUSR1 a checkpoint, then :class:`TrainingPreempted`."""
        tc, acc = self.cfg.train, self.accelerator
        window_start, window_samples = time.time(), 0
        last_loss, last_saved = float("nan"), None
        while self.step < tc.max_steps:
            if tc.max_minutes is not None and time.time() - start_time > 60 * tc.max_minutes:
                log.info("train.max_minutes=%s reached at step %d", tc.max_minutes, self.step)
                break
            self._train_step(batches)
            self.step += 1
            window_samples += tc.batch_size
            bar.update(1)
            if self.step % tc.log_every == 0 or self.step == tc.max_steps:
                self._raise_if_nonfinite()
                elapsed = time.time() - window_start
                logs = self._read_logs() | {
                    "lr": self.scheduler.get_last_lr()[0], "samples_per_s": window_samples / max(elapsed, 1e-9),
                    "steps_per_s": window_samples / tc.batch_size / max(elapsed, 1e-9)}
                last_loss = logs.get("loss", last_loss)
                self.logger.log(self.step, logs)
                bar.set_postfix(loss=f"{last_loss:.4f}", sps=f"{logs['samples_per_s']:.0f}")
                window_start, window_samples = time.time(), 0
            if self.step % tc.checkpoint_every == 0:
                self._raise_if_nonfinite()
                last_saved = self.save()
            if tc.sample_every and self.step % tc.sample_every == 0:
                ema_state = self._ema_full_state()  # collective under FSDP
                if acc.is_main_process:
                    self._preview(ema_state)
            if self.processes.any(self._watch.requested is not None):  # every process stops at this step
                self._raise_if_nonfinite()
                if last_saved is None or not last_saved.name.endswith(f"{self.step:07d}"):
                    last_saved = self.save()
                self.logger.close()
                names = [n for n in self.processes.gather(self._watch.requested) if n]
                raise TrainingPreempted(names[0], self.step, last_saved)
        return last_saved, last_loss

    def _ema_full_state(self) -> dict[str, torch.Tensor]:
        """The whole EMA weights on the main process (gathered under FSDP: collective; empty elsewhere)."""
        if not self.sharded:
            return self.ema.model.state_dict()
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(self.ema.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))

    def _preview(self, ema_state: dict[str, torch.Tensor]) -> None:
        """The task's preview picture of the EMA model, through the inference pipeline (made once: its source
        processor may hold a language model). Under FSDP an unsharded copy of the EMA weights is used."""
        from crossflow.pipeline import Pipeline

        model = self.ema.model
        if self.sharded:
            if self._preview_model is None:
                with torch.random.fork_rng(devices=[]):  # building must not move the training RNG
                    self._preview_model = self.task.build_model().eval().requires_grad_(False)
            self._preview_model.load_state_dict(ema_state)
            model = self._preview_model
        if self._pipeline is None:
            self._pipeline = Pipeline(model, self.task, device=self.accelerator.device)
        self.task.evaluator().preview(self._pipeline, self.run_dir / "previews" / f"step-{self.step:07d}.png")

    def _train_step(self, batches) -> None:
        """One optimizer step (with accumulation); logged scalars are summed on the device."""
        tc, acc = self.cfg.train, self.accelerator
        step = self.step + 1
        loss_sum = None
        for micro in range(tc.grad_accum_steps):
            batch = next(batches)
            sync = micro == tc.grad_accum_steps - 1
            ddp = acc.num_processes > 1 and not self.sharded  # FSDP reduce-scatters every micro-batch (less memory)
            ctx = acc.no_sync(self.model) if not sync and ddp else contextlib.nullcontext()
            with ctx:
                with acc.autocast():
                    out = self.model(batch)
                if not self._device_skip:  # host check before anything reaches the optimizer
                    self._mark_nonfinite(out.loss, step)
                    self._raise_if_nonfinite()
                acc.backward(out.loss / tc.grad_accum_steps)
            loss_sum = out.loss.detach() if loss_sum is None else loss_sum + out.loss.detach()
            for k, v in out.logs.items():
                v = v.detach().float() / tc.grad_accum_steps
                self._log_sums[k] = self._log_sums[k] + v if k in self._log_sums else v
        norm = None
        if tc.grad_clip is not None:
            norm = full_value(acc.clip_grad_norm_(self.model.parameters(), tc.grad_clip))
            self._log_sums["grad_norm"] = self._log_sums.get("grad_norm", 0.0) + norm.detach().float()
        self._log_steps += 1
        checked = loss_sum if norm is None else loss_sum + norm.detach().float()
        skip = self._mark_nonfinite(checked, step)
        if self._device_skip:
            self._base_optimizer.found_inf = skip.float()
        else:
            self._raise_if_nonfinite()
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.ema.update(self._unwrapped(), skip=skip if self._device_skip else None)


class _Progress:
    """Step, data position and EMA count (``state.json``, with the config and the layout for people and tools)."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer

    def state_dict(self) -> dict:
        t = self.trainer
        epoch, batch = t.sampler.position
        return {"step": t.step, "epoch": epoch, "batch_in_epoch": batch, "ema_updates": t.ema.num_updates,
                "num_processes": t.accelerator.num_processes, "layout": "sharded" if t.sharded else "full",
                "parallel": t.cfg.train.parallel, "config": to_dict(t.cfg)}

    def load_state_dict(self, state: dict, full: bool) -> None:
        t = self.trainer
        t.step = int(state["step"])
        t.sampler.set_position(int(state["epoch"]), int(state["batch_in_epoch"]))
        t.ema.num_updates = int(state["ema_updates"])


def _collate(items):
    """Datasets with ``__getitems__`` already return a collated dict; others go through ``default_collate``."""
    return items if isinstance(items, dict) else default_collate(items)
