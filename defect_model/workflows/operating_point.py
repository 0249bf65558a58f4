"""An operating point instead of one confidence threshold: escapes (defective photos that would pass) against
review load (photos sent to a person), over a run's validation predictions, and the point saved with the run.

The verdict rule (serve.verdicts) with a point: a photo passes when its most likely class is a good one whose
probability clears `good_threshold`; it is rejected when its most likely class is a defect whose probability
clears `defect_threshold`; otherwise a person decides. Escapes depend on `good_threshold` alone (only a pass
lets a defective part through), the review load on both; so for a given `defect_threshold` the least review
load that keeps escapes at or under a limit is the lowest good threshold that does (escapes only fall and the
review load only grows as it rises).

With more than one good class (e.g. "ok" and "ok_rework"), each may get its own pass threshold: a class the model
rarely confuses with a defect can pass from a lower probability than one it does. The least review load for a
limit on escapes is then a choice of one threshold per good class with the most passes whose escapes sum to at
most the limit: a small knapsack over escape counts, solved exactly (least_review_load_per_class). Per-class
thresholds are kept only where they lower the review load below the best single threshold.

Photos the model finds unfamiliar (serve.unfamiliar, flagged in val_predictions.csv) go to a person at every
point, so they count in the review load and never pass.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from defect_model.access.accounts import Actor, audit_log, require
from defect_model.database import open_database, operating_points
from defect_model.runs.folders import RunDir, now_iso, read_json
from defect_model.serve.verdicts import DEFAULT_THRESHOLD, PassThreshold, pass_threshold

POINT_FILE = "operating_point.json"  # where a run's point was kept before the database held it (still read)


@dataclass(frozen=True)
class Outcome:
    good_threshold: PassThreshold
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
    # (good class, its pass threshold) where good classes pass from different probabilities; () when
    # `good_threshold` is every good class's. A tuple so that the point stays hashable.
    class_thresholds: tuple[tuple[str, float], ...] = ()

    @property
    def passes_from(self) -> PassThreshold:
        """What a good class's probability must clear to pass (serve.verdicts.decide_verdict's good_threshold)."""
        return dict(self.class_thresholds) if self.class_thresholds else self.good_threshold

    def describe_pass(self, digits: int = 2) -> str:
        """'0.85', or '0.85 (ok), 0.93 (ok_rework)' with per-class thresholds."""
        if not self.class_thresholds:
            return f"{self.good_threshold:.{digits}f}"
        return ", ".join(f"{value:.{digits}f} ({name})" for name, value in self.class_thresholds)

    def to_dict(self) -> dict:
        record = asdict(self)
        record["class_thresholds"] = dict(self.class_thresholds)
        return record


def probability_table(predictions: pd.DataFrame, classes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities (N, C), true class index (N,)) from a run's val_predictions.csv table."""
    probs = predictions[[f"prob_{c}" for c in classes]].to_numpy(dtype=np.float64)
    index = {c: i for i, c in enumerate(classes)}
    return probs, predictions["true_label"].map(index).to_numpy(dtype=np.int64)


def verdicts(probs: np.ndarray, classes: Sequence[str], good_classes: Sequence[str], good_threshold: PassThreshold,
             defect_threshold: float, unfamiliar: np.ndarray | None = None) -> np.ndarray:
    """The verdict rule over a table: 'pass', 'reject' or 'needs_person' per row."""
    top = probs.argmax(axis=1)
    confidence = probs[np.arange(len(probs)), top]
    good_top = np.isin(np.asarray(classes)[top], list(good_classes))
    if isinstance(good_threshold, Mapping):
        needed = np.array([good_threshold.get(c, defect_threshold) for c in classes], dtype=np.float64)[top]
    else:
        needed = np.full(len(probs), float(good_threshold))
    out = np.where(good_top, np.where(confidence >= needed, "pass", "needs_person"),
                   np.where(confidence >= defect_threshold, "reject", "needs_person")).astype(object)
    if unfamiliar is not None:
        out[np.asarray(unfamiliar, dtype=bool)] = "needs_person"
    return out


def outcome(probs: np.ndarray, labels: np.ndarray, classes: Sequence[str], good_classes: Sequence[str],
            good_threshold: PassThreshold, defect_threshold: float, unfamiliar: np.ndarray | None = None) -> Outcome:
    decided = verdicts(probs, classes, good_classes, good_threshold, defect_threshold, unfamiliar)
    good = np.isin(np.asarray(classes)[labels], list(good_classes))
    shown = dict(good_threshold) if isinstance(good_threshold, Mapping) else float(good_threshold)
    return Outcome(shown, float(defect_threshold),
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
    """The point with escapes at most `max_escape_rate` and the least review load: the lowest single good
    threshold that meets the limit (nothing passing always meets any limit), or, with several good classes,
    one threshold per good class where that sends fewer photos to a person."""
    if not good_classes:
        raise ValueError("no class is marked good: nothing passes, so there is no escape to trade against review")
    for t in candidate_thresholds(probs, classes, good_classes):
        result = outcome(probs, labels, classes, good_classes, t, defect_threshold, unfamiliar)
        if result.escape_rate <= max_escape_rate + 1e-12:
            single = _point(result, max_escape_rate)
            break
    else:
        raise AssertionError("unreachable: a threshold above every probability passes nothing")
    if len(set(good_classes) & set(classes)) < 2:
        return single
    split = least_review_load_per_class(probs, labels, classes, good_classes, max_escape_rate, defect_threshold,
                                        unfamiliar)
    return split if split.review_load < single.review_load - 1e-12 else single


def least_review_load_per_class(probs: np.ndarray, labels: np.ndarray, classes: Sequence[str],
                                good_classes: Sequence[str], max_escape_rate: float, defect_threshold: float,
                                unfamiliar: np.ndarray | None = None) -> OperatingPoint:
    """One pass threshold per good class with the most passes (so the least review load: rejects do not depend on
    the good thresholds) and at most `max_escape_rate` escapes. Exact: a multiple-choice knapsack whose weights
    are escape counts, at most the number of defective photos."""
    names = np.asarray(classes)
    top = probs.argmax(axis=1)
    confidence = probs[np.arange(len(probs)), top]
    may_pass = np.ones(len(probs), dtype=bool) if unfamiliar is None else ~np.asarray(unfamiliar, dtype=bool)
    defective = ~np.isin(names[labels], list(good_classes))
    allowed = int(np.floor(max_escape_rate * defective.sum() + 1e-9))
    best = np.zeros(allowed + 1, dtype=np.int64)  # best[e]: the most passes with exactly e escapes so far
    best[1:] = -1  # (-1: no choice of thresholds has exactly e escapes)
    steps = []  # per good class: its options and, for every e, the option that gives best[e]
    for good_class in (c for c in classes if c in set(good_classes)):
        mine = (names[top] == good_class) & may_pass
        order = np.argsort(confidence[mine], kind="stable")
        ascending, bad = confidence[mine][order], defective[mine][order]
        thresholds = np.concatenate([np.unique(ascending), [np.nextafter(1.0, 2.0)]])
        below = np.searchsorted(ascending, thresholds, side="left")  # photos of this class that would not pass
        bad_below = np.concatenate([[0], np.cumsum(bad)])[below]
        passes, escapes = len(ascending) - below, int(bad.sum()) - bad_below
        new_best, pick = np.full_like(best, -1), np.full(allowed + 1, -1)
        for option, (p, x) in enumerate(zip(passes, escapes)):
            if x > allowed:
                continue
            reached = np.full_like(best, -1)
            reached[x:] = np.where(best[:allowed + 1 - x] >= 0, best[:allowed + 1 - x] + p, -1)
            better = reached > new_best
            new_best[better], pick[better] = reached[better], option
        steps.append((good_class, thresholds, escapes, pick))
        best = new_best
    e = int(np.argmax(best))  # the most passes; among equals the fewest escapes (argmax takes the first)
    thresholds = {}
    for good_class, options, escapes, pick in reversed(steps):
        thresholds[good_class] = float(options[pick[e]])
        e -= int(escapes[pick[e]])
    thresholds = {c: thresholds[c] for c in classes if c in thresholds}
    result = outcome(probs, labels, classes, good_classes, thresholds, defect_threshold, unfamiliar)
    return _point(result, max_escape_rate, tuple(thresholds.items()))


def _point(result: Outcome, max_escape_rate: float, class_thresholds: tuple = ()) -> OperatingPoint:
    lowest = min(t for _, t in class_thresholds) if class_thresholds else float(result.good_threshold)
    return OperatingPoint(lowest, result.defect_threshold, float(max_escape_rate), result.escape_rate,
                          result.review_load, result.false_reject_rate, class_thresholds)


def per_class(probs: np.ndarray, labels: np.ndarray, classes: Sequence[str], good_classes: Sequence[str],
              good_threshold: PassThreshold, defect_threshold: float,
              unfamiliar: np.ndarray | None = None) -> pd.DataFrame:
    """Per true class at a point: its threshold (to pass for a good class, to be rejected for a defect), photos,
    and the shares passed, rejected and sent to a person."""
    decided = verdicts(probs, classes, good_classes, good_threshold, defect_threshold, unfamiliar)
    rows = []
    for i, name in enumerate(classes):
        mine = decided[labels == i]
        own = pass_threshold(good_threshold, name, defect_threshold) if name in good_classes else defect_threshold
        rows.append({"class": name, "good": name in good_classes, "threshold": own, "photos": len(mine),
                     "passed": _share(mine == "pass"), "rejected": _share(mine == "reject"),
                     "to a person": _share(mine == "needs_person")})
    return pd.DataFrame(rows)


# -- the point saved with a run --------------------------------------------------------------------------
def load_point(run: RunDir) -> OperatingPoint | None:
    """The run's saved operating point, or None (then the Inspect page's threshold decides): the newest one saved
    in the database (the same for every server and watcher of a plant), else one a run from before kept in its
    folder."""
    data = operating_points.newest(open_database(), run.run_id) or read_json(run.path / POINT_FILE, None)
    if not isinstance(data, dict):
        return None
    try:
        per_class_ = data.get("class_thresholds") or {}
        return OperatingPoint(float(data["good_threshold"]), float(data["defect_threshold"]),
                              *(None if data.get(k) is None else float(data[k]) for k in
                                ("max_escape_rate", "escape_rate", "review_load", "false_reject_rate")),
                              tuple((str(name), float(value)) for name, value in per_class_.items()))
    except (AttributeError, KeyError, TypeError, ValueError):
        return None


def record_override(actor: Actor | None, run_id: str, threshold: float, point: OperatingPoint, photos: int) -> None:
    """An inspector decided a batch with one threshold instead of the run's operating point: the audit trail
    says who, when, with what and for how many photos."""
    require(actor, "inspect")
    audit_log().record(actor, "threshold override", run_id, threshold=float(threshold), photos=int(photos),
                       good_threshold=point.good_threshold, defect_threshold=point.defect_threshold,
                       class_thresholds=dict(point.class_thresholds))


def save_point(run: RunDir, point: OperatingPoint, actor: Actor) -> dict:
    """Save `point` for the run in the database (engineers; recorded in the audit trail). Inspect and the hot
    folder of every machine use it from their next photo."""
    require(actor, "review")
    named = [("good threshold", point.good_threshold), ("defect threshold", point.defect_threshold),
             *((f"pass threshold of {name!r}", value) for name, value in point.class_thresholds)]
    for name, value in named:
        if not 0.0 <= value <= 1.0 + 1e-9:
            raise ValueError(f"{name} {value:g} is not a probability; choose one between 0 and 1")
    record = {**point.to_dict(), "by": actor.name, "at": now_iso()}
    operating_points.add(open_database(), run.run_id, point.to_dict(), actor.name, record["at"])
    audit_log().record(actor, "operating point", run.run_id, **point.to_dict())
    return record
