"""The product preset: the reference recipe adapted to what a dataset needs.

Real inspection data is imbalanced and small. The preset looks at the
training split and decides, writing each decision and its reason into the
run's config:
- class-balanced sampling when the largest class has more than 3x the photos of the smallest;
- augmentation that keeps a defect's class (flips, turns, small affine, brightness/contrast);
- a network and resolution suited to the data and to CPU training, and the
  reference recipe's training time spent on them, with a floor in optimizer steps
  so small data is not trained for a few dozen steps;
- an optimisation suited to a run of many short epochs from scratch;
- aspect-preserving resizing (padding) when photos are not square.

What these choices give on NEU-CLS is measured in bench/results/quality.md.
"""

from __future__ import annotations

import dataclasses
import math
from statistics import median

from .config import TrainConfig
from .insights import builtin_images_per_s

IMBALANCE_LIMIT = 3.0
PRODUCT_IMAGE_SIZE = 128
# Below this many training photos a from-scratch ResNet50's capacity is not what limits accuracy, its
# speed is: on NEU-CLS (1,440 photos) resnet18 came within 0.003 of resnet50's accuracy in 37 % of the
# time (bench/results/quality.md). The limit itself is a judgement: no larger labelled set was at hand.
SMALL_NETWORK = "resnet18"
SMALL_NETWORK_BELOW = 5000
MIN_STEPS = 250
SMALL_DATA_EPOCHS = 8
SMALL_DATA_IMAGES = 1000
REFERENCE_BACKBONE = "resnet50"
REFERENCE_EPOCHS = 5
REFERENCE_SIZE = 224
# How a run of many short epochs from scratch is optimised (the reference recipe: AdamW 1e-3, cosine
# stepped per epoch, weight decay 0, no smoothing, default initialisation).
OPTIMISATION = dict(schedule="warmup-cosine", lr=2e-3, weight_decay=0.05, label_smoothing=0.1,
                    zero_init_residual=True)
OPTIMISATION_WORDS = {
    "schedule": "a linear warm-up over the first epoch, then a cosine to 0 stepped every optimizer step",
    "lr": f"peak learning rate {OPTIMISATION['lr']:g}",
    "weight_decay": f"weight decay {OPTIMISATION['weight_decay']:g}",
    "label_smoothing": f"label smoothing {OPTIMISATION['label_smoothing']:g}",
    "zero_init_residual": "residual blocks start as the identity",
}


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

    reference = TrainConfig()
    backbone = cfg.backbone
    size = min(PRODUCT_IMAGE_SIZE, cfg.image_size)
    if backbone == reference.backbone and train_images < SMALL_NETWORK_BELOW:
        faster = builtin_images_per_s(SMALL_NETWORK, size) / builtin_images_per_s(backbone, size)
        backbone = changes["backbone"] = SMALL_NETWORK
        decisions.append(f"network {SMALL_NETWORK}: {train_images} training photos (under {SMALL_NETWORK_BELOW:,}) do "
                         f"not need {reference.backbone}'s capacity from scratch; {SMALL_NETWORK} trains about "
                         f"{faster:.1f}x as fast on a CPU, so the same time buys {faster:.1f}x the steps")

    median_side = median(min(w, h) for w, h in sizes) if sizes else REFERENCE_SIZE
    changes["image_size"] = size
    decisions.append(f"image size {size} px (photos' median short side {median_side:.0f} px): a training step "
                     f"costs about {(size / REFERENCE_SIZE) ** 2:.0%} of the compute of one at {REFERENCE_SIZE} px")

    if sizes and any(abs(w - h) > 0.05 * max(w, h) for w, h in sizes):
        changes["resize_mode"] = "pad"
        decisions.append("aspect ratio kept (padding): some photos are not square, stretching would distort "
                         "defect shapes")

    # Spend the reference recipe's training time (5 epochs of resnet50 at 224 px) on this network and size ...
    speedup = builtin_images_per_s(backbone, size) / builtin_images_per_s(REFERENCE_BACKBONE, REFERENCE_SIZE)
    budget_epochs = max(1, math.floor(REFERENCE_EPOCHS * speedup))
    budget_steps = budget_epochs * max(1, train_images // cfg.batch_size)
    changes["min_steps"] = MIN_STEPS
    if budget_steps >= MIN_STEPS:
        changes["epochs"] = budget_epochs
        decisions.append(f"{budget_epochs} epochs = {budget_steps} optimizer steps: about the reference recipe's "
                         f"training time ({REFERENCE_EPOCHS} epochs of {REFERENCE_BACKBONE} at {REFERENCE_SIZE} px), "
                         f"spent on {backbone} at {size} px, {speedup:.1f}x as fast")
    else:
        # ... but never fewer than MIN_STEPS optimizer steps, in a few long epochs so validation stays cheap.
        per_epoch = math.ceil(MIN_STEPS / SMALL_DATA_EPOCHS) * cfg.batch_size
        changes.update(epochs=SMALL_DATA_EPOCHS, epoch_images=per_epoch)
        decisions.append(f"{SMALL_DATA_EPOCHS} epochs of {per_epoch} drawn photos = "
                         f"{SMALL_DATA_EPOCHS * per_epoch // cfg.batch_size} optimizer steps: {train_images} photos "
                         f"would give only {budget_steps} steps, below the floor of {MIN_STEPS}")

    chosen = {k: v for k, v in OPTIMISATION.items() if getattr(cfg, k) == getattr(reference, k)}  # a user's own wins
    changes.update(chosen)
    if chosen:
        decisions.append("for many short epochs from scratch, which converge faster and steadier this way: "
                         + "; ".join(OPTIMISATION_WORDS[k] for k in chosen))
    decisions.append("the best checkpoint by validation macro-F1 is kept as best.pt beside the last one")
    return dataclasses.replace(cfg, decisions=decisions, **changes)

