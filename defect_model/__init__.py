"""defect_model: the engine behind the defect inspection dashboard.

Light on import: torch and the model code load only when a submodule that
needs them is imported. Never imports streamlit.
"""

__version__ = "0.1.0"
