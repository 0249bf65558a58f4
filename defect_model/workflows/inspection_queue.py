"""The Inspect page's background queue: files waiting to be inspected and the results so far, worked through
in batches by one thread per browser session, so that the page stays usable and a closed tab loses nothing."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable

from defect_model.workflows.inspection import DEFAULT_BATCH_SIZE, FileResult, InspectionSettings, inspect_batch, log_result
from defect_model.runs.folders import now_iso
from defect_model.runs.store import InspectionStore, sha256_bytes
from defect_model.photos.uploads import expand_uploads


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
                    log_result(store, result, settings)
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
