"""A seeded inspection log for the Monitor page tests: the prepared run of review_support made active, and ten days
of its inspections, 12 a day, with one reject a day until day 9, when 8 of 12 are rejects (above the upper limit
of the first seven days: p̄ 7/84, UCL 0.32 at n = 12). Every photo is a dataset photo brightened by 60 grey levels,
so the log drifts from the validation photos; each is stored like an inspected photo, with its statistics."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from defect_model.photos.stats import photo_stats
from defect_model.runs.store import InspectionStore
from defect_model.workflows.lifecycle import set_active
from review_support import CLASSES, make_dataset, write_run

DAYS = 10
PER_DAY = 12
SPIKE_DAY = 9  # 1-based
SPIKE_REJECTS = 8
UNSURE = "unsure_0003.png"  # the smallest margin of the log: first in the queue


def seeded_log(base: Path) -> dict:
    dataset = make_dataset(base / "dataset")
    runs, app_data = base / "runs", base / "app-data"
    run = write_run(runs, dataset)
    set_active(run, by="setup", root=runs)
    store = InspectionStore(app_data / "inspections.sqlite")
    photos = sorted(dataset.glob("*/*_000[0-7].png"))
    count = 0
    for day in range(1, DAYS + 1):
        rejects = SPIKE_REJECTS if day == SPIKE_DAY else 1
        for i in range(PER_DAY):
            source = photos[count % len(photos)]
            image = Image.fromarray(np.clip(np.asarray(Image.open(source).convert("RGB"), dtype=np.int16) + 60,
                                            0, 255).astype(np.uint8))
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            name = UNSURE if count == 3 else f"line_{count:04d}.png"
            sha, path = store.store_photo(buffer.getvalue(), name)
            verdict = "reject" if i < rejects else "needs_person" if i == PER_DAY - 1 else "pass"
            top = 0.40 if name == UNSURE else 0.95 - 0.004 * (count % 50)
            predicted = "pit" if verdict == "reject" else "ok"
            probabilities = {c: (top if c == predicted else (1 - top) / (len(CLASSES) - 1)) for c in CLASSES}
            if name == UNSURE:
                probabilities = {"ok": 0.40, "pit": 0.38, "scratch": 0.22}
            store.log_inspection(
                file_name=name, sha256=sha, photo_path=str(path.resolve()), verdict=verdict, inspector="ana",
                run_id=run.run_id, predicted=predicted, confidence=max(probabilities.values()),
                probabilities=probabilities, threshold=0.7,
                time=f"2026-02-{day:02d}T{8 + i // 2:02d}:{i % 2 * 30:02d}:00+00:00",
                source="hot folder" if i % 3 == 0 else "browser", photo_stats=photo_stats(image))
            count += 1
    return {"dataset": dataset, "runs": runs, "app_data": app_data, "run": run, "store": store}
