"""One inference path for every task: inputs → source → VE → z0 → ODE with guidance → latent → codec.

:class:`Pipeline` is also the Python API, in the style of diffusers::

    from crossflow import Pipeline

    pipe = Pipeline.from_pretrained("outputs/demo")           # a run directory, its export/, or a checkpoint
    out = pipe(["a large red circle in the top left"], steps=20, seed=0)
    out.images                                                # (1, 3, 32, 32) in [-1, 1]; out.pil(), out.save()

Sampling options (solver, steps, time grid, guidance, z0 start, temperature, seed, batch size) are
resolved once, from the model's ``sample`` config section with the call's keywords on top
(:meth:`Pipeline.options`). The posterior noise of sample ``i`` comes from its own generator seeded with
``(seed, i)``, so an image does not depend on the batch size, the device or the number of processes.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Callable, Optional, Protocol, Sequence, runtime_checkable

import numpy as np
import torch
from torch import Tensor

from crossflow.config import ConfigError, apply_overrides, from_dict, load_yaml, to_dict
from crossflow.outputs import PipelineOutput
from crossflow.schema import ExperimentConfig, SampleConfig
from crossflow.task import Codec, Source, SourceProcessor, Task

log = logging.getLogger(__name__)

#: Keywords of :meth:`Pipeline.__call__` that are sampling options (fields of ``SampleConfig``).
SAMPLE_OPTIONS = tuple(f.name for f in dataclasses.fields(SampleConfig))


@runtime_checkable
class SourceLatentModel(Protocol):
    """A model with a source latent ``z0`` that can be edited before the ODE (CrossFlow; not noise baselines)."""

    def initial_latent(self, source: Tensor, source_mask: Optional[Tensor] = None, *, z0: str = "mean",
                       temperature: float = 1.0, noise: Optional[Tensor] = None) -> Tensor: ...

    def integrate(self, z0: Tensor, options: Optional[SampleConfig] = None, *, source: Optional[Tensor] = None,
                  mode: str = "guided", callback: Optional[Callable] = None) -> Tensor: ...


def sample_seed(seed: int, index: int) -> int:
    """The seed of sample ``index`` under run seed ``seed`` (well mixed: no overlap between nearby seeds)."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1, dtype=np.uint64)[0] >> 1)


def sample_noise(shape: Sequence[int], seed: int, indices: Sequence[int]) -> Tensor:
    """``(len(indices), *shape)`` standard normal noise, row ``k`` from generator ``sample_seed(seed, indices[k])``.

    Drawn on the CPU in float32, so the same seed gives the same noise on every device.
    """
    rows = [torch.randn(tuple(shape), generator=torch.Generator().manual_seed(sample_seed(seed, i)))
            for i in indices]
    return torch.stack(rows) if rows else torch.zeros(0, *shape)


def resolve_weights(path: str | Path) -> tuple[Path, Path]:
    """Find ``(weights, config.yaml)`` for an export dir, a run dir, or a checkpoint dir.

    Order: ``DIR/model.safetensors`` (an export), ``DIR/export/model.safetensors`` (a finished run), the
    newest complete checkpoint's ``ema.safetensors`` or, for an FSDP run, its sharded ``dcp/`` (an interrupted
    run), ``DIR/ema.safetensors`` or ``DIR/dcp`` (a checkpoint).
    """
    from crossflow.train.checkpoint import CheckpointError, latest_checkpoint

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist (expected a run directory or an export directory)")
    candidates = [(path / "model.safetensors", path / "config.yaml"),
                  (path / "export" / "model.safetensors", path / "export" / "config.yaml")]
    last = latest_checkpoint(path / "checkpoints")
    if last is not None:
        candidates += [(last / "ema.safetensors", path / "config.yaml"), (last / "dcp", path / "config.yaml")]
    candidates += [(path / "ema.safetensors", path.parent.parent / "config.yaml"),
                   (path / "dcp", path.parent.parent / "config.yaml")]
    for weights, config in candidates:
        if weights.exists() and config.is_file():
            return weights, config
    raise CheckpointError(f"no weights found under {path}: expected model.safetensors + config.yaml (an export), "
                          f"export/ (a run), or a complete checkpoint")


def load_model(path: str | Path, *, device: str | torch.device = "cpu",
               overrides: Sequence[tuple[str, Any]] = ()) -> tuple[torch.nn.Module, Task]:
    """Build the task and model described by a saved config and load the weights strictly (no pickle)."""
    from crossflow.registry import experiment_from_dict
    from crossflow.train.checkpoint import CheckpointError, load_safetensors, read_sharded_weights

    weights, config_path = resolve_weights(path)
    cfg, task_cls = experiment_from_dict(apply_overrides(load_yaml(config_path), list(overrides)))
    task = task_cls(cfg)
    model = task.build_model()
    state = read_sharded_weights(weights.parent, "ema") if weights.name == "dcp" else load_safetensors(weights)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{weights} does not match the model of {config_path}: "
                              f"missing {list(missing)[:5]}, unexpected {list(unexpected)[:5]}")
    return model.to(device).eval(), task


class Pipeline:
    """Generation with a trained model of any task.

    Args:
        model: the trained model (CrossFlow or a baseline), in eval mode.
        task: its task adapter (gives the source processor and the codec).
        device: where to run (default: the model's device).
    """

    def __init__(self, model: torch.nn.Module, task: Task, *, device: Optional[str | torch.device] = None) -> None:
        self.model = model
        self.task = task
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.model.to(self.device).eval()
        self._processor: Optional[SourceProcessor] = None
        self._codec: Optional[Codec] = None

    @classmethod
    def from_pretrained(cls, path: str | Path, *, device: Optional[str | torch.device] = None,
                        overrides: Sequence[tuple[str, Any]] = ()) -> "Pipeline":
        """Load a run directory, an export directory (``model.safetensors`` + ``config.yaml``) or a checkpoint.

        Args:
            path: the directory.
            device: torch device (default: ``cuda`` when visible, else ``cpu``).
            overrides: ``(dotted.key, value)`` changes to the saved config (e.g. model paths of the task).
        """
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        model, task = load_model(path, device=device, overrides=overrides)
        return cls(model, task, device=device)

    # ------------------------------------------------------------------ parts
    @property
    def config(self) -> ExperimentConfig:
        return self.task.config

    @property
    def processor(self) -> SourceProcessor:
        """The task's source processor (made on first use: it may load a language model)."""
        if self._processor is None:
            self._processor = self.task.source_processor()
        return self._processor

    @property
    def codec(self) -> Codec:
        """The task's codec (made on first use: it may load a VAE)."""
        if self._codec is None:
            self._codec = self.task.codec()
        return self._codec

    def options(self, base: Optional[SampleConfig] = None, **overrides: Any) -> SampleConfig:
        """The sampling options: ``base`` (default: the model's ``sample`` config) with the non-None
        ``overrides`` on top. This is the one place where sampling options are resolved.

        Raises:
            ConfigError: for an unknown option or a wrong type, naming it.
        """
        unknown = sorted(set(overrides) - set(SAMPLE_OPTIONS))
        if unknown:
            raise ConfigError(f"unknown sampling option(s) {unknown}; valid: {', '.join(SAMPLE_OPTIONS)}")
        given = {k: v for k, v in overrides.items() if v is not None}
        return from_dict(SampleConfig, to_dict(base or self.config.sample) | given, path="sample")

    # ------------------------------------------------------------------ steps
    def encode(self, inputs: Sequence[Any]) -> Source:
        """User inputs → the model's source on the pipeline's device."""
        return self.processor(list(inputs), self.device).to(self.device)

    def noise(self, indices: Sequence[int], seed: int) -> Tensor:
        """Standard normal noise of the target latent's shape for samples ``indices`` (see :func:`sample_noise`)."""
        return sample_noise(self.task.target_spec().shape, seed, indices).to(self.device)

    def decode(self, latents: Tensor) -> PipelineOutput:
        """Target latents ``(B, C, H, W)`` → the task's typed output (latents kept, on the CPU)."""
        out = self.codec.decode(latents.float())
        out.latents = latents.float().cpu()
        return out

    def _latent_model(self) -> SourceLatentModel:
        if not isinstance(self.model, SourceLatentModel):
            raise ValueError(f"{type(self.model).__name__} has no source latent z0 (a noise-source baseline); "
                             "interpolation and latent arithmetic need a CrossFlow model")
        return self.model

    @staticmethod
    def _batches(n: int, batch_size: int) -> list[slice]:
        if n == 0:
            raise ValueError("no inputs to generate from")
        return [slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]

    @torch.no_grad()
    def __call__(self, inputs: Sequence[Any], *, options: Optional[SampleConfig] = None, mode: str = "guided",
                 first_index: int = 0, callback: Optional[Callable[[dict], None]] = None,
                 **overrides: Any) -> PipelineOutput:
        """Generate one output per input.

        Args:
            inputs: prompts (text tasks) or images (paths, ``(H, W, 3)`` uint8 arrays, PIL images, or
                ``(3, H, W)`` tensors in [-1, 1]) — whatever the task's source processor takes.
            mode: ``"guided"`` (guidance scale from the options) or ``"null"`` (the null branch alone).
            first_index: global index of ``inputs[0]``: the noise of input ``k`` is seeded with
                ``(seed, first_index + k)`` (processes that split a list pass their offset).
            callback: called with ``{"step", "t", "x"}`` at the start (step -1) and after every solver step.
            options: resolved sampling options (default: the model's ``sample`` config).
            **overrides: single sampling options on top: ``steps``, ``solver``, ``time_grid``, ``guidance``,
                ``z0`` (``"mean"`` or ``"sample"``), ``temperature``, ``seed``, ``batch_size``.

        Returns:
            The task's output type (:class:`~crossflow.outputs.ImageOutput`, ``DepthOutput``, ``TextOutput``).
        """
        opts = self.options(options, **overrides)
        inputs = list(inputs)
        parts = []
        for part in self._batches(len(inputs), opts.batch_size):
            source = self.encode(inputs[part])
            noise = self.noise(range(first_index + part.start, first_index + part.stop), opts.seed)
            latents = self.model.generate(source.values, source.mask, options=opts, noise=noise, mode=mode,
                                          callback=callback)
            parts.append(self.decode(latents))
        return type(parts[0]).concat(parts)

    @torch.no_grad()
    def initial_latents(self, inputs: Sequence[Any], *, options: Optional[SampleConfig] = None, first_index: int = 0,
                        **overrides: Any) -> Tensor:
        """The source latents ``z0`` ``(B, C, H, W)`` of ``inputs``: the VE mean, or a posterior sample
        (``z0="sample"``, ``temperature``, noise seeded per input as in :meth:`__call__`)."""
        model, opts = self._latent_model(), self.options(options, **overrides)
        inputs, parts = list(inputs), []
        for part in self._batches(len(inputs), opts.batch_size):
            source = self.encode(inputs[part])
            noise = self.noise(range(first_index + part.start, first_index + part.stop), opts.seed)
            parts.append(model.initial_latent(source.values, source.mask, z0=opts.z0, temperature=opts.temperature,
                                              noise=noise))
        return torch.cat(parts)

    @torch.no_grad()
    def from_latents(self, z0: Tensor, *, options: Optional[SampleConfig] = None, mode: str = "guided",
                     callback: Optional[Callable[[dict], None]] = None, **overrides: Any) -> PipelineOutput:
        """Integrate given source latents ``z0`` ``(B, C, H, W)`` and decode them (interpolation, arithmetic)."""
        model, opts = self._latent_model(), self.options(options, **overrides)
        parts = [self.decode(model.integrate(z0[part].to(self.device), opts, mode=mode, callback=callback))
                 for part in self._batches(z0.shape[0], opts.batch_size)]
        return type(parts[0]).concat(parts)


__all__ = ["Pipeline", "SAMPLE_OPTIONS", "SourceLatentModel", "load_model", "resolve_weights", "sample_noise",
           "sample_seed"]
