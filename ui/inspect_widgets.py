"""Widgets and drawing for the Inspect page: upload, threshold, batch summary, grid, detail, export.

Per-user state lives in st.session_state under keys starting with "inspect_";
the work itself is done by defect_model.workflows.inspection in a background queue.
"""

from __future__ import annotations

import dataclasses
import functools

import streamlit as st

from defect_model.workflows.inspection import FileResult, InspectionSettings, inference_threads
from defect_model.workflows.inspection_export import class_counts, overlays_zip, results_table, verdict_counts
from defect_model.workflows.inspection_queue import InspectionQueue
from defect_model.runs.store import InspectionStore
from defect_model.database import DatabaseError, location, shown_url
from defect_model.workflows.operating_point import record_override
from defect_model.serve.verdicts import DEFAULT_THRESHOLD, VERDICT_LABELS
from ui.inspect_history import decode_ids, encode_ids, restore_batch
from ui.inspect_model import ActiveModel
from ui.session import current_actor
from ui.text import md
from ui.inspect_detail import detail_ui, scroll_to_detail_ui, selected_result
from ui.inspect_results import grid_or_table_ui
from ui.layout import metric_row
from ui.inspect_state import (BATCH_PARAM, GOOD_THRESHOLD_KEY, QUEUE_KEY, QUEUE_MODEL_KEY, RESTORED_KEY, ROUND_KEY,
                              SEEN_KEY, SELECTED_KEY, current_good_threshold, inspector_name, kept_slider, kept_value)

POLL_SECONDS = 1.0  # while a batch runs; each poll redraws the results, which costs the worker CPU
FIRST_RESULT_WAIT_S = 3.0  # after an upload, wait this long for the first verdict before drawing the page
# The lowest confidence a verdict may rest on: below a half, the model favours its class less than all the others
# together (at 0.31 a clean photo was rejected as "scratch 32.5 %").
MIN_THRESHOLD = 0.5
THRESHOLD_HELP = ("How sure the model must be of a photo's class to decide it alone. It never changes which class "
                  "the model sees, only whether a person decides instead; a photo unlike the training photos goes "
                  "to a person however sure the model is.")
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








def store_ui() -> InspectionStore | None:
    """The inspection log; without it nothing is inspected (every inspection must be logged)."""
    try:
        return InspectionStore()
    except (OSError, DatabaseError) as exc:
        st.error(md(f"{shown_url(location())}: the inspection log cannot be opened ({exc}). Make the folder "
                    "writable or set DEFECT_DB to a writable file (with DEFECT_DATABASE_URL: check the server, or "
                    "run `python -m defect_model db upgrade`), then reload the page."), icon=":material/error:")
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
    value = kept_slider("Confidence a verdict needs", MIN_THRESHOLD, 1.0, DEFAULT_THRESHOLD, 0.01,
                        key="inspect_threshold", help=THRESHOLD_HELP)
    st.caption(f"Below {value:.0%} a photo goes to a person; at or above it, it passes or is rejected by the class "
               "the model sees. Moving it re-decides the photos on this page and the CSV; the inspection log keeps "
               "each photo's verdict as it was inspected.")
    return value


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
    metric_row([(VERDICT_LABELS[verdict].capitalize(), str(counts[verdict]), None)
                for verdict in ("pass", "reject", "needs_person", "error")], border=True)
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










# -- one photo in detail -------------------------------------------------------------------




















# -- many photos -------------------------------------------------------------------------------








