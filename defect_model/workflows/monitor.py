"""Is the live model still right? What the Monitor page computes from the inspection log (no Streamlit here):

- p-charts of the reject rate and the needs-a-person rate per day or per shift, with 3-sigma limits from a
  reference period (by default the first days of the model);
- drift: the photos' brightness, contrast and size, and the model's confidence (and unfamiliar score, where the
  log has one), each compared with the model's validation photos by a two-sample Kolmogorov-Smirnov test;
- the queue of logged photos whose label would teach the model most, and the label an engineer gives one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from defect_model.access.accounts import Actor, require
from defect_model.photos.images import ImageError, load_image
from defect_model.photos.stats import STAT_COLUMNS, photo_stats
from defect_model.runs.folders import RunDir, file_sha256, read_json, write_json_atomic
from defect_model.runs.store import InspectionStore
from defect_model.workflows.review import file_decision

RATES = {"reject": "reject rate", "needs_person": "needs-a-person rate"}
QUEUE_SOURCE = "monitor queue"  # the source its labels are filed with
# Issue 17 logs an unfamiliar score per inspection; whichever of these names the log (or a run's validation
# predictions) has is used, and without one the Monitor simply leaves it out.
UNFAMILIAR_COLUMNS = ("unfamiliar", "unfamiliar_score")
REFERENCE_FILE = "monitor_reference.json"
REFERENCE_LIMIT = 2000  # validation photos read for the reference (a seeded sample of larger splits)


class MonitorError(ValueError):
    """A Monitor request that cannot be carried out; the message names the file and says what to do."""


# -- the log ---------------------------------------------------------------------------------
def load_log(store: InspectionStore, run_ids=None, inspectors=None, sources=None) -> pd.DataFrame:
    """The inspection log, oldest first, filtered by model version (run id), inspector and source, with `when`
    (the UTC time as a timestamp) and `margin` (top probability minus the second; NaN without probabilities)."""
    log = store.inspections(inspectors=list(inspectors or []), sources=list(sources or []))
    if run_ids:
        log = log[log["run_id"].isin(list(run_ids))]
    log = log.sort_values("id").reset_index(drop=True)
    log["when"] = pd.to_datetime(log["time"], utc=True, format="ISO8601")
    log["margin"] = [top_two_margin(text) for text in log["probabilities"]]
    return log


def top_two_margin(probabilities: str) -> float:
    try:
        values = sorted(json.loads(probabilities or "{}").values(), reverse=True)
    except (json.JSONDecodeError, AttributeError):
        return float("nan")
    if not values:
        return float("nan")
    return float(values[0] - (values[1] if len(values) > 1 else 0.0))


def unfamiliar_column(table: pd.DataFrame) -> str | None:
    return next((name for name in UNFAMILIAR_COLUMNS if name in table.columns), None)


# -- control charts ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Periods:
    """How the log is cut into samples: days, or shifts (e.g. 3 of 8 hours, the first starting at 06:00 UTC)."""

    hours: float = 24.0
    first_hour: float = 0.0

    @classmethod
    def shifts(cls, count: int = 3, first_hour: float = 6.0) -> "Periods":
        if not 1 <= count <= 24:
            raise MonitorError(f"{count} shifts a day: choose between 1 and 24.")
        return cls(24.0 / count, float(first_hour) % 24)

    @property
    def length(self) -> pd.Timedelta:
        return pd.Timedelta(hours=self.hours)

    def start_of(self, when: pd.Series) -> pd.Series:
        origin = pd.Timestamp("2000-01-01", tz="UTC") + pd.Timedelta(hours=self.first_hour)
        return origin + ((when - origin) // self.length) * self.length

    def label(self, start: pd.Timestamp) -> str:
        if self.hours == 24 and self.first_hour == 0:
            return start.strftime("%Y-%m-%d")
        return f"{start:%Y-%m-%d %H:%M}–{start + self.length:%H:%M}"


def default_reference(log: pd.DataFrame, periods: Periods, run_id: str | None = None,
                      days: float = 7) -> tuple[pd.Timestamp, pd.Timestamp] | None:
    """The first `days` days of `run_id`'s inspections (of the whole log without one), from the start of the
    period of its first inspection; None for an empty log."""
    rows = log[log["run_id"] == run_id] if run_id and (log["run_id"] == run_id).any() else log
    if rows.empty:
        return None
    start = periods.start_of(rows["when"].iloc[[0]]).iloc[0]
    return start, start + pd.Timedelta(days=days)


def p_chart(log: pd.DataFrame, rate: str, periods: Periods,
            reference: tuple[pd.Timestamp, pd.Timestamp] | None) -> tuple[pd.DataFrame, float]:
    """One row per period that has inspections: n (inspections with a verdict, errors left out), the count with
    verdict `rate`, p = count / n, the limits p̄ ± 3·sqrt(p̄(1−p̄)/n) clipped to [0, 1], whether the period is in
    the reference and whether p lies outside its limits. p̄ is the rate over the reference periods (NaN, and no
    limits, when the reference holds no inspection). Returns (table, p̄)."""
    if rate not in RATES:
        raise MonitorError(f"No chart of {rate!r}; choose one of {', '.join(RATES)}.")
    judged = log[log["verdict"] != "error"]
    starts = periods.start_of(judged["when"])
    table = (pd.DataFrame({"start": starts, "hit": (judged["verdict"] == rate).astype(int)})
             .groupby("start", sort=True)["hit"].agg(n="size", count="sum").reset_index())
    table["period"] = [periods.label(start) for start in table["start"]]
    table["p"] = table["count"] / table["n"]
    table["reference"] = (table["start"] >= reference[0]) & (table["start"] < reference[1]) if reference \
        else False
    inside = table[table["reference"]]
    center = float(inside["count"].sum() / inside["n"].sum()) if inside["n"].sum() > 0 else float("nan")
    sigma = np.sqrt(center * (1 - center) / table["n"])
    table["center"] = center
    table["lcl"] = np.clip(center - 3 * sigma, 0.0, 1.0)
    table["ucl"] = np.clip(center + 3 * sigma, 0.0, 1.0)
    table["out"] = (table["p"] > table["ucl"]) | (table["p"] < table["lcl"])  # False where the limits are NaN
    return table[["period", "start", "n", "count", "p", "center", "lcl", "ucl", "out", "reference"]], center


# -- drift -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Drift:
    feature: str
    n_log: int
    n_reference: int
    statistic: float  # Kolmogorov-Smirnov D: the largest gap between the two cumulative distributions
    p_value: float
    log_median: float
    reference_median: float
    drifted: bool

    def text(self) -> str:
        return (f"{self.feature}: median {self.log_median:.3g} in the log vs {self.reference_median:.3g} on the "
                f"validation photos (KS D {self.statistic:.2f}, p {self.p_value:.2g})")


DRIFT_ALPHA = 0.01
# With thousands of photos the test finds differences nobody would act on; an alarm needs the distributions to
# differ by at least this much as well (a tenth of the photos on the other side of some value).
DRIFT_MIN_EFFECT = 0.1
MIN_PHOTOS = 20  # fewer logged photos than this: no verdict on drift


def ks_two_sample(a, b) -> tuple[float, float]:
    """(D, p-value) of the two-sample Kolmogorov-Smirnov test (scipy's exact or asymptotic p as it chooses)."""
    from scipy.stats import ks_2samp

    result = ks_2samp(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))
    return float(result.statistic), float(result.pvalue)


def drift_report(log: pd.DataFrame, reference: dict[str, list[float]], alpha: float = DRIFT_ALPHA,
                 min_effect: float = DRIFT_MIN_EFFECT, min_photos: int = MIN_PHOTOS) -> list[Drift]:
    """Each feature the log and the reference both have (photo statistics, confidence, unfamiliar score) tested;
    `drifted` when p < alpha and D >= min_effect with at least `min_photos` logged values."""
    found = []
    for feature, values in reference.items():
        if feature not in log.columns:
            continue
        logged = pd.to_numeric(log[feature], errors="coerce").dropna().to_numpy(dtype=np.float64)
        known = np.asarray([v for v in values if v is not None], dtype=np.float64)
        if len(logged) == 0 or len(known) == 0:
            continue
        statistic, p_value = ks_two_sample(logged, known)
        found.append(Drift(feature, len(logged), len(known), statistic, p_value, float(np.median(logged)),
                           float(np.median(known)),
                           bool(len(logged) >= min_photos and p_value < alpha and statistic >= min_effect)))
    return found


def validation_reference(run: RunDir, predictor=None, model_key: str = "", compute: bool = True,
                         limit: int = REFERENCE_LIMIT) -> dict[str, list[float]] | None:
    """What the model's validation photos look like: their photo statistics and, with a `predictor` that has the
    unfamiliar-photo statistics, their unfamiliar scores (both computed once and cached in the run folder as
    monitor_reference.json, keyed by the split file's hash and `model_key`), and the model's confidence on them
    from val_predictions.csv. With compute=False: from the cache whatever model filled it, None without one."""
    if not run.split.is_file():
        raise MonitorError(f"{run.split}: the run has no split file, so its validation photos are unknown. "
                           "Monitor drift with a run trained by this tool.")
    key = {"split_sha256": file_sha256(run.split), "limit": limit, "model": model_key}
    cached = read_json(run.path / REFERENCE_FILE, None)
    same = isinstance(cached, dict) and all(cached.get(k) == v for k, v in key.items() if compute or k != "model")
    if same:
        stats = cached["stats"]
    elif not compute:
        return None
    else:
        stats = reference_photo_stats(run, predictor, limit)
        try:
            write_json_atomic(run.path / REFERENCE_FILE, {**key, "stats": stats})
        except OSError:  # a read-only run folder: computed again next time, nothing lost
            pass
    return {**validation_scores(run), **stats}


def reference_photo_stats(run: RunDir, predictor=None, limit: int = REFERENCE_LIMIT,
                          batch: int = 32) -> dict[str, list[float]]:
    """Photo statistics (and, with a predictor that has them, unfamiliar scores) of the run's validation photos,
    a seeded sample of `limit` of them; unreadable ones are skipped (training skipped them too)."""
    split = pd.read_csv(run.split, keep_default_na=False)
    val = split[split["split"] == "val"]
    if len(val) > limit:
        val = val.sample(n=limit, random_state=0)
    dataset = Path(run.settings().data_dir)
    scoring = predictor is not None and getattr(predictor, "familiarity", None) is not None
    stats: dict[str, list[float]] = {column: [] for column in STAT_COLUMNS}
    if scoring:
        stats["unfamiliar_score"] = []
    arrays = []  # a batch at a time: a model-sized copy of every photo would not be bounded
    paths = list(val["path"])
    for position, rel in enumerate(paths):
        try:
            photo = load_image(dataset / rel)
        except (ImageError, OSError):
            photo = None
        if photo is not None:
            for column, value in photo_stats(photo).items():
                stats[column].append(value)
            if scoring:
                arrays.append(predictor.prepare(photo))
        if arrays and (len(arrays) == batch or position == len(paths) - 1):
            _, activations = predictor.predict_with_activations(arrays)
            stats["unfamiliar_score"] += [float(v) for v in predictor.unfamiliar_scores(activations)]
            arrays = []
    return stats


def validation_scores(run: RunDir) -> dict[str, list[float]]:
    """The model's confidence (top probability) on each validation photo, and its unfamiliar score where the run
    recorded one; empty without readable validation predictions."""
    try:
        table = pd.read_csv(run.val_predictions)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
        return {}
    probs = [c for c in table.columns if c.startswith("prob_")]
    scores = {"confidence": table[probs].max(axis=1).tolist()} if probs and len(table) else {}
    column = unfamiliar_column(table)
    if column:
        scores[column] = pd.to_numeric(table[column], errors="coerce").dropna().tolist()
    return scores


def drift_alarm(store: InspectionStore, run: RunDir, days: float = 7) -> list[Drift]:
    """The features of `run`'s last `days` days of inspections that drifted from its validation photos, for the
    Inspect page's model line. Only from a reference the Monitor page already computed (cheap: no photo is read
    here); empty without one."""
    try:
        reference = validation_reference(run, compute=False)
    except MonitorError:
        return []
    if reference is None:
        return []
    log = load_log(store, run_ids=[run.run_id])
    recent = log[log["when"] >= log["when"].max() - timedelta(days=days)] if len(log) else log
    return [d for d in drift_report(recent, reference) if d.drifted]


# -- what to label next ------------------------------------------------------------------------
# An inspector's or a confirmed label's disagreement is evidence the model is wrong; its own doubt (a small
# margin) or an unfamiliar photo only suggests it. Hence the weights.
WEIGHTS = {"doubt": 1.0, "unfamiliar": 1.0, "overridden": 2.0, "disagrees": 2.0}


def label_queue(log: pd.DataFrame, corrections: pd.DataFrame, limit: int = 50) -> pd.DataFrame:
    """Logged inspections with a stored photo, one per photo, most informative first, with their `score` and the
    `reasons`. score = doubt (1 - margin) + unfamiliar (its rank in the log, 0-1) + 2 x overridden (an inspector
    filed a correction) + 2 x disagrees (a confirmed label differs from the prediction). Photos already labelled
    from this queue are left out."""
    rows = log[(log["verdict"] != "error") & (log["photo_path"] != "")]
    if "photo_removed" in rows.columns:
        rows = rows[rows["photo_removed"].fillna("") == ""]
    if rows.empty:
        return rows.assign(score=[], reasons=[], doubt=[], overridden=[], disagrees=[])
    live = corrections[corrections["status"] != "rejected"] if len(corrections) else corrections
    labelled = set(live.loc[live["source"] == QUEUE_SOURCE, "sha256"]) if len(live) else set()
    rows = rows[~rows["sha256"].isin(labelled)].copy()
    inspector = live[live["source"] == "inspection"] if len(live) else live
    overridden_ids = set(inspector["inspection_id"].dropna().astype(int)) if len(inspector) else set()
    overridden_photos = set(inspector["sha256"]) - {""} if len(inspector) else set()
    confirmed = _confirmed_labels(corrections)

    rows["doubt"] = (1.0 - rows["margin"].fillna(1.0)).clip(0.0, 1.0)
    column = unfamiliar_column(rows)
    rows["unfamiliar_rank"] = (pd.to_numeric(rows[column], errors="coerce").rank(pct=True).fillna(0.0)
                               if column else 0.0)
    rows["overridden"] = rows["id"].astype(int).isin(overridden_ids) | rows["sha256"].isin(overridden_photos)
    rows["confirmed_label"] = [confirmed.get(sha, confirmed.get(path, "")) for sha, path in
                               zip(rows["sha256"], rows["photo_path"])]
    rows["disagrees"] = (rows["confirmed_label"] != "") & (rows["confirmed_label"] != rows["predicted"])
    rows["score"] = (WEIGHTS["doubt"] * rows["doubt"] + WEIGHTS["unfamiliar"] * rows["unfamiliar_rank"]
                     + WEIGHTS["overridden"] * rows["overridden"] + WEIGHTS["disagrees"] * rows["disagrees"])
    rows = rows.sort_values(["score", "id"], ascending=[False, False], kind="stable")
    rows = rows.drop_duplicates("sha256").head(limit).reset_index(drop=True)
    rows["reasons"] = [_reasons(row, column) for row in rows.to_dict("records")]
    return rows


def _confirmed_labels(corrections: pd.DataFrame) -> dict[str, str]:
    """sha256 and photo path -> the newest confirmed label (not a dropped photo)."""
    if corrections.empty:
        return {}
    confirmed = corrections[(corrections["status"] == "confirmed") & corrections["new_label"].notna()]
    labels = {}
    for row in confirmed.sort_values("id").itertuples():
        for key in (row.sha256, row.photo_path):
            if key:
                labels[key] = str(row.new_label)
    return labels


def _reasons(row: dict, unfamiliar: str | None) -> str:
    reasons = []
    if row["disagrees"]:
        reasons.append(f"confirmed label {row['confirmed_label']}, model said {row['predicted']}")
    if row["overridden"]:
        reasons.append("an inspector corrected it")
    if unfamiliar and row["unfamiliar_rank"] >= 0.9:
        reasons.append(f"unfamiliar (score {row[unfamiliar]:.3g})")
    if not np.isnan(row["margin"]):
        reasons.append(f"margin {row['margin']:.2f} between the top two classes")
    return "; ".join(reasons)


def label_from_queue(store: InspectionStore, actor: Actor, inspection: dict, label: str | None,
                     classes: list[str], dataset: str) -> int:
    """An engineer's label for a queued photo (None: the photo is unusable), filed as a correction of `dataset`
    (the model's training set, so its next retrain includes the photo) with source "monitor queue"."""
    require(actor, "relabel")
    if label is not None and label not in classes:
        raise MonitorError(f"{inspection['file_name']}: {label!r} is not one of the model's classes "
                           f"({', '.join(classes)}).")
    photo = Path(str(inspection["photo_path"]))
    if not photo.is_file():
        raise MonitorError(f"{inspection['file_name']}: its stored copy {photo} is gone, so it cannot be trained on. "
                           "Pick another photo.")
    predicted = str(inspection["predicted"])
    action = "unusable" if label is None else "confirm" if label == predicted else "relabel"
    return file_decision(store, actor, source=QUEUE_SOURCE, action=action, photo_path=str(photo.resolve()),
                         dataset=dataset, run_id=str(inspection["run_id"]), model_label=predicted, new_label=label,
                         sha256=str(inspection["sha256"]), inspection_id=int(inspection["id"]))
