"""What the pages and the CLI do with the layers below: inspect, review, compare, activate, watch, export.
Imports every layer below it; never streamlit."""
