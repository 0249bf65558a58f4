"""Confidence calibration on the validation set: reliability bins and the expected calibration error.

A model is calibrated when, of the photos it labels with confidence about 0.9, about 90 % are right.
Confidence is the top class's probability; a photo is right when that class is its true label.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass
class Calibration:
    bins: pd.DataFrame  # lower, upper, count, confidence (mean), accuracy, gap (accuracy - confidence)
    ece: float  # expected calibration error: sum over bins of share * |accuracy - confidence|
    mce: float  # maximum calibration error over non-empty bins
    photos: int
    mean_confidence: float
    accuracy: float

    @property
    def overconfident(self) -> bool:
        return self.mean_confidence > self.accuracy


def probability_matrix(predictions: pd.DataFrame, classes: Sequence[str]) -> np.ndarray:
    """The `prob_<class>` columns of a val_predictions table as an (N, C) array."""
    columns = [f"prob_{name}" for name in classes]
    missing = [c for c in columns if c not in predictions.columns]
    if missing:
        raise ValueError(f"the predictions lack the column(s) {', '.join(missing)}; "
                         "they must come from a run trained on these classes")
    return predictions[columns].to_numpy(dtype=np.float64)


def reliability(predictions: pd.DataFrame, classes: Sequence[str], n_bins: int = 10) -> Calibration:
    """Equal-width confidence bins over [0, 1] (the last bin includes 1.0)."""
    if n_bins < 1:
        raise ValueError("n_bins must be at least 1")
    probs = probability_matrix(predictions, classes)
    confidence = probs.max(axis=1) if len(probs) else np.zeros(0)
    predicted = np.asarray(classes, dtype=object)[probs.argmax(axis=1)] if len(probs) else np.zeros(0, dtype=object)
    correct = (predicted == predictions["true_label"].to_numpy(dtype=object)).astype(np.float64)
    return reliability_from_arrays(confidence, correct, n_bins)


def reliability_from_arrays(confidence: np.ndarray, correct: np.ndarray, n_bins: int = 10) -> Calibration:
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    index = np.clip(np.searchsorted(edges, confidence, side="right") - 1, 0, n_bins - 1)
    rows = []
    for b in range(n_bins):
        inside = index == b
        count = int(inside.sum())
        rows.append({
            "lower": float(edges[b]), "upper": float(edges[b + 1]), "count": count,
            "confidence": float(confidence[inside].mean()) if count else np.nan,
            "accuracy": float(correct[inside].mean()) if count else np.nan,
        })
    bins = pd.DataFrame(rows)
    bins["gap"] = bins["accuracy"] - bins["confidence"]
    total = len(confidence)
    filled = bins[bins["count"] > 0]
    ece = float((filled["count"] / total * filled["gap"].abs()).sum()) if total else 0.0
    mce = float(filled["gap"].abs().max()) if len(filled) else 0.0
    return Calibration(bins=bins, ece=ece, mce=mce, photos=total,
                       mean_confidence=float(confidence.mean()) if total else 0.0,
                       accuracy=float(correct.mean()) if total else 0.0)
