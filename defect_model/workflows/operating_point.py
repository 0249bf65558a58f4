"""An operating point instead of one confidence threshold: escapes (defective photos that would pass) against
review load (photos sent to a person), over a run's validation predictions, and the point saved with the run.

The verdict rule (serve.verdicts) with a point: a photo passes when its most likely class is a good one whose
probability clears `good_threshold`; it is rejected when its most likely class is a defect whose probability
clears `defect_threshold`; otherwise a person decides. Escapes depend on `good_threshold` alone (only a pass
lets a defective part through), the review load on both; so for a given `defect_threshold` the least review
load that keeps escapes at or under a limit is the lowest good threshold that does (escapes only fall and the
review load only grows as it rises).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from defect_model.access.accounts import Actor, audit_log, require
from defect_model.runs.folders import RunDir, now_iso, read_json, write_json_atomic
from defect_model.serve.verdicts import DEFAULT_THRESHOLD

POINT_FILE = "operating_point.json"


@dataclass(frozen=True)
class Outcome:
    good_threshold: float
    defect_threshold: float
    escape_rate: float  # defective photos that pass / defective photos
    review_load: float  # photos sent to a person / all photos
    false_reject_rate: float  # good photos rejected / good photos


@dataclass(frozen=True)
class OperatingPoint:
    good_threshold: float
    defect_threshold: float
    max_escape_rate: float | None = None  # the limit it was chosen for, if any
    escape_rate: float | None = None  # measured on the validation photos
    review_load: float | None = None
    false_reject_rate: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def probability_table(predictions: pd.DataFrame, classes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities (N, C), true class index (N,)) from a run's val_predictions.csv table."""
    probs = predictions[[f"prob_{c}" for c in classes]].to_numpy(dtype=np.float64)
    index = {c: i for i, c in enumerate(classes)}
    return probs, predictions["true_label"].map(index).to_numpy(dtype=np.int64)


def verdicts(probs: np.ndarray, classes: Sequence[str], good_classes: Sequence[str], good_threshold: float,
             defect_threshold: float, unfamiliar: np.ndarray | None = None) -> np.ndarray:
    """The verdict rule over a table: 'pass', 'reject' or 'needs_person' per row."""
    top = probs.argmax(axis=1)
    confidence = probs[np.arange(len(probs)), top]
    good_top = np.isin(np.asarray(classes)[top], list(good_classes))
    out = np.where(good_top, np.where(confidence >= good_threshold, "pass", "needs_person"),
                   np.where(confidence >= defect_threshold, "reject", "needs_person")).astype(object)
    if unfamiliar is not None:
        out[np.asarray(unfamiliar, dtype=bool)] = "needs_person"
    return out


def outcome(probs: np.ndarray, labels: np.ndarray, classes: Sequence[str], good_classes: Sequence[str],
            good_threshold: float, defect_threshold: float, unfamiliar: np.ndarray | None = None) -> Outcome:
    decided = verdicts(probs, classes, good_classes, good_threshold, defect_threshold, unfamiliar)
    good = np.isin(np.asarray(classes)[labels], list(good_classes))
    return Outcome(float(good_threshold), float(defect_threshold),
                   _share(decided[~good] == "pass"), _share(decided == "needs_person"), _share(decided[good] == "reject"))


def _share(mask: np.ndarray) -> float:
    return float(np.mean(mask)) if len(mask) else 0.0


def candidate_thresholds(probs: np.ndarray, classes: Sequence[str], good_classes: Sequence[str]) -> np.ndarray:
    """Every good threshold at which some photo's verdict changes, ascending, and one above all (nothing passes)."""
    top = probs.argmax(axis=1)
    good_top = np.isin(np.asarray(classes)[top], list(good_classes))
    values = np.unique(probs[np.arange(len(probs)), top][good_top])
    return np.concatenate([[0.0], values, [np.nextafter(max(values.max(initial=0.0), 1.0), 2.0)]])


def sweep(probs: np.ndarray, labels: np.ndarray, classes: Sequence[str], good_classes: Sequence[str],
          defect_threshold: float, unfamiliar: np.ndarray | None = None) -> pd.DataFrame:
    """Escape rate, review load and false-reject rate for every good threshold that changes a verdict."""
    rows = [asdict(outcome(probs, labels, classes, good_classes, t, defect_threshold, unfamiliar))
            for t in candidate_thresholds(probs, classes, good_classes)]
    return pd.DataFrame(rows)


def least_review_load(probs: np.ndarray, labels: np.ndarray, classes: Sequence[str], good_classes: Sequence[str],
                      max_escape_rate: float, defect_threshold: float = DEFAULT_THRESHOLD,
                      unfamiliar: np.ndarray | None = None) -> OperatingPoint:
    """The point with escapes at most `max_escape_rate` and the least review load (the lowest such good
    threshold; nothing passing always meets any limit)."""
    if not good_classes:
        raise ValueError("no class is marked good: nothing passes, so there is no escape to trade against review")
    for t in candidate_thresholds(probs, classes, good_classes):
        result = outcome(probs, labels, classes, good_classes, t, defect_threshold, unfamiliar)
        if result.escape_rate <= max_escape_rate + 1e-12:
            return OperatingPoint(result.good_threshold, result.defect_threshold, float(max_escape_rate),
                                  result.escape_rate, result.review_load, result.false_reject_rate)
    raise AssertionError("unreachable: a threshold above every probability passes nothing")


def per_class(probs: np.ndarray, labels: np.ndarray, classes: Sequence[str], good_classes: Sequence[str],
              good_threshold: float, defect_threshold: float, unfamiliar: np.ndarray | None = None) -> pd.DataFrame:
    """Per true class at a point: photos, and the shares passed, rejected and sent to a person."""
    decided = verdicts(probs, classes, good_classes, good_threshold, defect_threshold, unfamiliar)
    rows = []
    for i, name in enumerate(classes):
        mine = decided[labels == i]
        rows.append({"class": name, "good": name in good_classes, "photos": len(mine),
                     "passed": _share(mine == "pass"), "rejected": _share(mine == "reject"),
                     "to a person": _share(mine == "needs_person")})
    return pd.DataFrame(rows)


# -- the point saved with a run --------------------------------------------------------------------------
def load_point(run: RunDir) -> OperatingPoint | None:
    """The run's saved operating point, or None (then the Inspect page's threshold decides)."""
    data = read_json(run.path / POINT_FILE, None)
    if not isinstance(data, dict):
        return None
    try:
        return OperatingPoint(float(data["good_threshold"]), float(data["defect_threshold"]),
                              *(None if data.get(k) is None else float(data[k]) for k in
                                ("max_escape_rate", "escape_rate", "review_load", "false_reject_rate")))
    except (KeyError, TypeError, ValueError):
        return None


def record_override(actor: Actor | None, run_id: str, threshold: float, point: OperatingPoint, photos: int) -> None:
    """An inspector decided a batch with one threshold instead of the run's operating point: the audit trail
    says who, when, with what and for how many photos."""
    require(actor, "inspect")
    audit_log().record(actor, "threshold override", run_id, threshold=float(threshold), photos=int(photos),
                       good_threshold=point.good_threshold, defect_threshold=point.defect_threshold)


def save_point(run: RunDir, point: OperatingPoint, actor: Actor) -> dict:
    """Save `point` with the run (engineers; recorded in the audit trail). Inspect and the hot folder use it."""
    require(actor, "review")
    for name in ("good_threshold", "defect_threshold"):
        value = getattr(point, name)
        if not 0.0 <= value <= 1.0 + 1e-9:
            raise ValueError(f"{name.replace('_', ' ')} {value:g} is not a probability; choose one between 0 and 1")
    record = {**point.to_dict(), "by": actor.name, "at": now_iso()}
    write_json_atomic(run.path / POINT_FILE, record)
    audit_log().record(actor, "operating point", run.run_id, **point.to_dict())
    return record
