"""The Monitor page's charts: p-charts of the verdict rates, and what the camera sees against the validation
photos (drift)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from defect_model.workflows.monitor import (DRIFT_ALPHA, DRIFT_MIN_EFFECT, MIN_PHOTOS, RATES, Drift, MonitorError,
                                            drift_report, p_chart, validation_reference)
from ui.monitor_widgets import LogView, csv_download_ui
from ui.resources import predictor_for
from ui.text import code, md

OUT_COLOUR = "#c62828"
FEATURE_LABELS = {"brightness": "brightness (mean grey, 0-255)", "contrast": "contrast (grey std, 0-255)",
                  "width": "width (px)", "height": "height (px)", "confidence": "confidence (top probability)",
                  "unfamiliar": "unfamiliar score", "unfamiliar_score": "unfamiliar score"}


def p_chart_figure(table: pd.DataFrame, center: float, title: str) -> go.Figure:
    """The rate per period, its 3-sigma limits (stepped: they follow each period's count), the centre line, the
    reference periods shaded and the points outside the limits in red."""
    figure = go.Figure()
    x = table["period"]
    if not math.isnan(center):
        for name, column in (("upper limit", "ucl"), ("lower limit", "lcl")):
            figure.add_trace(go.Scatter(x=x, y=table[column], name=name, mode="lines", line_shape="hvh",
                                        line=dict(color="#888", dash="dash", width=1), hoverinfo="skip"))
        figure.add_hline(y=center, line_color="#555", line_width=1,
                         annotation_text=f"p̄ {center:.1%}", annotation_position="top left")
    figure.add_trace(go.Scatter(x=x, y=table["p"], name=title, mode="lines+markers", line=dict(color="#1565c0"),
                                customdata=np.stack([table["count"], table["n"]], axis=1),
                                hovertemplate="%{x}: %{y:.1%} (%{customdata[0]} of %{customdata[1]})<extra></extra>"))
    out = table[table["out"]]
    figure.add_trace(go.Scatter(x=out["period"], y=out["p"], name="outside the limits", mode="markers",
                                marker=dict(color=OUT_COLOUR, size=13, symbol="circle-open", line=dict(width=3)),
                                hovertemplate="%{x}: %{y:.1%} outside the limits<extra></extra>"))
    reference = table[table["reference"]]
    if len(reference):
        figure.add_vrect(x0=reference["period"].iloc[0], x1=reference["period"].iloc[-1], fillcolor="#90caf9",
                         opacity=0.18, line_width=0, annotation_text="reference", annotation_position="top left")
    figure.update_layout(title=title, height=330, margin=dict(l=0, r=0, t=40, b=0), hovermode="closest",
                         yaxis=dict(tickformat=".0%", rangemode="tozero", title=None), xaxis=dict(type="category"),
                         legend=dict(orientation="h", y=-0.2))
    return figure


def control_charts_ui(view: LogView) -> dict[str, pd.DataFrame]:
    """One p-chart per rate, what is outside the limits, and the numbers as CSV; returns the tables."""
    if view.reference is None:
        st.caption("No reference period: the charts show the rates without control limits.")
    else:
        first, last = view.reference
        st.caption(f"Control limits: p̄ ± 3·√(p̄(1−p̄)/n) per point, p̄ from {first:%Y-%m-%d %H:%M} to "
                   f"{last:%Y-%m-%d %H:%M} UTC (shaded). Photos that could not be inspected are not counted.")
    tables = {}
    for rate, title in RATES.items():
        table, center = p_chart(view.log, rate, view.periods, view.reference)
        tables[rate] = table
        st.plotly_chart(p_chart_figure(table, center, title.capitalize()), key=f"monitor_chart_{rate}",
                        config={"displayModeBar": False})
        if math.isnan(center) and view.reference is not None:
            st.caption(f"No inspections in the reference period, so no limits for the {title}.")
        outside = table[table["out"]]
        if len(outside):
            st.error(f"{title.capitalize()} outside its control limits: " + "; ".join(
                f"{md(row.period)} {row.p:.1%} ({row.count} of {row.n}; limits {row.lcl:.1%}–{row.ucl:.1%})"
                for row in outside.itertuples()), icon=":material/report:")
    both = pd.concat([t.assign(rate=rate) for rate, t in tables.items()], ignore_index=True)
    csv_download_ui(both.drop(columns="start"), "control-chart", "monitor_chart_csv")
    return tables


# -- drift ---------------------------------------------------------------------------------------
def reference_of(view: LogView) -> dict[str, list[float]] | None:
    """The model's validation photos as the drift reference (read from its photos the first time, then cached)."""
    run = view.run
    try:
        predictor = predictor_for(run)
    except Exception:  # no unfamiliar scores without the model; the photo statistics still come
        predictor = None
    key = f"{run.checkpoint.stat().st_mtime_ns}" if predictor is not None else ""
    try:
        with st.spinner("Reading the model's validation photos once (kept in its run folder)…"):
            return validation_reference(run, predictor, key)
    except (MonitorError, OSError, ValueError) as exc:
        st.error(md(exc), icon=":material/error:")
        return None


def drift_table(report: list[Drift]) -> pd.DataFrame:
    return pd.DataFrame([{"feature": d.feature, "drifted": d.drifted, "photos logged": d.n_log,
                          "validation photos": d.n_reference, "median logged": d.log_median,
                          "median validation": d.reference_median, "KS D": d.statistic, "p-value": d.p_value}
                         for d in report])


def ecdf(values) -> tuple[np.ndarray, np.ndarray]:
    values = np.sort(np.asarray(values, dtype=np.float64))
    return values, np.arange(1, len(values) + 1) / max(1, len(values))


def drift_figure(log: pd.DataFrame, reference: dict[str, list[float]], report: list[Drift]) -> go.Figure:
    """Per feature, the cumulative distribution of the logged photos over that of the validation photos (the
    Kolmogorov-Smirnov D is the largest vertical gap between them)."""
    columns = 3
    rows = max(1, math.ceil(len(report) / columns))
    titles = [f"{FEATURE_LABELS.get(d.feature, d.feature)}{' — DRIFT' if d.drifted else ''}" for d in report]
    figure = make_subplots(rows=rows, cols=columns, subplot_titles=titles, vertical_spacing=0.18)
    for index, d in enumerate(report):
        row, col = index // columns + 1, index % columns + 1
        for name, values, colour in (("validation photos", reference[d.feature], "#9aa5b1"),
                                     ("logged photos", pd.to_numeric(log[d.feature], errors="coerce").dropna(),
                                      OUT_COLOUR if d.drifted else "#1565c0")):
            x, y = ecdf([v for v in values if v is not None])
            figure.add_trace(go.Scatter(x=x, y=y, mode="lines", line_shape="hv", name=name, legendgroup=name,
                                        showlegend=index == 0, line=dict(color=colour)), row=row, col=col)
    figure.update_layout(height=260 * rows + 70, margin=dict(l=0, r=0, t=70, b=0),
                         legend=dict(orientation="h", y=1.0, yanchor="top", yref="container"))
    return figure


def drift_ui(view: LogView) -> list[Drift]:
    """The drift test per feature, the alarm, the distributions and the CSV."""
    if view.run is None:
        st.info("Choose one model version above: drift compares its inspections with its own validation photos.",
                icon=":material/filter_alt:")
        return []
    reference = reference_of(view)
    if reference is None:
        return []
    report = drift_report(view.log, reference)
    if not report:
        st.info("No photo statistics logged for this selection yet (inspections from before the Monitor have none).",
                icon=":material/info:")
        return report
    drifted = [d for d in report if d.drifted]
    if drifted:
        st.error("Drift: the photos inspected differ from the model's validation photos in "
                 + "; ".join(md(d.text()) for d in drifted) + ". Check the camera, the lighting and the parts; "
                 "label some of these photos (the Label these next tab) and retrain.", icon=":material/warning:")
    else:
        st.success(f"No drift: every feature within the test's limits, {code(view.run.run_id)}.",
                   icon=":material/check_circle:")
    st.caption(f"Two-sample Kolmogorov-Smirnov test per feature; drift when p < {DRIFT_ALPHA} and D ≥ "
               f"{DRIFT_MIN_EFFECT} with at least {MIN_PHOTOS} photos logged.")
    table = drift_table(report)
    st.dataframe(table, hide_index=True, key="monitor_drift_table",
                 column_config={"p-value": st.column_config.NumberColumn(format="%.2g"),
                                "median logged": st.column_config.NumberColumn(format="%.3g"),
                                "median validation": st.column_config.NumberColumn(format="%.3g"),
                                "KS D": st.column_config.NumberColumn(format="%.2f")})
    csv_download_ui(table, "drift", "monitor_drift_csv")
    st.plotly_chart(drift_figure(view.log, reference, report), key="monitor_drift_chart",
                    config={"displayModeBar": False})
    return report
