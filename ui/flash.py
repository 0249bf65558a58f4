"""A message from a button callback, drawn where the page wants it on the run that follows.

Callbacks run before the page script, so they cannot draw; they leave the
message here and the page shows it at the named place.
"""

from __future__ import annotations

import streamlit as st

from ui.text import md


def flash(scope: str, where: str, kind: str, text: str) -> None:
    """Leave one message for the page `scope`, to be shown at `where` (kind: success or error), as plain text."""
    st.session_state[f"flash_{scope}"] = {"where": where, "kind": kind, "text": text}


def flash_ui(scope: str, where: str, keep: bool = False) -> None:
    """Show the page's message if it belongs here; `keep` leaves it up on later reruns too."""
    message = st.session_state.get(f"flash_{scope}")
    if not message or message["where"] != where:
        return
    if not keep:
        del st.session_state[f"flash_{scope}"]
    getattr(st, message["kind"])(md(message["text"]))  # messages name runs, files and errors: shown as typed
