"""Widgets of the Review page, plus the two both pages share: the confusion-matrix figure and the
quality header (defect miss rate and per-class recall beside accuracy; a collapsed model in red)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from defect_model.workflows.calibration import reliability
from defect_model.common.quality import ModelQuality, assess
from defect_model.workflows.review import ReviewData, ReviewError, confusion_counts, load_review, row_normalised
from defect_model.runs.folders import RunDir, list_runs
from defect_model.runs.store import InspectionStore
from ui.resources import active_run
from ui.layout import metric_row
from ui.run_picker import run_select
from ui.text import md, plot_text

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
        metric_row(numbers)
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
    except Exception as exc:  # a bad path, a locked or damaged file, an unreachable server
        from defect_model.database import location, shown_url

        st.error(md(f"{shown_url(location())}: cannot open the corrections database ({exc}). Check that the folder is "
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
    metric_row([("Expected calibration error", f"{result.ece:.3f}", "Average gap between confidence and accuracy, "
                 "weighted by the photos in each bin. 0 = calibrated."), ("Largest bin gap", f"{result.mce:.3f}", None),
                ("Mean confidence", pct(result.mean_confidence), None), ("Accuracy", pct(result.accuracy), None)])
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
