"""The product preset: the reference recipe adapted to the data in front of it.

Real inspection data is small, imbalanced, often a dominant good class with rare defects, photos of the
camera's own size. The preset looks at the training split (never the validation split) and decides,
writing each decision and its reason into the run's config:
- rare classes: the loss weighted by 1/sqrt(class count) when the largest class has more than 3x the
  photos of the smallest (resampling a class of a few dozen photos many times an epoch made the network
  memorise them and over-predict them: on ELPV the good class's recall fell to 0.49);
- augmentation that keeps a defect's class (flips, turns; on small sets also small affine, light);
- resolution from the photos' own size, up to 224 px: a thin crack that is 2 px wide at 300 px is gone
  at 128 px, while large photos cost too much per step on a CPU;
- a network suited to the data size and to CPU training;
- a budget in time (default: what the reference recipe takes on this machine), spent on that network and
  size; the run re-plans its epochs after measuring the first one, stops when validation macro-F1 has not
  improved for a while and keeps its best epoch;
- an optimisation suited to many short epochs from scratch (or a gentler one from a warm start);
- aspect-preserving resizing (padding) when photos are not square.

What these choices give on NEU-CLS and ELPV is measured in bench/results/quality.md.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from statistics import median

import yaml

from defect_model.train.config import MAX_EPOCHS, TrainConfig
from defect_model.train.backbones import backbone as registered
from defect_model.train.timing import STARTUP_S, estimate_training_time

IMBALANCE_LIMIT = 3.0
# The smallest training resolution the preset picks: below 128 px a ResNet's last feature map is 4x4. The
# largest is the network's native size (the backbone registry's; 224 px for the ResNets): above it a
# from-scratch step costs more than twice as much on a CPU for a detail the photos' own resolution rarely adds.
MIN_IMAGE_SIZE = 128
SIZE_STEP = 32
# Passes over the training photos a from-scratch network needs before its accuracy settles (NEU-CLS: the
# reference's 5 epochs left it under-trained at 0.94; 30 reached 0.98). The preset lowers the resolution
# rather than give a run fewer.
MIN_EPOCHS = 12
# Below this many training photos a from-scratch ResNet50's capacity is not what limits accuracy, its
# speed is: on NEU-CLS (1,440 photos) resnet18 came within 0.003 of resnet50's accuracy in 37 % of the
# time (bench/results/quality.md). The limit itself is a judgement: no larger labelled set was at hand.
SMALL_NETWORK = "resnet18"
SMALL_NETWORK_BELOW = 5000
# Short epochs waste time on validation; on small sets an epoch draws this many optimizer steps' photos.
MIN_STEPS_PER_EPOCH = 30
SMALL_DATA_IMAGES = 1000
REFERENCE_BACKBONE = "resnet50"
REFERENCE_EPOCHS = 5
REFERENCE_SIZE = 224
# A warm start needs a fraction of a from-scratch run's time (a judgement: bench/results/warm-start.md
# measured a third as 3 photos short of the run it corrects on NEU-CLS).
WARM_START_SHARE = 1 / 3
# Epochs without a better validation macro-F1 before a run stops (counted in the last fifth of its plan, or at
# once after a perfect score): a quarter of the plan, at least 4.
PATIENCE_SHARE = 0.25
MIN_PATIENCE = 4
# How a run of many short epochs from scratch is optimised (the reference recipe: AdamW 1e-3, cosine
# stepped per epoch, weight decay 0, no smoothing, default initialisation).
OPTIMISATION = dict(schedule="warmup-cosine", lr=2e-3, weight_decay=0.05, label_smoothing=0.1,
                    zero_init_residual=True)
# From trained weights a lower peak keeps what they learned (the warm-up still ramps up to it).
WARM_START_LR = 5e-4
OPTIMISATION_WORDS = {
    "schedule": "a linear warm-up over the first epoch, then a cosine to 0 stepped every optimizer step",
    "lr": "peak learning rate {lr:g}",
    "weight_decay": f"weight decay {OPTIMISATION['weight_decay']:g}",
    "label_smoothing": f"label smoothing {OPTIMISATION['label_smoothing']:g}",
    "zero_init_residual": "residual blocks start as the identity",
}
# Settings a warm start takes from the run it starts from, unless the user set them: its weights only fit
# that network, and they learned from photos prepared that way.
INHERITED = ("backbone", "image_size", "mean", "std", "resize_mode", "good_classes")


def imbalance_ratio(counts: dict[str, int]) -> float:
    values = [v for v in counts.values() if v > 0]
    return max(values) / min(values) if values else 1.0


def image_size_for(sizes: list[tuple[int, int]] | None, requested: int, planned_epochs=None,
                   largest: int = 224) -> tuple[int, int | None]:
    """(training size, the photos' median short side): the photos' own resolution within the preset's range,
    lowered while the budget would buy fewer than MIN_EPOCHS passes over the photos at it."""
    if not sizes:
        return min(MIN_IMAGE_SIZE, requested), None
    side = int(median(min(w, h) for w, h in sizes))
    size = min(requested, max(MIN_IMAGE_SIZE, min(largest, side // SIZE_STEP * SIZE_STEP)))
    while planned_epochs and size - SIZE_STEP >= MIN_IMAGE_SIZE and planned_epochs(size) < MIN_EPOCHS:
        size -= SIZE_STEP
    return size, side


def size_decision(size: int, side: int | None, planned_epochs, budget: float, largest: int = 224) -> str:
    if side is None:
        return f"image size {size} px (no photo sizes known)"
    if side < size:
        return (f"image size {size} px: the photos are smaller (median short side {side} px) and are enlarged, so "
                "that the network's last feature map is not too coarse to place a defect")
    native = max(MIN_IMAGE_SIZE, min(largest, side // SIZE_STEP * SIZE_STEP))
    if size < native:
        return (f"image size {size} px: the photos' median short side is {side} px, but at {native} px the budget of "
                f"{budget:g} min buys only {planned_epochs(native)} passes over the photos, and a network trained "
                f"from scratch needs about {MIN_EPOCHS}; at {size} px it gets {planned_epochs(size)}")
    if side > size:
        return (f"image size {size} px: the photos' median short side is {side} px; shrunk further, thin defects "
                f"lose the detail that shows them, and above {largest} px a step costs too much on a CPU")
    return f"image size {size} px: the photos' own resolution (median short side {side} px)"


def source_settings(init_from: str) -> dict:
    """The settings of the run a warm start starts from ({} for a plain weights file)."""
    path = Path(init_from)
    config = path / "config.yaml" if path.is_dir() else None
    if config is None or not config.is_file():
        return {}
    data = yaml.safe_load(config.read_text()) or {}
    return {key: data[key] for key in INHERITED if key in data}


def apply_product_preset(cfg: TrainConfig, train_counts: dict[str, int],
                         sizes: list[tuple[int, int]] | None = None, val_images: int = 0) -> TrainConfig:
    """Resolve `cfg` (preset='product') for a training split; returns a new config with its decisions."""
    reference = TrainConfig()
    decisions: list[str] = []
    changes: dict = {}

    def untouched(name: str) -> bool:  # a user's own choice wins over the preset's
        return getattr(cfg, name) == getattr(reference, name) and name not in cfg.pinned

    warm = source_settings(cfg.init_from) if cfg.init_from else {}
    inherited = {k: v for k, v in warm.items() if untouched(k) and v != getattr(reference, k)}
    if inherited:
        changes.update(inherited)
        decisions.append(f"warm start from {cfg.init_from}: its {', '.join(inherited)} kept, which its weights "
                         "were trained with")

    ratio = imbalance_ratio(train_counts)
    largest = max(train_counts, key=train_counts.get)
    smallest = min(train_counts, key=train_counts.get)
    if ratio > IMBALANCE_LIMIT and untouched("sampling") and untouched("loss_weighting"):
        changes["loss_weighting"] = "sqrt"
        decisions.append(f"loss weighted by 1/sqrt(class count): {largest} has {ratio:.1f}x the photos of {smallest} "
                         f"({train_counts[largest]} vs {train_counts[smallest]}), so each {smallest} photo counts "
                         f"{math.sqrt(ratio):.1f}x; resampling would repeat its {train_counts[smallest]} photos "
                         f"about {ratio:.0f}x an epoch, which a network memorises and then over-predicts")
    elif ratio <= IMBALANCE_LIMIT:
        decisions.append(f"plain shuffling, no loss weighting: classes are balanced enough ({ratio:.1f}x "
                         f"largest/smallest, limit {IMBALANCE_LIMIT:.0f}x)")

    train_images = sum(train_counts.values())
    if untouched("augmentation"):
        if train_images < SMALL_DATA_IMAGES:
            changes["augmentation"] = "strong"
            decisions.append(f"strong augmentation (flips, 90-degree turns, small shifts/rotations/zoom, "
                             f"brightness/contrast): {train_images} training photos are few for a network trained "
                             "from scratch, and surface defects keep their class under these changes")
        else:
            changes["augmentation"] = "soft"
            decisions.append(f"soft augmentation (flips, 90-degree turns): {train_images} training photos; "
                             "these invariances are free for surface defects and cost no convergence")

    backbone = changes.get("backbone", cfg.backbone)
    if untouched("backbone") and "backbone" not in changes and train_images < SMALL_NETWORK_BELOW:
        backbone = changes["backbone"] = SMALL_NETWORK
        decisions.append(f"network {SMALL_NETWORK}: {train_images} training photos (under {SMALL_NETWORK_BELOW:,}) do "
                         f"not need {reference.backbone}'s capacity from scratch; it trains several times as fast on "
                         "a CPU, so the same time buys several times the steps")

    epoch_images = 0
    if train_images < MIN_STEPS_PER_EPOCH * cfg.batch_size:
        epoch_images = changes["epoch_images"] = MIN_STEPS_PER_EPOCH * cfg.batch_size
        decisions.append(f"each epoch draws {epoch_images} photos ({MIN_STEPS_PER_EPOCH} steps) from the "
                         f"{train_images}: fewer validations, the same training")
    drawn = epoch_images or train_images

    budget = cfg.time_budget_min
    if not budget:
        reference_time = estimate_training_time(REFERENCE_BACKBONE, REFERENCE_SIZE, REFERENCE_EPOCHS, train_images,
                                                val_images)
        budget = reference_time.seconds / 60 * (WARM_START_SHARE if cfg.init_from else 1.0)
        budget = changes["time_budget_min"] = max(1.0, round(budget, 1))
        decisions.append(f"time budget {budget:g} min: " + (
            f"a third of what the reference recipe takes here from scratch ({reference_time.seconds / 60:.0f} min)"
            if cfg.init_from else f"what the reference recipe ({REFERENCE_EPOCHS} epochs of {REFERENCE_BACKBONE} at "
                                  f"{REFERENCE_SIZE} px) takes on this machine"))

    def planned_epochs(size: int) -> int:
        first = estimate_training_time(backbone, size, 1, drawn, val_images)
        fit = math.floor((budget * 60 - first.seconds) / max(1e-3, first.seconds - STARTUP_S)) + 1
        return min(MAX_EPOCHS, max(1, fit))  # a long budget on a small set must not plan past the setting's bound

    size = changes.get("image_size", cfg.image_size)
    if untouched("image_size") and "image_size" not in changes:
        largest = registered(backbone).native_size
        size, side = image_size_for(sizes, cfg.image_size, planned_epochs, largest)
        changes["image_size"] = size
        decisions.append(size_decision(size, side, planned_epochs, budget, largest))

    if sizes and any(abs(w - h) > 0.05 * max(w, h) for w, h in sizes):
        changes["resize_mode"] = "pad"
        decisions.append("aspect ratio kept (padding): some photos are not square, stretching would distort "
                         "defect shapes")

    epochs = changes["epochs"] = planned_epochs(size)
    first = estimate_training_time(backbone, size, 1, drawn, val_images)
    decisions.append(f"{epochs} epochs planned for the budget ({first.text()} for the first); the run measures its "
                     "first epoch and re-plans")
    if not cfg.patience:
        changes["patience"] = max(MIN_PATIENCE, math.ceil(epochs * PATIENCE_SHARE))
        decisions.append(f"stops early when validation macro-F1 has not improved for {changes['patience']} epochs")
    changes["keep_best"] = True
    decisions.append("the run's model is its best epoch by validation macro-F1, not necessarily the last")

    chosen = {k: v for k, v in OPTIMISATION.items() if untouched(k)}
    if cfg.init_from and "lr" in chosen:
        chosen["lr"] = WARM_START_LR
    changes.update(chosen)
    if chosen:
        start = "from trained weights, which a lower peak keeps" if cfg.init_from else \
            "for many short epochs from scratch, which converge faster and steadier this way"
        decisions.append(start + ": " + "; ".join(OPTIMISATION_WORDS[k].format(**chosen) for k in chosen))
    return dataclasses.replace(cfg, decisions=decisions, **changes)



def resolve(cfg: TrainConfig, train_counts: dict[str, int], sizes: list[tuple[int, int]] | None = None,
            val_images: int = 0) -> TrainConfig:
    """The settings a run will train with, for a training split of `train_counts` (photos per class) whose
    photos have `sizes`: the product preset applied once (its decisions kept in the settings), the batch shared
    by the training processes, then the floor of optimizer steps. The engine calls this on the real split, the
    Train page on its estimate of it."""
    if cfg.resolved:
        return cfg
    if cfg.preset == "product":
        cfg = apply_product_preset(cfg, train_counts, sizes, val_images)
    cfg = split_batch(cfg)
    steps_per_epoch = max(1, (cfg.epoch_images or sum(train_counts.values())) // cfg.batch_size)
    if cfg.min_steps and cfg.epochs * steps_per_epoch < cfg.min_steps:
        epochs = math.ceil(cfg.min_steps / steps_per_epoch)
        cfg = dataclasses.replace(cfg, epochs=epochs, decisions=cfg.decisions + [
            f"epochs raised to {epochs} to reach the floor of {cfg.min_steps} optimizer steps"])
    return cfg


def split_batch(cfg: TrainConfig) -> TrainConfig:
    """Several processes (`cfg.processes`) share each optimizer step's batch: `batch_size` stays the photos one
    step learns from, each process takes an equal part of it. Where it does not divide, the step's batch is
    rounded to a multiple of the processes and the learning rate scaled with it (the linear scaling rule)."""
    n = cfg.processes
    if n <= 1:
        return cfg
    share = max(1, round(cfg.batch_size / n))
    batch = share * n
    if batch == cfg.batch_size:
        text = (f"{n} training processes: each takes {share} of the {batch} photos of an optimizer step; learning "
                f"rate {cfg.lr:g} kept, since a step still learns from {batch} photos")
        return dataclasses.replace(cfg, decisions=cfg.decisions + [text])
    lr = cfg.lr * batch / cfg.batch_size
    text = (f"{n} training processes: each takes {share} photos, so an optimizer step learns from {batch} photos "
            f"instead of {cfg.batch_size} (an equal share each); learning rate scaled by {batch}/{cfg.batch_size} "
            f"to {lr:.4g} (the linear scaling rule)")
    return dataclasses.replace(cfg, batch_size=batch, lr=lr, decisions=cfg.decisions + [text])


def warm_retrain(resolved: TrainConfig, source_run: str | Path, trained_seconds: float | None,
                 corrections: int) -> TrainConfig:
    """A retrain with corrections: the run's resolved settings, started from its weights, for a third of its
    training at a lower peak learning rate (the corrections move the model; they need not rebuild it). A run that
    trained to a time budget gets a third of the time it took; one that trained a set number of epochs, a third
    of its epochs and no budget (a budget would fill itself with epochs a small set does not need)."""
    lr = min(resolved.lr, WARM_START_LR)
    epochs = max(1, math.ceil(resolved.epochs * WARM_START_SHARE))
    if resolved.time_budget_min:
        budget = max(0.5, round((trained_seconds or resolved.time_budget_min * 60) / 60 * WARM_START_SHARE, 1))
        length = f"time budget {budget:g} min (a third of its training), {epochs} epochs planned"
    else:
        budget = 0.0
        length = f"{epochs} epoch(s) (a third of its {resolved.epochs})"
    text = (f"retrain with {corrections} correction(s), started from {Path(source_run).name}'s weights: {length}, "
            f"peak learning rate {lr:g}")
    return dataclasses.replace(resolved, init_from=str(source_run), time_budget_min=budget, lr=lr, epochs=epochs,
                               decisions=resolved.decisions + [text])
