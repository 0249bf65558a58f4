"""Two runs side by side: their metrics and the difference, their curves, and the validation photos
whose prediction changed (the gate before a retrained model goes live).

Run A is the baseline, run B the candidate. A changed photo is judged against B's true label, because a
retrained candidate carries the corrected labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from defect_model.runs.events import curves
from defect_model.common.quality import assess
from defect_model.runs.folders import RunDir


@dataclass
class Comparison:
    a: RunDir
    b: RunDir
    metrics: pd.DataFrame  # metric, a, b, delta (b - a), better ("a" / "b" / "")
    changed: pd.DataFrame  # path, true_label_a, true_label, pred_a, conf_a, pred_b, conf_b, outcome
    common_photos: int
    only_a: list[str]
    only_b: list[str]
    dataset_a: str = ""
    dataset_b: str = ""

    @property
    def same_dataset(self) -> bool:
        return _same_folder(self.dataset_a, self.dataset_b)

    @property
    def photo_by_photo(self) -> bool:
        """Whether the two runs were validated on photos they share, so their predictions can be set side by side."""
        return self.same_dataset and self.common_photos > 0

    def why_not_photo_by_photo(self) -> str:
        """Why the changed-photo list is empty for a reason other than "nothing changed" ("" when it is not)."""
        if not self.same_dataset:
            return (f"A ({self.a.run_id}) was validated on {self.dataset_a}, B ({self.b.run_id}) on "
                    f"{self.dataset_b}: different photos, so the two cannot be compared photo by photo. Their "
                    "numbers above are each measured on their own photos; compare them with care.")
        if not self.common_photos:
            return (f"A ({self.a.run_id}) and B ({self.b.run_id}) share no validation photo (different splits of "
                    f"{self.dataset_a}), so they cannot be compared photo by photo.")
        return ""

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


def _same_folder(a: str, b: str) -> bool:
    return a == b or Path(a).expanduser().resolve() == Path(b).expanduser().resolve()


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
    """A against B. Photos are matched by their path in the dataset, so only runs on the same dataset folder are
    compared photo by photo; for others the changed list is empty and `why_not_photo_by_photo` says why."""
    metrics_a, pred_a, good_a = _read(a)
    metrics_b, pred_b, good_b = _read(b)
    dataset_a, dataset_b = a.settings().data_dir, b.settings().data_dir
    if not _same_folder(dataset_a, dataset_b):  # the same relative path names a different photo there
        pred_b = pred_b.iloc[0:0]
        pred_a = pred_a.iloc[0:0]
    paths_a, paths_b = set(pred_a["path"]), set(pred_b["path"])
    return Comparison(a=a, b=b, metrics=metric_deltas(metrics_a, metrics_b, good_a, good_b),
                      changed=changed_predictions(pred_a, pred_b), common_photos=len(paths_a & paths_b),
                      only_a=sorted(paths_a - paths_b), only_b=sorted(paths_b - paths_a),
                      dataset_a=dataset_a, dataset_b=dataset_b)


def epoch_curves(run: RunDir) -> pd.DataFrame:
    """One row per finished epoch: epoch, train_loss, val_loss, val_accuracy, val_macro_f1, elapsed_s."""
    columns = ["epoch", "train_loss", "val_loss", "val_accuracy", "val_macro_f1", "elapsed_s"]
    return curves(run.read_events())[1][columns]


@dataclass
class Switch:
    """What changes when `candidate` becomes the active model in place of `current` (None: no active model)."""
    current: RunDir | None
    candidate: RunDir
    classes_now: list[str]
    classes_after: list[str]
    good_now: list[str]
    good_after: list[str]
    overall: pd.DataFrame  # metric, now, after, change
    per_class: pd.DataFrame  # class, recall now, recall after, missed now, missed after

    @property
    def classes_added(self) -> list[str]:
        return [c for c in self.classes_after if c not in self.classes_now] if self.current else []

    @property
    def classes_dropped(self) -> list[str]:
        return [c for c in self.classes_now if c not in self.classes_after]


OVERALL = ("defect miss rate", "false-reject rate", "accuracy", "macro-F1")


def switch_summary(current: RunDir | None, candidate: RunDir) -> Switch:
    """The numbers an activation changes: defect miss rate, false-reject rate, accuracy and macro-F1, and per class
    the recall (share of its photos recognised) and the miss rate (1 - recall), now and after."""
    metrics_after = candidate.read_metrics() or {}
    if not metrics_after:
        raise FileNotFoundError(f"{candidate.metrics}: no validation metrics; this run cannot become active.")
    good_after = candidate.settings().good_classes
    metrics_now, good_now = {}, []
    if current is not None:
        metrics_now = current.read_metrics() or {}
        good_now = current.settings().good_classes
    rows_after = metric_rows(metrics_after, good_after)
    rows_now = metric_rows(metrics_now, good_now) if metrics_now else {}
    overall = pd.DataFrame([{"metric": name, "now": rows_now.get(name), "after": rows_after.get(name)}
                            for name in OVERALL if name in rows_after or name in rows_now],
                           columns=["metric", "now", "after"])
    overall["change"] = [None if pd.isna(n) or pd.isna(a) else a - n for n, a in zip(overall["now"], overall["after"])]
    classes_now, classes_after = list(metrics_now.get("classes", [])), list(metrics_after["classes"])
    per_class = []
    for name in dict.fromkeys(classes_after + classes_now):
        now, after = rows_now.get(f"recall {name}"), rows_after.get(f"recall {name}")
        per_class.append({"class": name, "recall now": now, "recall after": after,
                          "missed now": None if now is None else 1 - now,
                          "missed after": None if after is None else 1 - after})
    return Switch(current, candidate, classes_now, classes_after, list(good_now), list(good_after), overall,
                  pd.DataFrame(per_class, columns=["class", "recall now", "recall after", "missed now",
                                                   "missed after"]))
