"""What a dataset holds before training on it (how long training takes: `timing`).

No streamlit and no torch here: the Train page and the CLI can both use it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from defect_model.train.data import EMPTY_CLASS, scan_image_folder
from defect_model.photos.images import ImageError, load_image

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
    def empty_classes(self) -> list[str]:
        """Class folders without photos: left out of the classes (the scan lists them among the skipped)."""
        return [path.rstrip("/") for path, reason in self.skipped if reason.startswith(EMPTY_CLASS)]

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
