"""The verdict as an inspector reads it at arm's length: PASS / REJECT / NEEDS A PERSON in large coloured words
(styled by ui/layout.py), and why, in one sentence beside the confidence."""

from __future__ import annotations

import html
import re

import streamlit as st

from defect_model.workflows.inspection import FileResult
from defect_model.serve.verdicts import UNFAMILIAR_REASON, PassThreshold, pass_threshold
from ui.text import md

WORDS = {"pass": "PASS", "reject": "REJECT", "needs_person": "NEEDS A PERSON", "error": "NOT INSPECTED"}
# Beside the words on the cards and in the table: a symbol that reads without colour too.
SYMBOLS = {"pass": "✔", "reject": "✖", "needs_person": "?", "error": "⚠"}


def verdict_banner(verdict: str, size: str = "card") -> None:
    """The verdict in large white words on its colour (`size`: card or detail); our own words only."""
    st.html(f'<div class="verdict verdict-{verdict} verdict-{size}">{SYMBOLS[verdict]} {WORDS[verdict]}</div>')


def table_word(verdict: str) -> str:
    return f"{SYMBOLS[verdict]} {WORDS[verdict]}"


def needed_confidence(result: FileResult, good_classes: list[str], threshold: float,
                      good_threshold: PassThreshold | None) -> float:
    """The confidence the photo's predicted class needs for a verdict (a good class may have its own)."""
    if result.predicted in good_classes:
        return pass_threshold(good_threshold, result.predicted, threshold)
    return threshold


def verdict_sentence(result: FileResult, verdict: str, needed: float) -> str:
    """Why the photo got its verdict, with the confidence, in one Markdown sentence."""
    seen = f"**{md(result.predicted)}** with {result.confidence:.1%}"
    if verdict == "pass":
        return f"The model sees {seen}, at least the {needed:.0%} a pass needs: a good part."
    if verdict == "reject":
        return f"The model sees {seen}, at least the {needed:.0%} a verdict needs: a defect."
    if result.unfamiliar:
        return (f"The model sees {seen}, but the photo is {UNFAMILIAR_REASON}, so its answer cannot be trusted "
                "however confident: a person decides.")
    return (f"The model's best guess is {seen}, below the {needed:.0%} a verdict needs: it is not sure enough, so "
            "a person decides.")


def describe(result: FileResult) -> str:
    """The card's small line under the verdict: what the model saw, how sure."""
    if not result.ok:
        return "could not be inspected"
    if result.unfamiliar:
        return f"unfamiliar photo · {md(result.predicted)} · {result.confidence:.0%}"
    return f"{md(result.predicted)} · {result.confidence:.0%}"


def file_name_ui(name: str) -> None:
    """A file name as text (HTML-escaped), wrapping after its separators and never inside its extension; copied,
    it is the name as it is (no invisible characters)."""
    stem, dot, extension = name.rpartition(".")
    if not dot or not stem or len(extension) > 5:
        stem, extension = name, ""
    parts = re.split(r"(?<=[_\-. ])", stem)
    wrapped = "<wbr>".join(html.escape(part) for part in parts)
    tail = f'<span class="ext">.{html.escape(extension)}</span>' if extension else ""
    st.html(f'<div class="file-name">{wrapped}{tail}</div>')
