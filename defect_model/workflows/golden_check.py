"""Before a model goes live: its verdicts on the golden set beside the active model's, photo by photo.

Each model decides as it would on the line: its own good classes, its saved operating point (else the Inspect
page's default threshold) and its unfamiliar-photo check, through the same inspect_batch as the Inspect page.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from defect_model.photos.uploads import Upload
from defect_model.runs.folders import RunDir, get_active, served_checkpoint
from defect_model.runs.golden import GoldenSet
from defect_model.serve.verdicts import DEFAULT_THRESHOLD
from defect_model.workflows.inspection import InspectionSettings, good_classes_of, inspect_batch
from defect_model.workflows.operating_point import load_point

COLUMNS = ["photo", "label", "active_class", "active_verdict", "candidate_class", "candidate_verdict", "changed"]


def _uploads(photos: list[dict]) -> list[Upload]:
    uploads = []
    for photo in photos:
        path = Path(photo["photo_path"])
        try:
            uploads.append(Upload(path.name, path.read_bytes()))
        except OSError as exc:
            uploads.append(Upload(path.name, b"", problem=f"{path}: the golden photo cannot be read ({exc}). "
                                                          "Remove it from the golden set or put it back."))
    return uploads


def verdicts(run: RunDir, checkpoint: Path, photos: list[dict]) -> list[tuple[str, str]]:
    """(class, verdict) of each golden photo as `checkpoint` (the weights of `run`) decides it on the line."""
    from defect_model.serve.inference import Predictor

    predictor = Predictor.from_checkpoint(checkpoint, backend="torch")
    point = load_point(run)
    settings = InspectionSettings(run_id=run.run_id, good_classes=good_classes_of(run, predictor),
                                  threshold=point.defect_threshold if point else DEFAULT_THRESHOLD,
                                  good_threshold=point.passes_from if point else None)
    return [(r.predicted, r.verdict) for r in inspect_batch(predictor, _uploads(photos), settings)]


def compare_golden(candidate: RunDir, runs_root: str | Path | None = None,
                   golden: GoldenSet | None = None) -> pd.DataFrame:
    """One row per golden photo: its label, the active model's class and verdict (empty with no active model)
    and the candidate's, and whether the verdict changes."""
    photos = (golden or GoldenSet()).photos()
    if not photos:
        return pd.DataFrame(columns=COLUMNS)
    after = verdicts(candidate, candidate.checkpoint, photos)
    root = runs_root if runs_root is not None else candidate.path.parent
    record = get_active(root)
    served = served_checkpoint(record, root) if record else None
    before = (verdicts(RunDir(Path(record.get("path", ""))), served, photos) if served is not None
              else [("", "")] * len(photos))
    rows = [{"photo": p["photo_path"], "label": p["label"], "active_class": b[0], "active_verdict": b[1],
             "candidate_class": a[0], "candidate_verdict": a[1], "changed": bool(b[1]) and a[1] != b[1]}
            for p, b, a in zip(photos, before, after)]
    return pd.DataFrame(rows, columns=COLUMNS)


def changed_lines(table: pd.DataFrame, limit: int = 10) -> list[str]:
    """The changed verdicts in words, at most `limit` of them."""
    changed = table[table["changed"]]
    return [f"{Path(r.photo).name} ({r.label}): {r.active_verdict} -> {r.candidate_verdict}"
            for r in changed.head(limit).itertuples()]
