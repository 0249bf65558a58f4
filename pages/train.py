import streamlit as st

st.title("Train")
st.info("This page arrives in its own issue.")
