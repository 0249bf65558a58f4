"""A job's events as this browser session follows them: each refresh reads only the lines added since."""

from __future__ import annotations

import streamlit as st

from defect_model.events import EventTail, Progress, progress
from defect_model.runs import RunDir

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
