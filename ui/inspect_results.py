"""Many inspected photos on the Inspect page: a grid of cards (the photo, its verdict large and coloured) or a
table with the verdict in words and colour, filtered by verdict and paged."""

from __future__ import annotations

import functools

import streamlit as st

from defect_model.workflows.inspection import FileResult
from defect_model.workflows.inspection_export import results_table
from defect_model.serve.verdicts import VERDICTS, VERDICT_LABELS
from ui.text import md
from ui.inspect_detail import select
from ui.inspect_state import current_good_threshold
from ui.layout import COLOURS
from ui.inspect_verdict import describe, file_name_ui, table_word, verdict_banner

GRID_COLUMNS = 4


PAGE_SIZE = 24


def grid_or_table_ui(results: list[FileResult], threshold: float, good_classes: list[str],
                     selected: int | None) -> None:
    view_col, show_col, page_col = st.columns([1.4, 3, 1.6], vertical_alignment="bottom")
    with view_col:
        view = st.segmented_control("View", ["Grid", "Table"], default="Grid", key="inspect_view",
                                    required=True, label_visibility="collapsed")
    with show_col:
        shown = st.pills("Show", VERDICTS, selection_mode="multi", format_func=VERDICT_LABELS.get,
                         key="inspect_show", label_visibility="collapsed",
                         help="Show only these verdicts (none selected: all)")
    if shown:
        results = [r for r in results if r.verdict_at(threshold, good_classes, current_good_threshold()) in shown]
        if not results:
            st.caption("No photo has the verdicts chosen.")
            return
    pages = max(1, -(-len(results) // PAGE_SIZE))
    page = 0
    if pages > 1 and view == "Grid":
        with page_col:
            page = st.selectbox("Photos", range(pages), key="inspect_page", label_visibility="collapsed",
                                format_func=lambda p: f"photos {p * PAGE_SIZE + 1}–"
                                                      f"{min(len(results), (p + 1) * PAGE_SIZE)} of {len(results)}")
            page = min(page, pages - 1)
    if view == "Table":
        table_ui(results, threshold, good_classes)
    else:
        grid_ui(results[page * PAGE_SIZE:(page + 1) * PAGE_SIZE], threshold, good_classes, selected)


def grid_ui(results: list[FileResult], threshold: float, good_classes: list[str], selected: int | None) -> None:
    for start in range(0, len(results), GRID_COLUMNS):
        for column, result in zip(st.columns(GRID_COLUMNS), results[start:start + GRID_COLUMNS]):
            with column, st.container(border=True, key=f"inspect-result-{result.index}"):
                card_ui(result, result.verdict_at(threshold, good_classes, current_good_threshold()),
                        result.index == selected)


def card_ui(result: FileResult, verdict: str, is_selected: bool) -> None:
    """The verdict first, large; then the photo itself (its heatmap is in the detail), its name and the class."""
    verdict_banner(verdict)
    if result.ok and result.thumbnail is not None:
        st.image(result.thumbnail, width="stretch")
    file_name_ui(result.name)
    if result.ok:
        st.caption(describe(result))
        # The card shown in the detail says so on its button: every card of a row stays as tall.
        st.button("Shown above" if is_selected else "Open", key=f"inspect_open_{result.index}", on_click=select,
                  args=(result.index,), icon=":material/arrow_upward:" if is_selected else ":material/zoom_in:",
                  width="stretch", disabled=is_selected)
    else:  # small red text rather than an alert box, which a narrow card stretches to many lines
        st.caption(f":red[{md(result.error)}]")


def table_ui(results: list[FileResult], threshold: float, good_classes: list[str]) -> None:
    """The verdict first, in words and on its colour; empty cells stay empty (no "None")."""
    table = results_table(results, threshold, good_classes, current_good_threshold())
    shown = table[["verdict", "file_name", "reason", "predicted", "confidence", "unfamiliar_score", "message"]].copy()
    colours = shown["verdict"].map(COLOURS)
    shown["verdict"] = shown["verdict"].map(table_word)
    for column in ("file_name", "reason", "predicted", "message"):
        shown[column] = shown[column].fillna("").astype(str)
    styled = shown.style.apply(lambda _: [f"background-color: {c}; color: white; font-weight: 700" for c in colours],
                               subset=["verdict"])
    st.dataframe(
        styled, hide_index=True,
        key="inspect_table", on_select=functools.partial(_select_from_table, [r.index for r in results]),
        selection_mode="single-row",
        column_config={"verdict": st.column_config.TextColumn("verdict", width="medium"),
                       "file_name": st.column_config.TextColumn("file name"),
                       "confidence": st.column_config.ProgressColumn("confidence", min_value=0, max_value=1,
                                                                     format="percent"),
                       "unfamiliar_score": st.column_config.NumberColumn("unfamiliar score", format="%.1f")})


def _select_from_table(indices: list[int]) -> None:
    rows = st.session_state["inspect_table"].selection.rows
    if rows:
        select(indices[rows[0]])
