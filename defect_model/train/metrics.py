"""Classification metrics from a predictions table; plain numpy."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int) -> np.ndarray:
    """Rows are true classes, columns predicted classes."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return matrix


def _safe_divide(top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
    return np.divide(top, bottom, out=np.zeros_like(top, dtype=np.float64), where=bottom > 0)


def summarize(matrix: np.ndarray, classes: Sequence[str]) -> dict:
    """Per-class precision/recall/F1/support, micro and macro F1 and accuracy from a confusion matrix."""
    matrix = np.asarray(matrix, dtype=np.float64)
    true_pos = np.diag(matrix)
    support = matrix.sum(axis=1)
    predicted = matrix.sum(axis=0)
    precision = _safe_divide(true_pos, predicted)
    recall = _safe_divide(true_pos, support)
    f1 = _safe_divide(2 * precision * recall, precision + recall)
    total = matrix.sum()
    accuracy = float(true_pos.sum() / total) if total else 0.0
    present = support > 0
    return {
        "accuracy": accuracy,
        # Single-label classification: micro precision = micro recall = micro F1 = accuracy.
        "micro_f1": accuracy,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "per_class": {
            name: {"precision": float(precision[i]), "recall": float(recall[i]),
                   "f1": float(f1[i]), "support": int(support[i])}
            for i, name in enumerate(classes)
        },
        "confusion_matrix": matrix.astype(np.int64).tolist(),
        "classes": list(classes),
    }


def metrics_from_predictions(predictions: pd.DataFrame, classes: Sequence[str]) -> dict:
    """Metrics from a table with `true_label` and `pred_label` columns (class names)."""
    index = {name: i for i, name in enumerate(classes)}
    y_true = predictions["true_label"].map(index).to_numpy()
    y_pred = predictions["pred_label"].map(index).to_numpy()
    return summarize(confusion_matrix(y_true, y_pred, len(classes)), classes)
