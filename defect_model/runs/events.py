"""A run's event stream, `events.jsonl`: its one writer, its schema, and every reader of it.

One JSON object a line, appended by the training process (rank 0 only). Types, in the order a run writes them:
- `decision` {text}: what the preset or the engine decided, and why (before `start`, and on the way);
- `start` {run_id, classes, train_images, val_images, epochs, steps_per_epoch, total_steps, resumed,
  start_epoch, skip_steps, unreadable, config}: a training process began (a resume writes another);
- `step` {epoch, step, steps_per_epoch, global_step, total_steps, loss, lr, images_per_s} (over several training
  processes: the loss averaged over them, images/s counting all their photos);
- `checkpoint` {epoch, step, steps_per_epoch}: a mid-epoch checkpoint (every `checkpoint_every_min`), from
  which a killed run resumes after `step`; no validation is run for it;
- `plan` {epochs, total_steps, text}: a time budget re-planned the epochs after measuring the first;
- `epoch` {epoch, epochs, complete, train_loss, val_loss, val_accuracy, val_micro_f1, val_macro_f1,
  worst_recall, worst_class, defect_miss_rate, false_reject_rate, collapsed, problems, best, epoch_seconds,
  elapsed_s, eta_s, processes?, rank_weights?} (several processes: how many, and each one's weights
  fingerprint, checked equal, `distributed.weights_fingerprint`);
- `warning` {text, early?}: a run still failing while it runs (early), or a useless model at the end;
- `end` {state: done | cancelled | failed, error?, val_accuracy?, val_macro_f1?, collapsed?, elapsed_s?}.
Every event also has `type` and `time` (seconds since the epoch).

A resumed run appends a new `start` and repeats steps from its checkpoint; readers let the last report of
each step and epoch win. A torn line (a crash or a full disk mid-write) is skipped, never the end of reading.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

# Steps at the start of a process are slow (allocator and kernel warm-up): left out of speed and ETA.
WARMUP_STEPS = 2

Callback = Callable[[dict], None]


class EventLog:
    """Appends each event as one JSON line to a run's events.jsonl."""

    def __init__(self, path: Path):
        self.path = path

    def __call__(self, event: dict) -> None:
        try:
            with self.path.open("a") as handle:
                handle.write(json.dumps(event) + "\n")
        except OSError as exc:
            from defect_model.common.durable import disk_full

            raise disk_full(exc, self.path.parent) or exc


class Emitter:
    """Sends an event to every callback; a process that is not rank 0 emits nothing."""

    def __init__(self, callbacks: Iterable[Callback], is_main: bool = True):
        self.callbacks = list(callbacks) if is_main else []

    def __call__(self, kind: str, **fields) -> None:
        event = {"type": kind, "time": time.time(), **fields}
        for callback in self.callbacks:
            callback(event)


def _parse(lines: Iterable[str]) -> list[dict]:
    events = []
    for line in lines:
        line = line.strip()
        if not line:
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue  # torn by a crash or a full disk: the lines after it still count
        if isinstance(event, dict):
            events.append(event)
    return events


def read_events(path: Path) -> list[dict]:
    """Every event of the file (none when it does not exist yet)."""
    try:
        with path.open() as handle:
            return _parse(handle)
    except FileNotFoundError:
        return []


class EventTail:
    """Follows a growing events.jsonl: each `update()` reads only the lines written since the last one.

    A last line without its newline is still being written: it is read once it is complete.
    """

    def __init__(self, path: Path):
        self.path = path
        self.offset = 0
        self.events: list[dict] = []

    def update(self) -> list[dict]:
        """The events added since the last call (and appended to `self.events`)."""
        try:
            with self.path.open("rb") as handle:
                if handle.seek(0, 2) < self.offset:  # replaced by a shorter file: start over
                    self.offset, self.events = 0, []
                handle.seek(self.offset)
                chunk = handle.read()
        except FileNotFoundError:
            return []
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self.offset += len(complete)
        new = _parse(complete.decode("utf-8", errors="replace").splitlines())
        self.events.extend(new)
        return new


# -- what the events say -----------------------------------------------------------------------

def of_type(events: list[dict], kind: str) -> list[dict]:
    return [e for e in events if e.get("type") == kind]


def last_per_epoch(events: list[dict]) -> list[dict]:
    """Each epoch's last report, in epoch order (a resumed run repeats the epoch it had started)."""
    return [e for _, e in sorted({e["epoch"]: e for e in of_type(events, "epoch")}.items())]


def decisions(events: list[dict]) -> list[str]:
    return [e["text"] for e in of_type(events, "decision")]


def training_seconds(events: list[dict]) -> float | None:
    """Training time: the end event's, else the last epoch's elapsed time."""
    seconds = None
    for event in events:
        if event.get("type") in ("end", "epoch") and event.get("elapsed_s") is not None:
            seconds = event["elapsed_s"]
    return seconds


def images_per_s(events: list[dict]) -> float | None:
    """Median training images/s of the steps after each process's warm-up."""
    rates, since_start = [], 0
    for event in events:
        if event.get("type") == "start":
            since_start = 0
        elif event.get("type") == "step":
            since_start += 1
            if since_start > WARMUP_STEPS and event.get("images_per_s"):
                rates.append(float(event["images_per_s"]))
    return statistics.median(rates) if rates else None


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
    warnings: tuple[str, ...] = ()  # said while it runs: still near chance, a class never recognised
    notes: tuple[str, ...] = ()  # what the run decided on the way: a re-planned budget, an early stop

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


def progress(events: list[dict], now: float | None = None) -> Progress:
    segment = _segment(events)
    start = segment[0] if segment else {}
    steps = of_type(segment, "step")
    end = next((e for e in reversed(events) if e.get("type") == "end"), None)
    if end is not None and segment and events.index(end) < events.index(segment[0]):
        end = None  # the end of an earlier process, before a resume
    last = steps[-1] if steps else {}
    plan = next((e for e in reversed(segment) if e.get("type") == "plan"), start)  # a budget re-plans the epochs
    steps_per_epoch = int(start.get("steps_per_epoch", 0))
    done_steps = int(last.get("global_step", (int(start.get("start_epoch", 1)) - 1) * steps_per_epoch
                              + int(start.get("skip_steps", 0)))) if start else 0
    pace = _pace(start, steps, of_type(events, "epoch"), events)
    epochs = int(plan.get("epochs", 0))
    if pace and plan is start:  # not re-planned yet: what the budget buys at the pace measured so far
        epochs = _budget_epochs(start, pace, int(last.get("epoch", 1)), epochs)
    return Progress(
        started=bool(start),
        epoch=int(last.get("epoch", start.get("start_epoch", 1))),
        epochs=epochs,
        step=int(last.get("step", start.get("skip_steps", 0))),
        steps_per_epoch=steps_per_epoch,
        global_step=done_steps,
        total_steps=epochs * steps_per_epoch if pace and plan is start else int(plan.get("total_steps", 0)),
        eta_s=_eta(start, pace, last, epochs, now),
        images_per_s=float(last["images_per_s"]) if last.get("images_per_s") else None,
        end_state=end.get("state") if end else None,
        error=end.get("error", "") if end else "",
        warnings=tuple(e["text"] for e in of_type(segment, "warning") if e.get("early")),
        notes=tuple(e["text"] for e in segment if e.get("type") in ("plan", "decision")),
    )


# A run stops once another epoch would pass its budget by more than this share (the engine's BUDGET_SLACK).
BUDGET_SLACK = 0.05


def _budget_s(start: dict) -> float:
    return float((start.get("config") or {}).get("time_budget_min") or 0) * 60


def _pace(start: dict, steps: list[dict], epochs_seen: list[dict], events: list[dict]) -> tuple[float, float] | None:
    """(seconds per training step, seconds per validation pass) measured by this process, or None before its
    steps after warm-up."""
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
    return seconds_per_step, eval_s


def _budget_epochs(start: dict, pace: tuple[float, float], epoch: int, planned: int) -> int:
    """The epochs a time-budgeted run will train, at the pace measured so far (as the engine re-plans after its
    first epoch); `planned` for a run without a budget."""
    budget = _budget_s(start)
    if not budget:
        return planned
    epoch_s = pace[0] * int(start.get("steps_per_epoch", 0)) + pace[1]
    return max(epoch, int(budget // max(epoch_s, 1e-3)), 1)


def _eta(start: dict, pace: tuple[float, float] | None, last: dict, epochs: int, now: float | None) -> float | None:
    """Seconds left: remaining steps of the `epochs` the run will train at this process's pace, plus the
    validation passes still to come; never past the end of a time budget, except to finish the epoch it is in."""
    if pace is None or not last:
        return None
    seconds_per_step, eval_s = pace
    steps_per_epoch = int(start.get("steps_per_epoch", 0))
    remaining_steps = max(0, epochs * steps_per_epoch - int(last["global_step"]))
    remaining_evals = max(0, epochs - int(last["epoch"]) + 1)
    eta = remaining_steps * seconds_per_step + remaining_evals * eval_s
    budget = _budget_s(start)
    if budget and start.get("time"):
        this_epoch = max(0, steps_per_epoch - int(last.get("step", 0))) * seconds_per_step + eval_s
        eta = min(eta, max(this_epoch, start["time"] + budget * (1 + BUDGET_SLACK) - last["time"]))
    if now is not None:
        eta -= max(0.0, now - last["time"])
    return max(0.0, eta)


STEP_COLUMNS = ["global_step", "epoch", "loss", "lr"]
EPOCH_COLUMNS = ["epoch", "complete", "train_loss", "val_loss", "val_accuracy", "val_micro_f1", "val_macro_f1",
                 "epoch_seconds", "elapsed_s"]


def curves(events: list[dict]):
    """(per-step train loss and learning rate, per-epoch losses and validation scores) as DataFrames."""
    import pandas as pd

    steps = {e["global_step"]: e for e in of_type(events, "step")}
    step_table = pd.DataFrame(
        [{"global_step": s["global_step"], "epoch": s["global_step"] / max(1, s["steps_per_epoch"]),
          "loss": s["loss"], "lr": s["lr"]} for _, s in sorted(steps.items())],
        columns=STEP_COLUMNS)
    epoch_table = pd.DataFrame([{key: e.get(key) for key in EPOCH_COLUMNS} for e in last_per_epoch(events)],
                               columns=EPOCH_COLUMNS)
    return step_table, epoch_table
