"""A job's events as this browser session follows them (each refresh reads only the lines added since), and
the one view of a running job's progress that every page shows."""

from __future__ import annotations

import time

import streamlit as st

from defect_model.runs.events import EventTail, Progress, progress
from defect_model.runs.folders import RunDir
from defect_model.train.timing import format_duration
from ui.text import code

TAILS_KEY = "event_tails"


def followed_events(run: RunDir) -> list[dict]:
    """Every event of the run so far; the file is read from where this session last stopped."""
    tails = st.session_state.setdefault(TAILS_KEY, {})
    tail = tails.get(str(run.events))
    if tail is None:
        tail = tails[str(run.events)] = EventTail(run.events)
    tail.update()
    return tail.events


def followed_progress(run: RunDir, now: float | None = None) -> Progress:
    return progress(followed_events(run), now)


def job_progress_ui(run: RunDir, now: Progress | None = None) -> Progress:
    """The job's progress bar: where it is (epoch, step), how much is left and how fast it goes."""
    now = now or followed_progress(run, now=time.time())
    eta = f" · about {format_duration(now.eta_s)} left" if now.eta_s is not None else ""
    speed = f" · {now.images_per_s:.0f} images/s" if now.images_per_s else ""
    st.progress(now.fraction, text=f"Training {code(run.run_id)}: {now.text()}{eta}{speed}")
    return now
