"""The product preset: the reference recipe adapted to the data in front of it.

Real inspection data is small, imbalanced, often a dominant good class with rare defects, photos of the
camera's own size. The preset looks at the training split (never the validation split) and decides,
writing each decision and its reason into the run's config:
- rare classes: the loss weighted by 1/sqrt(class count) when the largest class has more than 3x the
  photos of the smallest (resampling a class of a few dozen photos many times an epoch made the network
  memorise them and over-predict them: on ELPV the good class's recall fell to 0.49);
- augmentation that keeps a defect's class (flips, turns; on small sets also small affine, light);
- resolution from the photos' own size, up to the network's native size (224 px; 260 for EfficientNet-Lite2):
  a thin crack that is 2 px wide at 300 px is gone at 128 px, while large photos cost too much per step on a CPU;
- a network that starts from ImageNet weights installed with the tool (EfficientNet-Lite0), where the
  weights package is installed; else one suited to the data size and to CPU training from scratch;
- from ImageNet weights, a fixed few passes over the photos; from scratch, a budget in time (default: what
  the reference recipe takes on this machine), spent on that network and size; the run re-plans its epochs
  after measuring the first one, stops when validation macro-F1 has not improved for a while and keeps its
  best epoch;
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

from defect_model.common.config import MAX_EPOCHS, TrainConfig
from defect_model.common.backbones import IMAGENET_MEAN, IMAGENET_STD, backbone as registered
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
# The network the preset starts from ImageNet weights. Measured against the from-scratch preset on two cores
# (issue #25, a plain fine-tuning loop): a held-out plant set's macro-F1 0.95 in 3.6 min against 0.31 in 10.6,
# ELPV accuracy 0.81 in 8.4 min against 0.67 in 14. Lite2 is 2x slower per photo for finer detail.
PRETRAINED_NETWORK = "efficientnet_lite0"
# Passes over the training photos a pretrained network gets by default: its features are already there, so a
# fixed few passes suit any machine (a time budget would fill a fast machine with passes it does not need), and
# the run's best epoch is kept. A budget is set instead only where these passes would take longer than the
# reference recipe from scratch, three times over (large sets).
PRETRAINED_EPOCHS = 7
PRETRAINED_TIME_LIMIT = 3.0
# Of those few passes, epochs without a better validation macro-F1 before the run stops (counted, as for every
# run, only in the last fifth of the plan or after a perfect score: NEU-CLS is perfect from its second pass).
PRETRAINED_PATIENCE = 2
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
# Fine-tuning from ImageNet weights (issue #25's measured loop: AdamW 1e-3 with a cosine, weight decay 1e-4,
# label smoothing 0.1; the warm-up over the first epoch keeps the new head's first gradients from disturbing the
# pretrained features; bench/results/quality.md).
PRETRAINED_OPTIMISATION = dict(schedule="warmup-cosine", lr=1e-3, weight_decay=1e-4, label_smoothing=0.1)
OPTIMISATION_WORDS = {
    "schedule": "a linear warm-up over the first epoch, then a cosine to 0 stepped every optimizer step",
    "lr": "peak learning rate {lr:g}",
    "weight_decay": "weight decay {weight_decay:g}",
    "label_smoothing": "label smoothing {label_smoothing:g}",
    "zero_init_residual": "residual blocks start as the identity",
}
# Settings a warm start takes from the run it starts from, unless the user set them: its weights only fit
# that network, and they learned from photos prepared that way.
INHERITED = ("backbone", "image_size", "mean", "std", "resize_mode", "good_classes")


def imbalance_ratio(counts: dict[str, int]) -> float:
    values = [v for v in counts.values() if v > 0]
    return max(values) / min(values) if values else 1.0


def image_size_for(sizes: list[tuple[int, int]] | None, requested: int, planned_epochs=None,
                   largest: int = 224, min_epochs: int = MIN_EPOCHS) -> tuple[int, int | None]:
    """(training size, the photos' median short side): the photos' own resolution within the preset's range,
    lowered while the budget would buy fewer than `min_epochs` passes over the photos at it."""
    if not sizes:
        return min(MIN_IMAGE_SIZE, requested), None
    side = int(median(min(w, h) for w, h in sizes))
    size = min(requested, max(MIN_IMAGE_SIZE, min(largest, side // SIZE_STEP * SIZE_STEP)))
    while planned_epochs and size - SIZE_STEP >= MIN_IMAGE_SIZE and planned_epochs(size) < min_epochs:
        size -= SIZE_STEP
    return size, side


def size_decision(size: int, side: int | None, planned_epochs, budget: float, largest: int = 224,
                  min_epochs: int = MIN_EPOCHS) -> str:
    if side is None:
        return f"image size {size} px (no photo sizes known)"
    if side < size:
        return (f"image size {size} px: the photos are smaller (median short side {side} px) and are enlarged, so "
                "that the network's last feature map is not too coarse to place a defect")
    native = max(MIN_IMAGE_SIZE, min(largest, side // SIZE_STEP * SIZE_STEP))
    if size < native:
        return (f"image size {size} px: the photos' median short side is {side} px, but at {native} px the budget of "
                f"{budget:g} min buys only {planned_epochs(native)} passes over the photos, and a network "
                f"needs about {min_epochs}; at {size} px it gets {planned_epochs(size)}")
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
                             f"brightness/contrast): {train_images} training photos are few to learn from, and "
                             "surface defects keep their class under these changes")
        else:
            changes["augmentation"] = "soft"
            decisions.append(f"soft augmentation (flips, 90-degree turns): {train_images} training photos; "
                             "these invariances are free for surface defects and cost no convergence")

    backbone = changes.get("backbone", cfg.backbone)
    pretrained = cfg.pretrained
    if untouched("backbone") and "backbone" not in changes and untouched("pretrained") and not cfg.init_from:
        missing = weights_problem(PRETRAINED_NETWORK)
        if missing is None:
            backbone = changes["backbone"] = PRETRAINED_NETWORK
            pretrained = changes["pretrained"] = True
            decisions.append(f"network {PRETRAINED_NETWORK} from ImageNet weights (installed with the tool, sha256 "
                             "checked): a plant's few hundred or thousand photos teach a network far less than "
                             "ImageNet's million did; measured on two cores, a held-out plant set reached macro-F1 "
                             "0.95 from these weights in 3.6 min against 0.31 from scratch in 10.6 min")
        elif train_images < SMALL_NETWORK_BELOW:
            backbone = changes["backbone"] = SMALL_NETWORK
            decisions.append(f"network {SMALL_NETWORK} from scratch ({missing}): {train_images} training photos do not "
                             f"need {reference.backbone}'s capacity; it trains several times as fast on a CPU")
    elif not untouched("backbone") and untouched("pretrained") and not cfg.init_from and \
            registered(backbone).pretrained_available and weights_problem(backbone) is None:
        pretrained = changes["pretrained"] = True
        decisions.append(f"network {backbone} (your choice) from its ImageNet weights, installed with the tool")
    elif untouched("backbone") and "backbone" not in changes and not pretrained and \
            train_images < SMALL_NETWORK_BELOW:
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
    # A user who asked for a number of epochs and no budget (or a budget of 0) trains exactly those epochs.
    asked_epochs = "epochs" in cfg.pinned or "time_budget_min" in cfg.pinned
    fixed_epochs = cfg.epochs if asked_epochs and not budget else None
    if fixed_epochs is None and not budget and pretrained and not cfg.init_from:
        native = registered(backbone).native_size
        passes = estimate_training_time(backbone, native, PRETRAINED_EPOCHS, drawn, val_images)
        # compared per photo drawn: a small set's epochs draw more photos than it holds
        scratch = estimate_training_time(REFERENCE_BACKBONE, REFERENCE_SIZE, REFERENCE_EPOCHS, drawn, val_images)
        if passes.seconds <= PRETRAINED_TIME_LIMIT * scratch.seconds:
            fixed_epochs = PRETRAINED_EPOCHS
            changes["time_budget_min"] = 0.0
            decisions.append(f"{PRETRAINED_EPOCHS} passes over the training photos, whatever the machine's speed: "
                             "from ImageNet weights a network needs a few passes, not a budget filled with them")
    if fixed_epochs is None and not budget:
        reference_time = estimate_training_time(REFERENCE_BACKBONE, REFERENCE_SIZE, REFERENCE_EPOCHS, train_images,
                                                val_images)
        budget = reference_time.seconds / 60 * (WARM_START_SHARE if cfg.init_from else 1.0)
        budget = changes["time_budget_min"] = max(1.0, round(budget, 1))
        decisions.append(f"time budget {budget:g} min: " + (
            f"a third of what the reference recipe takes here from scratch ({reference_time.seconds / 60:.0f} min)"
            if cfg.init_from else f"what the reference recipe ({REFERENCE_EPOCHS} epochs of {REFERENCE_BACKBONE} at "
                                  f"{REFERENCE_SIZE} px) takes on this machine"))

    def planned_epochs(size: int) -> int:
        if fixed_epochs is not None:
            return fixed_epochs
        first = estimate_training_time(backbone, size, 1, drawn, val_images)
        fit = math.floor((budget * 60 - first.seconds) / max(1e-3, first.seconds - STARTUP_S)) + 1
        return min(MAX_EPOCHS, max(1, fit))  # a long budget on a small set must not plan past the setting's bound

    size = changes.get("image_size", cfg.image_size)
    if untouched("image_size") and "image_size" not in changes:
        largest = registered(backbone).native_size
        lowers = None if fixed_epochs is not None else planned_epochs  # fixed passes: the size costs time, not passes
        needed = PRETRAINED_EPOCHS if pretrained else MIN_EPOCHS
        size, side = image_size_for(sizes, largest, lowers, largest, needed)  # up to the network's own size
        changes["image_size"] = size
        decisions.append(size_decision(size, side, planned_epochs, budget, largest, needed))

    if sizes and any(abs(w - h) > 0.05 * max(w, h) for w, h in sizes):
        changes["resize_mode"] = "pad"
        decisions.append("aspect ratio kept (padding): some photos are not square, stretching would distort "
                         "defect shapes")

    epochs = changes["epochs"] = planned_epochs(size)
    first = estimate_training_time(backbone, size, 1, drawn, val_images)
    if fixed_epochs is None:
        decisions.append(f"{epochs} epochs planned for the budget ({first.text()} for the first); the run measures "
                         "its first epoch and re-plans")
    elif asked_epochs:
        decisions.append(f"{epochs} epochs, as asked, and no time budget ({first.text()} for the first)")
    if not cfg.patience:
        changes["patience"] = PRETRAINED_PATIENCE if fixed_epochs == PRETRAINED_EPOCHS and pretrained else \
            max(MIN_PATIENCE, math.ceil(epochs * PATIENCE_SHARE))
        decisions.append(f"stops early when validation macro-F1 has not improved for {changes['patience']} epochs")
    changes["keep_best"] = True
    decisions.append("the run's model is its best epoch by validation macro-F1, not necessarily the last")

    recipe = PRETRAINED_OPTIMISATION if pretrained and not cfg.init_from else OPTIMISATION
    chosen = {k: v for k, v in recipe.items() if untouched(k)}
    if cfg.init_from and "lr" in chosen:
        chosen["lr"] = WARM_START_LR
    changes.update(chosen)
    if chosen:
        start = ("from trained weights, which a lower peak keeps" if cfg.init_from else
                 "fine-tuning ImageNet weights, which a gentle peak and little decay keep" if pretrained else
                 "for many short epochs from scratch, which converge faster and steadier this way")
        decisions.append(start + ": " + "; ".join(OPTIMISATION_WORDS[k].format(**chosen) for k in chosen))
    return dataclasses.replace(cfg, decisions=decisions, **changes)


def weights_problem(name: str) -> str | None:
    """Why backbone `name`'s ImageNet weights cannot be used here, in words, or None when they can."""
    from defect_model.train.pretrained import WeightsUnavailable, verified_file

    entry = registered(name)
    if entry.weights is None:
        return f"{name} has no installable ImageNet weights"
    try:
        verified_file(entry.weights)
    except WeightsUnavailable as exc:
        return str(exc)
    return None


def pretrained_normalisation(cfg: TrainConfig) -> TrainConfig:
    """A run from ImageNet weights normalises photos as those weights were trained, unless the user set mean or
    std (a run from scratch keeps the reference recipe's ImageNet statistics)."""
    weights = registered(cfg.backbone).weights if cfg.pretrained else None
    if weights is None:
        return cfg
    changes = {key: tuple(getattr(weights, key)) for key, default in (("mean", IMAGENET_MEAN), ("std", IMAGENET_STD))
               if key not in cfg.pinned and tuple(getattr(cfg, key)) == tuple(default)
               and tuple(getattr(weights, key)) != tuple(default)}
    if not changes:
        return cfg
    text = (f"photos normalised as {cfg.backbone}'s ImageNet weights were trained: mean "
            f"{changes.get('mean', cfg.mean)}, std {changes.get('std', cfg.std)}")
    return dataclasses.replace(cfg, decisions=cfg.decisions + [text], **changes)



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
    cfg = pretrained_normalisation(cfg)
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
