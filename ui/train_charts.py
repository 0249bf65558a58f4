"""A training run's curves as plotly figures (the numbers come from defect_model.runs.events). No streamlit here."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go


def _figure(title: str, y_title: str, height: int = 320) -> go.Figure:
    figure = go.Figure()
    figure.update_layout(title=dict(text=title, x=0, font=dict(size=15)), height=height,
                         margin=dict(l=10, r=10, t=40, b=10), xaxis_title="epoch", yaxis_title=y_title,
                         legend=dict(orientation="h", yanchor="top", y=-0.3, xanchor="left", x=0))
    return figure


def _epoch_axis(figure: go.Figure, epochs: int) -> go.Figure:
    if epochs:
        figure.update_xaxes(range=[0, max(epochs, 1) * 1.02], dtick=max(1, round(epochs / 10)))
    return figure


def loss_figure(steps: pd.DataFrame, epochs: pd.DataFrame, total_epochs: int = 0) -> go.Figure:
    figure = _figure("Loss", "cross-entropy")
    figure.add_scatter(x=steps["epoch"], y=steps["loss"], mode="lines", name="train (per step)",
                       line=dict(width=1, color="#9ecae1"))
    figure.add_scatter(x=epochs["epoch"], y=epochs["train_loss"], mode="lines+markers", name="train (epoch mean)",
                       line=dict(color="#1f77b4"))
    figure.add_scatter(x=epochs["epoch"], y=epochs["val_loss"], mode="lines+markers", name="validation",
                       line=dict(color="#ff7f0e"))
    return _epoch_axis(figure, total_epochs)


def lr_figure(steps: pd.DataFrame, total_epochs: int = 0) -> go.Figure:
    figure = _figure("Learning rate", "learning rate")
    figure.add_scatter(x=steps["epoch"], y=steps["lr"], mode="lines", name="learning rate",
                       line=dict(color="#2ca02c"), showlegend=False)
    figure.update_yaxes(exponentformat="e", rangemode="tozero")
    return _epoch_axis(figure, total_epochs)


def scores_figure(epochs: pd.DataFrame, total_epochs: int = 0) -> go.Figure:
    figure = _figure("Validation accuracy and F1", "score")
    for column, name, color in (("val_accuracy", "accuracy", "#d62728"), ("val_macro_f1", "macro-F1", "#9467bd"),
                                ("val_micro_f1", "micro-F1", "#8c564b")):
        figure.add_scatter(x=epochs["epoch"], y=epochs[column], mode="lines+markers", name=name,
                           line=dict(color=color))
    figure.update_yaxes(range=[0, 1.02], tickformat=".0%")
    if epochs.empty:
        figure.add_annotation(text="shown after each epoch's validation", x=0.5, y=0.5, xref="paper", yref="paper",
                              showarrow=False, font=dict(color="gray"))
    return _epoch_axis(figure, total_epochs)
