"""The verdict as an inspector reads it at arm's length: PASS / REJECT / NEEDS A PERSON in large coloured words,
and why, in one sentence."""

from __future__ import annotations

import streamlit as st

from defect_model.workflows.inspection import FileResult
from defect_model.serve.verdicts import VERDICT_LABELS
from ui.text import md

BADGES = {"pass": ("green", ":material/check_circle:"), "reject": ("red", ":material/cancel:"),
          "needs_person": ("orange", ":material/person_search:"), "error": ("gray", ":material/error:")}


def badge(verdict: str) -> None:
    colour, icon = BADGES[verdict]
    st.badge(VERDICT_LABELS[verdict], color=colour, icon=icon)


def describe(result: FileResult, verdict: str) -> str:
    if not result.ok:
        return "could not be inspected"
    if result.unfamiliar:
        return f"unfamiliar photo · {md(result.predicted)} · {result.confidence:.0%}"
    return f"{md(result.predicted)} · {result.confidence:.0%}"
