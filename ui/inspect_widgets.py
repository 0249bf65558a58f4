"""Widgets and drawing for the Inspect page: upload, threshold, batch summary, grid, detail, export.

Per-user state lives in st.session_state under keys starting with "inspect_";
the work itself is done by defect_model.workflows.inspection in a background queue.
"""

from __future__ import annotations

import dataclasses
import functools
import sqlite3
import time

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from defect_model.workflows.inspection import FileResult, InspectionSettings, inference_threads
from defect_model.workflows.inspection_export import (class_counts, heatmap_for_class, load_stored_photo, overlay_for,
                                           overlays_zip, results_table, verdict_counts)
from defect_model.workflows.inspection_queue import InspectionQueue
from defect_model.runs.store import InspectionStore
from defect_model.common.places import default_db_path
from defect_model.workflows.operating_point import record_override
from defect_model.serve.verdicts import DEFAULT_THRESHOLD, UNFAMILIAR_REASON, VERDICTS, VERDICT_LABELS, PassThreshold
from ui.inspect_history import decode_ids, encode_ids, restore_batch
from ui.inspect_model import ActiveModel
from ui.session import current_actor
from ui.text import code, md, plot_text

QUEUE_KEY = "inspect_queue"
QUEUE_MODEL_KEY = "inspect_queue_model"  # (run id, checkpoint hash) the batch was inspected with
SEEN_KEY = "inspect_seen_uploads"
ROUND_KEY = "inspect_upload_round"
SELECTED_KEY = "inspect_selected"
RESTORED_KEY = "inspect_restored"  # results read back from the log after a reload
SCROLL_KEY = "inspect_scroll_to_detail"
GOOD_THRESHOLD_KEY = "inspect_good_threshold"
BATCH_PARAM = "batch"  # ?batch=12-15,18: the inspection ids of the page's batch, so a reload keeps it
UNUSABLE = "(photo unusable)"
GRID_COLUMNS = 4
PAGE_SIZE = 24
POLL_SECONDS = 1.0  # while a batch runs; each poll redraws the results, which costs the worker CPU
FIRST_RESULT_WAIT_S = 3.0  # after an upload, wait this long for the first verdict before drawing the page
BADGES = {"pass": ("green", ":material/check_circle:"), "reject": ("red", ":material/cancel:"),
          "needs_person": ("orange", ":material/person_search:"), "error": ("gray", ":material/error:")}
HEATMAP_HELP = ("The heatmap (Grad-CAM) colours the parts of the photo that weighed most for the chosen class: red "
                "strongest, blue least. Pick another class to see what would speak for it.")
FINGERPRINT_HELP = ("A fingerprint (SHA-256) of the file's bytes: the same photo always has the same one, so the log "
                    "can tell which photo was judged.")
UNFAMILIAR_HELP = ("How far the photo lies from the training photos as the network sees it, at three depths: from "
                   "texture and lighting to the parts the classes are told apart by (at each, the distance to the "
                   "nearest class, on a scale where training photos average 0; the score is their sum). The "
                   "threshold was set at the end of training so that a small share of the validation photos (2 % "
                   "unless the run chose otherwise) lies above it.")
UPLOAD_HELP = ("JPG, PNG, BMP, TIF, WebP or GIF photos, or a .zip of them. Drop many at once; they are inspected in "
               "batches while you keep working, and every file is logged.")


# -- session state -------------------------------------------------------------------
class SessionBatch:
    """The results on the page: those read back from the log after a reload, then this session's new ones
    (numbered after them). Everything else is the session's InspectionQueue."""

    def __init__(self, queue: InspectionQueue, restored: list[FileResult]):
        self.queue = queue
        self.restored = restored

    def results(self) -> list[FileResult]:
        offset = len(self.restored)
        new = self.queue.results()
        return self.restored + ([dataclasses.replace(r, index=r.index + offset) for r in new] if offset else new)

    @property
    def running(self) -> bool:
        return self.queue.running

    def progress(self) -> tuple[int, int]:
        return self.queue.progress()

    def stop(self) -> int:
        return self.queue.stop()

    def wait_for_results(self, count: int, timeout: float) -> bool:
        return self.queue.wait_for_results(count - len(self.restored), timeout)

    def submit(self, predictor, files, settings: InspectionSettings, store: InspectionStore) -> int:
        return self.queue.submit(predictor, files, settings, store)

    def clear(self) -> None:
        self.queue.clear()
        self.restored.clear()


def session_queue(model: ActiveModel, store: InspectionStore) -> SessionBatch:
    """This browser session's batch (never shared: pages keep no module-level state). A batch belongs to one
    model: when the active model changed, a new batch starts (the earlier results stay in the log). A new
    session (a reload) starts with the batch named in the address, read back from the log."""
    served = (model.run.run_id, model.sha256)
    previous = st.session_state.get(QUEUE_MODEL_KEY)
    if QUEUE_KEY not in st.session_state:
        st.session_state[QUEUE_KEY] = InspectionQueue(threads=inference_threads())
        st.session_state[QUEUE_MODEL_KEY] = served
        st.session_state[RESTORED_KEY] = restored_batch_ui(store, model)
    elif previous != served:
        batch = SessionBatch(st.session_state[QUEUE_KEY], st.session_state.get(RESTORED_KEY, []))
        if batch.results():
            st.info(f"The active model changed to {md(model.run.run_id)}: a new batch starts here. The earlier "
                    "results are in the inspection log.", icon=":material/swap_horiz:")
        st.session_state[QUEUE_KEY] = InspectionQueue(threads=inference_threads())
        st.session_state[QUEUE_MODEL_KEY] = served
        st.session_state[RESTORED_KEY] = []
        st.query_params.pop(BATCH_PARAM, None)
    return SessionBatch(st.session_state[QUEUE_KEY], st.session_state.setdefault(RESTORED_KEY, []))


def restored_batch_ui(store: InspectionStore, model: ActiveModel) -> list[FileResult]:
    """The batch the address names (after a reload), read back from the log; [] when there is none."""
    ids = decode_ids(st.query_params.get(BATCH_PARAM, ""))
    if not ids:
        return []
    with st.spinner(f"Reading your batch of {len(ids)} photo(s) back from the inspection log…"):
        results, note = restore_batch(store, ids, inspector_name(), model)
    if note:
        st.caption(f":material/info: Batch from the address: {md(note)}.")
    return results


def remember_batch(results: list[FileResult]) -> None:
    """Keep the batch's inspection ids in the address, so a reload brings the batch back."""
    encoded = encode_ids(r.inspection_id for r in results if r.inspection_id is not None)
    if encoded and st.query_params.get(BATCH_PARAM) != encoded:
        st.query_params[BATCH_PARAM] = encoded
    elif not encoded and BATCH_PARAM in st.query_params:
        del st.query_params[BATCH_PARAM]


def kept_slider(label: str, low: float, high: float, default: float, step: float, key: str, **kwargs) -> float:
    """A slider whose value survives tab switches and reruns that do not draw it (Streamlit forgets the state of
    a widget that a run did not draw): the value lives under a key of its own, the widget follows it."""
    kept = f"{key}_kept"
    st.session_state.setdefault(kept, default)
    st.session_state[key] = st.session_state[kept]

    def keep() -> None:
        st.session_state[kept] = st.session_state[key]

    return st.slider(label, low, high, step=step, key=key, on_change=keep, **kwargs)


def kept_value(key: str, default: float) -> float:
    return st.session_state.get(f"{key}_kept", default)


def inspector_name() -> str:
    """The signed-in account: each inspection is logged under it."""
    actor = current_actor()
    return actor.name if actor else ""


def store_ui() -> InspectionStore | None:
    """The inspection log; without it nothing is inspected (every inspection must be logged)."""
    try:
        return InspectionStore()
    except (OSError, sqlite3.Error) as exc:
        st.error(md(f"{default_db_path()}: the inspection log cannot be opened ({exc}). Make the folder writable "
                    "or set DEFECT_DB to a writable file, then reload the page."), icon=":material/error:")
        return None


# -- input -----------------------------------------------------------------------------
def threshold_ui(model: ActiveModel) -> float:
    """The defect threshold the page decides with; the good class's own threshold (the model's operating point,
    unless the inspector overrides it for this session) is kept for current_good_threshold."""
    point = model.point
    override = point is not None and st.toggle(
        "Override the operating point", key="inspect_override",
        help="For this session only: one confidence threshold for every class instead of the operating point "
             "saved with the model on the Review page. Batches inspected with it are recorded in the audit trail.")
    st.session_state[GOOD_THRESHOLD_KEY] = None if point is None or override else point.passes_from
    if point is not None and not override:
        measured = (f" (on validation: escapes {point.escape_rate:.1%}, review load {point.review_load:.1%})"
                    if point.escape_rate is not None and point.review_load is not None else "")
        st.caption(f"Operating point of this model: pass from {md(point.describe_pass())}, reject from "
                   f"{point.defect_threshold:.2f}{measured}.")
        return point.defect_threshold
    return kept_slider("Confidence threshold", 0.0, 1.0, DEFAULT_THRESHOLD, 0.01, key="inspect_threshold",
                       help="A photo whose most likely class is below this probability goes to a person "
                          "instead of pass / reject. Changing it re-decides the results shown and exported; "
                          "the log keeps the verdict given at inspection time.")


def current_good_threshold() -> PassThreshold | None:
    """The good classes' own threshold(s) now in force on the page (None: the one threshold decides)."""
    return st.session_state.get(GOOD_THRESHOLD_KEY)


def upload_ui() -> list[tuple[str, bytes]]:
    """Files added to the uploader since the last run, as (name, bytes)."""
    round_ = st.session_state.get(ROUND_KEY, 0)
    files = st.file_uploader("Product photos", accept_multiple_files=True, key=f"inspect_upload_{round_}",
                             help=UPLOAD_HELP)
    st.caption(UPLOAD_HELP)
    seen = st.session_state.setdefault(SEEN_KEY, set())
    new = [(f.name, f.getvalue()) for f in files or [] if f.file_id not in seen]
    seen.update(f.file_id for f in files or [])
    return new


def submit(queue: SessionBatch, model: ActiveModel, files, threshold: float, store: InspectionStore) -> None:
    settings = InspectionSettings(run_id=model.run.run_id, good_classes=model.good_classes, threshold=threshold,
                                  good_threshold=current_good_threshold(), inspector=inspector_name(),
                                  model_sha256=model.sha256)
    if model.point is not None and settings.good_threshold is None:
        record_override(current_actor(), model.run.run_id, threshold, model.point, len(files))
    _, before = queue.progress()
    queue.submit(model.predictor, files, settings, store)
    # The first photo is one small batch: waiting for it here draws its verdict in this run,
    # without the round trip of the next poll. Later photos appear as the page polls.
    queue.wait_for_results(len(queue.results()) + 1, FIRST_RESULT_WAIT_S)


def clear_results(queue: SessionBatch) -> None:
    """Forget the results on the page (the log keeps them), in the address too, and empty the uploader."""
    queue.clear()
    st.query_params.pop(BATCH_PARAM, None)
    st.session_state[ROUND_KEY] = st.session_state.get(ROUND_KEY, 0) + 1
    st.session_state[SEEN_KEY] = set()
    st.session_state.pop(SELECTED_KEY, None)


# -- results ------------------------------------------------------------------------------
def results_ui(queue: SessionBatch, model: ActiveModel, threshold: float, store: InspectionStore) -> None:
    """Progress and results; polls while the queue works so results appear batch by batch."""
    running = queue.running
    st.fragment(_results_fragment, run_every=POLL_SECONDS if running else None)(
        queue, model, threshold, store, running)


def _results_fragment(queue, model, threshold, store, was_running) -> None:
    running = queue.running
    done, total = queue.progress()
    if running:
        progress_ui(queue, done, total)
    results = queue.results()
    remember_batch(results)
    if not results:
        if not running:
            st.caption("Results appear here, photo by photo, as soon as they are inspected.")
    else:
        summary_ui(results, threshold, model.good_classes)
        actions_ui(queue, results, threshold, model.good_classes, running)
        selected = selected_result(results)
        with st.container(border=True, key="inspect-detail"):
            detail_ui(selected, model, threshold, store)
        scroll_to_detail_ui()
        grid_or_table_ui(results, threshold, model.good_classes, selected.index)
    if was_running and not running:
        st.rerun()  # the whole page once more, so the polling stops and the export buttons are enabled


def progress_ui(queue: InspectionQueue, done: int, total: int) -> None:
    left, right = st.columns([5, 1], vertical_alignment="center")
    left.progress(done / max(total, 1), text=f"Inspecting: {done} of {total} files done")
    if right.button("Stop", icon=":material/stop:", key="inspect_stop",
                    help="Files not started yet are not inspected; the batch in progress finishes."):
        queue.stop()
        st.rerun()


def summary_ui(results: list[FileResult], threshold: float, good_classes: list[str]) -> None:
    counts = verdict_counts(results, threshold, good_classes, current_good_threshold())
    columns = st.columns(4)
    for column, verdict in zip(columns, ("pass", "reject", "needs_person", "error")):
        column.metric(VERDICT_LABELS[verdict].capitalize(), counts[verdict], border=True)
    per_class = class_counts(results)
    st.caption(f"{len(results)} files · the model's most likely class (a guess where a person is needed; the "
               "verdicts are above): " + " · ".join(f"{md(name)} **{count}**" for name, count in per_class.items()))
    unlogged = [r.log_error for r in results if r.log_error]
    if unlogged:
        st.warning("Some results could not be logged:\n\n" + "\n".join(f"- {md(m)}" for m in unlogged),
                   icon=":material/warning:")


def actions_ui(queue, results, threshold, good_classes, running: bool) -> None:
    opacity = kept_value("inspect_opacity", 0.45)
    stamp = results[-1].time.replace(":", "").replace("-", "")[:15]
    with st.container(horizontal=True):
        st.download_button("Download results CSV", results_csv_of(results, threshold, good_classes,
                                                                  inspector_name()),
                           file_name=f"inspection-{stamp}.csv", mime="text/csv", icon=":material/download:",
                           key="inspect_csv", on_click="ignore")
        st.download_button("Download heatmap overlays (ZIP)", functools.partial(overlays_zip, results, opacity),
                           file_name=f"heatmaps-{stamp}.zip", mime="application/zip", icon=":material/folder_zip:",
                           key="inspect_zip", on_click="ignore", disabled=running)
        if st.button("Clear results", icon=":material/clear_all:", key="inspect_clear",
                     help="Empties this page for the next batch; the inspection log keeps everything."):
            clear_results(queue)
            st.rerun()  # the whole page: the uploader (outside this fragment) is emptied too


def results_csv_of(results: list[FileResult], threshold: float, good_classes: list[str], inspector: str) -> bytes:
    """The results CSV with the inspector (the signed-in account) beside the time of each inspection."""
    table = results_table(results, threshold, good_classes, current_good_threshold())
    table.insert(table.columns.get_loc("time") + 1, "inspector", inspector)
    return table.to_csv(index=False, float_format="%.6f").encode()


def badge(verdict: str) -> None:
    colour, icon = BADGES[verdict]
    st.badge(VERDICT_LABELS[verdict], color=colour, icon=icon)


def describe(result: FileResult, verdict: str) -> str:
    if not result.ok:
        return "could not be inspected"
    if result.unfamiliar:
        return f"unfamiliar photo · {md(result.predicted)} · {result.confidence:.0%}"
    return f"{md(result.predicted)} · {result.confidence:.0%}"


def score_text(score: float) -> str:
    """An unfamiliar score in as many digits as tell scores apart: the layered score is a sum of a few standard
    scores (training photos near 0), the layer4 score of earlier models a distance in the hundreds."""
    return f"{score:,.0f}" if abs(score) >= 100 else f"{score:.1f}"


def unfamiliar_ui(result: FileResult, model: ActiveModel) -> None:
    """The photo's unfamiliar score against the model's threshold, or why it has none."""
    if result.unfamiliar:
        st.warning(f"Needs a person: {UNFAMILIAR_REASON} (unfamiliar score {score_text(result.unfamiliar_score)}, "
                   f"threshold {score_text(result.unfamiliar_threshold)}), whatever its confidence.",
                   icon=":material/person_search:")
    elif result.unfamiliar_score is not None:
        st.caption(f"Unfamiliar score {score_text(result.unfamiliar_score)} (a person is asked above "
                   f"{score_text(result.unfamiliar_threshold)}): like the photos the model was trained on.",
                   help=UNFAMILIAR_HELP)
    else:
        st.caption("No unfamiliar score: this model was trained before the unfamiliar-photo check. Retrain it to "
                   "have photos unlike its training photos sent to a person.", help=UNFAMILIAR_HELP)


# -- one photo in detail -------------------------------------------------------------------
def selected_result(results: list[FileResult]) -> FileResult | None:
    by_index = {r.index: r for r in results}
    chosen = by_index.get(st.session_state.get(SELECTED_KEY))
    if chosen is None:
        chosen = next((r for r in results if r.ok), results[0])
    return chosen


def select(index: int) -> None:
    """Show this photo in the detail above the grid, and scroll up to it."""
    st.session_state[SELECTED_KEY] = index
    st.session_state[SCROLL_KEY] = time.monotonic_ns()  # a new number per click


SCROLL_SCRIPT = """<script>
(() => {
  const detail = window.parent.document.querySelector('.st-key-inspect-detail');
  if (detail) {
    detail.style.scrollMarginTop = '4rem';  /* clear of Streamlit's top bar */
    detail.scrollIntoView({behavior: 'smooth', block: 'start'});
  }
})();
</script><!-- %d -->"""


def scroll_to_detail_ui() -> None:
    """After "Open" (or a table row) chose a photo: bring the detail into view, where it changed. A fixed script
    of ours (no user text) in an invisible frame; its text changes per click, which reloads the frame, so the
    script runs on every click (an st.html script runs only when first drawn)."""
    import streamlit.components.v1 as components

    click = st.session_state.pop(SCROLL_KEY, None)
    if click:
        components.html(SCROLL_SCRIPT % click, height=0)


def detail_ui(result: FileResult, model: ActiveModel, threshold: float, store: InspectionStore) -> None:
    verdict = result.verdict_at(threshold, model.good_classes, current_good_threshold())
    title, tag = st.columns([4, 1], vertical_alignment="center")
    title.markdown(f"#### {md(result.name)}")
    with tag:
        badge(verdict)
    if not result.ok:
        st.error(md(result.error), icon=":material/error:")
        st.caption(f"Logged as an error (inspection {result.inspection_id}); photo fingerprint "
                   f"`{result.sha256[:16]}…`", help=FINGERPRINT_HELP)
        return
    photo = load_stored_photo(result, max_side=1024) or result.thumbnail
    if photo is None:  # read back from the log, and the stored copy is gone
        st.warning(f"{md(result.name)}: the stored copy of this photo is gone, so it cannot be shown again. Its "
                   "verdict is in the inspection log.", icon=":material/broken_image:")
        return
    pictures, chart_col = st.columns([2, 1.3], gap="medium")
    with pictures:
        images = st.container()
        class_col, opacity_col = st.columns(2)
        target = class_col.selectbox("Heatmap for class", result.classes, index=result.predicted_index,
                                     key=f"inspect_cam_class_{result.index}", help=HEATMAP_HELP,
                                     format_func=lambda c: f"{c} (predicted)" if c == result.predicted else c)
        with opacity_col:
            opacity = kept_slider("Heatmap opacity", 0.0, 1.0, 0.45, 0.05, key="inspect_opacity")
        for note in result.notes:
            st.caption(f":material/info: {md(note)}")
        with images:
            heat = class_heatmap_ui(result, model, result.classes.index(target))
            photo_col, heat_col = st.columns(2)
            photo_col.image(photo, caption=f"Photo, {result.photo_size[0]}x{result.photo_size[1]} px",
                            width="stretch")
            if heat is not None:
                heat_col.image(overlay_for(result, opacity, photo, heat),
                               caption=f"Heatmap: where the model looked for “{md(target)}”", width="stretch")
    with chart_col:
        st.markdown(f"Predicted **{md(result.predicted)}** with {result.confidence:.1%} "
                    f"(threshold {threshold:.0%}) → **{VERDICT_LABELS[verdict]}**")
        unfamiliar_ui(result, model)
        st.plotly_chart(probability_chart(result, model.good_classes, threshold),
                        key=f"inspect_chart_{result.index}", config={"displayModeBar": False})
        st.caption(f"Model {code(result.model_id)} · {result.time.replace('T', ' ')[:19]} UTC · photo fingerprint "
                   f"`{result.sha256[:16]}…` · inspection {result.inspection_id}", help=FINGERPRINT_HELP)
        correction_ui(result, store)


def class_heatmap_ui(result: FileResult, model: ActiveModel, class_index: int) -> np.ndarray | None:
    if class_index == result.predicted_index:
        return result.heatmap_float()
    if result.model_id != model.run.run_id:
        st.caption(f"This photo was inspected with model {code(result.model_id)}; heatmaps for other classes need "
                   "that model active. Showing the predicted class.")
        return result.heatmap_float()
    checkpoint = model.run.checkpoint
    heat = _cached_class_heatmap(model.predictor, f"{checkpoint}@{checkpoint.stat().st_mtime}", result.photo_path,
                                 result.sha256, class_index, result)
    if heat is None:
        st.caption("The stored copy of this photo is gone, so only the predicted class's heatmap is available.")
        return result.heatmap_float()
    return heat


@st.cache_data(max_entries=64, show_spinner="Computing the heatmap…")
def _cached_class_heatmap(_predictor, checkpoint: str, photo_path: str, sha256: str, class_index: int,
                          _result: FileResult) -> np.ndarray | None:
    return heatmap_for_class(_predictor, _result, class_index)


def probability_chart(result: FileResult, good_classes: list[str], threshold: float) -> go.Figure:
    """Horizontal bars, one per class, the predicted class in its verdict colour, the threshold as a line."""
    classes = list(result.classes)[::-1]
    probs = [float(p) for p in result.probabilities][::-1]
    colours = [("#2e7d32" if c in good_classes else "#c62828") if c == result.predicted else "#9aa5b1"
               for c in classes]
    figure = go.Figure(go.Bar(x=probs, y=[plot_text(c) for c in classes], orientation="h", marker_color=colours,
                              text=[f"{p:.1%}" for p in probs], textposition="outside", cliponaxis=False,
                              hovertemplate="%{y}: %{x:.2%}<extra></extra>"))
    figure.add_vline(x=threshold, line_dash="dash", line_color="#555",
                     annotation_text=f"threshold {threshold:.0%}", annotation_position="top")
    figure.update_layout(height=60 + 30 * len(classes), margin=dict(l=0, r=40, t=30, b=0),
                         xaxis=dict(range=[0, 1.0], tickformat=".0%", title="probability"), showlegend=False)
    return figure


def correction_ui(result: FileResult, store: InspectionStore) -> None:
    """'The model said scratches, it is inclusion': kept for review and retraining. No class is chosen
    beforehand, so a careless click saves nothing; saving the same correction again stores it once."""
    message = st.empty()
    options = [c for c in result.classes if c != result.predicted] + [UNUSABLE]
    with st.form(key=f"inspect_correction_{result.index}", border=False):
        st.markdown("**Disagree with the model?**")
        choice = st.selectbox(f"The model said {md(result.predicted)}; the correct class is", options, index=None,
                              placeholder="choose the correct class", key=f"inspect_correct_label_{result.index}")
        note = st.text_input("Note (optional)", key=f"inspect_correct_note_{result.index}")
        if st.form_submit_button("Save correction", icon=":material/save:"):
            if choice is None:
                message.warning("Choose the correct class (or “photo unusable”) first; nothing was saved.",
                                icon=":material/edit_note:")
                return
            store.add_correction(source="inspection", action="unusable" if choice == UNUSABLE else "relabel",
                                 photo_path=result.photo_path, new_label=None if choice == UNUSABLE else choice,
                                 who=inspector_name(), sha256=result.sha256, model_label=result.predicted,
                                 run_id=result.model_id, inspection_id=result.inspection_id, note=note)
    saved = my_correction(store, result)
    if saved is not None:
        label = saved["new_label"] if saved["action"] == "relabel" else "photo unusable"
        message.success(f"Correction saved: the model said {md(result.predicted)}, {md(saved['who'])} says "
                        f"**{md(label)}** ({saved['status']}; the engineer reviews it before retraining).",
                        icon=":material/edit_note:")


def my_correction(store: InspectionStore, result: FileResult) -> dict | None:
    """The signed-in inspector's latest correction of this photo (of this inspection, or the same photo inspected
    before), or None."""
    saved = store.corrections(dataset="")
    if saved.empty:
        return None
    same_photo = (saved["inspection_id"] == result.inspection_id) | (
        (saved["sha256"] == result.sha256) & (saved["photo_path"] == result.photo_path))
    mine = saved[same_photo & (saved["who"] == inspector_name()) & (saved["source"] == "inspection")]
    return None if mine.empty else mine.iloc[-1].to_dict()


# -- many photos -------------------------------------------------------------------------------
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
    opacity = kept_value("inspect_opacity", 0.45)
    for start in range(0, len(results), GRID_COLUMNS):
        for column, result in zip(st.columns(GRID_COLUMNS), results[start:start + GRID_COLUMNS]):
            with column, st.container(border=True, key=f"inspect-result-{result.index}"):
                card_ui(result, result.verdict_at(threshold, good_classes, current_good_threshold()), opacity, result.index == selected)


def card_ui(result: FileResult, verdict: str, opacity: float, is_selected: bool) -> None:
    picture = overlay_for(result, opacity) if result.ok else None
    if picture is not None:
        st.image(picture, width="stretch")
    st.markdown(f"**{md(result.name)}**")
    badge(verdict)
    if result.ok:
        st.caption(describe(result, verdict))
        # The card shown in the detail says so on its button: every card of a row stays as tall.
        st.button("Shown above" if is_selected else "Open", key=f"inspect_open_{result.index}", on_click=select,
                  args=(result.index,), icon=":material/arrow_upward:" if is_selected else ":material/zoom_in:",
                  width="stretch", disabled=is_selected)
    else:  # small red text rather than an alert box, which a narrow card stretches to many lines
        st.caption(f":red[{md(result.error)}]")


def table_ui(results: list[FileResult], threshold: float, good_classes: list[str]) -> None:
    table = results_table(results, threshold, good_classes, current_good_threshold())
    st.dataframe(
        table[["file_name", "verdict", "reason", "predicted", "confidence", "unfamiliar_score", "message"]],
        hide_index=True,
        key="inspect_table", on_select=functools.partial(_select_from_table, [r.index for r in results]),
        selection_mode="single-row",
        column_config={"confidence": st.column_config.ProgressColumn("confidence", min_value=0, max_value=1,
                                                                     format="percent"),
                       "unfamiliar_score": st.column_config.NumberColumn("unfamiliar score", format="%.1f")})


def _select_from_table(indices: list[int]) -> None:
    rows = st.session_state["inspect_table"].selection.rows
    if rows:
        select(indices[rows[0]])
