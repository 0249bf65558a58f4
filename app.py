"""Router: page config, navigation over pages/, and the sidebar's active model."""

import streamlit as st

from ui.router import mark_routed
from ui.sidebar import sidebar

st.set_page_config(page_title="Defect inspection", page_icon="assets/logo.png", layout="wide")

navigation = st.navigation([
    st.Page("pages/inspect.py", title="Inspect", icon=":material/search:", default=True),
    st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
    st.Page("pages/review.py", title="Review", icon=":material/fact_check:"),
    st.Page("pages/models.py", title="Models", icon=":material/inventory_2:"),
])
mark_routed()
sidebar()
navigation.run()
