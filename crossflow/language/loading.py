"""Pick and load the right ``transformers`` class for a frozen text encoder.

``AutoModel`` is wrong for the two language models CrossFlow was trained with: on an OpenAI CLIP
checkpoint it builds the whole ``CLIPModel`` (whose forward wants images too), and on a T5 checkpoint
it builds encoder *and* decoder (twice the memory of T5-XXL's encoder). This module reads only the
checkpoint's ``config.json`` to decide, then loads just the text encoder:

=========  ==========================================  =======================================
kind       model types                                  class
=========  ==========================================  =======================================
clip       ``clip``, ``clip_text_model``               ``CLIPTextModel`` (text tower only)
t5         ``t5``, ``mt5``, ``umt5``                   ``T5EncoderModel`` / ``MT5…`` / ``UMT5…``
encoder    anything else                               ``AutoModel`` (encoder part if enc-dec)
=========  ==========================================  =======================================
"""

from __future__ import annotations

from typing import Any

import torch

#: Accepted values of ``kind``.
KINDS = ("auto", "clip", "t5", "encoder")

_T5_CLASSES = {"t5": "T5EncoderModel", "mt5": "MT5EncoderModel", "umt5": "UMT5EncoderModel"}


def model_type_of(path: str, *, local_files_only: bool) -> str:
    """``model_type`` of the checkpoint at ``path`` (reads ``config.json`` only, no weights)."""
    from transformers import AutoConfig

    return str(AutoConfig.from_pretrained(path, local_files_only=local_files_only).model_type)


def resolve_kind(kind: str, model_type: str) -> str:
    """Resolve ``kind="auto"`` from the checkpoint's ``model_type``; check explicit kinds against it.

    Raises:
        ValueError: unknown ``kind``, or a kind that does not fit the checkpoint (e.g. ``t5`` on a BERT).
    """
    if kind not in KINDS:
        raise ValueError(f"language model kind must be one of {', '.join(KINDS)}, got {kind!r}")
    detected = "clip" if model_type in ("clip", "clip_text_model") else "t5" if model_type in _T5_CLASSES else "encoder"
    if kind == "auto":
        return detected
    if kind in ("clip", "t5") and detected != kind:
        raise ValueError(f"language model kind={kind!r} does not fit a checkpoint of model_type {model_type!r}")
    return kind


def load_text_encoder(path: str, kind: str, *, dtype: torch.dtype, local_files_only: bool) -> tuple[Any, str]:
    """Load the frozen text encoder of ``path`` in ``dtype``.

    Args:
        path: local directory or hub id.
        kind: ``auto``/``clip``/``t5``/``encoder`` (see the module docstring).
        dtype: weights dtype (``torch.bfloat16`` halves T5-XXL's 19 GB to 9.5 GB).
        local_files_only: never contact a model hub.

    Returns:
        ``(model in eval mode without gradients, resolved kind)``.
    """
    import transformers

    model_type = model_type_of(path, local_files_only=local_files_only)
    kind = resolve_kind(kind, model_type)
    if kind == "clip":
        cls = transformers.CLIPTextModel
    elif kind == "t5":
        cls = getattr(transformers, _T5_CLASSES.get(model_type, "T5EncoderModel"))
    else:
        cls = transformers.AutoModel
    model = cls.from_pretrained(path, local_files_only=local_files_only, dtype=dtype)
    if getattr(model.config, "is_encoder_decoder", False) and hasattr(model, "get_encoder"):
        model = model.get_encoder()
    return model.eval().requires_grad_(False), kind
