"""A batch's results as tables, counts, CSV and heatmap overlays for export."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from defect_model.photos.images import ImageError, load_image
from defect_model.workflows.inspection import FileResult, thumbnail
from defect_model.serve.verdicts import VERDICTS, PassThreshold, verdict_reason

EXPORT_SIDE = 2048  # overlays in the ZIP are at the photo's size, capped at this side


def verdict_counts(results: Sequence[FileResult], threshold: float, good_classes: Iterable[str],
                   good_threshold: PassThreshold | None = None) -> dict[str, int]:
    good = list(good_classes)
    counts = dict.fromkeys(VERDICTS, 0)
    for result in results:
        counts[result.verdict_at(threshold, good, good_threshold)] += 1
    return counts


def class_counts(results: Sequence[FileResult]) -> dict[str, int]:
    """Predicted class -> number of photos, in the model's class order."""
    counts: dict[str, int] = {}
    for result in results:
        for name in result.classes:
            counts.setdefault(name, 0)
        if result.ok:
            counts[result.predicted] = counts.get(result.predicted, 0) + 1
    return counts


def probability_column(name: str) -> str:
    return f"p_{name}"


def results_table(results: Sequence[FileResult], threshold: float, good_classes: Iterable[str],
                  good_threshold: PassThreshold | None = None) -> pd.DataFrame:
    """The export table: file name, sha256, predicted class, every probability, verdict, model id, time.

    The verdict is the one under `threshold` (the page's current setting), which
    is also written in its own column; `logged_verdict` is the one the log kept at inspection time (they differ
    when the threshold was moved after inspecting).
    """
    good = list(good_classes)
    classes: list[str] = []
    for result in results:
        classes += [c for c in result.classes if c not in classes]
    rows = []
    for result in results:
        row = {"file_name": result.name, "sha256": result.sha256, "predicted": result.predicted}
        probs = result.probability_dict()
        for name in classes:
            row[probability_column(name)] = probs.get(name, np.nan)
        row.update(confidence=result.confidence if result.ok else np.nan,
                   verdict=result.verdict_at(threshold, good, good_threshold), logged_verdict=result.verdict,
                   model_id=result.model_id, time=result.time,
                   threshold=threshold, message=result.message, inspection_id=result.inspection_id,
                   unfamiliar_score=result.unfamiliar_score, unfamiliar_threshold=result.unfamiliar_threshold)
        row["reason"] = verdict_reason(row["verdict"], result.unfamiliar)
        rows.append(row)
    columns = (["file_name", "sha256", "predicted"] + [probability_column(c) for c in classes]
               + ["confidence", "verdict", "logged_verdict", "reason", "unfamiliar_score", "unfamiliar_threshold", "model_id", "time",
                  "threshold", "message", "inspection_id"])
    return pd.DataFrame(rows, columns=columns)


def results_csv(results: Sequence[FileResult], threshold: float, good_classes: Iterable[str]) -> bytes:
    return results_table(results, threshold, good_classes).to_csv(index=False, float_format="%.6f").encode()


def overlay_for(result: FileResult, opacity: float = 0.5, photo: Image.Image | None = None,
                heatmap: np.ndarray | None = None) -> Image.Image | None:
    """The heatmap blended over `photo` (default: the thumbnail); None for a failed file."""
    from defect_model.serve.explain import heatmap_to_photo, overlay  # imports torch; only called where a model is loaded

    heat = result.heatmap_float() if heatmap is None else heatmap
    base = result.thumbnail if photo is None else photo
    if heat is None or base is None:
        return None
    return overlay(base, np.clip(heatmap_to_photo(heat, base.size, result.resize_mode), 0, 1), opacity)


def load_stored_photo(result: FileResult, max_side: int = EXPORT_SIDE) -> Image.Image | None:
    """The stored copy of the photo, RGB, at most max_side pixels on a side; None when it is gone."""
    if not result.photo_path or not Path(result.photo_path).is_file():
        return None
    try:
        photo = load_image(result.photo_path, result.name)
    except ImageError:
        return None
    if max(photo.size) > max_side:
        photo = thumbnail(photo, max_side)
    return photo


def heatmap_for_class(predictor, result: FileResult, class_index: int) -> np.ndarray | None:
    """[0, 1] model-sized Grad-CAM map of `result`'s photo for any class; None when the stored photo is gone.

    The predicted class's map is the one computed at inspection; other classes are computed from
    the stored copy, so `predictor` must be the model the photo was inspected with.
    """
    if result.heatmap is not None and class_index == result.predicted_index:
        return result.heatmap_float()
    if not result.photo_path or not Path(result.photo_path).is_file():
        return None
    from defect_model.serve.explain import heatmaps

    array = predictor.prepare(load_image(result.photo_path, result.name), result.name)
    _, maps = heatmaps(predictor, [array], [int(class_index)])
    return np.clip(maps[0], 0, 1)


def overlay_name(result: FileResult) -> str:
    stem = Path(result.name.replace("/", "_")).stem
    return f"{result.index + 1:04d}_{stem}_gradcam_{result.predicted}.png"


def overlays_zip(results: Sequence[FileResult], opacity: float = 0.5) -> bytes:
    """A ZIP with one PNG per inspected photo: its predicted class's heatmap over the photo.

    Uses the stored full-size copy when it is there, else the thumbnail. Failed files are listed in
    errors.txt inside the ZIP, so the ZIP accounts for every upload.
    """
    buffer = io.BytesIO()
    errors = []
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for result in results:
            if not result.ok:
                errors.append(result.error)
                continue
            image = overlay_for(result, opacity, load_stored_photo(result))
            if image is None:
                errors.append(f"{result.name}: no heatmap")
                continue
            png = io.BytesIO()
            image.save(png, format="PNG")
            archive.writestr(overlay_name(result), png.getvalue())
        if errors:
            archive.writestr("errors.txt", "\n".join(errors) + "\n")
    return buffer.getvalue()
