"""The contract between the core and a task adapter.

A task says what its source and target are (:mod:`crossflow.specs`) and hands out separate objects:

* ``train_dataset()``: a ``torch`` dataset of batches ``{"source", "source_mask"?, "target", ...}``;
  a dataset that also implements :class:`PreparesBatches` finishes each batch on the device (e.g.
  draws an SD-VAE latent from stored moments);
* ``source_processor()``: user inputs (prompts, images, ...) → a :class:`Source` batch;
* ``codec()``: generated target latents → a typed output (:mod:`crossflow.outputs`);
* ``evaluator()``: held-out evaluation and training previews through a :class:`~crossflow.pipeline.Pipeline`.

The model comes from the config and the two specs (:func:`crossflow.build.build_model`); a task
overrides :meth:`Task.build_model` only when it trains something else (the text-VAE stage of
captioning). Optional capabilities are protocols checked with ``isinstance``. Tasks are found by
name through the ``crossflow.tasks`` entry-point group (:mod:`crossflow.registry`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Optional, Protocol, Sequence, runtime_checkable

import torch
from torch import Tensor
from torch.utils.data import Dataset

from crossflow.schema import ExperimentConfig, SampleConfig
from crossflow.specs import ImageSpec, Spec
from crossflow.train.protocol import Trainable

if TYPE_CHECKING:
    from crossflow.outputs import PipelineOutput
    from crossflow.pipeline import Pipeline


@dataclass
class Source:
    """A batch of sources as the model takes them.

    Attributes:
        values: ``(B, L, D)`` token states or ``(B, C, H, W)`` image-shaped tensor.
        mask: ``(B, L)`` bool (True = real token) for token sources; None otherwise.
    """

    values: Tensor
    mask: Optional[Tensor] = None

    def __len__(self) -> int:
        return self.values.shape[0]

    def __getitem__(self, index: slice) -> "Source":
        return Source(self.values[index], None if self.mask is None else self.mask[index])

    def to(self, device: torch.device | str) -> "Source":
        return Source(self.values.to(device), None if self.mask is None else self.mask.to(device))


@runtime_checkable
class SourceProcessor(Protocol):
    """User inputs → the model's source: ``processor(inputs, device) -> Source``."""

    def __call__(self, inputs: Sequence[Any], device: torch.device | str) -> Source: ...


@runtime_checkable
class TakesText(Protocol):
    """A source processor whose inputs are strings (prompts, captions)."""

    def check_texts(self, texts: Sequence[str]) -> list[str]:
        """Validate texts before any model is loaded (empty ones raise, naming the index)."""


@runtime_checkable
class TakesImages(Protocol):
    """A source processor whose inputs are images (paths, ``(H, W, 3)`` uint8 arrays or PIL images)."""

    def load_images(self, paths: Sequence[str | Path]) -> list[Any]:
        """Read image files into inputs of this processor (a missing or corrupt file raises, naming it)."""


@runtime_checkable
class CachesInputs(Protocol):
    """A source processor with an on-disk cache that one process should fill before many read it."""

    def fill_cache(self, inputs: Sequence[Any]) -> None: ...


@runtime_checkable
class Codec(Protocol):
    """Generated target latents ``(B, C, H, W)`` → a typed output (images, depth maps, captions)."""

    def decode(self, latents: Tensor) -> "PipelineOutput": ...


@runtime_checkable
class PreparesBatches(Protocol):
    """A training dataset that finishes each collated batch on the device (the trainer calls it)."""

    def prepare(self, batch: dict[str, Any], device: torch.device) -> dict[str, Tensor]: ...


@runtime_checkable
class Evaluator(Protocol):
    """Held-out evaluation and training previews of a task."""

    def evaluate(self, pipe: "Pipeline", out_dir: Path, *, num: Optional[int] = None,
                 options: Optional[SampleConfig] = None) -> dict[str, Any]:
        """Generate on held-out data with ``options`` (default: the config's), score, write ``metrics.json``
        and pictures under ``out_dir``; return the metrics."""

    def preview(self, pipe: "Pipeline", path: Path) -> None:
        """Write a small picture of the current model to ``path`` (cheap: few items, few solver steps)."""


@runtime_checkable
class BenchmarkEvaluator(Protocol):
    """An evaluator that also scores a model on the field's benchmarks (``crossflow eval RUN --benchmark NAME``)."""

    def benchmarks(self) -> list[str]:
        """The benchmark names it knows."""

    def evaluate_benchmark(self, pipe: "Pipeline", name: str, *, data: str | Path, filenames: str | Path,
                           out_dir: Path, num: Optional[int] = None, options: Optional[SampleConfig] = None,
                           **settings: Any) -> dict[str, Any]:
        """Score ``pipe`` on benchmark ``name`` (data in the field's format); write ``metrics.json`` under ``out_dir``."""


@runtime_checkable
class ToyDataFormats(Protocol):
    """A task (class) that writes toy scenes in the on-disk formats of its real datasets (``crossflow toy-data``)."""

    @classmethod
    def toy_data_formats(cls) -> dict[str, Any]:
        """``{format name: writer(out_dir, *, num=..., seed=..., ...) -> summary}``."""


@runtime_checkable
class ExtractsFeatures(Protocol):
    """A task (class) with a feature extractor for ``crossflow extract CONFIG ...``."""

    @classmethod
    def extract_features(cls, argv: list[str]) -> dict[str, Any]: ...


class Task(ABC):
    """Base class of task adapters.

    Subclasses set ``config_class`` (a dataclass with a ``name`` field, validated as the ``task`` section)
    and implement the abstract methods. ``self.config`` is the whole :class:`ExperimentConfig`. Methods
    that load models or data do so when called, never at construction, so building a task is cheap.
    """

    config_class: ClassVar[type]

    def __init__(self, config: ExperimentConfig) -> None:
        self.config = config

    @property
    def name(self) -> str:
        return str(self.config.task.name)

    @abstractmethod
    def source_spec(self) -> Spec:
        """What the model's source is (token width and length, or image shape). Reads no weights."""

    @abstractmethod
    def target_spec(self) -> ImageSpec:
        """``(C, H, W)`` of the target latent z1 (and of z0). Reads no weights."""

    @abstractmethod
    def train_dataset(self) -> Dataset:
        """Training data: collated batches hold ``source``, ``target`` (and ``source_mask`` for tokens)."""

    @abstractmethod
    def evaluator(self) -> Evaluator:
        """The task's evaluator (``crossflow eval``, previews during training)."""

    def source_processor(self) -> SourceProcessor:
        """User inputs → :class:`Source` for generation. Tasks that only train a component do not generate."""
        raise ValueError(f"task {self.name!r} does not generate from inputs (it has no source processor)")

    def codec(self) -> Codec:
        """Generated latents → outputs. Tasks that only train a component do not generate."""
        raise ValueError(f"task {self.name!r} does not generate outputs (it has no codec)")

    def build_model(self) -> Trainable:
        """The model of ``config.model`` for this task's source and target (CrossFlow or a baseline)."""
        from crossflow.build import build_model

        return build_model(self.config.model, self.config.flow, source=self.source_spec(), target=self.target_spec())


__all__ = ["BenchmarkEvaluator", "CachesInputs", "Codec", "Evaluator", "ExtractsFeatures", "PreparesBatches", "Source",
           "SourceProcessor", "TakesImages", "TakesText", "Task", "ToyDataFormats"]
