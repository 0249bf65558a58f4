"""Training configuration: one dataclass whose defaults are the reference recipe."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

BACKBONES = ("resnet50", "resnet34", "resnet18")
OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "warmup-cosine", "constant")
RESIZE_MODES = ("pad", "crop", "stretch")
PRESETS = ("reference", "product")
SAMPLINGS = ("shuffle", "balanced")
LOSS_WEIGHTINGS = ("none", "class", "sqrt")
AUGMENTATIONS = ("none", "soft", "strong")
PRECISIONS = ("auto", "fp32", "bf16")

# Upper bounds that keep one run's memory and time within what a plant's server can give.
MAX_IMAGE_SIZE = 1024
MAX_BATCH_SIZE = 512
MAX_EPOCHS = 1000
MAX_BUDGET_MIN = 7 * 24 * 60

# ImageNet statistics: the per-channel normalisation of the reference recipe.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _setting(default, help_text: str):
    """A config field with a one-line help text (shown by the CLI and the Train page)."""
    if isinstance(default, (list, tuple)) and not isinstance(default, str) and default == ():
        return field(default_factory=list, metadata={"help": help_text})
    return field(default=default, metadata={"help": help_text})


def setting_help(name: str) -> str:
    return next(f.metadata["help"] for f in dataclasses.fields(TrainConfig) if f.name == name)


@dataclass
class TrainConfig:
    """Everything that decides how a run trains. Defaults = the reference recipe."""

    preset: str = _setting("reference", "reference (the published recipe, as is) or product (adapts sampling, "
                                        "augmentation, resolution and budget to the dataset)")
    decisions: list[str] = _setting((), "what the product preset decided for this dataset, and why")
    data_dir: str = _setting("", "dataset folder, one sub-folder per class")
    split_csv: str = _setting("", "optional path,label,split CSV; empty = seeded stratified split")
    corrections_csv: str = _setting("", "optional path,label CSV of confirmed label fixes; an empty label drops the photo")
    backbone: str = _setting("resnet50", "network: resnet50 (reference), resnet34 or resnet18 (smaller, quick trials)")
    init_from: str = _setting("", "start from these weights instead of random ones: a run folder or a .pt file "
                                  "(a checkpoint of this tool, or a plain ResNet state_dict such as ImageNet weights "
                                  "fetched elsewhere); the head is rebuilt when the classes differ")
    pretrained: bool = _setting(False, "pretrained weights (not available offline; must stay off)")
    dropout: float = _setting(0.2, "dropout probability before the linear head")
    image_size: int = _setting(224, "photos are resized to image_size x image_size pixels")
    mean: tuple[float, float, float] = _setting(IMAGENET_MEAN, "per-channel normalisation mean (R G B)")
    std: tuple[float, float, float] = _setting(IMAGENET_STD, "per-channel normalisation standard deviation (R G B)")
    resize_mode: str = _setting("pad", "pad (keep aspect, letterbox), crop (keep aspect, centre crop) or stretch; "
                                       "square photos come out the same either way")
    batch_size: int = _setting(32, "photos per optimizer step")
    epochs: int = _setting(5, "passes over the training photos")
    epoch_images: int = _setting(0, "photos drawn per epoch (0 = the training set size); longer epochs on small "
                                    "data mean fewer, more useful validations")
    min_steps: int = _setting(0, "training budget floor in optimizer steps: epochs are raised to reach it (0 = off)")
    time_budget_min: float = _setting(0.0, "training time in minutes: the run measures its first epoch and plans "
                                           "its epochs to spend this time (0 = the epochs setting decides)")
    patience: int = _setting(0, "stop when validation macro-F1 has not improved for this many epochs "
                                "(0 = never stop early)")
    keep_best: bool = _setting(False, "when the run ends, its model is the epoch with the best validation macro-F1 "
                                      "instead of the last one")
    sampling: str = _setting("shuffle", "shuffle (each photo once per epoch) or balanced (every class equally often)")
    loss_weighting: str = _setting("none", "none; class (weight the loss by inverse class frequency); or sqrt "
                                             "(by its square root: rare classes count more without drowning the common one)")
    optimizer: str = _setting("adamw", "adamw (reference) or sgd (momentum 0.9, Nesterov)")
    lr: float = _setting(1e-3, "peak learning rate")
    weight_decay: float = _setting(0.0, "weight decay (0 = off)")
    schedule: str = _setting("cosine", "cosine (the reference: stepped once per epoch, no warm-up); warmup-cosine "
                                       "(linear warm-up over the first epoch, at most a quarter of the run, then "
                                       "cosine to 0, stepped every optimizer step); or constant")
    label_smoothing: float = _setting(0.0, "share of each target's probability spread over the other classes "
                                           "(0 = plain cross-entropy)")
    zero_init_residual: bool = _setting(False, "start every residual block as the identity (its last BatchNorm "
                                               "scaled to 0): faster early training from scratch")
    grad_clip: float = _setting(0.0, "clip the gradient norm to this value (0 = off)")
    augmentation: str = _setting("none", "none; soft (flips, 90-degree turns); strong (soft plus small shifts, "
                                         "rotations, zoom, brightness and contrast)")
    val_fraction: float = _setting(0.2, "share of each class held out for validation when no split CSV is given")
    seed: int = _setting(0, "random seed for the split, the initial weights and the photo order")
    channels_last: bool = _setting(True, "channels_last memory layout (faster on CPU, same results)")
    precision: str = _setting("auto", "training arithmetic: auto (bf16 mixed precision where the processor has "
                                      "native bf16, else fp32), fp32 or bf16; validation and inspection run in fp32")
    good_classes: list[str] = _setting((), "classes that mean a good part (for pass / reject verdicts)")
    pinned: list[str] = _setting((), "settings the user chose (a flag given, a field changed): the product preset "
                                     "keeps them even where they equal the reference recipe's value")

    def __post_init__(self) -> None:
        self.mean = tuple(float(v) for v in self.mean)
        self.std = tuple(float(v) for v in self.std)
        self.good_classes = list(self.good_classes)
        self.decisions = list(self.decisions)
        self.pinned = list(self.pinned)
        problems = self.problems()
        if problems:
            raise ValueError("Invalid training settings: " + "; ".join(problems))

    def problems(self) -> list[str]:
        """Plain-words list of settings that cannot work."""
        found = []
        if self.backbone not in BACKBONES:
            found.append(f"backbone {self.backbone!r} is not one of {', '.join(BACKBONES)}")
        if self.pretrained:
            found.append("pretrained weights are not available offline; use pretrained=false")
        if self.optimizer not in OPTIMIZERS:
            found.append(f"optimizer {self.optimizer!r} is not one of {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            found.append(f"schedule {self.schedule!r} is not one of {', '.join(SCHEDULES)}")
        for name, allowed in (("preset", PRESETS), ("sampling", SAMPLINGS), ("loss_weighting", LOSS_WEIGHTINGS),
                              ("augmentation", AUGMENTATIONS), ("precision", PRECISIONS)):
            if getattr(self, name) not in allowed:
                found.append(f"{name} {getattr(self, name)!r} is not one of {', '.join(allowed)}")
        if self.min_steps < 0 or self.epoch_images < 0:
            found.append("min_steps and epoch_images must be >= 0")
        if self.resize_mode not in RESIZE_MODES:
            found.append(f"resize_mode {self.resize_mode!r} is not one of {', '.join(RESIZE_MODES)}")
        if not 0.0 <= self.dropout < 1.0:
            found.append("dropout must be in [0, 1)")
        for name, low, high in (("image_size", 32, MAX_IMAGE_SIZE), ("batch_size", 1, MAX_BATCH_SIZE),
                                ("epochs", 1, MAX_EPOCHS)):
            if not low <= getattr(self, name) <= high:
                found.append(f"{name} must be between {low} and {high} (it is {getattr(self, name)})")
        if not 0 <= self.time_budget_min <= MAX_BUDGET_MIN:
            found.append(f"time_budget_min must be between 0 (off) and {MAX_BUDGET_MIN} minutes")
        if self.patience < 0:
            found.append("patience must be >= 0 (0 means never stop early)")
        if self.lr <= 0:
            found.append("lr must be positive")
        if self.weight_decay < 0 or self.grad_clip < 0:
            found.append("weight_decay and grad_clip must be >= 0 (grad_clip 0 means off)")
        if not 0.0 <= self.label_smoothing < 1.0:
            found.append("label_smoothing must be in [0, 1)")
        if not 0.0 < self.val_fraction < 1.0:
            found.append("val_fraction must be between 0 and 1")
        if len(self.mean) != 3 or len(self.std) != 3:
            found.append("mean and std need three values (R, G, B)")
        return found

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["mean"] = list(self.mean)
        data["std"] = list(self.std)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"Unknown training settings: {', '.join(unknown)}")
        return cls(**data)

    def to_yaml(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def from_yaml(cls, path: str | Path) -> "TrainConfig":
        data = yaml.safe_load(Path(path).read_text()) or {}
        return cls.from_dict(data)

    def preprocessing(self) -> dict:
        """What inference needs to prepare a photo exactly as training did."""
        return {
            "image_size": self.image_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "resize_mode": self.resize_mode,
        }
