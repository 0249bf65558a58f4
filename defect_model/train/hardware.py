"""What this machine computes fast: native bf16, and the mixed-precision context that uses it.

torch is imported only where a tensor is touched, so that time estimates can ask about the processor
without loading it.
"""

from __future__ import annotations

import contextlib
from functools import lru_cache
from pathlib import Path

# Processor flags (Linux /proc/cpuinfo) that mean bf16 matrix maths in hardware, not emulated.
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    line = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return frozenset(line.partition(":")[2].split())


def native_bf16(device) -> bool:
    if device.type == "cuda":
        import torch

        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_native_bf16()


def cpu_native_bf16() -> bool:
    return any(flag in cpu_flags() for flag in NATIVE_BF16_FLAGS)


def resolve_precision(requested: str, device) -> tuple[str, str | None]:
    """The precision a run trains in, plus the reason when `auto` decided it."""
    if requested != "auto":
        return requested, None
    if native_bf16(device):
        return "bf16", (f"precision bf16 (mixed): this {device.type.upper()} computes bf16 natively, about 1.8x the "
                        "fp32 training speed on a 2-core Zen 4; weights, optimizer and validation stay fp32")
    return "fp32", f"precision fp32: this {device.type.upper()} has no native bf16, so mixed precision would be slower"


def autocast(precision: str, device):
    """Mixed-precision context for the forward pass and loss; a no-op for fp32."""
    if precision == "bf16":
        import torch

        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
