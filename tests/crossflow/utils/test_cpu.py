"""bf16 autocast must not kill the process on CPUs that advertise AMX but fault on it."""

from __future__ import annotations

import subprocess
import sys

CODE = """
import torch
from crossflow.utils.cpu import ensure_cpu_bf16
ensure_cpu_bf16()
x = torch.randn(256, 256)
with torch.autocast("cpu", torch.bfloat16):
    y = x @ x
assert y.dtype == torch.bfloat16
print("ok", float((y.float() - (x @ x)).abs().max() / (x @ x).abs().max()))
"""


def test_bf16_autocast_survives_after_the_guard():
    result = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("ok")
    assert float(result.stdout.split()[1]) < 0.05  # bf16 relative error
