import streamlit as st

st.title("Models")
st.info("This page arrives in its own issue.")
