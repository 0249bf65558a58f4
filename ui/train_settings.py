"""Train page, settings: one widget per TrainConfig setting, laid out and labelled as defect_model.common.config
declares it (group, label, choices, bounds, help), so a setting added there appears here by itself.
"""

from __future__ import annotations

import math
import typing
import zlib
from pathlib import Path

import streamlit as st

from defect_model.common.config import GROUPS, Setting, TrainConfig, settings_of
from defect_model.train.data import DatasetError, data_roots, inside_roots, read_split_csv, scan_image_folder
from defect_model.workflows.insights import DatasetInsights
from defect_model.train.presets import resolve
from defect_model.common.places import data_root, runs_root
from defect_model.train.timing import TimeEstimate, estimate_training_time
from ui.text import md

PINNED_KEY = "train_pinned"  # the fields this session's user changed: the product preset keeps them
SEEDED_KEY = "train_shown"  # what the form last put into each field it fills in itself
# The user's own values, outside the widgets: Streamlit drops a widget's state after a run that does not draw it
# (the form is not drawn while the "Upload a zip" source waits for its zip), and a number field then came back at
# its minimum ("lr must be positive" right after "Add dataset").
KEPT_KEY = "train_kept_values"
# Groups drawn side by side; the first group sits above them, the last in an expander.
COLUMN_GROUPS = ("Model", "Optimisation", "Data")
# New runs start from the product preset (it adapts to the data); every recipe field below it shows the
# reference recipe, which the preset then changes where the data needs it.
NEW_RUN_DEFAULTS = {"preset": "product"}
GOOD_NAMES = {"ok", "good", "pass", "normal", "okay", "no_defect", "nodefect", "functional", "free", "clean",
              "defect_free", "defectfree", "intact", "accept"}


def suggested_good_classes(classes: list[str]) -> list[str]:
    """Classes whose name reads like a good part (ok, good, pass, normal, functional, ...; also "ok_parts")."""
    def looks_good(name: str) -> bool:
        lowered = name.lower()
        parts = set(lowered.replace("-", "_").replace(" ", "_").split("_"))
        return lowered in GOOD_NAMES or bool(parts & GOOD_NAMES and not parts & {"not", "no", "non"})

    return [c for c in classes if looks_good(c)]


def _key(setting: Setting, scope: str) -> str:
    # The good classes belong to one dataset: their widget is per dataset.
    return f"train_{setting.name}_{scope}" if setting.name == "good_classes" else f"train_{setting.name}"


def _requested_default(setting: Setting):
    return NEW_RUN_DEFAULTS.get(setting.name, setting.default)


def _state_of(setting: Setting, value):
    """A setting's value as its widget holds it."""
    origin = typing.get_origin(setting.type)
    if origin is tuple:
        return ", ".join(f"{v:g}" for v in value)
    if origin is list:
        return ", ".join(map(str, value))
    return value


def _value_of(setting: Setting, state, problems: list[str]):
    """A widget's state as the setting's value; a problem in plain words where it cannot be one."""
    origin = typing.get_origin(setting.type)
    if setting.choices or setting.type is bool or origin is list and setting.name == "good_classes":
        return state
    if setting.type is int:
        return int(state)
    if setting.type is float:
        return float(state)
    if origin is tuple:
        try:
            return tuple(float(part) for part in str(state).replace(",", " ").split())
        except ValueError:
            example = ", ".join(f"{v:g}" for v in setting.default)
            problems.append(f"{setting.label}: {state!r} is not a list of numbers; write them like {example}.")
            return setting.default
    if origin is list:
        return [part.strip() for part in str(state).split(",") if part.strip()]
    return str(state).strip()


def _widget(setting: Setting, classes: list[str], scope: str):
    """One widget for one setting (its value is already in the session state); returns the widget's state."""
    name, help_text, label, key = setting.name, setting.help, setting.label, _key(setting, scope)
    low, high = setting.bounds or (0, None)

    def pin() -> None:
        st.session_state.setdefault(PINNED_KEY, set()).add(name)

    if setting.choices:
        return st.selectbox(label, setting.choices, key=key, help=help_text, on_change=pin)
    if setting.type is bool:
        return st.checkbox(label, key=key, help=help_text, on_change=pin)
    if setting.type is int:
        return st.number_input(label, min_value=int(low), max_value=None if high is None else int(high), step=1,
                               key=key, help=help_text, on_change=pin)
    if setting.type is float:
        default = setting.default
        step = 10 ** _magnitude(default) / 10 if default else (1.0 if "clip" in name else 0.01)
        return st.number_input(label, min_value=float(low), max_value=None if high is None else float(high),
                               step=step, format="%g", key=key, help=help_text, on_change=pin)
    if name == "good_classes":
        return st.multiselect(label, classes, key=key, help=help_text + " (suggested from the class names)")
    return st.text_input(label, key=key, help=help_text, on_change=pin)


def _magnitude(value: float) -> int:
    return math.floor(math.log10(abs(value)))


def shown_values(in_form: list[Setting], data_dir: Path, insights: DatasetInsights | None, config_class,
                 pinned: set[str]) -> dict:
    """What each field shows: the user's own value where they set one, else what training will use for this
    dataset (the preset's preview), so that the form never shows a setting that will not be used."""
    problems: list[str] = []
    requested = {s.name: _value_of(s, st.session_state[f"train_{s.name}"], problems)
                 if s.name in pinned and f"train_{s.name}" in st.session_state else _requested_default(s)
                 for s in in_form if s.name != "good_classes"}
    try:
        request = config_class(**requested, data_dir=str(data_dir), pinned=sorted(pinned - {"preset"}))
    except (TypeError, ValueError):
        return requested  # the form shows what was asked; settings_ui names the problem
    resolved = preset_preview(request, insights)[0] if insights is not None and not problems else request
    return {name: getattr(resolved, name) for name in requested}


def settings_ui(data_dir: Path, classes: list[str], insights: DatasetInsights | None = None,
                config_class=TrainConfig) -> tuple[TrainConfig | None, list[str]]:
    """The settings form, showing what training will use; returns (the request, []) or (None, problems in
    plain words). The request holds the user's own choices and leaves the rest to the preset, which decides
    again on the real split."""
    in_form = [setting for setting in settings_of(config_class) if setting.form]
    scope = f"{zlib.crc32(str(data_dir).encode()):08x}"
    seeded = st.session_state.setdefault(SEEDED_KEY, {})
    pinned = st.session_state.setdefault(PINNED_KEY, set())
    kept = st.session_state.setdefault(KEPT_KEY, {})
    for setting in in_form:  # a field the last run did not draw lost its state: the user's value comes back
        key = _key(setting, scope)
        if setting.name in pinned and key not in st.session_state and key in kept:
            st.session_state[key] = kept[key]
        elif setting.name in pinned and key not in st.session_state:
            pinned.discard(setting.name)  # nothing of theirs to bring back: the form fills it in again
    # A field whose state differs from what the form last put there was set by the user, even where its change
    # arrived while a slow rerun was drawing (its on_change callback is not the only sign).
    pinned |= {s.name for s in in_form if _key(s, scope) in seeded
               and st.session_state.get(_key(s, scope), seeded[_key(s, scope)]) != seeded[_key(s, scope)]}
    for name, value in shown_values(in_form, data_dir, insights, config_class, set(pinned)).items():
        setting = next(s for s in in_form if s.name == name)
        key, state = _key(setting, scope), _state_of(setting, value)
        # Written only when what should show changed: never over a value the user is typing.
        if name not in pinned and (key not in st.session_state or seeded.get(key) != state):
            st.session_state[key] = seeded[key] = state
    good = next((s for s in in_form if s.name == "good_classes"), None)
    if good is not None and _key(good, scope) not in st.session_state:
        st.session_state[_key(good, scope)] = suggested_good_classes(classes)

    states: dict = {}

    def draw(group: str | None) -> None:
        for setting in in_form:
            if setting.group == group:
                states[setting.name] = _widget(setting, classes, scope)

    draw(GROUPS[0])
    for column, group in zip(st.columns(len(COLUMN_GROUPS)), COLUMN_GROUPS):
        with column:
            st.markdown(f"**{group}**")
            draw(group)
    if any(setting.group not in GROUPS for setting in in_form):
        st.markdown("**Other settings**")
        draw(None)
    with st.expander("Advanced: normalisation, memory layout and arithmetic"):
        draw(GROUPS[-1])

    problems: list[str] = []
    pinned = set(st.session_state.get(PINNED_KEY, set()))
    kept.update({_key(s, scope): states[s.name] for s in in_form if s.name in pinned})
    values = {s.name: _value_of(s, states[s.name], problems)
              if s.name in pinned or s.name == "good_classes" else _requested_default(s) for s in in_form}
    if problems:
        return None, problems
    values["data_dir"] = str(data_dir)
    values["pinned"] = sorted(pinned & set(values) - {"preset"})
    try:
        for name in ("split_csv", "init_from"):  # paths typed into the form: only inside the data and runs folders
            if values.get(name):
                values[name] = str(inside_roots(values[name], [*data_roots(data_root()), runs_root()],
                                                "files a training run reads must lie inside"))
    except DatasetError as exc:
        return None, [str(exc)]
    if values.get("split_csv"):
        problem = _check_split(values["split_csv"], data_dir)
        if problem:
            return None, [problem]
    try:
        return config_class(**values), []
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
    """What the preset will decide for this dataset: the engine's own resolution, on an estimate of the split
    (training decides again on the real one)."""
    train, _ = split_sizes(cfg, insights.counts)
    share = train / max(1, insights.total)
    train_counts = {name: max(1, round(n * share)) for name, n in insights.counts.items()}
    sizes = [tuple(int(v) for v in size.split("x")) for size, n in insights.sizes.items() for _ in range(min(n, 50))]
    _, val = split_sizes(cfg, insights.counts)
    resolved = resolve(cfg, train_counts, sizes, val)
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
        st.caption(f"{train} training photos{per_epoch} and {val} validation photos, {md(resolved.network_text())} at "
                   f"{resolved.image_size} px. The run measures its first epoch, plans its epochs to fit the budget"
                   + (f" and stops early after {resolved.patience} epochs without a better validation score."
                      if resolved.patience else "."))
    else:
        st.markdown(f":material/timer: **Estimated training time: {estimate.text()}**")
        st.caption(f"{train} training photos{per_epoch} and {val} validation photos, {resolved.epochs} epoch(s) of "
                   f"{md(resolved.network_text())} at {resolved.image_size} px"
                   + (f", stopping early after {resolved.patience} epochs without a better validation score."
                      if resolved.patience else "."))
    return estimate
