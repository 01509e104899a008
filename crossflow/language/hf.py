"""Frozen language-model embedder built on Hugging Face ``transformers``.

:class:`TextEmbedder` turns a list of prompts into padded per-token hidden states and a boolean
attention mask. CLIP checkpoints load only their text tower, T5 checkpoints only their encoder
(see :mod:`crossflow.language.loading`); any other ``transformers`` encoder loads through ``AutoModel``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import warnings
from typing import Any, Optional, Sequence

import torch
from torch import Tensor

from crossflow.language.loading import load_text_encoder

logger = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
           "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


def _resolve_dtype(dtype: torch.dtype | str) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; expected one of {sorted(_DTYPES)}")
    return _DTYPES[dtype]


_CPU_HALF_CHECKED = False


def guard_cpu_half_precision(dtype: torch.dtype, device: Any) -> None:
    """Before running bf16/fp16 weights on a CPU, make sure its matmuls cannot crash (AMX-faulting VMs).

    Runs :func:`crossflow.utils.cpu.ensure_cpu_bf16` once per process.
    """
    global _CPU_HALF_CHECKED
    if dtype == torch.float32 or _CPU_HALF_CHECKED or torch.device(device or "cpu").type != "cpu":
        return
    from crossflow.utils.cpu import ensure_cpu_bf16

    ensure_cpu_bf16()
    _CPU_HALF_CHECKED = True


def _parse_hidden_state(hidden_state: str) -> int | None:
    """Return ``None`` for ``"last"``, else the layer index of ``"layer:<int>"``."""
    if hidden_state == "last":
        return None
    if hidden_state == "penultimate":
        return -2
    if hidden_state.startswith("layer:"):
        try:
            return int(hidden_state.split(":", 1)[1])
        except ValueError:
            pass
    raise ValueError(f"hidden_state must be 'last', 'penultimate' or 'layer:<int>', got {hidden_state!r}")


def validate_prompts(prompts: Sequence[str]) -> list[str]:
    """Check that ``prompts`` is a sequence of non-empty strings.

    Raises:
        TypeError: ``prompts`` is a single string, or an element is not a ``str`` (index named).
        ValueError: an element is empty or whitespace only (index named).
    """
    if isinstance(prompts, (str, bytes)):
        raise TypeError("prompts must be a list of strings, not a single string")
    prompts = list(prompts)
    for i, p in enumerate(prompts):
        if not isinstance(p, str):
            raise TypeError(f"prompt {i} is a {type(p).__name__}, expected str")
        if not p.strip():
            raise ValueError(f"prompt {i} is empty")
    return prompts


class TextEmbedder(torch.nn.Module):
    """Frozen tokenizer + language model producing token-level embeddings.

    Args:
        name_or_path: Local directory or hub id understood by ``from_pretrained``.
        max_length: Every output is padded/truncated to this many tokens.
        local_files_only: Never contact a model hub.
        dtype: Weights dtype (``torch.dtype`` or ``"float32"``/``"bfloat16"``/``"float16"``).
        output_scale: Multiplier applied to the returned hidden states.
        device: Device for the model (default CPU).
        hidden_state: ``"last"`` (last_hidden_state), ``"penultimate"`` or ``"layer:<int>"``
            (index into ``hidden_states``; 0 is the embedding output).
        kind: ``"auto"`` (from the checkpoint's config), ``"clip"`` (``CLIPTextModel``), ``"t5"``
            (``T5EncoderModel``) or ``"encoder"`` (``AutoModel``).
        model_attention_mask: pass the tokenizer's attention mask to the model. ``None`` = as the official
            pipelines: not for CLIP (its causal attention then also runs over the padding, as in
            ``FrozenCLIPEmbedder``), yes for everything else. The returned mask is the tokenizer's either way.

    Raises:
        FileNotFoundError: ``name_or_path`` looks like a local path and does not exist.
        OSError: ``transformers`` could not load the tokenizer or model (one-line message naming the path).
    """

    def __init__(self, name_or_path: str, *, max_length: int = 77, local_files_only: bool = False,
                 dtype: torch.dtype | str = "float32", output_scale: float = 1.0, device: Any = None,
                 hidden_state: str = "last", kind: str = "auto",
                 model_attention_mask: Optional[bool] = None) -> None:
        super().__init__()
        from transformers import AutoTokenizer

        if max_length < 2:
            raise ValueError(f"max_length must be >= 2, got {max_length}")
        self.name_or_path = str(name_or_path)
        self.max_length = int(max_length)
        self.output_scale = float(output_scale)
        self.hidden_state = hidden_state
        self._layer = _parse_hidden_state(hidden_state)
        self.dtype = _resolve_dtype(dtype)
        path = os.path.expanduser(self.name_or_path)
        if (os.path.isabs(path) or path.startswith(".")) and not os.path.exists(path):
            raise FileNotFoundError(f"language model path does not exist: {self.name_or_path}")
        guard_cpu_half_precision(self.dtype, device)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=local_files_only)
            model, self.kind = load_text_encoder(path, kind, dtype=self.dtype, local_files_only=local_files_only)
        except (OSError, ValueError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise OSError(f"could not load language model {self.name_or_path!r} "
                          f"(local_files_only={local_files_only}): {first}") from e
        if self.tokenizer.pad_token is None:  # decoder-only tokenizers (GPT-2 style)
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.config = model.config
        self.model_attention_mask = self.kind != "clip" if model_attention_mask is None else bool(model_attention_mask)
        self.model = model
        if device is not None:
            self.model.to(device)
        self._fingerprint = self._weights_fingerprint()

    @property
    def dim(self) -> int:
        """Hidden size of the returned token embeddings."""
        cfg = self.config
        return int(getattr(cfg, "hidden_size", None) or getattr(cfg, "d_model"))

    @property
    def device(self) -> torch.device:
        """Device holding the model weights."""
        return next(self.model.parameters()).device

    @property
    def identifier(self) -> str:
        """Stable id for caching: model basename + weights fingerprint + encoding options."""
        base = os.path.basename(self.name_or_path.rstrip("/\\")) or "model"
        dt = str(self.dtype).replace("torch.", "")
        mask = "" if self.model_attention_mask else "_nomask"
        return (f"{base}-{self._fingerprint}_len{self.max_length}_scale{self.output_scale:g}"
                f"_{self.hidden_state.replace(':', '')}_{dt}{mask}")

    def _weights_fingerprint(self) -> str:
        """Short hash of a few values of every parameter (cheap, distinguishes checkpoints)."""
        h = hashlib.sha1()
        for name, p in self.model.state_dict().items():
            h.update(name.encode())
            h.update(p.detach().flatten()[:16].float().cpu().numpy().tobytes())
        return h.hexdigest()[:8]

    def _encode(self, prompts: list[str]) -> tuple[Tensor, Tensor, list[int], Tensor]:
        """Embed already validated prompts; also return indices of truncated prompts and the token ids."""
        lengths = self.tokenizer(prompts, truncation=False, padding=False, verbose=False)["input_ids"]
        truncated = [i for i, ids in enumerate(lengths) if len(ids) > self.max_length]
        batch = self.tokenizer(prompts, padding="max_length", truncation=True, max_length=self.max_length,
                               return_tensors="pt")
        ids = batch["input_ids"].to(self.device)
        attn = batch["attention_mask"].to(self.device)
        with torch.no_grad():
            out = self.model(input_ids=ids, attention_mask=attn if self.model_attention_mask else None,
                             output_hidden_states=self._layer is not None, return_dict=True)
        h = out.last_hidden_state if self._layer is None else out.hidden_states[self._layer]
        h = h.float()
        if self.output_scale != 1.0:
            h = h * self.output_scale
        return h, attn.bool(), truncated, ids

    def _warn_truncated(self, truncated: list[int], total: int) -> None:
        if truncated:
            warnings.warn(f"{len(truncated)} of {total} prompts exceed max_length={self.max_length} tokens and "
                          f"were truncated (first: prompt {truncated[0]})", stacklevel=3)

    def forward(self, prompts: list[str]) -> tuple[Tensor, Tensor]:
        """Embed ``prompts``.

        Returns:
            ``(embeddings, mask)``: float32 ``(B, max_length, dim)`` on the model device (times
            ``output_scale``) and bool ``(B, max_length)``, True at real tokens.
        """
        prompts = validate_prompts(prompts)
        if not prompts:
            return (torch.zeros(0, self.max_length, self.dim, device=self.device),
                    torch.zeros(0, self.max_length, dtype=torch.bool, device=self.device))
        h, mask, truncated, _ = self._encode(prompts)
        self._warn_truncated(truncated, len(prompts))
        return h, mask

    def embed_batch(self, prompts: list[str]) -> tuple[Tensor, Tensor, Tensor, list[int]]:
        """One model call without warnings, for bulk extraction that counts truncations itself.

        Returns:
            ``(states, mask, input_ids, truncated)``: float32 ``(B, max_length, dim)`` (× ``output_scale``),
            bool ``(B, max_length)``, int64 ``(B, max_length)``, all on the model device, and the
            positions of prompts longer than ``max_length`` tokens.
        """
        h, mask, truncated, ids = self._encode(validate_prompts(prompts))
        return h, mask, ids, truncated

    def encode(self, prompts: list[str], batch_size: int = 256, progress: bool = False) -> tuple[Tensor, Tensor]:
        """Like :meth:`forward` but batched; results are gathered on CPU.

        Args:
            prompts: Prompts to embed.
            batch_size: Prompts per model call.
            progress: Show a tqdm progress bar.
        """
        prompts = validate_prompts(prompts)
        if not prompts:
            return (torch.zeros(0, self.max_length, self.dim), torch.zeros(0, self.max_length, dtype=torch.bool))
        starts = range(0, len(prompts), batch_size)
        if progress:
            from tqdm.auto import tqdm
            starts = tqdm(starts, desc="embedding prompts", unit="batch")
        embs, masks, truncated = [], [], []
        for s in starts:
            h, m, t, _ = self._encode(prompts[s:s + batch_size])
            embs.append(h.cpu())
            masks.append(m.cpu())
            truncated.extend(s + i for i in t)
        self._warn_truncated(truncated, len(prompts))
        return torch.cat(embs), torch.cat(masks)
