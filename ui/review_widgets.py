"""Widgets of the Review page, plus the two both pages share: the confusion-matrix figure and the
quality header (defect miss rate and per-class recall beside accuracy; a collapsed model in red)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots
from PIL import Image

from defect_model.access.accounts import Actor
from defect_model.workflows.calibration import reliability
from defect_model.common.quality import ModelQuality, assess
from defect_model.workflows.review import (ReviewData, ReviewError, cell_photos, confusion_counts, decide_inspection,
                                 decision_counts, describe_decision, inspection_corrections, latest_decisions,
                                 load_review, misclassified, photo_file, plain_records, record_decision,
                                 retrain_with_corrections, row_normalised)
from defect_model.runs.folders import RunDir, list_runs
from defect_model.runs.store import InspectionStore
from ui.job_events import job_progress_ui
from ui.resources import active_run, predictor_for
from ui.run_picker import run_select
from ui.text import md, plot_text

PAGE_SIZE = 6
THUMB = 176  # pixels: small photos are enlarged to this for the cards
FLASH = "review_flash"
STATIC_CHART = {"displayModeBar": False}  # nothing to zoom; the toolbar would cover the title and legend


def pct(value) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.1%}"


# -- shared by the Review and Models pages --------------------------------------------------
def confusion_figure(matrix, classes, normalise: bool = False, selected: tuple[str, str] | None = None,
                     title: str = "", height: int | None = None) -> go.Figure:
    """Rows are true classes (top to bottom), columns predicted classes. Every cell can be clicked:
    an invisible marker sits on each cell (it carries the hover text too), so a click comes back as a
    selected point whose customdata is (true, predicted)."""
    counts = np.asarray(matrix, dtype=np.int64)
    shares = row_normalised(counts)
    values = shares if normalise else counts
    classes = list(classes)
    labels = [plot_text(c) for c in classes]  # what the chart shows; clicks come back with the names themselves
    text = [[f"{shares[i, j]:.0%}<br>({counts[i, j]})" if normalise else str(counts[i, j])
             for j in range(len(classes))] for i in range(len(classes))]
    hover = [[f"true {t}, predicted {p}: {counts[i, j]} photo(s), {shares[i, j]:.0%} of {t}"
              for j, p in enumerate(labels)] for i, t in enumerate(labels)]
    figure = go.Figure(go.Heatmap(
        z=values, x=labels, y=labels, text=text, texttemplate="%{text}", textfont={"size": 15}, hoverinfo="skip",
        colorscale="Blues", zmin=0, zmax=1 if normalise else max(1, int(counts.max())),
        colorbar={"title": "share of row" if normalise else "photos"}))
    cells_true = [t for t in classes for _ in classes]
    cells_pred = [p for _ in classes for p in classes]
    figure.add_trace(go.Scatter(
        x=[p for _ in labels for p in labels], y=[t for t in labels for _ in labels], mode="markers",
        customdata=list(zip(cells_true, cells_pred)),
        hovertext=[text for row in hover for text in row], hoverinfo="text", showlegend=False, name="cells",
        marker={"symbol": "square", "size": 40, "color": "rgba(0,0,0,0)"},
        selected={"marker": {"opacity": 0}}, unselected={"marker": {"opacity": 0}}))
    if selected and selected[0] in classes and selected[1] in classes:
        i, j = classes.index(selected[0]), classes.index(selected[1])
        figure.add_shape(type="rect", x0=j - 0.5, x1=j + 0.5, y0=i - 0.5, y1=i + 0.5,
                         line={"color": "#d62728", "width": 3})
    size = height or max(300, 70 * len(classes) + 140)
    figure.update_layout(title=plot_text(title) if title else None, height=size,
                         margin={"l": 10, "r": 10, "t": 40 if title else 10, "b": 10},
                         xaxis={"title": "predicted class", "side": "bottom", "type": "category"},
                         yaxis={"title": "true class", "autorange": "reversed", "type": "category"},
                         clickmode="event+select", dragmode=False)
    return figure


def quality_header(metrics: dict, good_classes, compact: bool = False) -> ModelQuality:
    """Defect miss rate first (when good classes are marked), per-class recall beside accuracy; red if collapsed."""
    quality = assess(metrics, good_classes)
    if quality.collapsed:
        st.error("This model is flagged as useless: " + "; ".join(md(p) for p in quality.problems)
                 + ". It would pass defective parts; do not make it active.", icon=":material/warning:")
    numbers = []
    if quality.defect_miss_rate is not None:
        numbers.append(("Defect miss rate", pct(quality.defect_miss_rate),
                        f"share of defect photos predicted as {md(', '.join(good_classes))}"))
    if quality.false_reject_rate is not None:
        numbers.append(("False-reject rate", pct(quality.false_reject_rate),
                        f"share of {md(', '.join(good_classes))} photos predicted as a defect (good parts sent to "
                        "rework)"))
    numbers += [(f"Worst recall ({md(quality.worst_class)})", pct(quality.worst_recall), "the class it misses most"),
                ("Val accuracy", pct(quality.accuracy), None), ("Macro-F1", f"{quality.macro_f1:.3f}", None)]
    if compact:
        st.markdown(" · ".join(f"**{label}** {value}" for label, value, _ in numbers))
    else:
        for column, (label, value, help_text) in zip(st.columns(len(numbers)), numbers):
            column.metric(label, value, help=help_text)
    st.caption("Recall per class: " + ", ".join(f"{md(c)} {r:.0%}" for c, r in quality.recall.items()))
    return quality


# -- run choice --------------------------------------------------------------------------------
def reviewable_runs() -> list[RunDir]:
    return [run for run in list_runs() if run.metrics.is_file() and run.val_predictions.is_file()]


def run_choice_ui() -> RunDir | None:
    """The run to review; the active model unless the engineer picks another."""
    runs = reviewable_runs()
    if not runs:
        st.info("No run with validation results yet. Train a model on the Train page; it appears here after its "
                "first epoch.")
        return None
    ids = [run.run_id for run in runs]
    active = active_run()
    if st.session_state.get("review_run") not in ids:
        st.session_state["review_run"] = active.run_id if active and active.run_id in ids else ids[0]
    return run_select("Run", runs, "review_run", active.run_id if active else None,
                      help="The run whose validation results you review. Default: the active model. A run still "
                           "training shows its latest epoch's results.")


def review_data_ui(run: RunDir) -> ReviewData | None:
    try:
        return load_review(run)
    except ReviewError as exc:
        st.error(md(exc))
        return None


def store_ui() -> InspectionStore | None:
    try:
        return InspectionStore()
    except Exception as exc:  # sqlite raises several types for a bad path or a locked, damaged file
        from defect_model.common.places import default_db_path

        st.error(md(f"{default_db_path()}: cannot open the corrections database ({exc}). Check that the folder is "
                    "writable, or set DEFECT_DB to another file."))
        return None


# -- confusion matrix --------------------------------------------------------------------------
def _select_cell(key: str) -> None:
    """A click on the matrix picks the cell's true and predicted class."""
    points = (st.session_state.get(key) or {}).get("selection", {}).get("points", [])
    for point in points:
        data = point.get("customdata")
        if data and len(data) == 2:
            st.session_state["cell_true"], st.session_state["cell_pred"] = data
            return


def confusion_ui(data: ReviewData) -> tuple[str | None, str | None]:
    """The validation confusion matrix; returns the chosen cell (true, predicted) or (None, None)."""
    view = st.segmented_control("View", ["Counts", "Row-normalised"], default="Counts", key="cm_view",
                                help="Row-normalised: each row adds up to 100 % (the recall of that class on the "
                                     "diagonal).")
    matrix = confusion_counts(data.predictions, data.classes)
    chosen = (st.session_state.get("cell_true"), st.session_state.get("cell_pred"))
    figure = confusion_figure(matrix, data.classes, normalise=view == "Row-normalised",
                              selected=chosen if all(chosen) else None)
    st.plotly_chart(figure, key="cm_chart", on_select=lambda: _select_cell("cm_chart"), selection_mode="points",
                    config={"displayModeBar": False})
    st.caption(f"{len(data.predictions)} validation photos. Click a cell, or pick it here, to list its photos.")
    left, right = st.columns(2)
    true = left.selectbox("True class", data.classes, index=None, key="cell_true", placeholder="pick a row")
    pred = right.selectbox("Predicted class", data.classes, index=None, key="cell_pred", placeholder="pick a column")
    return true, pred


def cell_ui(data: ReviewData, true: str, pred: str, store: InspectionStore | None, actor: Actor) -> None:
    photos = cell_photos(data.predictions, true, pred)
    kind = "correct" if true == pred else "wrong"
    st.markdown(f"**{len(photos)} photo(s) of {md(true)} predicted as {md(pred)}** ({kind}), highest loss first")
    if photos.empty:
        st.info("This cell is empty.")
        return
    st.dataframe(photos[["path", "true_label", "pred_label", "confidence", "loss"]], hide_index=True,
                 column_config={"confidence": st.column_config.NumberColumn(format="%.3f"),
                                "loss": st.column_config.NumberColumn(format="%.3f")})
    photo_cards_ui(data, photos, store, actor, section="cell")


# -- photo cards with heatmaps and decisions --------------------------------------------------
@st.cache_data(max_entries=16, show_spinner="Computing Grad-CAM heatmaps…")
def photo_overlays(_predictor, checkpoint: str, mtime: float, dataset: str,
                   items: tuple[tuple[str, int], ...]) -> list:
    """Per (photo, class index): {"image": Grad-CAM overlay (uint8 array), "flat": no region stands out},
    or the error message for that photo."""
    from defect_model.serve.explain import heatmap_to_photo, heatmaps, overlay
    from defect_model.photos.images import ImageError, load_image

    photos, arrays, results = {}, {}, {}
    for path, _ in items:
        if path in photos or path in results:
            continue
        try:
            photos[path] = load_image(photo_file(dataset, path))
            arrays[path] = _predictor.prepare(photos[path])
        except ImageError as exc:
            results[path] = f"{exc}"
    readable = [(path, target) for path, target in items if path in photos]
    maps = heatmaps(_predictor, [arrays[p] for p, _ in readable], [t for _, t in readable])[1] if readable else []
    drawn = {}
    mode = _predictor.preprocessing.resize_mode
    for (path, target), heatmap in zip(readable, maps):
        photo = photos[path]
        image = overlay(photo, heatmap_to_photo(heatmap, photo.size, mode), 0.45)
        flat = float(np.ptp(heatmap)) < 1e-6  # e.g. no positive evidence, or a 1x1 feature map (tiny photos)
        drawn[(path, target)] = {"image": np.asarray(_enlarge(image)), "flat": flat}
    return [drawn.get(item, results.get(item[0])) for item in items]


def _enlarge(image: Image.Image) -> Image.Image:
    width, height = image.size
    if max(width, height) >= THUMB:
        return image
    scale = THUMB / max(width, height)
    return image.resize((round(width * scale), round(height * scale)), Image.Resampling.BICUBIC)


def photo_image(dataset: str, path: str):
    from defect_model.photos.images import ImageError, load_image

    try:
        return np.asarray(_enlarge(load_image(photo_file(dataset, path))))
    except ImageError as exc:
        return str(exc)


def _card_heatmaps(data: ReviewData, rows: pd.DataFrame) -> dict:
    """{(path, class name): overlay or error}; empty with a message when the checkpoint cannot be loaded."""
    from defect_model.train.checkpoint import CheckpointError

    try:
        predictor = predictor_for(data.run)
    except (CheckpointError, FileNotFoundError) as exc:
        st.warning(f"No heatmaps: {md(exc)}", icon=":material/warning:")
        return {}
    index = {name: i for i, name in enumerate(predictor.classes)}
    items = []
    for row in rows.itertuples():
        for label in dict.fromkeys([row.pred_label, row.true_label]):
            if label in index:
                items.append((row.path, index[label]))
    results = photo_overlays(predictor, str(data.run.checkpoint), data.run.checkpoint.stat().st_mtime, data.dataset,
                        tuple(items))
    return {(path, predictor.classes[target]): result for (path, target), result in zip(items, results)}


def show_image(column, image, caption: str) -> None:
    if isinstance(image, dict):
        if image["flat"]:
            caption += " (flat: no region stands out)"
        image = image["image"]
    if isinstance(image, str):
        column.error(md(image), icon=":material/broken_image:")
    elif image is not None:
        column.image(image, caption=caption, width="stretch")  # a fixed width spills over narrow columns


def _decide(store: InspectionStore, data: ReviewData, path: str, action: str, actor: Actor, label_key: str | None,
            card: str) -> None:
    """Button callback: one decision, one correction row; the outcome is shown on the card."""
    new_label = st.session_state.get(label_key) if label_key else None
    try:
        record_decision(store, data, path, action, actor, new_label)
    except (ReviewError, PermissionError) as exc:
        st.session_state[FLASH] = {"card": card, "kind": "error", "text": md(exc)}
        return
    done = {"confirm": "label confirmed", "relabel": f"relabelled to {md(new_label)}",
            "unusable": "marked unusable"}[action]
    st.session_state[FLASH] = {"card": card, "kind": "success",
                               "text": f"{md(Path(path).name)}: {done}. Saved as a correction."}


def _page_of(rows: pd.DataFrame, key: str) -> pd.DataFrame:
    pages = max(1, math.ceil(len(rows) / PAGE_SIZE))
    if pages == 1:
        return rows
    page = st.number_input(f"Page (of {pages}, {PAGE_SIZE} photos each)", 1, pages, 1, key=key)
    start = (int(page) - 1) * PAGE_SIZE
    return rows.iloc[start:start + PAGE_SIZE]


def current_label(row, decided: dict | None) -> str:
    """The photo's label once the latest decision about it is applied ("" when it is dropped as unusable)."""
    if not decided:
        return row.true_label
    if decided["action"] == "relabel":
        return decided["new_label"]
    return "" if decided["action"] == "unusable" else row.true_label


def probability_lines(row, classes: list[str], label: str, shown: int = 5) -> list[str]:
    """The highest probabilities, and always the photo's label and the original one among them, as Markdown
    lines: "pit: **12.0%** (label)"."""
    probs = sorted(((c, getattr(row, f"prob_{c}", None)) for c in classes), key=lambda item: -(item[1] or 0))
    keep = {c for c, _ in probs[:shown]} | {label, row.true_label}
    lines = []
    for name, p in probs:
        if name not in keep or p is None:
            continue
        tags = [tag for tag, on in (("predicted", name == row.pred_label), ("label", name == label),
                                    ("filed as", name == row.true_label != label)) if on]
        lines.append(f"{md(name)}: **{p:.1%}**" + (f" ({', '.join(tags)})" if tags else ""))
    return lines


def card_title(row, label: str) -> str:
    if label == row.true_label:
        filed = f"label **{md(label)}**"
    elif label:
        filed = f"label **{md(label)}** (relabelled; filed as {md(row.true_label)})"
    else:
        filed = f"**unusable** (filed as {md(row.true_label)})"
    return (f"**{md(row.path)}** — {filed}, predicted **{md(row.pred_label)}** ({row.confidence:.0%}), "
            f"loss {row.loss:.3f}")


def photo_cards_ui(data: ReviewData, rows: pd.DataFrame, store: InspectionStore | None, actor: Actor,
                   section: str) -> None:
    """One card per photo: the photo, Grad-CAM for the predicted and the true class, probabilities, and
    the decision buttons (confirm the label, change it, or mark the photo unusable). A decision shows at once:
    the card gives the photo's label after it."""
    shown = _page_of(rows, f"{section}_page")
    cams = _card_heatmaps(data, shown)
    decisions = latest_decisions(store, data.dataset) if store is not None else {}
    flash = st.session_state.get(FLASH) or {}
    for number, row in enumerate(shown.itertuples(index=False)):
        card = f"{section}:{row.path}"
        decided = decisions.get(row.path)
        label = current_label(row, decided)
        with st.container(border=True, key=f"card-{section}-{number}"):
            st.markdown(card_title(row, label), help=f"In the dataset {md(data.dataset)}")
            photo_col, pred_col, true_col, info_col = st.columns([1, 1, 1, 1.5])
            show_image(photo_col, photo_image(data.dataset, row.path), "photo")
            show_image(pred_col, cams.get((row.path, row.pred_label)),
                       f"Heatmap (Grad-CAM): predicted {md(row.pred_label)}")
            if row.true_label != row.pred_label:
                show_image(true_col, cams.get((row.path, row.true_label)),
                           f"Heatmap (Grad-CAM): filed as {md(row.true_label)}")
            else:
                true_col.caption("Predicted = filed class: one heatmap.")
            info_col.markdown("  \n".join(probability_lines(row, data.classes, label)))
            if decided:
                info_col.info(describe_decision(decided), icon=":material/task_alt:")
            if flash.get("card") == card:
                (info_col.success if flash["kind"] == "success" else info_col.error)(flash["text"])
            if store is None:
                continue
            decision_buttons_ui(info_col, store, data, row, label, actor, card)


def decision_buttons_ui(column, store: InspectionStore, data: ReviewData, row, label: str, actor: Actor,
                        card: str) -> None:
    """Relabel (to a class other than the one it is filed under), keep that label, or drop the photo as unusable.
    The choices stay the same after a decision, so a second click repeats it (and stores nothing) instead of
    choosing something else."""
    disabled = not actor.may("relabel")
    others = [c for c in data.classes if c != row.true_label]
    label_key = f"{card}:new_label"
    column.selectbox("Correct label", others, key=label_key, index=others.index(row.pred_label)
                     if row.pred_label in others else 0, disabled=disabled)
    column.button("Relabel", key=f"{card}:relabel", on_click=_decide, disabled=disabled,
                  args=(store, data, row.path, "relabel", actor, label_key, card), width="stretch",
                  help="The photo is filed under the wrong class: train on the label chosen above.")
    confirm_col, unusable_col = column.columns(2)
    undo = label != row.true_label
    confirm_col.button(f"Back to {md(row.true_label)}" if undo else f"Keep {md(row.true_label)}", key=f"{card}:confirm",
                       on_click=_decide, disabled=disabled, width="stretch",
                       args=(store, data, row.path, "confirm", actor, None, card),
                       help=f"The label it was filed under, {md(row.true_label)}, is right"
                            + (" after all: undo the decision." if undo else "; the model is wrong."))
    unusable_col.button("Unusable", key=f"{card}:unusable", on_click=_decide, disabled=disabled or label == "",
                        args=(store, data, row.path, "unusable", actor, None, card), width="stretch",
                        help="Blurred, empty or not a product photo: leave it out of training.")


def misclassified_ui(data: ReviewData, store: InspectionStore | None, actor: Actor) -> None:
    left, right = st.columns(2)
    true_filter = left.multiselect("True class", data.classes, key="wrong_true", placeholder="all classes")
    pred_filter = right.multiselect("Predicted class", data.classes, key="wrong_pred", placeholder="all classes")
    wrong = misclassified(data.predictions, true_filter, pred_filter)
    total = int((~data.predictions["correct"]).sum())
    st.markdown(f"**{len(wrong)} of {total} wrong validation prediction(s)**, worst (highest loss) first")
    if wrong.empty:
        st.success("No wrong predictions with these filters.")
        return
    photo_cards_ui(data, wrong, store, actor, section="wrong")


# -- per-class metrics -------------------------------------------------------------------------
def metrics_table(metrics: dict) -> pd.DataFrame:
    rows = [{"class": name, **values} for name, values in metrics["per_class"].items()]
    per_class = list(metrics["per_class"].values())
    total = sum(v["support"] for v in per_class)
    rows += [{"class": "micro avg", "precision": metrics["micro_f1"], "recall": metrics["micro_f1"],
              "f1": metrics["micro_f1"], "support": total},
             {"class": "macro avg", "precision": float(np.mean([v["precision"] for v in per_class])),
              "recall": float(np.mean([v["recall"] for v in per_class])),
              "f1": metrics["macro_f1"], "support": total}]
    return pd.DataFrame(rows, columns=["class", "precision", "recall", "f1", "support"])


def metrics_ui(metrics: dict) -> pd.DataFrame:
    table = metrics_table(metrics)
    number = st.column_config.NumberColumn(format="%.3f")
    st.dataframe(table, hide_index=True, column_config={"precision": number, "recall": number, "f1": number})
    st.caption(f"Accuracy {metrics['accuracy']:.3f}: the share of all {int(table['support'].iloc[-1])} validation "
               "photos predicted right. Precision: of the photos called a class, the share that are; recall: of a "
               "class's photos, the share found; F1 weighs both; macro avg treats every class alike.")
    per_class = table.iloc[:len(metrics["per_class"])]
    figure = go.Figure([go.Bar(name=name, x=per_class["class"].map(plot_text), y=per_class[column],
                               text=per_class[column].round(2))
                        for name, column in (("precision", "precision"), ("recall", "recall"), ("F1", "f1"))])
    figure.add_hline(y=metrics["macro_f1"], line_dash="dash", line_color="black")
    figure.add_hline(y=metrics["accuracy"], line_dash="dot", line_color="gray")
    figure.update_layout(barmode="group", yaxis={"range": [0, 1.05], "title": "score"}, height=380,
                         title={"text": f"macro-F1 {metrics['macro_f1']:.2f} (dashed line), accuracy "
                                        f"{metrics['accuracy']:.2f} (dotted line)", "font": {"size": 13}},
                         margin={"l": 10, "r": 10, "t": 40, "b": 10}, legend={"orientation": "h"})
    st.plotly_chart(figure, key="metrics_chart", config=STATIC_CHART)
    return table


# -- calibration -------------------------------------------------------------------------------
def calibration_ui(data: ReviewData) -> float:
    bins = st.slider("Confidence bins", 5, 20, 10, key="calibration_bins")
    result = reliability(data.predictions, data.classes, bins)
    a, b, c, d = st.columns(4)
    a.metric("Expected calibration error", f"{result.ece:.3f}",
             help="Average gap between confidence and accuracy, weighted by the photos in each bin. 0 = calibrated.")
    b.metric("Largest bin gap", f"{result.mce:.3f}")
    c.metric("Mean confidence", pct(result.mean_confidence))
    d.metric("Accuracy", pct(result.accuracy))
    gap = result.mean_confidence - result.accuracy
    verdict = ("over-confident: it claims more than it delivers" if gap > 0.02 else
               "under-confident: it is right more often than it claims" if gap < -0.02 else "about calibrated")
    st.caption(f"On {result.photos} validation photos the model is {verdict} "
               f"(says {result.mean_confidence:.0%} on average, right {result.accuracy:.0%} of the time).")
    table = result.bins
    centres = (table["lower"] + table["upper"]) / 2
    width = float(table["upper"].iloc[0] - table["lower"].iloc[0])
    figure = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.72, 0.28], vertical_spacing=0.05)
    figure.add_trace(go.Bar(x=centres, y=table["accuracy"], width=width * 0.95, name="accuracy in bin",
                            marker_color="#1f77b4",
                            customdata=np.stack([table["count"], table["confidence"].fillna(0)], axis=1),
                            hovertemplate="confidence %{x:.2f}: right %{y:.0%} of %{customdata[0]} photo(s), "
                                          "mean confidence %{customdata[1]:.2f}<extra></extra>"), row=1, col=1)
    figure.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfect calibration",
                                line={"dash": "dash", "color": "gray"}), row=1, col=1)
    figure.add_trace(go.Scatter(x=table["confidence"], y=table["accuracy"], mode="markers", name="bin mean",
                                marker={"color": "#d62728"}), row=1, col=1)
    figure.add_trace(go.Bar(x=centres, y=table["count"], width=width * 0.95, name="photos", marker_color="#aaaaaa"),
                     row=2, col=1)
    figure.update_xaxes(range=[0, 1], title_text="confidence (top class probability)", row=2, col=1)
    figure.update_yaxes(range=[0, 1.02], title_text="accuracy", row=1, col=1)
    figure.update_yaxes(title_text="photos", row=2, col=1)
    figure.update_layout(height=480, margin={"l": 10, "r": 10, "t": 40, "b": 10},
                         legend={"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 0})
    st.plotly_chart(figure, key="reliability_chart", config=STATIC_CHART)
    return result.ece


# -- inspector corrections ---------------------------------------------------------------------
def _decide_inspection(store: InspectionStore, data: ReviewData, correction: dict, accept: bool, actor: Actor) -> None:
    try:
        decide_inspection(store, data, correction, accept, actor)
    except (ReviewError, PermissionError) as exc:
        st.session_state[FLASH] = {"card": f"inspection:{correction['id']}", "kind": "error", "text": md(exc)}
        return
    st.session_state[FLASH] = {"card": "inspection", "kind": "success",
                               "text": f"Inspector correction #{correction['id']} "
                                       f"{'confirmed' if accept else 'rejected'}."}


def inspected_names(store: InspectionStore, corrections: list[dict]) -> dict[int, str]:
    """Correction id -> the file name the photo was uploaded under (the stored copy is named by its hash; that
    name is the fallback when the inspection is not in the log)."""
    ids = [int(c["inspection_id"]) for c in corrections if c.get("inspection_id") is not None]
    log = store.inspections_by_id(ids) if ids else None
    uploaded = dict(zip(log["id"], log["file_name"])) if log is not None else {}
    return {c["id"]: uploaded.get(c.get("inspection_id")) or Path(c["photo_path"]).name for c in corrections}


def proposal_text(record: dict, name: str) -> str:
    """"ana proposes to relabel **scratch-07.png** as **pit** (the model said ok, run …), 2026-11-30 14:02 UTC"."""
    proposal = (f"relabel **{md(name)}** as **{md(record['new_label'])}**" if record["action"] == "relabel" else
                f"mark **{md(name)}** **unusable**" if record["action"] == "unusable" else
                f"confirm **{md(name)}** as **{md(record['new_label'] or record['original_label'])}**")
    return (f"{md(record['who'] or 'An inspector')} proposes to {proposal} (the model said "
            f"{md(record['model_label'] or '?')}, run {md(record['run_id'] or '?')}), "
            f"{str(record['time'])[:16].replace('T', ' ')} UTC")


def inspection_ui(data: ReviewData, store: InspectionStore, actor: Actor) -> int:
    """Inspectors' proposals from the Inspect page, for the engineer to confirm or reject; returns how many wait."""
    pending = inspection_corrections(store, data)
    flash = st.session_state.get(FLASH) or {}
    if flash.get("card") == "inspection":
        st.success(flash["text"])
    if pending.empty:
        st.info("No inspector corrections are waiting for this dataset. Inspectors propose them on the Inspect "
                "page when the model got a photo wrong.")
        return 0
    st.markdown(f"**{len(pending)} inspector correction(s) waiting for confirmation**")
    records = plain_records(pending.head(20))
    names = inspected_names(store, records)
    for record in records:
        with st.container(border=True, key=f"proposal-{record['id']}"):
            photo_col, text_col, buttons = st.columns([1, 2.4, 1])
            show_image(photo_col, photo_image("", record["photo_path"]), "")  # stored inspection photos: own path
            text_col.markdown(proposal_text(record, names[record["id"]]),
                              help=f"Stored copy: {md(record['photo_path'])}")
            if record.get("note"):
                text_col.text(f"Note: {record['note']}")
            if flash.get("card") == f"inspection:{record['id']}":
                text_col.error(flash["text"])
            buttons.button("Confirm", key=f"inspection:{record['id']}:yes", on_click=_decide_inspection,
                           args=(store, data, record, True, actor), disabled=not actor.may("confirm"), type="primary")
            buttons.button("Reject", key=f"inspection:{record['id']}:no", on_click=_decide_inspection,
                           args=(store, data, record, False, actor), disabled=not actor.may("confirm"))
    return len(pending)


# -- retrain -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class RetrainPlan:
    """What "Retrain with corrections" will start, for the confirmation: settings, photos and the time."""
    config: object  # TrainConfig of the retrain
    corrections: int
    train_photos: int
    val_photos: int
    seconds: float  # expected wall time: the estimate, capped by the time budget

    def text(self) -> str:
        from defect_model.train.timing import format_duration

        cfg = self.config
        budget = f" (its time budget: at most {cfg.time_budget_min:g} min)" if cfg.time_budget_min else ""
        return (f"About **{format_duration(self.seconds)}** of training on this machine{budget}: "
                f"{cfg.backbone} at {cfg.image_size} px, up to {cfg.epochs} epoch(s) over {self.train_photos} "
                f"training photos ({self.val_photos} for validation), starting from this run's weights with "
                f"{self.corrections} correction(s) applied.")


def retrain_plan(data: ReviewData, corrections: int) -> RetrainPlan:
    """The retrain's settings as defect_model.workflows.review.retrain_with_corrections derives them, and its estimate."""
    from defect_model.train.timing import STARTUP_S, estimate_training_time
    from defect_model.train.presets import warm_retrain

    cfg = warm_retrain(data.config, data.run.path.resolve(), data.run.training_seconds(), corrections)
    val = len(data.predictions)
    try:
        split = pd.read_csv(data.run.split)
        train = int((split["split"] == "train").sum())
    except (OSError, KeyError, pd.errors.ParserError, pd.errors.EmptyDataError):
        train = val * 4  # no split file: the default 80/20 split
    estimate = estimate_training_time(cfg.backbone, cfg.image_size, cfg.epochs, cfg.epoch_images or train, val)
    seconds = estimate.seconds
    if cfg.time_budget_min:
        seconds = min(seconds, STARTUP_S + cfg.time_budget_min * 60)
    return RetrainPlan(cfg, corrections, train, val, seconds)


def _start_retrain(data: ReviewData, store: InspectionStore, actor: Actor) -> None:
    """The confirmation's button: start the job; what happened is shown on the page."""
    from defect_model.runs.jobs import JobError

    try:
        new_run = retrain_with_corrections(data.run, store, actor)
    except (ReviewError, JobError, PermissionError) as exc:
        st.session_state[FLASH] = {"card": "retrain", "kind": "error", "text": md(exc)}
        return
    st.session_state["retrain_started"] = new_run.run_id


@st.dialog("Start a retrain with corrections?", width="large")
def confirm_retrain_dialog(data: ReviewData, store: InspectionStore, actor: Actor, plan: RetrainPlan) -> None:
    st.markdown(plan.text())
    st.caption(f"A new run next to {md(data.run.run_id)}; the original photos and this run are not changed. The new "
               "model is not used for inspection until an admin makes it active on the Models page.")
    start_col, cancel_col = st.columns(2)
    if start_col.button("Start the retrain", type="primary", key="retrain_confirm", icon=":material/play_arrow:",
                        on_click=_start_retrain, args=(data, store, actor), width="stretch"):
        st.rerun()
    if cancel_col.button("Cancel", key="retrain_cancel", width="stretch"):
        st.rerun()


def retrain_ui(data: ReviewData, store: InspectionStore, actor: Actor) -> RunDir | None:
    """Confirmed decisions for this dataset and the button that retrains with them, after a confirmation that
    shows the time it will take; returns the new run."""
    from defect_model.runs.jobs import running_job

    counts = decision_counts(store, data.dataset)
    decided = latest_decisions(store, data.dataset)
    st.markdown(f"Confirmed decisions for {md(data.dataset)}: **{counts['relabel']} relabelled**, "
                f"**{counts['unusable']} unusable** (dropped), {counts['confirm']} label(s) confirmed as they were.")
    if decided:
        table = pd.DataFrame(decided.values())[["photo_path", "action", "original_label", "new_label", "source",
                                                "who", "decided_at"]]
        st.dataframe(table, hide_index=True)
    cfg = data.config
    st.caption(f"The retrain uses run {md(data.run.run_id)}'s settings ({cfg.backbone}, {cfg.image_size}px) and its "
               "train/val split, with these corrections applied, and starts from its weights. The original photos "
               "are never changed.")
    busy = running_job()
    if busy is not None:
        st.info(f"Training job {md(busy.run_id)} is running; a retrain can start when it has finished.")
    flash = st.session_state.get(FLASH) or {}
    if flash.get("card") == "retrain":
        st.error(flash["text"])
    if not decided:
        st.caption("Nothing to retrain with yet: relabel, keep or drop photos in the confusion matrix or under "
                   "Misclassified, or confirm inspector corrections.")
    if st.button("Retrain with corrections", type="primary", key="retrain", icon=":material/model_training:",
                 disabled=not actor.may("train") or not decided or busy is not None,
                 help="Shows how long it will take, then starts a background training job on your confirmation "
                      "(the Train page shows its progress)."):
        st.session_state.pop(FLASH, None)
        confirm_retrain_dialog(data, store, actor, retrain_plan(data, len(decided)))
    started = st.session_state.get("retrain_started")
    if started:
        retrain_status_ui(started)
    return None if not started else RunDir(data.run.path.parent / started)


@st.fragment(run_every=3)
def retrain_status_ui(run_id: str) -> None:
    from defect_model.runs.folders import resolve_run

    try:
        run = resolve_run(run_id)
    except FileNotFoundError:
        return
    state = run.status().get("state", "")
    message = f"Retrain {md(run_id)}: **{md(state)}**."
    if state == "done":
        st.success(message + " Compare it with this run on the Models page before making it active.")
        st.page_link("pages/models.py", label="Open Models", icon=":material/inventory_2:")
    elif state in ("failed", "cancelled"):
        st.error(message + f" {md(run.status().get('error', ''))} See {md(run.log)}.")
    else:
        job_progress_ui(run)
        st.info(message + " Follow it on the Train page.")
        st.page_link("pages/train.py", label="Open Train", icon=":material/model_training:")
