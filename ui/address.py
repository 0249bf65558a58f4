"""Choices kept in the page's address, so that a reload (or a bookmark) finds them again.

The address is user text: whoever reads a kept value checks it as they would a typed one.
"""

from __future__ import annotations

from collections.abc import Sequence

import streamlit as st


def restore(key: str, allowed: Sequence[str] | None = None) -> None:
    """Before its widget is drawn: give widget `key` the value the address holds, on the session's first run
    of the page (afterwards the widget's own state wins). With `allowed`, only one of those values."""
    kept = st.query_params.get(key)
    if key in st.session_state or kept is None or (allowed is not None and kept not in allowed):
        return
    st.session_state[key] = kept


def keep(key: str) -> None:
    """After its widget is drawn: write widget `key`'s value into the address (or remove it when empty)."""
    value = st.session_state.get(key)
    if value in (None, ""):
        st.query_params.pop(key, None)
    elif st.query_params.get(key) != str(value):
        st.query_params[key] = str(value)
