"""What this machine computes fast: native bf16, the mixed-precision context that uses it, and how many
training processes it can usefully run.

torch is imported only where a tensor is touched, so that time estimates can ask about the processor
without loading it.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
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


# Families whose training bf16 does not speed up on a CPU: an EfficientNet's depthwise convolutions have no fast
# bf16 kernel there (Lite0 at 224 px on a 2-core CPU with AMX: 19.8 images/s in bf16, 24.2 in fp32).
FP32_ON_CPU = ("efficientnet",)


def resolve_precision(requested: str, device, family: str = "resnet") -> tuple[str, str | None]:
    """The precision a run of a `family` network trains in, plus the reason when `auto` decided it."""
    if requested != "auto":
        return requested, None
    if device.type == "cpu" and family in FP32_ON_CPU:
        return "fp32", (f"precision fp32: an {family}'s depthwise convolutions run no faster in bf16 on a CPU "
                        "(measured 19.8 against 24.2 images/s)")
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


# Several CPU processes pay off where one cannot use the machine well: more than one socket (each with its own
# memory), or so many cores that one process's threads mostly wait on each other.
MANY_CORES = 16
CORES_PER_PROCESS = 8


@dataclass(frozen=True)
class ProcessChoice:
    """How many training processes (torchrun) this machine can usefully run, and why."""

    most: int
    reason: str


def cpu_cores() -> int:
    return len(os.sched_getaffinity(0))


@lru_cache(maxsize=1)
def cpu_sockets() -> int:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return 1
    return max(1, len({line.partition(":")[2].strip() for line in text.splitlines() if line.startswith("physical id")}))


def gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def process_choice(device_type: str) -> ProcessChoice:
    """One process per GPU where training runs on GPUs; on a CPU, one per socket or per CORES_PER_PROCESS
    cores where there are several sockets or MANY_CORES; else one."""
    if device_type == "cuda":
        gpus = gpu_count()
        if gpus > 1:
            return ProcessChoice(gpus, f"one process per GPU, {gpus} GPUs")
        return ProcessChoice(1, "training runs on this machine's one GPU; several processes need several GPUs")
    cores, sockets = cpu_cores(), cpu_sockets()
    most = max(sockets, cores // CORES_PER_PROCESS) if sockets > 1 or cores >= MANY_CORES else 1
    if most > 1:
        return ProcessChoice(most, f"{cores} CPU cores on {sockets} socket(s): up to {most} processes of "
                                   f"{cores // most} cores each")
    return ProcessChoice(1, f"training runs on this machine's CPU, {cores} core(s) on {sockets} socket, and one "
                            f"process already uses every core; several pay off with more than one GPU "
                            f"(DEFECT_DEVICE=cuda), more than one socket or {MANY_CORES} cores and more")
