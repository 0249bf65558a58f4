"""The Inspect page's per-session state: its keys in st.session_state (all starting with "inspect_"), sliders
that keep their value across tabs, who inspects, and the good classes' threshold in force."""

from __future__ import annotations

import streamlit as st

from defect_model.serve.verdicts import PassThreshold
from ui.session import current_actor

QUEUE_KEY = "inspect_queue"


QUEUE_MODEL_KEY = "inspect_queue_model"  # (run id, checkpoint hash) the batch was inspected with


SEEN_KEY = "inspect_seen_uploads"


ROUND_KEY = "inspect_upload_round"


SELECTED_KEY = "inspect_selected"


RESTORED_KEY = "inspect_restored"  # results read back from the log after a reload


SCROLL_KEY = "inspect_scroll_to_detail"


GOOD_THRESHOLD_KEY = "inspect_good_threshold"


BATCH_PARAM = "batch"  # ?batch=12-15,18: the inspection ids of the page's batch, so a reload keeps it


def kept_slider(label: str, low: float, high: float, default: float, step: float, key: str, **kwargs) -> float:
    """A slider whose value survives tab switches and reruns that do not draw it (Streamlit forgets the state of
    a widget that a run did not draw): the value lives under a key of its own, the widget follows it."""
    kept = f"{key}_kept"
    st.session_state.setdefault(kept, default)
    st.session_state[key] = st.session_state[kept]

    def keep() -> None:
        st.session_state[kept] = st.session_state[key]

    return st.slider(label, low, high, step=step, key=key, on_change=keep, **kwargs)


def kept_value(key: str, default: float) -> float:
    return st.session_state.get(f"{key}_kept", default)


def inspector_name() -> str:
    """The signed-in account: each inspection is logged under it."""
    actor = current_actor()
    return actor.name if actor else ""


def current_good_threshold() -> PassThreshold | None:
    """The good classes' own threshold(s) now in force on the page (None: the one threshold decides)."""
    return st.session_state.get(GOOD_THRESHOLD_KEY)
