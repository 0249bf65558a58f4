"""The built-in demo dataset: textured metal surfaces with an OK class and four defect classes.

Deterministic for a seed, so tests and the demo model are repeatable, and
nothing has to be downloaded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

CLASSES = ("ok", "scratch", "pit", "stain", "crack")
GOOD_CLASSES = ("ok",)


def _surface(rng: np.random.Generator, size: int) -> np.ndarray:
    """Brushed-metal texture: horizontal streaks plus fine grain, values around 0.55."""
    streaks = rng.normal(0, 1, (size, 1)) * 0.04
    grain = rng.normal(0, 1, (size, size)) * 0.035
    shade = np.linspace(-0.05, 0.05, size)[None, :] * rng.choice([-1, 1])
    return np.clip(0.55 + rng.uniform(-0.06, 0.06) + streaks + grain + shade, 0, 1)


def _draw_mask(size: int, draw_fn) -> np.ndarray:
    mask = Image.new("L", (size, size), 0)
    draw_fn(ImageDraw.Draw(mask))
    return np.asarray(mask, dtype=np.float32) / 255.0


def _scratch(rng, size):
    angle = rng.uniform(0, np.pi)
    length = rng.uniform(0.5, 0.8) * size
    cx, cy = rng.uniform(0.3, 0.7, 2) * size
    dx, dy = np.cos(angle) * length / 2, np.sin(angle) * length / 2
    width = int(rng.integers(1, 3))
    mask = _draw_mask(size, lambda d: d.line([(cx - dx, cy - dy), (cx + dx, cy + dy)], fill=255, width=width))
    return mask, 0.35


def _pit(rng, size):
    def draw(d):
        for _ in range(int(rng.integers(1, 4))):
            x, y = rng.uniform(0.2, 0.8, 2) * size
            r = rng.uniform(0.03, 0.06) * size
            d.ellipse([x - r, y - r, x + r, y + r], fill=255)
    return _draw_mask(size, draw), -0.4


def _stain(rng, size):
    x, y = rng.uniform(0.3, 0.7, 2) * size
    rx, ry = rng.uniform(0.12, 0.25, 2) * size
    mask = _draw_mask(size, lambda d: d.ellipse([x - rx, y - ry, x + rx, y + ry], fill=255))
    mask = np.asarray(Image.fromarray(np.uint8(mask * 255)).filter(ImageFilter.GaussianBlur(size / 25)),
                      dtype=np.float32) / 255.0
    return mask, rng.choice([-0.25, 0.25])


def _crack(rng, size):
    points = [tuple(rng.uniform(0.15, 0.35, 2) * size)]
    heading = rng.uniform(0, 2 * np.pi)
    for _ in range(int(rng.integers(8, 14))):
        heading += rng.normal(0, 0.7)
        step = rng.uniform(0.04, 0.08) * size
        x, y = points[-1]
        points.append((float(np.clip(x + np.cos(heading) * step, 2, size - 3)),
                       float(np.clip(y + np.sin(heading) * step, 2, size - 3))))
    mask = _draw_mask(size, lambda d: d.line(points, fill=255, width=2, joint="curve"))
    return mask, -0.45


DEFECTS = {"scratch": _scratch, "pit": _pit, "stain": _stain, "crack": _crack}


def make_sample(label: str, rng: np.random.Generator, size: int = 128) -> tuple[Image.Image, np.ndarray]:
    """One RGB photo of `label` and the mask (size x size, 0..1) of where its defect is."""
    surface = _surface(rng, size)
    mask = np.zeros((size, size), dtype=np.float32)
    if label != "ok":
        mask, contrast = DEFECTS[label](rng, size)
        surface = np.clip(surface + contrast * mask, 0, 1)
    gray = np.uint8(np.rint(surface * 255))
    return Image.fromarray(gray).convert("RGB"), mask


def generate(out: str | Path, per_class: int = 60, size: int = 128, seed: int = 0,
             classes: tuple[str, ...] = CLASSES) -> Path:
    """Write `per_class` PNG photos for each class into out/<class>/; returns `out`."""
    out = Path(out)
    rng = np.random.default_rng(seed)
    for label in classes:
        (out / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            image, _ = make_sample(label, rng, size)
            image.save(out / label / f"{label}_{i:04d}.png")
    return out


def ensure_demo_dataset(out: str | Path, per_class: int = 60, seed: int = 0) -> Path:
    """Generate the demo set once; later calls reuse it."""
    out = Path(out)
    if not all((out / label).is_dir() and any((out / label).iterdir()) for label in CLASSES):
        generate(out, per_class=per_class, seed=seed)
    return out


# Passes over the demo photos (an epoch draws 960 of them, 30 steps) the demo model is planned for: from ImageNet
# weights EfficientNet-Lite0 at 96 px reached validation accuracy 0.97 to 0.98 after its first (11 s on 2 quiet
# cores, 5 min with both cores busy and other work queued). The run goes on while the model is not usable yet
# (`until_usable`), so a busy machine makes it slower, never useless.
DEMO_EPOCHS = 1
DEMO_IMAGE_SIZE = 96


def demo_config(data_dir: str | Path):
    """The demo model: the product preset at the demo photos' size, a few passes, until the model is usable.

    No time budget: on a busy machine a budget ran out after one epoch and left a useless model. The preset
    starts from ImageNet weights where the weights package is installed (else a small network from scratch),
    and the run trains past its plan while validation still flags the model.
    """
    from defect_model.common.config import TrainConfig

    return TrainConfig(data_dir=str(Path(data_dir).resolve()), preset="product", image_size=DEMO_IMAGE_SIZE,
                       epochs=DEMO_EPOCHS, until_usable=True, good_classes=list(GOOD_CLASSES),
                       pinned=["epochs", "image_size", "until_usable"])
