"""A training run's events.jsonl turned into progress, ETA and curves (plotly figures). No streamlit here.

A resumed run appends a new `start` event and repeats steps from its checkpoint; the last
occurrence of each step and of each epoch wins.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import pandas as pd
import plotly.graph_objects as go

# Steps at the start of a process are slow (allocator and kernel warm-up): not used for the ETA.
WARMUP_STEPS = 2


@dataclass
class Progress:
    started: bool  # a `start` event was seen: photos are decoded and training began
    epoch: int
    epochs: int
    step: int
    steps_per_epoch: int
    global_step: int
    total_steps: int
    eta_s: float | None
    images_per_s: float | None
    end_state: str | None  # done / cancelled / failed once the process wrote its `end` event
    error: str = ""

    @property
    def fraction(self) -> float:
        return min(1.0, self.global_step / self.total_steps) if self.total_steps else 0.0

    def text(self) -> str:
        if not self.started:
            return "Starting: loading the photos and building the model…"
        return (f"Epoch {self.epoch}/{self.epochs} · step {self.step}/{self.steps_per_epoch} · "
                f"{self.global_step}/{self.total_steps} steps ({self.fraction:.0%})")


def _segment(events: list[dict]) -> list[dict]:
    """Events since the last `start` (the current process)."""
    starts = [i for i, e in enumerate(events) if e.get("type") == "start"]
    return events[starts[-1]:] if starts else []


def read_progress(events: list[dict], now: float | None = None) -> Progress:
    segment = _segment(events)
    start = segment[0] if segment else {}
    steps = [e for e in segment if e.get("type") == "step"]
    end = next((e for e in reversed(events) if e.get("type") == "end"), None)
    if end is not None and segment and events.index(end) < events.index(segment[0]):
        end = None  # the end of an earlier process, before a resume
    last = steps[-1] if steps else {}
    steps_per_epoch = int(start.get("steps_per_epoch", 0))
    done_steps = int(last.get("global_step", (int(start.get("start_epoch", 1)) - 1) * steps_per_epoch
                              + int(start.get("skip_steps", 0)))) if start else 0
    return Progress(
        started=bool(start),
        epoch=int(last.get("epoch", start.get("start_epoch", 1))),
        epochs=int(start.get("epochs", 0)),
        step=int(last.get("step", start.get("skip_steps", 0))),
        steps_per_epoch=steps_per_epoch,
        global_step=done_steps,
        total_steps=int(start.get("total_steps", 0)),
        eta_s=_eta(start, steps, [e for e in events if e.get("type") == "epoch"], events, now),
        images_per_s=float(last["images_per_s"]) if last.get("images_per_s") else None,
        end_state=end.get("state") if end else None,
        error=end.get("error", "") if end else "",
    )


def _eta(start: dict, steps: list[dict], epochs_seen: list[dict], events: list[dict],
         now: float | None) -> float | None:
    """Seconds left: remaining steps at this process's pace, plus the validation passes still to come."""
    timed = steps[WARMUP_STEPS:]
    gaps = [b["time"] - a["time"] for a, b in zip(timed, timed[1:]) if a["epoch"] == b["epoch"]]
    if not gaps:
        return None
    seconds_per_step = statistics.median(gaps)
    if epochs_seen:  # validation time: from the epoch's last step to its epoch event (any process of the run)
        epoch = epochs_seen[-1]
        before = [e["time"] for e in events if e.get("type") == "step" and e["epoch"] == epoch["epoch"]
                  and e["time"] <= epoch["time"]]
        eval_s = max(0.0, epoch["time"] - before[-1]) if before else 0.0
    else:  # a forward pass is about a third of a training step
        per_photo = seconds_per_step * start.get("steps_per_epoch", 0) / max(1, start.get("train_images", 1))
        eval_s = per_photo * start.get("val_images", 0) / 3
    last = steps[-1]
    remaining_steps = max(0, int(start.get("total_steps", 0)) - int(last["global_step"]))
    remaining_evals = max(0, int(start.get("epochs", 0)) - int(last["epoch"]) + 1)
    eta = remaining_steps * seconds_per_step + remaining_evals * eval_s
    if now is not None:
        eta -= max(0.0, now - last["time"])
    return max(0.0, eta)


def curves(events: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-step train loss and learning rate, per-epoch losses and validation scores)."""
    steps = {e["global_step"]: e for e in events if e.get("type") == "step"}
    epochs = {e["epoch"]: e for e in events if e.get("type") == "epoch"}
    step_table = pd.DataFrame(
        [{"global_step": s["global_step"], "epoch": s["global_step"] / max(1, s["steps_per_epoch"]),
          "loss": s["loss"], "lr": s["lr"]} for _, s in sorted(steps.items())],
        columns=["global_step", "epoch", "loss", "lr"])
    epoch_table = pd.DataFrame(
        [{key: e.get(key) for key in ("epoch", "complete", "train_loss", "val_loss", "val_accuracy",
                                      "val_micro_f1", "val_macro_f1", "epoch_seconds")}
         for _, e in sorted(epochs.items())],
        columns=["epoch", "complete", "train_loss", "val_loss", "val_accuracy", "val_micro_f1", "val_macro_f1",
                 "epoch_seconds"])
    return step_table, epoch_table


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
