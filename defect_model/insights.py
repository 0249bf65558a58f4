"""What a dataset holds before training on it, and how long training it will take on this machine.

No streamlit and no torch here: the Train page and the CLI can both use it.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from PIL import Image, UnidentifiedImageError

from .data import scan_image_folder
from .events import images_per_s
from .hardware import cpu_native_bf16
from .images import ImageError, load_image
from .runs import RunDir, list_runs

# A class with this many times fewer photos than the largest one is called out.
IMBALANCE_WARNING = 1.5
# Photos opened for their size and mode (header only) and decoded in full, at most.
HEADER_LIMIT = 20_000
DECODE_LIMIT = 1_000


@dataclass
class DatasetInsights:
    """Per-class counts, photo sizes and modes, sample photos, and the files that cannot be used."""

    root: Path
    classes: list[str]
    counts: dict[str, int]
    sizes: dict[str, int]  # "640x480" -> photos of that size, most common first
    modes: dict[str, int]  # PIL mode ("RGB", "L", ...) -> photos
    samples: dict[str, list[Path]]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # not photos, links: (path, reason)
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # photos that cannot be decoded
    opened: int = 0  # photos whose header was read
    decoded: int = 0  # photos decoded in full (or found damaged trying)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def largest(self) -> str:
        return max(self.classes, key=lambda c: self.counts[c])

    @property
    def smallest(self) -> str:
        return min(self.classes, key=lambda c: self.counts[c])

    @property
    def imbalance_ratio(self) -> float:
        return self.counts[self.largest] / max(1, self.counts[self.smallest])

    def minority_classes(self, limit: float = IMBALANCE_WARNING) -> list[str]:
        """Classes with `limit` times fewer photos than the largest one, or more."""
        most = self.counts[self.largest]
        return [c for c in self.classes if self.counts[c] * limit <= most]

    def imbalance_warning(self, limit: float = IMBALANCE_WARNING) -> str | None:
        """A plain-words warning when the classes are imbalanced, else None."""
        few = self.minority_classes(limit)
        if not few:
            return None
        listed = ", ".join(f"{c} ({self.counts[c]})" for c in few)
        return (f"The classes are imbalanced: {self.largest} has {self.counts[self.largest]} photos, "
                f"{self.smallest} only {self.counts[self.smallest]} ({self.imbalance_ratio:.1f}x fewer). "
                f"Expect a lower recall on {listed}; add photos of them or use class-balanced sampling.")


def _even_sample(items: list, n: int) -> list:
    if len(items) <= n:
        return list(items)
    step = len(items) / n
    return [items[int(i * step)] for i in range(n)]


def inspect_dataset(root: str | Path, samples_per_class: int = 6, header_limit: int = HEADER_LIMIT,
                    decode_limit: int = DECODE_LIMIT) -> DatasetInsights:
    """Look into a class-per-folder dataset; raises data.DatasetError with a clear message when it is not one.

    Every photo's header is read (size and mode) up to `header_limit`; up to `decode_limit` photos,
    spread over the classes, are decoded in full to find damaged files.
    """
    scan = scan_image_folder(root)
    by_class: dict[str, list[str]] = {name: [] for name in scan.classes}
    for rel, label in scan.items:
        by_class[label].append(rel)

    headers: dict[str, tuple[str, str]] = {}  # path -> ("WxH", mode)
    unreadable: dict[str, str] = {}
    to_open = _even_sample([rel for rel, _ in scan.items], header_limit)
    for rel in to_open:
        try:
            with Image.open(scan.root / rel) as image:
                headers[rel] = (f"{image.width}x{image.height}", image.mode)
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
            unreadable[rel] = _reason(scan.root / rel, rel, exc)
    to_decode = [rel for rel in _even_sample(to_open, decode_limit) if rel not in unreadable]
    for rel in to_decode:
        try:
            load_image(scan.root / rel, name=rel)
        except ImageError as exc:
            unreadable[rel] = exc.problem
    readable = [header for rel, header in headers.items() if rel not in unreadable]
    sizes = Counter(size for size, _ in readable)
    modes = Counter(mode for _, mode in readable)
    samples = {name: [scan.root / rel for rel in _even_sample([p for p in paths if p not in unreadable],
                                                                samples_per_class)]
               for name, paths in by_class.items()}
    return DatasetInsights(root=scan.root, classes=scan.classes, counts=scan.counts(),
                           sizes=dict(sizes.most_common()), modes=dict(modes.most_common()), samples=samples,
                           skipped=list(scan.skipped), unreadable=sorted(unreadable.items()),
                           opened=len(to_open), decoded=len(to_decode))


def _reason(path: Path, rel: str, exc: Exception) -> str:
    """The same words training uses for a photo it cannot read."""
    try:
        load_image(path, name=rel)
    except ImageError as error:
        return error.problem
    except Exception:  # noqa: BLE001 - any other failure is reported by its own message below
        pass
    return str(exc) or type(exc).__name__


# --- training time --------------------------------------------------------------------------

# Training images/s (normalise, forward, backward, AdamW step; batch 32, channels_last, tcmalloc, 2 threads,
# fp32) measured with `bench/train_throughput.py` on the development machine (2 cores of an AMD EPYC
# without native bf16) on 2026-11-30, quiet. They are used only until a run on this machine has measured the
# backbone. Between and beyond the measured sizes the rate follows the power law through the two points.
BUILTIN_IMAGES_PER_S: dict[tuple[str, int], float] = {
    ("resnet18", 64): 104.2,
    ("resnet18", 224): 12.5,
    ("resnet34", 64): 57.2,
    ("resnet34", 224): 6.6,
    ("resnet50", 64): 51.9,
    ("resnet50", 224): 5.3,
}
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


def size_exponent(backbone: str) -> float:
    """How steeply images/s falls with the image size: rate ~ size**-k, k from the built-in table (else 2)."""
    points = sorted((size, rate) for (name, size), rate in BUILTIN_IMAGES_PER_S.items() if name == backbone)
    if len(points) < 2:
        return 2.0
    (small, fast), (large, slow) = points[0], points[-1]
    return math.log(fast / slow) / math.log(large / small)


def _scaled(images_per_s: float, measured_size: int, size: int, backbone: str) -> float:
    return images_per_s * (measured_size / size) ** size_exponent(backbone)


def run_throughput(run: RunDir) -> tuple[str, int, float] | None:
    """(backbone, image_size, median training images/s) a past run measured, or None."""
    try:
        config = yaml.safe_load(run.config.read_text()) or {}
        backbone, size = str(config["backbone"]), int(config["image_size"])
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError):
        return None
    rate = images_per_s(run.read_events())
    return (backbone, size, rate) if rate else None


def measured_images_per_s(backbone: str, image_size: int, root: str | Path | None = None) -> tuple[float, int] | None:
    """Training images/s for `backbone` at `image_size` from past runs on this machine: (rate, runs used)."""
    same_size, other_size = [], []
    for run in list_runs(root)[:PAST_RUNS_LOOKED_AT]:
        found = run_throughput(run)
        if found is None or found[0] != backbone:
            continue
        (same_size if found[1] == image_size else other_size).append(
            _scaled(found[2], found[1], image_size, backbone))
    rates = same_size or other_size
    return (statistics.median(rates), len(rates)) if rates else None


def builtin_images_per_s(backbone: str, image_size: int) -> float:
    sizes = sorted(size for name, size in BUILTIN_IMAGES_PER_S if name == backbone)
    if not sizes:
        raise ValueError(f"no built-in throughput for backbone {backbone!r}")
    nearest = min(sizes, key=lambda size: abs(size - image_size))
    speedup = BF16_SPEEDUP if cpu_native_bf16() else 1.0
    return speedup * _scaled(BUILTIN_IMAGES_PER_S[(backbone, nearest)], nearest, image_size, backbone)


def estimate_training_time(backbone: str, image_size: int, epochs: int, train_images: int, val_images: int,
                           root: str | Path | None = None) -> TimeEstimate:
    """Wall time of a training run: start-up plus, per epoch, the training and validation passes."""
    measured = measured_images_per_s(backbone, image_size, root)
    if measured:
        rate, runs = measured
        source = f"measured by {runs} past run{'s' if runs > 1 else ''} of {backbone} on this machine"
    else:
        rate = builtin_images_per_s(backbone, image_size)
        source = f"built-in figure for {backbone}; no past {backbone} run on this machine yet"
    per_epoch = train_images / rate + val_images / (rate * EVAL_SPEEDUP)
    return TimeEstimate(seconds=STARTUP_S + epochs * per_epoch, images_per_s=rate, source=source)
