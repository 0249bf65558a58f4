"""Train page, settings: one widget per TrainConfig field, built from the dataclass and its help texts.

Fields the lead adds to TrainConfig appear here by themselves: a str field gets a select box when
defect_model.config defines its choices as NAME + "S" (BACKBONES, OPTIMIZERS, ...) or in
metadata["choices"], else a text box; bool, int, float, tuple and list fields get their own widget.
"""

from __future__ import annotations

import dataclasses
import typing
import zlib
from pathlib import Path

import streamlit as st

from defect_model import config as config_module
from defect_model.config import TrainConfig
from defect_model.data import DatasetError, read_split_csv, scan_image_folder
from defect_model.insights import DatasetInsights, TimeEstimate, estimate_training_time
from defect_model.presets import apply_product_preset
from ui.text import md

# Set by the page, not by the form (pretrained must stay off: no weights offline).
NOT_IN_FORM = {"data_dir", "corrections_csv", "pretrained", "decisions", "pinned"}
PINNED_KEY = "train_pinned"  # the fields this session's user changed: the product preset keeps them
GROUPS: list[tuple[str, list[str]]] = [
    ("Model", ["backbone", "image_size", "resize_mode", "dropout", "zero_init_residual", "init_from"]),
    ("Optimisation", ["time_budget_min", "epochs", "patience", "keep_best", "batch_size", "optimizer", "lr", "schedule", "weight_decay", "grad_clip",
                      "label_smoothing", "min_steps"]),
    ("Data", ["augmentation", "sampling", "loss_weighting", "val_fraction", "split_csv", "seed",
              "good_classes"]),
]
FIRST = ["preset"]
ADVANCED = ["mean", "std", "channels_last", "precision"]
LABELS = {
    "lr": "Learning rate", "grad_clip": "Gradient clipping (max norm, 0 = off)", "val_fraction": "Validation share",
    "split_csv": "Split CSV (path,label,split)", "good_classes": 'Classes that mean "good"',
    "weight_decay": "Weight decay", "image_size": "Image size (px)", "channels_last": "channels_last memory layout",
    "min_steps": "Minimum optimizer steps", "mean": "Normalisation mean (R, G, B)",
    "std": "Normalisation std (R, G, B)", "preset": "Recipe preset",
    "zero_init_residual": "Residual blocks start as identity",
    "time_budget_min": "Time budget (minutes, 0 = epochs decide)", "patience": "Stop after epochs without gain (0 = never)",
    "keep_best": "Keep the best epoch", "init_from": "Start from weights (run folder or .pt; empty = from scratch)",
}
# New runs start from the product preset (it adapts to the data); every recipe field below it shows the
# reference recipe, which the preset then changes where the data needs it.
NEW_RUN_DEFAULTS = {"preset": "product"}
GOOD_NAMES = {"ok", "good", "pass", "normal", "okay", "no_defect", "nodefect", "functional", "free", "clean",
              "defect_free", "defectfree", "intact", "accept"}


def default_of(field: dataclasses.Field):
    return field.default if field.default is not dataclasses.MISSING else field.default_factory()


def choices_of(field: dataclasses.Field) -> tuple[str, ...] | None:
    found = field.metadata.get("choices") or getattr(config_module, field.name.upper() + "S", None)
    return tuple(found) if isinstance(found, (tuple, list)) and all(isinstance(c, str) for c in found) else None


def label_of(name: str) -> str:
    return LABELS.get(name, name.replace("_", " ").capitalize())


def suggested_good_classes(classes: list[str]) -> list[str]:
    """Classes whose name reads like a good part (ok, good, pass, normal, functional, ...; also "ok_parts")."""
    def looks_good(name: str) -> bool:
        lowered = name.lower()
        parts = set(lowered.replace("-", "_").replace(" ", "_").split("_"))
        return lowered in GOOD_NAMES or bool(parts & GOOD_NAMES and not parts & {"not", "no", "non"})

    return [c for c in classes if looks_good(c)]


def _widget(field: dataclasses.Field, hint, classes: list[str], scope: str, problems: list[str]):
    """One widget for one field; returns its value in the field's type."""
    name, help_text = field.name, field.metadata.get("help", "")
    default = NEW_RUN_DEFAULTS.get(name, default_of(field))
    key, label = f"train_{name}", label_of(name)
    choices = choices_of(field)

    def pin() -> None:
        st.session_state.setdefault(PINNED_KEY, set()).add(name)

    if choices:
        return st.selectbox(label, choices, index=choices.index(default) if default in choices else 0,
                            key=key, help=help_text, on_change=pin)
    if hint is bool:
        return st.checkbox(label, value=bool(default), key=key, help=help_text, on_change=pin)
    if hint is int:
        return int(st.number_input(label, value=int(default), min_value=0, step=1, key=key, help=help_text,
                                   on_change=pin))
    if hint is float:
        step = 10 ** _magnitude(default) / 10 if default else (1.0 if "clip" in name else 0.01)
        return float(st.number_input(label, value=float(default), min_value=0.0, step=step, format="%g",
                                     key=key, help=help_text, on_change=pin))
    origin = typing.get_origin(hint)
    if origin is tuple:
        text = st.text_input(label, value=", ".join(f"{v:g}" for v in default), key=key, help=help_text)
        try:
            return tuple(float(part) for part in text.replace(",", " ").split())
        except ValueError:
            problems.append(f"{label}: {text!r} is not a list of numbers; write them like "
                            f"{', '.join(f'{v:g}' for v in default)}.")
            return default
    if origin is list:
        if name == "good_classes":
            return st.multiselect(label, classes, default=suggested_good_classes(classes),
                                  key=f"{key}_{scope}", help=help_text + " (suggested from the class names)")
        text = st.text_input(label, value=", ".join(map(str, default)), key=key, help=help_text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return st.text_input(label, value=str(default), key=key, help=help_text).strip()


def _magnitude(value: float) -> int:
    import math

    return math.floor(math.log10(abs(value)))


def settings_ui(data_dir: Path, classes: list[str]) -> tuple[TrainConfig | None, list[str]]:
    """The settings form; returns (config, []) or (None, problems in plain words)."""
    fields = {f.name: f for f in dataclasses.fields(TrainConfig) if f.name not in NOT_IN_FORM}
    hints = typing.get_type_hints(TrainConfig)
    placed = set(FIRST) | set(ADVANCED) | {name for _, names in GROUPS for name in names}
    values: dict = {}
    problems: list[str] = []
    scope = f"{zlib.crc32(str(data_dir).encode()):08x}"

    def draw(names: list[str]) -> None:
        for name in names:
            if name in fields:
                values[name] = _widget(fields[name], hints[name], classes, scope, problems)

    draw(FIRST)
    for column, (title, names) in zip(st.columns(len(GROUPS)), GROUPS):
        with column:
            st.markdown(f"**{title}**")
            draw(names)
    others = [name for name in fields if name not in placed]
    if others:
        st.markdown("**Other settings**")
        draw(others)
    with st.expander("Advanced: normalisation and memory layout"):
        draw(ADVANCED)

    if problems:
        return None, problems
    values["data_dir"] = str(data_dir)
    values["pinned"] = sorted(st.session_state.get(PINNED_KEY, set()) & set(values) - {"preset"})
    if values.get("split_csv"):
        problem = _check_split(values["split_csv"], data_dir)
        if problem:
            return None, [problem]
        values["split_csv"] = str(Path(values["split_csv"]).expanduser().resolve())
    try:
        return TrainConfig(**values), []
    except (TypeError, ValueError) as exc:
        return None, [str(exc)]


def _check_split(path: str, data_dir: Path) -> str | None:
    try:
        read_split_csv(Path(path).expanduser(), scan_image_folder(data_dir))
    except DatasetError as exc:
        return str(exc)
    return None


def split_sizes(cfg: TrainConfig, counts: dict[str, int]) -> tuple[int, int]:
    """(train, val) photos the run will use: from the split CSV, else the seeded per-class split's arithmetic."""
    if cfg.split_csv:
        import csv

        with open(cfg.split_csv, newline="") as handle:
            splits = [row.get("split", "").strip().lower() for row in csv.DictReader(handle)]
        return splits.count("train"), splits.count("val")
    val = sum(min(n - 1, max(1, round(n * cfg.val_fraction))) for n in counts.values())
    return sum(counts.values()) - val, val


def preset_preview(cfg: TrainConfig, insights: DatasetInsights) -> tuple[TrainConfig, list[str]]:
    """What the product preset will decide for this dataset (training decides again on the real split)."""
    if cfg.preset == "reference":
        return cfg, []
    train, _ = split_sizes(cfg, insights.counts)
    share = train / max(1, insights.total)
    train_counts = {name: max(1, round(n * share)) for name, n in insights.counts.items()}
    sizes = [tuple(int(v) for v in size.split("x")) for size, n in insights.sizes.items() for _ in range(min(n, 50))]
    _, val = split_sizes(cfg, insights.counts)
    resolved = apply_product_preset(cfg, train_counts, sizes, val)
    return resolved, list(resolved.decisions)


def estimate_ui(cfg: TrainConfig, insights: DatasetInsights) -> TimeEstimate:
    resolved, decisions = preset_preview(cfg, insights)
    if decisions:
        with st.expander(f"What the {cfg.preset} preset will decide for this dataset", expanded=True):
            st.markdown("\n".join(f"- {md(d)}" for d in decisions))  # they name classes (folder names)
    train, val = split_sizes(resolved, insights.counts)
    drawn = resolved.epoch_images or train  # photos drawn per epoch
    estimate = estimate_training_time(resolved.backbone, resolved.image_size, resolved.epochs, drawn, val)
    per_epoch = f" ({drawn} drawn per epoch)" if drawn != train else ""
    if resolved.time_budget_min:
        st.markdown(f":material/timer: **Training time budget: {resolved.time_budget_min:g} min** "
                    f"(estimate for {resolved.epochs} epoch(s): {estimate.text()})")
        st.caption(f"{train} training photos{per_epoch} and {val} validation photos, {resolved.backbone} at "
                   f"{resolved.image_size} px. The run measures its first epoch, plans its epochs to fit the budget"
                   + (f" and stops early after {resolved.patience} epochs without a better validation score."
                      if resolved.patience else "."))
    else:
        st.markdown(f":material/timer: **Estimated training time: {estimate.text()}**")
        st.caption(f"{train} training photos{per_epoch} and {val} validation photos, {resolved.epochs} epoch(s) of "
                   f"{resolved.backbone} at {resolved.image_size} px.")
    return estimate
