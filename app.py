"""Router: page config, sign-in, navigation over the pages the signed-in role may use, and the sidebar."""

import functools

import streamlit as st

from ui.layout import apply_layout
from ui.router import mark_routed
from ui.session import current_actor, not_for_role_page, sign_in_page
from ui.sidebar import sidebar

st.set_page_config(page_title="Defect inspection", page_icon="assets/logo.png", layout="wide")
apply_layout()

RESTRICTED = [("train", "Train", ":material/model_training:"), ("review", "Review", ":material/fact_check:"),
              ("models", "Models", ":material/inventory_2:"), ("monitor", "Monitor", ":material/monitoring:")]

actor = current_actor()
if actor is None:
    # Before sign-in every address shows the sign-in form, under the address of the page asked for (the pages'
    # own url paths): once signed in, the same address opens that page, when the role may see it.
    navigation = st.navigation([st.Page(sign_in_page, title="Sign in", icon=":material/login:", url_path=path,
                                        default=path == "inspect")
                                for path in ("inspect", "train", "review", "models", "monitor")], position="hidden")
else:
    pages = [st.Page("pages/inspect.py", title="Inspect", icon=":material/search:", default=True)]
    for path, title, icon in RESTRICTED:
        if actor.may("review"):  # engineers and admins; the engine checks each action again
            pages.append(st.Page(f"pages/{path}.py", title=title, icon=icon))
        else:  # typed or bookmarked by an inspector: a page that says why, not a silent Inspect
            pages.append(st.Page(functools.partial(not_for_role_page, title, "review"), title=title, icon=icon,
                                 url_path=path, visibility="hidden"))
    navigation = st.navigation(pages)
mark_routed()
sidebar(actor)
navigation.run()
