"""Review's photo cards: a photo with its Grad-CAM heatmaps, probabilities and the decision buttons (relabel, keep,
unusable), for a confusion-matrix cell and the Misclassified tab; Monitor shows the same photos."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st
from PIL import Image

from defect_model.access.accounts import Actor
from defect_model.workflows.review import (ReviewData, ReviewError, cell_photos, describe_decision, latest_decisions,
                                           misclassified, photo_file, record_decision)
from defect_model.runs.store import InspectionStore
from ui.resources import predictor_for
from ui.text import md

PAGE_SIZE = 6
THUMB = 176  # pixels: small photos are enlarged to this for the cards
FLASH = "review_flash"


def cell_ui(data: ReviewData, true: str, pred: str, store: InspectionStore | None, actor: Actor) -> None:
    photos = cell_photos(data.predictions, true, pred)
    kind = "correct" if true == pred else "wrong"
    st.markdown(f"**{len(photos)} photo(s) of {md(true)} predicted as {md(pred)}** ({kind}), highest loss first")
    if photos.empty:
        st.info("This cell is empty.")
        return
    st.dataframe(photos[["path", "true_label", "pred_label", "confidence", "loss"]], hide_index=True,
                 column_config={"confidence": st.column_config.NumberColumn(format="%.3f"),
                                "loss": st.column_config.NumberColumn(format="%.3f")})
    photo_cards_ui(data, photos, store, actor, section="cell")


# -- photo cards with heatmaps and decisions --------------------------------------------------
@st.cache_data(max_entries=16, show_spinner="Computing Grad-CAM heatmaps…")
def photo_overlays(_predictor, checkpoint: str, mtime: float, dataset: str,
                   items: tuple[tuple[str, int], ...]) -> list:
    """Per (photo, class index): {"image": Grad-CAM overlay (uint8 array), "flat": no region stands out},
    or the error message for that photo."""
    from defect_model.serve.explain import heatmap_to_photo, heatmaps, overlay
    from defect_model.photos.images import ImageError, load_image

    photos, arrays, results = {}, {}, {}
    for path, _ in items:
        if path in photos or path in results:
            continue
        try:
            photos[path] = load_image(photo_file(dataset, path))
            arrays[path] = _predictor.prepare(photos[path])
        except ImageError as exc:
            results[path] = f"{exc}"
    readable = [(path, target) for path, target in items if path in photos]
    maps = heatmaps(_predictor, [arrays[p] for p, _ in readable], [t for _, t in readable])[1] if readable else []
    drawn = {}
    mode = _predictor.preprocessing.resize_mode
    for (path, target), heatmap in zip(readable, maps):
        photo = photos[path]
        image = overlay(photo, heatmap_to_photo(heatmap, photo.size, mode), 0.45)
        flat = float(np.ptp(heatmap)) < 1e-6  # e.g. no positive evidence, or a 1x1 feature map (tiny photos)
        drawn[(path, target)] = {"image": np.asarray(_enlarge(image)), "flat": flat}
    return [drawn.get(item, results.get(item[0])) for item in items]


def _enlarge(image: Image.Image) -> Image.Image:
    width, height = image.size
    if max(width, height) >= THUMB:
        return image
    scale = THUMB / max(width, height)
    return image.resize((round(width * scale), round(height * scale)), Image.Resampling.BICUBIC)


def photo_image(dataset: str, path: str):
    from defect_model.photos.images import ImageError, load_image

    try:
        return np.asarray(_enlarge(load_image(photo_file(dataset, path))))
    except ImageError as exc:
        return str(exc)


def _card_heatmaps(data: ReviewData, rows: pd.DataFrame) -> dict:
    """{(path, class name): overlay or error}; empty with a message when the checkpoint cannot be loaded."""
    from defect_model.train.checkpoint import CheckpointError

    try:
        predictor = predictor_for(data.run)
    except (CheckpointError, FileNotFoundError) as exc:
        st.warning(f"No heatmaps: {md(exc)}", icon=":material/warning:")
        return {}
    index = {name: i for i, name in enumerate(predictor.classes)}
    items = []
    for row in rows.itertuples():
        for label in dict.fromkeys([row.pred_label, row.true_label]):
            if label in index:
                items.append((row.path, index[label]))
    results = photo_overlays(predictor, str(data.run.checkpoint), data.run.checkpoint.stat().st_mtime, data.dataset,
                        tuple(items))
    return {(path, predictor.classes[target]): result for (path, target), result in zip(items, results)}


def show_image(column, image, caption: str) -> None:
    if isinstance(image, dict):
        if image["flat"]:
            caption += " (flat: no region stands out)"
        image = image["image"]
    if isinstance(image, str):
        column.error(md(image), icon=":material/broken_image:")
    elif image is not None:
        column.image(image, caption=caption, width="stretch")  # a fixed width spills over narrow columns


def _decide(store: InspectionStore, data: ReviewData, path: str, action: str, actor: Actor, label_key: str | None,
            card: str) -> None:
    """Button callback: one decision, one correction row; the outcome is shown on the card."""
    new_label = st.session_state.get(label_key) if label_key else None
    try:
        record_decision(store, data, path, action, actor, new_label)
    except (ReviewError, PermissionError) as exc:
        st.session_state[FLASH] = {"card": card, "kind": "error", "text": md(exc)}
        return
    done = {"confirm": "label confirmed", "relabel": f"relabelled to {md(new_label)}",
            "unusable": "marked unusable"}[action]
    st.session_state[FLASH] = {"card": card, "kind": "success",
                               "text": f"{md(Path(path).name)}: {done}. Saved as a correction."}


def _page_of(rows: pd.DataFrame, key: str) -> pd.DataFrame:
    pages = max(1, math.ceil(len(rows) / PAGE_SIZE))
    if pages == 1:
        return rows
    page = st.number_input(f"Page (of {pages}, {PAGE_SIZE} photos each)", 1, pages, 1, key=key)
    start = (int(page) - 1) * PAGE_SIZE
    return rows.iloc[start:start + PAGE_SIZE]


def current_label(row, decided: dict | None) -> str:
    """The photo's label once the latest decision about it is applied ("" when it is dropped as unusable)."""
    if not decided:
        return row.true_label
    if decided["action"] == "relabel":
        return decided["new_label"]
    return "" if decided["action"] == "unusable" else row.true_label


def probability_lines(row, classes: list[str], label: str, shown: int = 5) -> list[str]:
    """The highest probabilities, and always the photo's label and the original one among them, as Markdown
    lines: "pit: **12.0%** (label)"."""
    probs = sorted(((c, getattr(row, f"prob_{c}", None)) for c in classes), key=lambda item: -(item[1] or 0))
    keep = {c for c, _ in probs[:shown]} | {label, row.true_label}
    lines = []
    for name, p in probs:
        if name not in keep or p is None:
            continue
        tags = [tag for tag, on in (("predicted", name == row.pred_label), ("label", name == label),
                                    ("filed as", name == row.true_label != label)) if on]
        lines.append(f"{md(name)}: **{p:.1%}**" + (f" ({', '.join(tags)})" if tags else ""))
    return lines


def card_title(row, label: str) -> str:
    if label == row.true_label:
        filed = f"label **{md(label)}**"
    elif label:
        filed = f"label **{md(label)}** (relabelled; filed as {md(row.true_label)})"
    else:
        filed = f"**unusable** (filed as {md(row.true_label)})"
    return (f"**{md(row.path)}** — {filed}, predicted **{md(row.pred_label)}** ({row.confidence:.0%}), "
            f"loss {row.loss:.3f}")


def photo_cards_ui(data: ReviewData, rows: pd.DataFrame, store: InspectionStore | None, actor: Actor,
                   section: str) -> None:
    """One card per photo: the photo, Grad-CAM for the predicted and the true class, probabilities, and
    the decision buttons (confirm the label, change it, or mark the photo unusable). A decision shows at once:
    the card gives the photo's label after it."""
    shown = _page_of(rows, f"{section}_page")
    cams = _card_heatmaps(data, shown)
    decisions = latest_decisions(store, data.dataset) if store is not None else {}
    flash = st.session_state.get(FLASH) or {}
    for number, row in enumerate(shown.itertuples(index=False)):
        card = f"{section}:{row.path}"
        decided = decisions.get(row.path)
        label = current_label(row, decided)
        with st.container(border=True, key=f"card-{section}-{number}"):
            st.markdown(card_title(row, label), help=f"In the dataset {md(data.dataset)}")
            photo_col, pred_col, true_col, info_col = st.columns([1, 1, 1, 1.5])
            show_image(photo_col, photo_image(data.dataset, row.path), "photo")
            show_image(pred_col, cams.get((row.path, row.pred_label)),
                       f"Heatmap (Grad-CAM): predicted {md(row.pred_label)}")
            if row.true_label != row.pred_label:
                show_image(true_col, cams.get((row.path, row.true_label)),
                           f"Heatmap (Grad-CAM): filed as {md(row.true_label)}")
            else:
                true_col.caption("Predicted = filed class: one heatmap.")
            info_col.markdown("  \n".join(probability_lines(row, data.classes, label)))
            if decided:
                info_col.info(describe_decision(decided), icon=":material/task_alt:")
            if flash.get("card") == card:
                (info_col.success if flash["kind"] == "success" else info_col.error)(flash["text"])
            if store is None:
                continue
            decision_buttons_ui(info_col, store, data, row, label, actor, card)


def decision_buttons_ui(column, store: InspectionStore, data: ReviewData, row, label: str, actor: Actor,
                        card: str) -> None:
    """Relabel (to a class other than the one it is filed under), keep that label, or drop the photo as unusable.
    The choices stay the same after a decision, so a second click repeats it (and stores nothing) instead of
    choosing something else."""
    disabled = not actor.may("relabel")
    others = [c for c in data.classes if c != row.true_label]
    label_key = f"{card}:new_label"
    # Never pre-filled with the model's answer: one click would file a missed crack as a good part.
    column.selectbox("Correct label", others, key=label_key, index=None, placeholder="choose the correct class",
                     disabled=disabled)
    chosen = st.session_state.get(label_key) is not None
    column.button("Relabel", key=f"{card}:relabel", on_click=_decide, disabled=disabled or not chosen,
                  args=(store, data, row.path, "relabel", actor, label_key, card), width="stretch",
                  help="The photo is filed under the wrong class: train on the label chosen above."
                       + ("" if chosen else " Choose the correct class first."))
    confirm_col, unusable_col = column.columns(2)
    undo = label != row.true_label
    confirm_col.button(f"Back to {md(row.true_label)}" if undo else f"Keep {md(row.true_label)}", key=f"{card}:confirm",
                       on_click=_decide, disabled=disabled, width="stretch",
                       args=(store, data, row.path, "confirm", actor, None, card),
                       help=f"The label it was filed under, {md(row.true_label)}, is right"
                            + (" after all: undo the decision." if undo else "; the model is wrong."))
    unusable_col.button("Unusable", key=f"{card}:unusable", on_click=_decide, disabled=disabled or label == "",
                        args=(store, data, row.path, "unusable", actor, None, card), width="stretch",
                        help="Blurred, empty or not a product photo: leave it out of training.")


def misclassified_ui(data: ReviewData, store: InspectionStore | None, actor: Actor) -> None:
    left, right = st.columns(2)
    true_filter = left.multiselect("True class", data.classes, key="wrong_true", placeholder="all classes")
    pred_filter = right.multiselect("Predicted class", data.classes, key="wrong_pred", placeholder="all classes")
    wrong = misclassified(data.predictions, true_filter, pred_filter)
    total = int((~data.predictions["correct"]).sum())
    st.markdown(f"**{len(wrong)} of {total} wrong validation prediction(s)**, worst (highest loss) first")
    if wrong.empty:
        st.success("No wrong predictions with these filters.")
        return
    photo_cards_ui(data, wrong, store, actor, section="wrong")
