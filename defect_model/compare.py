"""Two runs side by side: their metrics and the difference, their curves, and the validation photos
whose prediction changed (the gate before a retrained model goes live).

Run A is the baseline, run B the candidate. A changed photo is judged against B's true label, because a
retrained candidate carries the corrected labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .events import curves
from .quality import assess
from .runs import RunDir


@dataclass
class Comparison:
    a: RunDir
    b: RunDir
    metrics: pd.DataFrame  # metric, a, b, delta (b - a), better ("a" / "b" / "")
    changed: pd.DataFrame  # path, true_label_a, true_label, pred_a, conf_a, pred_b, conf_b, outcome
    common_photos: int
    only_a: list[str]
    only_b: list[str]

    @property
    def fixed(self) -> int:
        return int((self.changed["outcome"] == "fixed").sum())

    @property
    def broken(self) -> int:
        return int((self.changed["outcome"] == "broken").sum())


# Metrics where a lower number is better; every other one is better when higher.
LOWER_IS_BETTER = {"defect miss rate", "false-reject rate", "val loss"}


def metric_rows(metrics: dict, good_classes) -> dict[str, float | None]:
    """The numbers a model is judged by, defect miss rate and per-class recall first."""
    quality = assess(metrics, good_classes)
    rows: dict[str, float | None] = {}
    if quality.defect_miss_rate is not None:
        rows["defect miss rate"] = quality.defect_miss_rate
        rows["false-reject rate"] = quality.false_reject_rate
    for name in metrics["classes"]:
        rows[f"recall {name}"] = metrics["per_class"][name]["recall"]
    rows["accuracy"] = metrics["accuracy"]
    rows["macro-F1"] = metrics["macro_f1"]
    rows["micro-F1"] = metrics["micro_f1"]
    for name in metrics["classes"]:
        rows[f"precision {name}"] = metrics["per_class"][name]["precision"]
    rows["val loss"] = metrics.get("val_loss")
    return rows


def metric_deltas(metrics_a: dict, metrics_b: dict, good_a=(), good_b=()) -> pd.DataFrame:
    rows_a, rows_b = metric_rows(metrics_a, good_a), metric_rows(metrics_b, good_b)
    names = list(dict.fromkeys([*rows_a, *rows_b]))
    table = []
    for name in names:
        a, b = rows_a.get(name), rows_b.get(name)
        delta = None if a is None or b is None else float(b) - float(a)
        better = ""
        if delta is not None and abs(delta) > 1e-12:
            b_better = delta < 0 if name in LOWER_IS_BETTER else delta > 0
            better = "b" if b_better else "a"
        table.append({"metric": name, "a": a, "b": b, "delta": delta, "better": better})
    return pd.DataFrame(table, columns=["metric", "a", "b", "delta", "better"])


def changed_predictions(pred_a: pd.DataFrame, pred_b: pd.DataFrame) -> pd.DataFrame:
    """Photos in both tables whose predicted label differs, worst regressions first."""
    keep = ["path", "true_label", "pred_label"]
    merged = pred_a[keep + ["confidence"]].merge(pred_b[keep + ["confidence"]], on="path", suffixes=("_a", "_b"))
    changed = merged[merged["pred_label_a"] != merged["pred_label_b"]].copy()
    truth = changed["true_label_b"]
    right_a = changed["pred_label_a"] == truth
    right_b = changed["pred_label_b"] == truth
    changed["outcome"] = np.select([right_b & ~right_a, right_a & ~right_b], ["fixed", "broken"], "still wrong")
    changed["label_corrected"] = changed["true_label_a"] != changed["true_label_b"]
    order = {"broken": 0, "still wrong": 1, "fixed": 2}
    changed = changed.assign(_order=changed["outcome"].map(order)).sort_values(["_order", "path"])
    changed = changed.rename(columns={"true_label_b": "true_label", "pred_label_a": "pred_a", "pred_label_b": "pred_b",
                                      "confidence_a": "conf_a", "confidence_b": "conf_b"})
    columns = ["path", "true_label", "pred_a", "conf_a", "pred_b", "conf_b", "outcome", "label_corrected",
               "true_label_a"]
    return changed[columns].reset_index(drop=True)


def with_confidence(predictions: pd.DataFrame) -> pd.DataFrame:
    probs = [c for c in predictions.columns if c.startswith("prob_")]
    return predictions.assign(confidence=predictions[probs].max(axis=1) if probs else np.nan)


def _read(run: RunDir) -> tuple[dict, pd.DataFrame, list[str]]:
    metrics = run.read_metrics()
    if not metrics or not run.val_predictions.is_file():
        raise FileNotFoundError(f"{run.path}: no metrics.json or val_predictions.csv yet. "
                                "Compare runs that have finished at least one epoch.")
    good = run.settings().good_classes
    try:
        predictions = pd.read_csv(run.val_predictions, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ValueError(f"{run.val_predictions}: not a readable predictions table ({type(exc).__name__}). "
                         "Pick another run.") from None
    return metrics, with_confidence(predictions), good


def compare_runs(a: RunDir, b: RunDir) -> Comparison:
    metrics_a, pred_a, good_a = _read(a)
    metrics_b, pred_b, good_b = _read(b)
    paths_a, paths_b = set(pred_a["path"]), set(pred_b["path"])
    return Comparison(a=a, b=b, metrics=metric_deltas(metrics_a, metrics_b, good_a, good_b),
                      changed=changed_predictions(pred_a, pred_b), common_photos=len(paths_a & paths_b),
                      only_a=sorted(paths_a - paths_b), only_b=sorted(paths_b - paths_a))


def epoch_curves(run: RunDir) -> pd.DataFrame:
    """One row per finished epoch: epoch, train_loss, val_loss, val_accuracy, val_macro_f1, elapsed_s."""
    columns = ["epoch", "train_loss", "val_loss", "val_accuracy", "val_macro_f1", "elapsed_s"]
    return curves(run.read_events())[1][columns]
