"""The product preset: the reference recipe adapted to what a dataset needs.

Real inspection data is imbalanced and small. The preset looks at the
training split and decides, writing each decision and its reason into the
run's config:
- class-balanced sampling when the largest class has more than 3x the photos of the smallest;
- augmentation that keeps a defect's class (flips, turns, small affine, brightness/contrast);
- a resolution suited to CPU training, and the reference recipe's compute budget
  spent at that resolution, with a floor in optimizer steps so small data is not
  trained for a few dozen steps;
- aspect-preserving resizing (padding) when photos are not square.
"""

from __future__ import annotations

import dataclasses
import math
from statistics import median

from .config import TrainConfig

IMBALANCE_LIMIT = 3.0
PRODUCT_IMAGE_SIZE = 160
MIN_STEPS = 250
SMALL_DATA_EPOCHS = 8
SMALL_DATA_IMAGES = 1000
REFERENCE_EPOCHS = 5
REFERENCE_SIZE = 224


def imbalance_ratio(counts: dict[str, int]) -> float:
    values = [v for v in counts.values() if v > 0]
    return max(values) / min(values) if values else 1.0


def apply_product_preset(cfg: TrainConfig, train_counts: dict[str, int],
                         sizes: list[tuple[int, int]] | None = None) -> TrainConfig:
    """Resolve `cfg` (preset='product') for a training split; returns a new config with its decisions."""
    decisions = []
    changes: dict = {}

    ratio = imbalance_ratio(train_counts)
    largest = max(train_counts, key=train_counts.get)
    smallest = min(train_counts, key=train_counts.get)
    if ratio > IMBALANCE_LIMIT:
        changes["sampling"] = "balanced"
        decisions.append(f"class-balanced sampling: {largest} has {ratio:.1f}x the photos of {smallest} "
                         f"({train_counts[largest]} vs {train_counts[smallest]}); without it the rare classes "
                         "are seldom seen and their recall suffers")
    else:
        decisions.append(f"plain shuffling: classes are balanced enough ({ratio:.1f}x largest/smallest, "
                         f"limit {IMBALANCE_LIMIT:.0f}x)")

    train_images = sum(train_counts.values())
    if cfg.augmentation == "none":
        if train_images < SMALL_DATA_IMAGES:
            changes["augmentation"] = "strong"
            decisions.append(f"strong augmentation (flips, 90-degree turns, small shifts/rotations/zoom, "
                             f"brightness/contrast): {train_images} training photos are few for a network trained "
                             "from scratch, and surface defects keep their class under these changes")
        else:
            changes["augmentation"] = "soft"
            decisions.append(f"soft augmentation (flips, 90-degree turns): {train_images} training photos; "
                             "these invariances are free for surface defects and cost no convergence")

    median_side = median(min(w, h) for w, h in sizes) if sizes else REFERENCE_SIZE
    size = min(PRODUCT_IMAGE_SIZE, cfg.image_size)
    changes["image_size"] = size
    decisions.append(f"image size {size} px (photos' median short side {median_side:.0f} px): about half the "
                     f"compute of {REFERENCE_SIZE} px per photo on a CPU, so the same time buys twice the steps")

    if sizes and any(abs(w - h) > 0.05 * max(w, h) for w, h in sizes):
        changes["resize_mode"] = "pad"
        decisions.append("aspect ratio kept (padding): some photos are not square, stretching would distort "
                         "defect shapes")

    # Spend the reference recipe's compute (5 epochs at 224 px) at the chosen resolution ...
    budget_epochs = math.floor(REFERENCE_EPOCHS * min(4.0, (REFERENCE_SIZE / size) ** 2))
    budget_steps = budget_epochs * max(1, train_images // cfg.batch_size)
    changes["min_steps"] = MIN_STEPS
    if budget_steps >= MIN_STEPS:
        changes["epochs"] = budget_epochs
        decisions.append(f"{budget_epochs} epochs = {budget_steps} optimizer steps: the reference recipe's compute "
                         f"budget spent at {size} px")
    else:
        # ... but never fewer than MIN_STEPS optimizer steps, in a few long epochs so validation stays cheap.
        per_epoch = math.ceil(MIN_STEPS / SMALL_DATA_EPOCHS) * cfg.batch_size
        changes.update(epochs=SMALL_DATA_EPOCHS, epoch_images=per_epoch)
        decisions.append(f"{SMALL_DATA_EPOCHS} epochs of {per_epoch} drawn photos = "
                         f"{SMALL_DATA_EPOCHS * per_epoch // cfg.batch_size} optimizer steps: {train_images} photos "
                         f"would give only {budget_steps} steps, below the floor of {MIN_STEPS}")
    decisions.append("the best checkpoint by validation macro-F1 is kept as best.pt beside the last one")
    return dataclasses.replace(cfg, decisions=decisions, **changes)
