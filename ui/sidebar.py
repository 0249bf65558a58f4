"""The sidebar every page shares: who is signed in (and sign-out) and which model is active."""

from __future__ import annotations

import streamlit as st

from defect_model.common.quality import assess
from defect_model.access.accounts import Actor
from ui.flash import flash_ui
from ui.layout import close_sidebar_on_navigation
from ui.resources import active_run, read_active
from ui.accounts_widgets import own_password_ui
from ui.session import accounts, session_cookie_ui, sign_out
from ui.text import md


def model_card(run) -> None:
    """Run id, classes, accuracy beside per-class recall (and the defect miss rate), date."""
    metrics = run.read_metrics()
    st.markdown(f"**Active model** {md(run.run_id)}")
    if not metrics:
        st.caption("No validation metrics yet.")
        return
    cfg = run.settings()
    quality = assess(metrics, cfg.good_classes)
    if quality.collapsed:
        st.error("This model is flagged as useless: " + "; ".join(map(md, quality.problems)),
                 icon=":material/warning:")
    st.caption(f"Classes: {md(', '.join(metrics['classes']))}")
    st.caption(md(quality.headline()))
    st.caption("Recall per class: " + ", ".join(f"{md(c)} {r:.0%}" for c, r in quality.recall.items()))
    st.caption(f"Trained {run.status().get('finished', run.status().get('updated', ''))[:16].replace('T', ' ')}")


def sidebar(actor: Actor | None) -> None:
    with st.sidebar:
        if actor is None:
            return
        st.text(f"{actor.name} · {actor.role}")  # user text shown as text, never as markdown
        st.button("Sign out", key="sign_out", icon=":material/logout:", on_click=sign_out, type="tertiary")
        flash_ui("account", "password")
        needs_password = "@" not in actor.name and not accounts().has_password(actor.name)
        if needs_password:
            st.warning("Set a password for your account: the sign-in link works only once.", icon=":material/key:")
        with st.expander("My password", expanded=needs_password):
            own_password_ui(actor)
        record, problem = read_active()
        run = active_run(record) if record else None
        if problem:
            st.error(md(problem), icon=":material/cloud_off:")
        elif run is None:
            st.info("No active model yet. " + ("Train one on the Train page, or start the demo model on Inspect."
                                               if actor.may("train") else "An engineer trains one and an admin "
                                               "makes it active."))
        else:
            model_card(run)
        session_cookie_ui(actor)
        close_sidebar_on_navigation()
