"""How long training takes on this machine: from the runs it has already trained, else from the backbone
registry's measured throughput.

No streamlit and no torch here: the Train page, the preset and the CLI all use it.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from defect_model.common.backbones import backbone as registered
from defect_model.runs.events import images_per_s
from defect_model.train.hardware import FP32_ON_CPU, cpu_native_bf16
from defect_model.runs.folders import RunDir, list_runs

# Where the processor computes bf16 natively, training runs in bf16 mixed precision (`precision: auto`):
# about 1.8x the fp32 speed on a 2-core Zen 4 (bench/results/perf.md).
BF16_SPEEDUP = 1.8
# Validation needs a forward pass only: about a third of a training step's work.
EVAL_SPEEDUP = 3.0
# Starting the process (importing torch), decoding the photos, building the model.
STARTUP_S = 15.0
PAST_RUNS_LOOKED_AT = 20


@dataclass
class TimeEstimate:
    seconds: float
    images_per_s: float
    source: str  # where images_per_s comes from, in words

    def text(self) -> str:
        return f"about {format_duration(self.seconds)} ({self.images_per_s:.0f} training images/s, {self.source})"


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def size_exponent(name: str) -> float:
    """How steeply images/s falls with the image size: rate ~ size**-k, k from the registry's two extreme
    measurements (else 2)."""
    points = sorted(registered(name).images_per_s.items())
    if len(points) < 2:
        return 2.0
    (small, fast), (large, slow) = points[0], points[-1]
    return math.log(fast / slow) / math.log(large / small)


def _scaled(rate: float, measured_size: int, size: int, name: str) -> float:
    return rate * (measured_size / size) ** size_exponent(name)


def run_throughput(run: RunDir) -> tuple[str, int, float] | None:
    """(backbone, image_size, median training images/s) a past run measured, or None."""
    try:
        settings = run.settings()
    except (OSError, ValueError, TypeError):
        return None
    rate = images_per_s(run.read_events())
    return (settings.backbone, settings.image_size, rate) if rate else None


def measured_images_per_s(name: str, image_size: int, root: str | Path | None = None) -> tuple[float, int] | None:
    """Training images/s for backbone `name` at `image_size` from past runs on this machine: (rate, runs used)."""
    same_size, other_size = [], []
    for run in list_runs(root)[:PAST_RUNS_LOOKED_AT]:
        found = run_throughput(run)
        if found is None or found[0] != name:
            continue
        (same_size if found[1] == image_size else other_size).append(_scaled(found[2], found[1], image_size, name))
    rates = same_size or other_size
    return (statistics.median(rates), len(rates)) if rates else None


def builtin_images_per_s(name: str, image_size: int) -> float:
    """The registry's measured rate at the nearest measured size, scaled to `image_size`."""
    rates = registered(name).images_per_s
    nearest = min(rates, key=lambda size: abs(size - image_size))
    bf16 = cpu_native_bf16() and registered(name).family not in FP32_ON_CPU  # what precision "auto" picks
    speedup = BF16_SPEEDUP if bf16 else 1.0
    return speedup * _scaled(rates[nearest], nearest, image_size, name)


def estimate_training_time(name: str, image_size: int, epochs: int, train_images: int, val_images: int,
                           root: str | Path | None = None) -> TimeEstimate:
    """Wall time of a training run of backbone `name`: start-up plus, per epoch, the training and validation
    passes."""
    measured = measured_images_per_s(name, image_size, root)
    if measured:
        rate, runs = measured
        source = f"measured by {runs} past run{'s' if runs > 1 else ''} of {name} on this machine"
    else:
        rate = builtin_images_per_s(name, image_size)
        source = f"built-in figure for {name}; no past {name} run on this machine yet"
    per_epoch = train_images / rate + val_images / (rate * EVAL_SPEEDUP)
    return TimeEstimate(seconds=STARTUP_S + epochs * per_epoch, images_per_s=rate, source=source)
