"""Inspecting a batch of uploaded photos: what it is inspected with, each file's result (or the reason it
could not be inspected), and the log entry per file.

No Streamlit here. The Inspect page hands uploaded (name, bytes) files to an InspectionQueue
(inspection_queue), which works through them with `inspect_batch`; the verdict rule is in `verdicts`,
reading uploads in `uploads`, the results table and exports in `inspection_export`.

A file that cannot be inspected becomes a result with verdict "error" and a message that names it and
says what to do; it is logged like any other file and never stops the rest of the batch.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from defect_model.photos.images import ImageError, load_image
from defect_model.photos.stats import photo_stats
from defect_model.runs.folders import RunDir, now_iso
from defect_model.runs.store import InspectionStore, sha256_bytes
from defect_model.photos.uploads import Upload, check_size, check_upload
from defect_model.serve.verdicts import DEFAULT_THRESHOLD, PassThreshold, decide_verdict, is_unfamiliar, verdict_reason

DEFAULT_BATCH_SIZE = 8
THUMBNAIL_SIDE = 320  # the copy kept in memory for the grid; the full photo stays in the store


def inference_threads() -> int:
    """Torch threads for inspecting inside the dashboard: $DEFECT_INFERENCE_THREADS, else half the cores.

    One dashboard process serves every session; its pages must keep answering while a batch runs. On
    the 2-core machine, one thread inspected a 32-photo batch in the page about twice as fast as two,
    which kept stalling each other against the server and browser (bench/results/inspect-latency.md).
    """
    value = os.environ.get("DEFECT_INFERENCE_THREADS", "")
    return max(1, int(value)) if value.strip().isdigit() else max(1, (os.cpu_count() or 2) // 2)


@dataclass
class InspectionSettings:
    """What a batch is inspected with; fixed when the files are submitted."""

    run_id: str
    good_classes: list[str] = field(default_factory=list)
    threshold: float = DEFAULT_THRESHOLD
    good_threshold: PassThreshold | None = None  # a pass's own threshold(s) (the model's operating point), else `threshold`
    inspector: str = ""
    model_sha256: str = ""  # the served checkpoint's hash, logged where no model judged (an unreadable file)


def good_classes_of(run: RunDir, predictor) -> list[str]:
    """Which of the model's classes mean a good part: the run's settings say; the checkpoint's copy when the run's
    config.yaml is unreadable or gone."""
    try:
        good = run.settings().good_classes
    except (OSError, ValueError):
        good = predictor.meta.get("config", {}).get("good_classes", [])
    return [name for name in good if name in predictor.classes]


@dataclass
class FileResult:
    """One uploaded file: its probabilities and heatmap, or the reason it could not be inspected."""

    index: int  # position in this session's uploads, from 0
    name: str
    sha256: str
    time: str
    model_id: str
    threshold: float
    verdict: str  # decided at inspection time, as logged
    classes: list[str] = field(default_factory=list)
    probabilities: np.ndarray | None = None  # (C,)
    error: str = ""
    notes: list[str] = field(default_factory=list)
    photo_path: str = ""
    photo_size: tuple[int, int] | None = None  # (width, height)
    photo_stats: dict = field(default_factory=dict)  # brightness, contrast, width, height (logged for Monitor)
    thumbnail: Image.Image | None = None
    heatmap: np.ndarray | None = None  # uint8 (S, S) for the predicted class, at the model's input size
    resize_mode: str = "stretch"
    inspection_id: int | None = None
    log_error: str = ""
    size_bytes: int = 0
    unfamiliar_score: float | None = None  # None: the model has no unfamiliar-photo statistics
    unfamiliar_threshold: float | None = None
    model_sha256: str = ""  # what judged it: the checkpoint's bytes as loaded ...
    graph_sha256: str = ""  # ... and the ONNX graph's as opened ('' where torch judged)

    @property
    def unfamiliar(self) -> bool:
        return is_unfamiliar(self.unfamiliar_score, self.unfamiliar_threshold)

    @property
    def reason(self) -> str:
        """Why a person is needed ('' for other verdicts)."""
        return verdict_reason(self.verdict, self.unfamiliar)

    @property
    def ok(self) -> bool:
        return not self.error

    @property
    def predicted_index(self) -> int | None:
        return None if self.probabilities is None else int(np.argmax(self.probabilities))

    @property
    def predicted(self) -> str:
        index = self.predicted_index
        return "" if index is None else self.classes[index]

    @property
    def confidence(self) -> float | None:
        return None if self.probabilities is None else float(np.max(self.probabilities))

    def probability_dict(self) -> dict[str, float]:
        if self.probabilities is None:
            return {}
        return {c: float(p) for c, p in zip(self.classes, self.probabilities)}

    def verdict_at(self, threshold: float, good_classes: Iterable[str],
                   good_threshold: PassThreshold | None = None) -> str:
        """The verdict under another threshold (the page's slider); errors stay errors, unfamiliar photos go
        to a person whatever the threshold."""
        if not self.ok:
            return "error"
        return decide_verdict(self.probabilities, self.classes, good_classes, threshold, good_threshold,
                              self.unfamiliar)

    def heatmap_float(self) -> np.ndarray | None:
        return None if self.heatmap is None else self.heatmap.astype(np.float32) / 255.0

    @property
    def message(self) -> str:
        """The error, else any notes about how the photo was read, for the results table."""
        return self.error or "; ".join(self.notes)


def _keep_copy(store: InspectionStore | None, data: bytes, name: str) -> tuple[str, str]:
    """(photo_path, problem): the stored copy of a photo that decoded, or why there is none. Nothing else is
    kept: a file that is no photo, or that was refused, is logged with its sha256 only."""
    if store is None:
        return "", ""
    try:
        return str(store.store_photo(data, name)[1].resolve()), ""  # absolute: the log outlives the cwd
    except OSError as exc:
        return "", f"no copy kept ({exc})"


def thumbnail(photo: Image.Image, side: int = THUMBNAIL_SIDE) -> Image.Image:
    thumb = photo.copy()
    thumb.thumbnail((side, side), Image.BILINEAR)
    return thumb


def _forward(predictor, arrays: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    from defect_model.serve.explain import heatmaps_and_unfamiliar  # torch is imported by the caller's predictor

    return heatmaps_and_unfamiliar(predictor, arrays)


def inspect_batch(predictor, uploads: Sequence[Upload], settings: InspectionSettings,
                  store: InspectionStore | None = None, first_index: int = 0) -> list[FileResult]:
    """Inspect and log a few files together (one forward pass); a bad file becomes an error result."""
    classes = list(predictor.classes)
    resize_mode = predictor.preprocessing.resize_mode
    results: list[FileResult] = []
    ready: list[tuple[FileResult, Image.Image, np.ndarray]] = []
    for offset, upload in enumerate(uploads):
        result = FileResult(index=first_index + offset, name=upload.name, sha256=sha256_bytes(upload.data),
                            time=now_iso(), model_id=settings.run_id, threshold=settings.threshold,
                            verdict="error", classes=classes, resize_mode=resize_mode, size_bytes=len(upload.data))
        results.append(result)
        try:
            if upload.problem:
                result.error = upload.problem
                continue
            check_size(upload.name, len(upload.data))
            result.notes[:0] = check_upload(upload.name, upload.data)
            photo = load_image(upload.data, upload.name)
            result.photo_size = photo.size
            result.photo_stats = photo_stats(photo)
            if "reduced_from" in photo.info:
                width, height = photo.info["reduced_from"]
                result.notes.append(f"a {width}x{height} photo, inspected at {photo.width}x{photo.height} to bound "
                                    "the memory one photo may take")
            if "depth_note" in photo.info:
                result.notes.append(photo.info["depth_note"])
            result.photo_path, copy_problem = _keep_copy(store, upload.data, upload.name)
            if copy_problem:
                result.notes.append(copy_problem)
            ready.append((result, photo, predictor.prepare(photo, upload.name)))
        except ImageError as exc:
            result.error = str(exc)
        except Exception as exc:  # a reader bug must not stop the batch either
            result.error = (f"{upload.name}: the photo could not be read ({type(exc).__name__}: {exc}). "
                            "Save it again as PNG or JPEG and upload it again.")
    _predict_ready(predictor, ready, settings)
    for result in results:
        log_result(store, result, settings)
    return results


def _predict_ready(predictor, ready, settings: InspectionSettings) -> None:
    if not ready:
        return
    try:
        outputs = [_forward(predictor, [array for _, _, array in ready])]
        groups = [ready]
    except Exception:  # find the one photo the model fails on; the others still get results
        outputs, groups = [], []
        for item in ready:
            try:
                outputs.append(_forward(predictor, [item[2]]))
                groups.append([item])
            except Exception as exc:
                item[0].error = (f"{item[0].name}: the model failed on this photo ({type(exc).__name__}: {exc}). "
                                 "Send it to the engineer with the model id.")
    for group, (probs, maps, scores) in zip(groups, outputs):
        for i, ((result, photo, _), p, heat) in enumerate(zip(group, probs, maps)):
            result.probabilities = np.asarray(p, dtype=np.float32)
            result.heatmap = np.uint8(np.rint(np.clip(heat, 0, 1) * 255))
            result.thumbnail = thumbnail(photo)
            if scores is not None and np.isfinite(scores[i]):
                result.unfamiliar_score = float(scores[i])
                result.unfamiliar_threshold = predictor.unfamiliar_threshold
            result.verdict = result.verdict_at(settings.threshold, settings.good_classes, settings.good_threshold)
            result.model_sha256 = getattr(predictor, "checkpoint_sha256", "")
            result.graph_sha256 = getattr(predictor, "graph_sha256", "")


def log_result(store: InspectionStore | None, result: FileResult, settings: InspectionSettings) -> None:
    if store is None:
        return
    try:
        result.inspection_id = store.log_inspection(
            file_name=result.name, sha256=result.sha256, photo_path=result.photo_path, verdict=result.verdict,
            inspector=settings.inspector, run_id=result.model_id, predicted=result.predicted,
            confidence=result.confidence, probabilities=result.probability_dict(), threshold=result.threshold,
            error=result.error, time=result.time, model_sha256=result.model_sha256 or settings.model_sha256,
            graph_sha256=result.graph_sha256, photo_stats=result.photo_stats, unfamiliar_score=result.unfamiliar_score)
    except Exception as exc:  # the result is still shown; the page says it was not logged
        result.log_error = f"{result.name}: not logged ({type(exc).__name__}: {exc}). Tell the engineer."
