"""What the Review page works on: a run's validation predictions, the photos in a confusion cell, the
wrong predictions worst first, the label decisions about them, and the retrain that applies them.

Decisions are rows in the corrections table (defect_model.runs.store); dataset files are never touched.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from defect_model.access.accounts import Actor, audit_log, require
from defect_model.common.config import TrainConfig
from defect_model.train.presets import warm_retrain
from defect_model.runs.folders import RunDir, now_iso, write_json_atomic
from defect_model.runs.store import InspectionStore

PREDICTION_COLUMNS = ("path", "true_label", "pred_label", "loss")
RETRAIN_FILE = "retrain.json"


class ReviewError(ValueError):
    """A review request that cannot be carried out; the message names the file and says what to do."""


@dataclass
class ReviewData:
    run: RunDir
    config: TrainConfig
    metrics: dict
    predictions: pd.DataFrame  # val_predictions.csv plus `confidence` and `correct`

    @property
    def classes(self) -> list[str]:
        return list(self.metrics["classes"])

    @property
    def dataset(self) -> str:
        return self.config.data_dir


def load_review(run: RunDir) -> ReviewData:
    """The run's config, metrics and validation predictions, or a ReviewError that says what is missing."""
    try:
        config = run.settings()
    except (OSError, ValueError) as exc:
        raise ReviewError(f"{run.config}: cannot read the run's settings ({exc}). Pick another run.") from None
    metrics = run.read_metrics()
    if not metrics:
        raise ReviewError(f"{run.metrics}: no validation metrics yet. The run has not finished an epoch; "
                          "wait for it on the Train page or pick another run.")
    return ReviewData(run, config, metrics, load_predictions(run, metrics["classes"]))


def load_predictions(run: RunDir, classes: list[str]) -> pd.DataFrame:
    path = run.val_predictions
    if not path.is_file():
        raise ReviewError(f"{path}: no validation predictions. The run has not finished an epoch; "
                          "wait for it or pick another run.")
    try:
        table = pd.read_csv(path, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ReviewError(f"{path}: not a readable predictions table ({type(exc).__name__}). The run's files are "
                          "damaged; evaluate or retrain the run.") from None
    needed = [*PREDICTION_COLUMNS, *(f"prob_{c}" for c in classes)]
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise ReviewError(f"{path}: missing column(s) {', '.join(missing)}. This file was not written by this "
                          "tool's training for these classes; retrain the run.")
    probs = table[[f"prob_{c}" for c in classes]].to_numpy(dtype=np.float64)
    table["confidence"] = probs.max(axis=1) if len(table) else []
    table["correct"] = table["true_label"] == table["pred_label"]
    if "unfamiliar" in table.columns:  # written by training since the unfamiliar check (train.familiarity)
        table["unfamiliar"] = table["unfamiliar"].astype(str).str.lower().eq("true")
    return table


def confusion_counts(predictions: pd.DataFrame, classes: list[str]) -> np.ndarray:
    """Rows true class, columns predicted class, counted from the predictions table."""
    from defect_model.train.metrics import confusion_matrix

    index = {name: i for i, name in enumerate(classes)}
    return confusion_matrix(predictions["true_label"].map(index), predictions["pred_label"].map(index), len(classes))


def row_normalised(matrix: np.ndarray) -> np.ndarray:
    matrix = np.asarray(matrix, dtype=np.float64)
    totals = matrix.sum(axis=1, keepdims=True)
    return np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)


def cell_photos(predictions: pd.DataFrame, true_label: str, pred_label: str) -> pd.DataFrame:
    """The photos of one confusion cell, highest loss first."""
    inside = (predictions["true_label"] == true_label) & (predictions["pred_label"] == pred_label)
    return predictions[inside].sort_values("loss", ascending=False, kind="stable")


def misclassified(predictions: pd.DataFrame, true_labels=None, pred_labels=None) -> pd.DataFrame:
    """Wrong predictions, worst (highest loss) first, optionally only these true / predicted classes."""
    wrong = predictions[~predictions["correct"]]
    if true_labels:
        wrong = wrong[wrong["true_label"].isin(list(true_labels))]
    if pred_labels:
        wrong = wrong[wrong["pred_label"].isin(list(pred_labels))]
    return wrong.sort_values("loss", ascending=False, kind="stable")


def photo_file(dataset: str, photo_path: str) -> Path:
    """Where a reviewed photo lives: paths are relative to the dataset, stored inspection photos absolute."""
    path = Path(photo_path)
    return path if path.is_absolute() else Path(dataset) / path


# -- decisions ---------------------------------------------------------------
SECOND_PERSON_ENV = "DEFECT_SECOND_PERSON"


def second_person_required() -> bool:
    """The plant's setting: a relabel or a dropped photo counts only once a second engineer confirms it."""
    return os.environ.get(SECOND_PERSON_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def record_decision(store: InspectionStore, data: ReviewData, photo_path: str, action: str, actor: Actor,
                    new_label: str | None = None) -> int:
    """One engineer's decision about a validation photo, stored as one correction row: confirmed at once, or
    waiting for a second engineer where the plant asks for one (a relabel or a dropped photo)."""
    require(actor, "relabel")
    rows = data.predictions[data.predictions["path"] == photo_path]
    if rows.empty:
        raise ReviewError(f"{photo_path}: not a validation photo of run {data.run.run_id}; reload the page.")
    row = rows.iloc[0]
    original = str(row["true_label"])
    if action == "relabel":
        if new_label not in data.classes:
            raise ReviewError(f"{photo_path}: {new_label!r} is not one of the classes ({', '.join(data.classes)}).")
        if new_label == original:
            raise ReviewError(f"{photo_path} is already labelled {original!r}; confirm it (Keep) instead.")
    return file_decision(store, actor, source="review", action=action, photo_path=photo_path, dataset=data.dataset,
                         run_id=data.run.run_id, original=original, model_label=str(row["pred_label"]),
                         new_label=new_label if action == "relabel" else None)


def file_decision(store: InspectionStore, actor: Actor, *, source: str, action: str, photo_path: str, dataset: str,
                  run_id: str, original: str = "", model_label: str = "", new_label: str | None = None,
                  sha256: str = "", inspection_id: int | None = None) -> int:
    """The one road an engineer's label decision takes into the corrections table (Review's validation photos,
    Monitor's queue of inspected photos): confirmed at once, or waiting for a second engineer where the plant asks
    for one (a relabel or a dropped photo), and recorded in the audit trail. Returns the correction's id."""
    require(actor, "relabel")
    status = "pending" if action != "confirm" and second_person_required() else "confirmed"
    correction, stored = store.add_correction_once(
        source=source, action=action, photo_path=photo_path, dataset=dataset, new_label=new_label,
        original_label=original, model_label=model_label, who=actor.name, run_id=run_id, status=status,
        sha256=sha256, inspection_id=inspection_id)
    if not stored:  # the same decision again (a double click): one correction, one audit entry
        return correction
    audit_log().record(actor, action, photo_path, correction=correction, run=run_id, dataset=dataset,
                       original=original, new_label=new_label, status=status, source=source)
    return correction


def latest_decisions(store: InspectionStore, dataset: str) -> dict[str, dict]:
    """The newest confirmed decision per photo of this dataset (what a retrain will apply)."""
    table = store.corrections(dataset=dataset, status="confirmed")
    return {row["photo_path"]: _plain(row) for row in table.to_dict("records")}


def _plain(row: dict) -> dict:
    """SQL NULLs come back from pandas as NaN; give them back as None."""
    return {key: None if isinstance(value, float) and np.isnan(value) else value for key, value in row.items()}


def plain_records(table: pd.DataFrame) -> list[dict]:
    return [_plain(row) for row in table.to_dict("records")]


def describe_decision(row: dict) -> str:
    when = str(row.get("decided_at") or row.get("time") or "")[:16].replace("T", " ")
    who = row.get("decided_by") or row.get("who") or "someone"
    if row["action"] == "relabel":
        what = f"relabelled {row['original_label'] or '?'} → {row['new_label']}"
    elif row["action"] == "unusable":
        what = "marked unusable (dropped from training)"
    else:
        what = f"label {row['new_label'] or row['original_label']} confirmed"
    return f"{what} by {who}, {when} UTC"


def inspection_corrections(store: InspectionStore, data: ReviewData, status: str = "pending") -> pd.DataFrame:
    """Proposals waiting for a decision that concern this run's dataset or this run: inspectors' (Inspect page), and
    engineers' relabels waiting for a second engineer (Review, Monitor's queue)."""
    table = store.corrections(status=status)
    if table.empty:
        return table
    relevant = table["source"].isin(["inspection", "review", "monitor queue"]) & (
        (table["dataset"] == data.dataset) | (table["run_id"] == data.run.run_id))
    return table[relevant].reset_index(drop=True)


def decide_inspection(store: InspectionStore, data: ReviewData, correction: dict, accept: bool, actor: Actor) -> None:
    """Confirm or reject a waiting proposal (an inspector's, or a relabel waiting for a second engineer).
    A confirmed one that was filed without this dataset (or with a relative photo path) is re-filed for it with
    the photo's absolute path (a new confirmed row whose note points at the original), so the retrain applies it."""
    require(actor, "confirm")
    correction = _plain(dict(correction))
    if correction.get("who") == actor.name and second_person_required():
        raise ReviewError(f"{correction['photo_path']}: you proposed this change yourself; this plant asks a second "
                          "engineer to confirm it.")
    who = actor.name
    if accept and correction["action"] == "relabel" and correction["new_label"] not in data.classes:
        raise ReviewError(f"{correction['photo_path']}: the proposed label {correction['new_label']!r} is not one of "
                          f"this run's classes ({', '.join(data.classes)}); reject it or review it on another run.")
    status = "confirmed" if accept else "rejected"
    # Training adds a corrected photo from outside the dataset only by its absolute path.
    photo = str(Path(correction["photo_path"]).resolve())
    if accept and (correction["dataset"] != data.dataset or photo != correction["photo_path"]):
        store.add_correction(source="inspection", action=correction["action"], photo_path=photo,
                             new_label=correction["new_label"], who=who, dataset=data.dataset,
                             sha256=correction.get("sha256") or "", model_label=correction.get("model_label") or "",
                             original_label=correction.get("original_label") or "", run_id=data.run.run_id,
                             inspection_id=None if correction.get("inspection_id") is None
                             else int(correction["inspection_id"]),
                             status="confirmed",
                             note=f"confirms inspector correction #{correction['id']} by {correction['who']}")
    store.decide_correction(int(correction["id"]), status, who)
    audit_log().record(actor, "confirm" if accept else "reject", correction["photo_path"],
                       correction=int(correction["id"]), proposed_by=correction.get("who"),
                       proposal=correction["action"], new_label=correction.get("new_label"))


def decision_counts(store: InspectionStore, dataset: str) -> dict[str, int]:
    counts = {"relabel": 0, "unusable": 0, "confirm": 0}
    for row in latest_decisions(store, dataset).values():
        counts[row["action"]] = counts.get(row["action"], 0) + 1
    return counts


# -- retrain -----------------------------------------------------------------
def retrain_with_corrections(run: RunDir, store: InspectionStore, actor: Actor,
                             root: str | Path | None = None) -> RunDir:
    """Start a training job from the run's weights, with its resolved settings and split, plus the confirmed
    corrections of its dataset (both copied into the new run's folder by jobs.start, so the retrain sees the
    same photos even if this run is deleted later). Raises ReviewError when there is nothing to apply and
    jobs.JobError when another job is running."""
    from defect_model.runs.jobs import start

    require(actor, "train")
    config = run.settings()
    count = store.corrections(dataset=config.data_dir, status="confirmed")["photo_path"].nunique()
    if count == 0:
        raise ReviewError(f"No confirmed corrections for {config.data_dir} yet. Confirm, relabel or mark photos "
                          "unusable in the review (or confirm inspector corrections) first.")
    # Resolved settings are used as they are: the engine does not apply the preset again.
    retrain = warm_retrain(config, run.path.resolve(), run.training_seconds(), count)
    new_run = start(retrain, root, actor=actor, corrections=store,
                    split_from=run.split if run.split.is_file() else None)
    write_json_atomic(new_run.path / RETRAIN_FILE, {
        "parent_run": run.run_id, "by": actor.name, "at": now_iso(),
        "corrections_csv": str(new_run.corrections.resolve()), "corrections": count,
        "split_csv": new_run.settings().split_csv,
    })
    return new_run
