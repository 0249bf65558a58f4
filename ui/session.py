"""Who is signed in to this browser session, the sign-in page, and the role a page needs.

One code path for both ways in: a local account (name and password) or the plant's identity provider
(Streamlit's st.login, when `[auth]` is set in .streamlit/secrets.toml) both end in a session token of
defect_model.access.accounts, checked again on every page run, so an expired session or a disabled account
ends at the next click.

A reload keeps the session: the same opaque token is kept in a cookie (SameSite=Strict, for the session's
12 hours, cleared by Sign out) and read back through st.context.cookies when a new browser session starts, then
checked server-side like any token. Streamlit reads cookies but sets none outside st.login's identity-provider
flow, so a small script of ours (no user text) sets and clears it in the page.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import streamlit as st

from defect_model.access.accounts import SESSION_HOURS, Accounts, Actor, PERMISSIONS, SignInError, open_accounts
from defect_model.database import location
from ui.layout import page_script
from ui.text import md

TOKEN_KEY = "session_token"
LINK_PARAM = "token"
COOKIE = "defect_session"
COOKIE_EXPIRES_KEY = "session_cookie_expires"  # set at sign-in: this session's cookie is still to be written
SIGNED_OUT_KEY = "signed_out"
COOKIE_SCRIPT = """<script>
(() => {
  const secure = window.parent.location.protocol === "https:" ? "; Secure" : "";
  window.parent.document.cookie = %s + "; Path=/; SameSite=Strict" + secure;
})();
</script>"""


@st.cache_resource(show_spinner=False)
def _accounts(path: str) -> Accounts:
    return open_accounts(path)


def accounts() -> Accounts:
    return _accounts(str(location()))


def current_actor() -> Actor | None:
    """The signed-in actor: this browser session's token, else (a reload, a typed address) the cookie's."""
    token = st.session_state.get(TOKEN_KEY)
    remembered = token is None and not st.session_state.get(SIGNED_OUT_KEY)
    if remembered:
        token = cookie_token()
    actor = accounts().session_actor(token)
    if remembered and actor is not None:
        st.session_state[TOKEN_KEY] = token
    return actor


def cookie_token() -> str | None:
    try:
        value = st.context.cookies.get(COOKIE)
    except Exception:  # no browser behind this session (a bare script run)
        return None
    return value if isinstance(value, str) and value else None  # AppTest's stand-in context holds no strings


def session_cookie_ui(actor: Actor | None) -> None:
    """Write the session's cookie once after a sign-in, or clear a cookie that no longer signs anyone in (signed
    out, expired, revoked). Nothing is drawn (a frame of height 0)."""
    token = st.session_state.get(TOKEN_KEY)
    if actor is not None and token and COOKIE_EXPIRES_KEY in st.session_state and cookie_token() != token:
        value = f"{COOKIE}={token}; Expires={st.session_state[COOKIE_EXPIRES_KEY]}"
    elif actor is None and (cookie_token() or st.session_state.get(SIGNED_OUT_KEY)):
        value = f"{COOKIE}=; Max-Age=0"
    else:
        return
    page_script(COOKIE_SCRIPT % json.dumps(value), "session-cookie")


def identity_provider_configured() -> bool:
    try:
        return "auth" in st.secrets
    except Exception:  # no secrets.toml at all
        return False


def _start_session(actor: Actor, token: str) -> None:
    st.session_state.pop(SIGNED_OUT_KEY, None)
    st.session_state[TOKEN_KEY] = token
    expires = datetime.now(timezone.utc) + timedelta(hours=SESSION_HOURS)
    st.session_state[COOKIE_EXPIRES_KEY] = expires.strftime("%a, %d %b %Y %H:%M:%S GMT")
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
    session_cookie_ui(None)


def sign_out() -> None:
    token = st.session_state.pop(TOKEN_KEY, None)
    if token:
        accounts().sign_out(token)
    for key in list(st.session_state.keys()):
        del st.session_state[key]
    st.session_state[SIGNED_OUT_KEY] = True  # the cookie is cleared on the next run, and not read back before
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


def not_for_role_page(title: str, action: str) -> None:
    """A page the signed-in role may not use, asked for by its address: say so, and offer the way back."""
    actor = current_actor()
    st.title(title)
    st.error(f"{title} is not available for your role ({actor.role if actor else 'not signed in'}): it needs the "
             f"{PERMISSIONS[action]} role. Ask an admin if you need it.", icon=":material/lock:")
    st.page_link("pages/inspect.py", label="Go to Inspect", icon=":material/search:")
