"""Router: page config, sign-in, navigation over the pages the signed-in role may use, and the sidebar."""

import streamlit as st

from ui.router import mark_routed
from ui.session import current_actor, sign_in_page
from ui.sidebar import sidebar

st.set_page_config(page_title="Defect inspection", page_icon="assets/logo.png", layout="wide")

actor = current_actor()
if actor is None:
    # Before sign-in every address shows the sign-in form, under the address of the page asked for (the pages'
    # own url paths): once signed in, the same address opens that page, when the role may see it.
    navigation = st.navigation([st.Page(sign_in_page, title="Sign in", icon=":material/login:", url_path=path,
                                        default=path == "inspect")
                                for path in ("inspect", "train", "review", "models", "monitor")], position="hidden")
else:
    pages = [st.Page("pages/inspect.py", title="Inspect", icon=":material/search:", default=True)]
    if actor.may("review"):  # engineers and admins; the engine checks each action again
        pages += [st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
                  st.Page("pages/review.py", title="Review", icon=":material/fact_check:"),
                  st.Page("pages/models.py", title="Models", icon=":material/inventory_2:"),
                  st.Page("pages/monitor.py", title="Monitor", icon=":material/monitoring:")]
    navigation = st.navigation(pages)
mark_routed()
sidebar(actor)
navigation.run()
