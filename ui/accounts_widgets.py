"""Accounts on the dashboard: your own password, and (admins) every account with its role."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from defect_model.access.accounts import ROLES, Actor
from ui.flash import flash, flash_ui
from ui.session import accounts
from ui.text import md


def own_password_ui(actor: Actor) -> None:
    with st.form("own_password", clear_on_submit=True):
        first = st.text_input("New password", type="password", key="own_password_1")
        second = st.text_input("The same again", type="password", key="own_password_2")
        if st.form_submit_button("Set my password", icon=":material/key:"):
            if first != second:
                st.error("The two passwords differ; type them again.")
                return
            try:
                accounts().set_own_password(actor, first)
            except ValueError as exc:
                st.error(md(exc))
                return
            # Said where the warning was, at the top of the sidebar, on a run that no longer draws the warning.
            flash("account", "password", "success", "Password set. Use it to sign in from now on.")
            st.rerun()


def accounts_expander_ui(actor: Actor) -> None:
    """Admins manage accounts on the Models page, with runs or without (a first start sends the admin there)."""
    if actor.may("manage_accounts"):
        with st.expander("Accounts"):
            manage_accounts_ui(actor)


def manage_accounts_ui(actor: Actor) -> None:
    """Admins: the accounts table and a form that creates one or changes its role (and password)."""
    if not actor.may("manage_accounts"):
        return
    flash_ui("accounts", "saved")
    table = pd.DataFrame(accounts().list(), columns=["name", "role", "created", "disabled"])
    table["disabled"] = table["disabled"].map(lambda off: "yes" if off else "no")
    st.dataframe(table, hide_index=True, key="accounts_table")
    with st.form("save_account", clear_on_submit=True):
        name_col, role_col, password_col = st.columns(3)
        name = name_col.text_input("Account name", key="account_name")
        role = role_col.selectbox("Role", ROLES, key="account_role",
                                  help="inspector: Inspect and their own log · engineer: + Train, Review, relabel, "
                                       "compare, export · admin: + make a model active, delete runs, accounts")
        password = password_col.text_input("Password (empty: keep the current one)", type="password",
                                           key="account_password")
        if st.form_submit_button("Save account", icon=":material/person_add:"):
            try:
                accounts().save(actor, name, role, password or None)
            except (ValueError, PermissionError) as exc:
                st.error(md(exc))
                return
            flash("accounts", "saved", "success", f"Account {name.strip()} saved ({role}).")
            st.rerun()  # the table above shows it
