"""Make sure every page runs inside app.py's navigation.

Streamlit decides per server whether the app uses the old `pages/` folder
mechanism before app.py has ever run: if the very first request of a fresh
server is a page URL (/review), that page runs alone, without app.py's
navigation and sidebar, and the server stays in that mode until app.py runs.
app.py marks the session; a page that finds no mark switches the server to
st.navigation mode (the flag Streamlit itself clears when st.navigation is
called) and reruns once, so app.py routes to the page that was asked for.
"""

from __future__ import annotations

import streamlit as st

MARK = "_routed_by_app"


def mark_routed() -> None:
    """Called by app.py on every run."""
    st.session_state[MARK] = True


def require_router() -> None:
    """Called first by every page; reruns once if app.py did not route this session."""
    if MARK not in st.session_state:
        st.session_state[MARK] = False  # rerun only once, also where no app.py exists (a page tested alone)
        try:
            from streamlit.runtime.pages_manager import PagesManager

            PagesManager.uses_pages_directory = False
        except ImportError:  # a Streamlit without the old mechanism has nothing to switch off
            pass
        st.rerun()
