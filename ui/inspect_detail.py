"""One inspected photo in detail on the Inspect page: photo and heatmap for any class, the probabilities against
the threshold, the verdict in one sentence, its unfamiliar score, and the inspector's correction."""

from __future__ import annotations

import time

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from defect_model.workflows.inspection import FileResult
from defect_model.workflows.inspection_export import heatmap_for_class, load_stored_photo, overlay_for
from defect_model.runs.store import InspectionStore
from defect_model.serve.verdicts import UNFAMILIAR_REASON
from ui.inspect_model import ActiveModel
from ui.layout import page_script
from ui.text import code, md, plot_text
from ui.inspect_state import SCROLL_KEY, SELECTED_KEY, current_good_threshold, inspector_name, kept_slider
from ui.inspect_verdict import needed_confidence, verdict_banner, verdict_sentence

UNUSABLE = "(photo unusable)"


HEATMAP_HELP = ("The heatmap (Grad-CAM) colours the parts of the photo that weighed most for the chosen class: red "
                "strongest, blue least. Pick another class to see what would speak for it.")


FINGERPRINT_HELP = ("A fingerprint (SHA-256) of the file's bytes: the same photo always has the same one, so the log "
                    "can tell which photo was judged.")


UNFAMILIAR_HELP = ("How far the photo lies from the training photos as the network sees it, at three depths: from "
                   "texture and lighting to the parts the classes are told apart by (at each, the distance to the "
                   "nearest class, on a scale where training photos average 0; the score is their sum). The "
                   "threshold was set at the end of training so that a small share of the validation photos (2 % "
                   "unless the run chose otherwise) lies above it.")


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
    click = st.session_state.pop(SCROLL_KEY, None)
    if click:
        page_script(SCROLL_SCRIPT % click, "scroll-to-detail")


def detail_ui(result: FileResult, model: ActiveModel, threshold: float, store: InspectionStore) -> None:
    verdict = result.verdict_at(threshold, model.good_classes, current_good_threshold())
    verdict_banner(verdict, "detail")
    st.markdown(f"#### {md(result.name)}")  # a heading, smaller than the verdict above it
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
        needed = needed_confidence(result, model.good_classes, threshold, current_good_threshold())
        st.markdown(verdict_sentence(result, verdict, needed))
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
