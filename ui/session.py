"""Who is signed in to this browser session, the sign-in page, and the role a page needs.

One code path for both ways in: a local account (name and password) or the plant's identity provider
(Streamlit's st.login, when `[auth]` is set in .streamlit/secrets.toml) both end in a session token of
defect_model.access.accounts, checked again on every page run, so an expired session or a disabled account
ends at the next click.
"""

from __future__ import annotations

import streamlit as st

from defect_model.access.accounts import Accounts, Actor, PERMISSIONS, SignInError, open_accounts
from defect_model.common.places import default_db_path
from ui.text import md

TOKEN_KEY = "session_token"
LINK_PARAM = "token"


@st.cache_resource(show_spinner=False)
def _accounts(path: str) -> Accounts:
    return open_accounts(path)


def accounts() -> Accounts:
    return _accounts(str(default_db_path()))


def current_actor() -> Actor | None:
    return accounts().session_actor(st.session_state.get(TOKEN_KEY))


def identity_provider_configured() -> bool:
    try:
        return "auth" in st.secrets
    except Exception:  # no secrets.toml at all
        return False


def _start_session(actor: Actor, token: str) -> None:
    st.session_state[TOKEN_KEY] = token
    st.toast(f"Signed in as {md(actor.name)} ({actor.role})")


def sign_in_page() -> None:
    """The only page before sign-in: a one-time link, the identity provider, or name and password."""
    st.title("Sign in")
    link = st.query_params.get(LINK_PARAM)
    if link:
        del st.query_params[LINK_PARAM]  # the token leaves the address bar either way
        try:
            actor, token = accounts().use_link(link)
        except SignInError as exc:
            st.error(md(exc), icon=":material/lock:")
        else:
            _start_session(actor, token)
            st.rerun()
    if identity_provider_configured():
        if getattr(st.user, "is_logged_in", False) and st.user.get("email"):
            actor, token = accounts().sign_in_external(str(st.user.email))
            _start_session(actor, token)
            st.rerun()
        st.button("Sign in with the plant's account", type="primary", icon=":material/login:", on_click=st.login)
        st.caption("Or with a local account:")
    with st.form("sign_in", border=True):
        name = st.text_input("Account", key="sign_in_name")
        password = st.text_input("Password", type="password", key="sign_in_password")
        submitted = st.form_submit_button("Sign in", type="primary", icon=":material/login:")
    if submitted:
        try:
            actor, token = accounts().sign_in(name, password)
        except SignInError as exc:
            st.error(md(exc), icon=":material/lock:")
        else:
            _start_session(actor, token)
            st.rerun()
    st.caption("No account yet? An admin creates one on the Models page (Accounts), or on the server: "
               "`python -m defect_model accounts add NAME --role inspector`.")


def sign_out() -> None:
    token = st.session_state.pop(TOKEN_KEY, None)
    if token:
        accounts().sign_out(token)
    for key in list(st.session_state.keys()):
        del st.session_state[key]
    if identity_provider_configured() and getattr(st.user, "is_logged_in", False):
        st.logout()


def page_actor(action: str) -> Actor:
    """The signed-in actor when their role may `action`; otherwise the page says so and stops here."""
    actor = current_actor()
    if actor is None or not actor.may(action):
        who = "You are not signed in" if actor is None else f"{md(actor.name)} ({actor.role}) may not use this page"
        st.error(f"{who}: it needs the {PERMISSIONS[action]} role. Ask an admin.", icon=":material/lock:")
        st.stop()
    return actor
