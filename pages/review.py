import streamlit as st

st.title("Review")
st.info("This page arrives in its own issue.")
