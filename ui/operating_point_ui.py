"""The Review page's operating point: escapes against review load over the validation photos, the least review
load for a limit on escapes, per-class detail, and saving the point with the model version."""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from defect_model.access.accounts import Actor, PermissionDenied
from defect_model.serve.verdicts import DEFAULT_THRESHOLD
from defect_model.workflows.operating_point import (OperatingPoint, least_review_load, load_point, per_class,
                                                    probability_table, save_point, sweep)
from defect_model.workflows.review import ReviewData
from ui.layout import metric_row
from ui.text import code, md

STATIC_CHART = {"displayModeBar": False}


def operating_point_ui(data: ReviewData, actor: Actor) -> OperatingPoint | None:
    """Returns the point shown (None for a model without good classes)."""
    good = [c for c in data.config.good_classes if c in data.classes]
    if not good:
        st.info("No class of this model is marked good, so nothing passes: every photo is rejected or sent to a "
                "person, and no defect can escape. Mark the good classes when training to choose an operating "
                "point.", icon=":material/info:")
        return None
    saved = load_point(data.run)
    probs, labels = probability_table(data.predictions, data.classes)
    unfamiliar = unfamiliar_flags(data)
    st.caption(f"Over the {len(labels)} validation photos of {code(data.run.run_id)}: a photo **passes** when a good "
               f"class ({md(', '.join(good))}) is the most likely one and its probability clears that class's "
               "pass threshold; it is **rejected** when a defect class is the most likely one and clears the defect "
               "threshold; otherwise it goes to a person. Escapes are defective photos that would pass. "
               + ("This model predates the unfamiliar-photo check: its validation photos carry no unfamiliar flag."
                  if unfamiliar is None else
                  f"{int(unfamiliar.sum())} of them, unlike the training photos, go to a person at every point."))
    if saved is not None:
        st.success(f"Saved with this model: pass from {md(saved.describe_pass(3))}, reject from "
                   f"{saved.defect_threshold:.2f} (escapes {saved.escape_rate:.1%}, review load "
                   f"{saved.review_load:.1%} on validation). Inspect and the hot folder use it.",
                   icon=":material/check_circle:")
    limit_col, defect_col = st.columns(2)
    limit = limit_col.number_input("At most this share of escapes (%)", 0.0, 100.0,
                                   100 * (saved.max_escape_rate if saved and saved.max_escape_rate is not None
                                          else 0.05), 0.5, key="op_max_escapes",
                                   help="Defective photos that would pass, out of all defective validation photos.")
    defect = defect_col.slider("Defect threshold (reject from)", 0.0, 1.0,
                               saved.defect_threshold if saved else DEFAULT_THRESHOLD, 0.01, key="op_defect",
                               help="A defect class this likely is rejected without a person; below it a person "
                                    "decides. It changes the review load and the good photos rejected, never the "
                                    "escapes.")
    best = least_review_load(probs, labels, data.classes, good, limit / 100, defect, unfamiliar)
    curve = sweep(probs, labels, data.classes, good, defect, unfamiliar)
    st.plotly_chart(trade_off_figure(curve, best, limit / 100), key="op_chart", config=STATIC_CHART)
    metric_row([("Pass from", "per class", best.describe_pass(3)) if best.class_thresholds else
                ("Pass from", f"{best.good_threshold:.3f}", None),
                ("Escapes", f"{best.escape_rate:.1%}", None), ("Review load", f"{best.review_load:.1%}", None),
                ("Good photos rejected", f"{best.false_reject_rate:.1%}", None)])
    if best.class_thresholds:
        st.caption("Each good class passes from its own probability (the threshold column): the least review load "
                   "for this limit, lower than one threshold for every good class gives.")
    st.markdown("**Per class at this point** (validation photos)")
    st.dataframe(per_class(probs, labels, data.classes, good, best.passes_from, defect, unfamiliar),
                 hide_index=True, key="op_per_class", column_config={
                     "threshold": st.column_config.NumberColumn(
                         "threshold", format="%.3f", help="A good class passes from this probability; a defect "
                                                          "class is rejected from it."),
                     **{name: st.column_config.ProgressColumn(name, min_value=0, max_value=1, format="percent")
                        for name in ("passed", "rejected", "to a person")}})
    if st.button("Save this operating point with the model", key="op_save", icon=":material/save:",
                 help="Inspect and the hot folder then decide with it; the Inspect slider stays a logged, "
                      "temporary override."):
        try:
            save_point(data.run, best, actor)
            st.toast("Operating point saved.", icon=":material/check:")
            st.rerun()
        except (PermissionDenied, ValueError, OSError) as exc:
            st.error(md(str(exc)), icon=":material/error:")
    return best


def unfamiliar_flags(data: ReviewData):
    """Which validation photos the model's unfamiliar check flags (None for a model from before the check)."""
    if "unfamiliar" not in data.predictions.columns:
        return None
    return data.predictions["unfamiliar"].to_numpy(dtype=bool)


def trade_off_figure(curve, best: OperatingPoint, limit: float) -> go.Figure:
    figure = go.Figure()
    figure.add_trace(go.Scatter(
        x=curve["review_load"], y=curve["escape_rate"], mode="lines+markers", name="one pass threshold",
        line={"shape": "hv"}, customdata=curve[["good_threshold", "false_reject_rate"]].to_numpy(),
        hovertemplate="pass from %{customdata[0]:.3f}: escapes %{y:.1%}, review %{x:.1%}, good photos rejected "
                      "%{customdata[1]:.1%}<extra></extra>"))
    figure.add_hline(y=limit, line_dash="dash", line_color="#c62828", annotation_text=f"at most {limit:.1%} escapes")
    name = "chosen point (per-class thresholds)" if best.class_thresholds else "chosen point"
    figure.add_trace(go.Scatter(x=[best.review_load], y=[best.escape_rate], mode="markers", name=name,
                                marker={"size": 14, "color": "#2e7d32", "symbol": "star"}))
    # The legend above the plot: below it, a narrow page put it over the x-axis title.
    figure.update_layout(height=400, margin={"l": 10, "r": 10, "t": 50, "b": 10},
                         legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "xanchor": "left", "x": 0},
                         xaxis={"title": "review load (photos sent to a person)", "tickformat": ".0%"},
                         yaxis={"title": "escape rate (defective photos that pass)", "tickformat": ".0%"})
    return figure

