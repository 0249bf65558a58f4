"""Inspecting uploaded photos: the verdict rule, batches with per-file errors, the results table and exports.

No Streamlit here. The Inspect page hands uploaded (name, bytes) files to an
InspectionQueue, which works through them in batches in one background thread
(so the page stays usable and a closed browser tab loses nothing), logs every
file to the InspectionStore, and keeps the results for the page to draw.

A file that cannot be inspected becomes a result with verdict "error" and a
message that names it and says what to do; it is logged like any other file
and never stops the rest of the batch.
"""

from __future__ import annotations

import io
import os
import threading
import zipfile
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from .archives import ArchiveError, read_zip_members
from .images import IMAGE_EXTENSIONS, MAX_DECODED_BYTES, ImageError, load_image
from .runs import now_iso
from .store import InspectionStore, sha256_bytes

VERDICTS = ("pass", "reject", "needs_person", "error")
VERDICT_LABELS = {"pass": "pass", "reject": "reject", "needs_person": "needs a person", "error": "error"}
DEFAULT_THRESHOLD = 0.7
DEFAULT_BATCH_SIZE = 8
THUMBNAIL_SIDE = 320  # the copy kept in memory for the grid; the full photo stays in the store
EXPORT_SIDE = 2048  # overlays in the ZIP are at the photo's size, capped at this side
# The largest photo file inspected (and kept). A bigger one could not be decoded within the memory a photo may
# take anyway (images.MAX_DECODED_BYTES: a file's pixels decode to at least its size, except a JPEG's), so it is
# refused before it is decoded or copied.
MAX_PHOTO_BYTES = MAX_DECODED_BYTES

_FORMAT_EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "BMP": ".bmp", "TIFF": ".tif", "WEBP": ".webp"}
_EXPECTED_FORMAT = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".tif": "TIFF",
                    ".tiff": "TIFF", ".webp": "WEBP"}


def inference_threads() -> int:
    """Torch threads for inspecting inside the dashboard: $DEFECT_INFERENCE_THREADS, else half the cores.

    One dashboard process serves every session; its pages must keep answering while a batch runs. On
    the 2-core machine, one thread inspected a 32-photo batch in the page about twice as fast as two,
    which kept stalling each other against the server and browser (bench/results/inspect-latency.md).
    """
    value = os.environ.get("DEFECT_INFERENCE_THREADS", "")
    return max(1, int(value)) if value.strip().isdigit() else max(1, (os.cpu_count() or 2) // 2)


# -- the verdict --------------------------------------------------------------
def decide_verdict(probabilities: Sequence[float], classes: Sequence[str], good_classes: Iterable[str],
                   threshold: float) -> str:
    """pass, reject or needs_person for one photo's class probabilities.

    Below the confidence threshold a person decides, whatever the class. A
    confident "good" class passes and a confident defect class is rejected.

    When the run marks no class as good (NEU-CLS: six defect types, no photos of
    good parts), the model cannot recognise a good part at all, so nothing it
    says can pass one: a confident prediction is a confident defect, "reject".
    Passing parts by default would let every defect through unseen.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim != 1 or len(probabilities) != len(classes) or not len(classes):
        raise ValueError(f"{len(probabilities)} probabilities for {len(classes)} classes")
    top = int(probabilities.argmax())
    if probabilities[top] < threshold:
        return "needs_person"
    return "pass" if classes[top] in set(good_classes) else "reject"


# -- what one file became -------------------------------------------------------
@dataclass
class InspectionSettings:
    """What a batch is inspected with; fixed when the files are submitted."""

    run_id: str
    good_classes: list[str] = field(default_factory=list)
    threshold: float = DEFAULT_THRESHOLD
    inspector: str = ""
    model_sha256: str = ""  # the served checkpoint's hash, logged with each inspection


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
    thumbnail: Image.Image | None = None
    heatmap: np.ndarray | None = None  # uint8 (S, S) for the predicted class, at the model's input size
    resize_mode: str = "stretch"
    inspection_id: int | None = None
    log_error: str = ""
    size_bytes: int = 0

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

    def verdict_at(self, threshold: float, good_classes: Iterable[str]) -> str:
        """The verdict under another threshold (the page's slider); errors stay errors."""
        if not self.ok:
            return "error"
        return decide_verdict(self.probabilities, self.classes, good_classes, threshold)

    def heatmap_float(self) -> np.ndarray | None:
        return None if self.heatmap is None else self.heatmap.astype(np.float32) / 255.0

    @property
    def message(self) -> str:
        """The error, else any notes about how the photo was read, for the results table."""
        return self.error or "; ".join(self.notes)


# -- reading uploads --------------------------------------------------------------
@dataclass
class Upload:
    """One file to inspect; `problem` is set when it is known to be unusable before decoding."""

    name: str
    data: bytes
    problem: str = ""


def expand_uploads(files: Iterable[tuple[str, bytes]]) -> list[Upload]:
    """Uploaded (name, bytes) files with every .zip replaced by its members (named zip/member).

    A zip that cannot be read safely stays as one upload with the reason; it never
    stops the other files.
    """
    out: list[Upload] = []
    for name, data in files:
        if Path(name).suffix.lower() != ".zip":
            out.append(Upload(name, data))
            continue
        try:
            members = read_zip_members(data, name)
        except ArchiveError as exc:
            out.append(Upload(name, data, str(exc)))
            continue
        except Exception as exc:  # a reader bug must not stop the other files either
            out.append(Upload(name, data, f"{name}: the zip could not be read ({type(exc).__name__}: {exc}). "
                                          "Create the zip again, or upload the photos themselves."))
            continue
        if not members:
            out.append(Upload(name, data, f"{name}: the zip holds no files. Zip the photos themselves and upload "
                                          "it again."))
        for member, content in members:
            member_name = f"{name}/{member}"
            if Path(member).suffix.lower() == ".zip":
                out.append(Upload(member_name, content, f"{member_name}: a zip inside a zip is not opened. "
                                                        "Upload the inner zip on its own."))
            else:
                out.append(Upload(member_name, content))
    return out


def sniff_format(data: bytes) -> str | None:
    """The image format PIL recognises in the header (JPEG, PNG, ...), without decoding pixels."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.format
    except Exception:  # any failure just means "not a recognisable image header"
        return None


def check_upload(name: str, data: bytes) -> list[str]:
    """Refuse a name without a photo extension (ImageError); notes on how an accepted photo is read."""
    suffix = Path(name).suffix.lower()
    if suffix not in IMAGE_EXTENSIONS:
        found = sniff_format(data)
        kind = f"'{suffix}'" if suffix else "a name without an extension"
        if found in _FORMAT_EXTENSIONS:
            advice = (f"It looks like a {found} photo: rename it to {Path(name).stem}{_FORMAT_EXTENSIONS[found]} "
                      "and upload it again.")
        else:
            advice = "Upload JPEG, PNG, BMP, TIFF or WebP photos, or a .zip of them."
        raise ImageError(name, f"{kind} is not a photo type this page reads", advice)
    if not data:
        raise ImageError(name, "the file is empty", "Upload the photo again; the copy may not have finished.")
    return photo_notes(name, data)


def photo_notes(name: str, data: bytes) -> list[str]:
    """What the inspector should know about how this photo was read (format, alpha, bit depth, CMYK)."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            found, mode, info = img.format, img.mode, dict(img.info)
    except Exception:
        return []  # decoding reports the real problem
    notes = []
    expected = _EXPECTED_FORMAT.get(Path(name).suffix.lower())
    if found and expected and found != expected:
        notes.append(f"named {Path(name).suffix} but it is a {found} file; inspected by its content")
    if mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in info:
        notes.append("has an alpha channel; transparency was ignored and the photo inspected as opaque")
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        notes.append("16-bit photo scaled to 8 bits per channel")
    if mode == "CMYK":
        notes.append("CMYK photo converted to RGB")
    return notes


# -- inspecting a batch ---------------------------------------------------------------
def check_size(name: str, size_bytes: int, limit: int | None = None) -> None:
    """Refuse (ImageError) a file larger than a photo may be."""
    limit = MAX_PHOTO_BYTES if limit is None else limit
    if size_bytes > limit:
        raise ImageError(name, f"the file is {size_bytes / 1024**2:.0f} MB, more than the {limit / 1024**2:.0f} MB a "
                               "photo may be", "Save it as JPEG, or resize it, and upload it again.")


def _keep_copy(store: InspectionStore | None, data: bytes, name: str) -> tuple[str, str]:
    """(photo_path, problem): the stored copy of a photo that decoded, or why there is none. Nothing else is
    kept: a file that is no photo, or that was refused, is logged with its sha256 only."""
    if store is None:
        return "", ""
    try:
        return str(store.store_photo(data, name)[1].resolve()), ""  # absolute: the log outlives the cwd
    except OSError as exc:
        return "", f"no copy kept ({exc})"


def _thumbnail(photo: Image.Image, side: int = THUMBNAIL_SIDE) -> Image.Image:
    thumb = photo.copy()
    thumb.thumbnail((side, side), Image.BILINEAR)
    return thumb


def _forward(predictor, arrays: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    from .explain import heatmaps  # torch is imported by the caller's predictor already

    return heatmaps(predictor, arrays)


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
            if "reduced_from" in photo.info:
                width, height = photo.info["reduced_from"]
                result.notes.append(f"a {width}x{height} photo, inspected at {photo.width}x{photo.height} to bound "
                                    "the memory one photo may take")
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
        _log(store, result, settings)
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
    for group, (probs, maps) in zip(groups, outputs):
        for (result, photo, _), p, heat in zip(group, probs, maps):
            result.probabilities = np.asarray(p, dtype=np.float32)
            result.heatmap = np.uint8(np.rint(np.clip(heat, 0, 1) * 255))
            result.thumbnail = _thumbnail(photo)
            result.verdict = decide_verdict(p, result.classes, settings.good_classes, settings.threshold)


def _log(store: InspectionStore | None, result: FileResult, settings: InspectionSettings) -> None:
    if store is None:
        return
    try:
        result.inspection_id = store.log_inspection(
            file_name=result.name, sha256=result.sha256, photo_path=result.photo_path, verdict=result.verdict,
            inspector=settings.inspector, run_id=result.model_id, predicted=result.predicted,
            confidence=result.confidence, probabilities=result.probability_dict(), threshold=result.threshold,
            error=result.error, time=result.time, model_sha256=settings.model_sha256)
    except Exception as exc:  # the result is still shown; the page says it was not logged
        result.log_error = f"{result.name}: not logged ({type(exc).__name__}: {exc}). Tell the engineer."


# -- the background queue ------------------------------------------------------------------
class InspectionQueue:
    """Files waiting to be inspected and the results so far, worked through by one background thread.

    One queue per browser session. The thread calls no Streamlit code; the page
    polls `progress()` and `results()`. The Predictor may be shared with other
    sessions: inference and the fast Grad-CAM path change nothing in the model.
    """

    def __init__(self, batch_size: int = DEFAULT_BATCH_SIZE, first_batch_size: int = 1,
                 on_batch: Callable[[list[FileResult]], None] | None = None, threads: int | None = None):
        self.batch_size = max(1, int(batch_size))
        self.threads = threads  # torch intra-op threads for the worker; None leaves torch's setting
        # The first batch after the queue was idle is small, so the first verdict shows quickly.
        self.first_batch_size = max(1, min(int(first_batch_size), self.batch_size))
        self._fresh = False
        self.on_batch = on_batch
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._pending: deque = deque()
        self._results: list[FileResult] = []
        self._submitted = 0
        self._stopped = 0
        self._thread: threading.Thread | None = None
        self._generation = 0

    def submit(self, predictor, files: Iterable[tuple[str, bytes]], settings: InspectionSettings,
               store: InspectionStore | None = None) -> int:
        """Queue uploaded files (zips expanded); returns how many files were queued."""
        uploads = expand_uploads(files)
        with self._lock:
            for upload in uploads:
                self._pending.append((upload, predictor, settings, store, self._submitted))
                self._submitted += 1
            if uploads and (self._thread is None or not self._thread.is_alive()):
                self._fresh = True
                self._thread = threading.Thread(target=self._work, name="inspection-queue", daemon=True)
                self._thread.start()
        return len(uploads)

    def _next_batch(self) -> list:
        with self._lock:
            if not self._pending:
                self._thread = None
                self._changed.notify_all()
                return []
            limit = self.first_batch_size if self._fresh else self.batch_size
            self._fresh = False
            batch = [self._pending.popleft()]
            key = batch[0][1:4]
            while self._pending and len(batch) < limit and all(
                    a is b for a, b in zip(self._pending[0][1:4], key)):
                batch.append(self._pending.popleft())
            return batch

    def _work(self) -> None:
        if self.threads:
            import torch  # already loaded with the predictor

            torch.set_num_threads(self.threads)  # per thread with OpenMP, so set here, in the worker
        while True:
            with self._lock:
                generation = self._generation
            batch = self._next_batch()
            if not batch:
                return
            _, predictor, settings, store, first = batch[0]
            uploads = [item[0] for item in batch]
            try:
                results = inspect_batch(predictor, uploads, settings, store, first_index=first)
            except Exception as exc:  # never lose the files: log them as errors
                results = []
                for offset, upload in enumerate(uploads):
                    result = FileResult(index=first + offset, name=upload.name, sha256=sha256_bytes(upload.data),
                                        time=now_iso(), model_id=settings.run_id, threshold=settings.threshold,
                                        verdict="error", size_bytes=len(upload.data),
                                        error=f"{upload.name}: inspection failed ({type(exc).__name__}: {exc}). "
                                              "Upload it again; tell the engineer if it repeats.")
                    _log(store, result, settings)
                    results.append(result)
            with self._lock:
                if generation == self._generation:
                    self._results.extend(results)
                self._changed.notify_all()
            if self.on_batch is not None:
                self.on_batch(results)

    def wait_for_results(self, count: int, timeout: float) -> bool:
        """Block until `count` results are in (or the queue is idle, or `timeout` s); True if they are."""
        with self._changed:
            self._changed.wait_for(lambda: len(self._results) >= count or not self._pending and (
                self._thread is None or not self._thread.is_alive()), timeout)
            return len(self._results) >= count

    def results(self) -> list[FileResult]:
        with self._lock:
            return list(self._results)

    def progress(self) -> tuple[int, int]:
        """(files finished, files submitted) since the last clear, stopped files counted as finished."""
        with self._lock:
            return len(self._results) + self._stopped, self._submitted

    @property
    def running(self) -> bool:
        with self._lock:
            return bool(self._pending) or (self._thread is not None and self._thread.is_alive())

    def stop(self) -> int:
        """Drop the files not started yet (the batch in progress finishes and is logged); returns how many."""
        with self._lock:
            dropped = len(self._pending)
            self._pending.clear()
            self._stopped += dropped
            return dropped

    def clear(self) -> None:
        """Forget the results shown (they stay in the log) and drop what is still waiting."""
        with self._lock:
            self._pending.clear()
            self._results = []
            self._submitted = 0
            self._stopped = 0
            self._generation += 1

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the queue is empty (for scripts and tests); False on timeout."""
        import time

        deadline = None if timeout is None else time.monotonic() + timeout
        while self.running:
            with self._lock:
                thread = self._thread
            if thread is not None:
                thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            else:
                time.sleep(0.01)
            if deadline is not None and time.monotonic() >= deadline:
                break
        return not self.running


# -- summaries and exports ----------------------------------------------------------------
def verdict_counts(results: Sequence[FileResult], threshold: float, good_classes: Iterable[str]) -> dict[str, int]:
    good = list(good_classes)
    counts = dict.fromkeys(VERDICTS, 0)
    for result in results:
        counts[result.verdict_at(threshold, good)] += 1
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


def results_table(results: Sequence[FileResult], threshold: float, good_classes: Iterable[str]) -> pd.DataFrame:
    """The export table: file name, sha256, predicted class, every probability, verdict, model id, time.

    The verdict is the one under `threshold` (the page's current setting), which
    is also written in its own column; the log keeps the verdict at inspection time.
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
                   verdict=result.verdict_at(threshold, good), model_id=result.model_id, time=result.time,
                   threshold=threshold, message=result.message, inspection_id=result.inspection_id)
        rows.append(row)
    columns = (["file_name", "sha256", "predicted"] + [probability_column(c) for c in classes]
               + ["confidence", "verdict", "model_id", "time", "threshold", "message", "inspection_id"])
    return pd.DataFrame(rows, columns=columns)


def results_csv(results: Sequence[FileResult], threshold: float, good_classes: Iterable[str]) -> bytes:
    return results_table(results, threshold, good_classes).to_csv(index=False, float_format="%.6f").encode()


def overlay_for(result: FileResult, opacity: float = 0.5, photo: Image.Image | None = None,
                heatmap: np.ndarray | None = None) -> Image.Image | None:
    """The heatmap blended over `photo` (default: the thumbnail); None for a failed file."""
    from .explain import heatmap_to_photo, overlay  # imports torch; only called where a model is loaded

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
        photo = _thumbnail(photo, max_side)
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
    from .explain import heatmaps

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
