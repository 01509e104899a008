"""CPU quirks: make bf16 autocast safe where the processor advertises AMX that the VM cannot run."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

log = logging.getLogger(__name__)
_PROBE = "import torch; a = torch.ones(128, 128, dtype=torch.bfloat16); print(float((a @ a).sum()))"
_SAFE_ISA = "AVX512_CORE_BF16"


def _bf16_matmul_survives(env: dict[str, str]) -> bool:
    try:
        result = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, timeout=300)
    except subprocess.TimeoutExpired:
        return False
    return result.returncode == 0


def ensure_cpu_bf16() -> None:
    """Check in a subprocess that bf16 matmuls run; if they crash, cap oneDNN below AMX.

    Some virtual machines report ``amx_bf16`` yet fault (SIGILL) on AMX instructions, which kills
    the process at the first bf16 matmul. Capping oneDNN's ISA at AVX512-BF16 avoids AMX; oneDNN
    reads the variable lazily, so setting it here (before the first bf16 kernel) takes effect.

    Raises:
        RuntimeError: bf16 matmuls crash even with the cap; use ``train.mixed_precision=no``.
    """
    if _bf16_matmul_survives(dict(os.environ)):
        return
    if "ONEDNN_MAX_CPU_ISA" not in os.environ and _bf16_matmul_survives(os.environ | {"ONEDNN_MAX_CPU_ISA": _SAFE_ISA}):
        os.environ["ONEDNN_MAX_CPU_ISA"] = _SAFE_ISA
        log.warning("bf16 matmuls crash this CPU with AMX; set ONEDNN_MAX_CPU_ISA=%s (bf16 may be slower than "
                    "fp32 here: measure with benchmarks/train_step.py)", _SAFE_ISA)
        return
    raise RuntimeError("bf16 matmuls crash this CPU (illegal instruction); set train.mixed_precision=no")
