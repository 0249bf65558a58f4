import streamlit as st

st.title("Inspect")
st.info("This page arrives in its own issue.")
