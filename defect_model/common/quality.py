"""What a model summary must say: accuracy beside per-class recall, the defect miss rate,
and whether the model has collapsed (it would pass defective parts)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass
class ModelQuality:
    accuracy: float
    macro_f1: float
    recall: dict[str, float]
    worst_class: str
    worst_recall: float
    # Share of defect photos predicted as a "good" class; None when no class is marked good.
    defect_miss_rate: float | None
    # Share of good photos predicted as a defect (the other cost: good parts sent to rework); None likewise.
    false_reject_rate: float | None
    collapsed: bool
    problems: list[str] = field(default_factory=list)

    def headline(self) -> str:
        parts = []
        if self.defect_miss_rate is not None:
            parts.append(f"defect miss rate {self.defect_miss_rate:.1%}")
        if self.false_reject_rate is not None:
            parts.append(f"false-reject rate {self.false_reject_rate:.1%}")
        parts += [f"accuracy {self.accuracy:.1%}", f"worst recall {self.worst_recall:.1%} ({self.worst_class})"]
        return ", ".join(parts)


def chance_macro_f1_limit(num_classes: int) -> float:
    """Macro-F1 at or below this is 'near chance' (chance is about 1/C)."""
    return min(0.5, 1.5 / max(num_classes, 2))


def assess(metrics: dict, good_classes: Sequence[str] = ()) -> ModelQuality:
    """Judge a metrics.json-style dict (from metrics.summarize)."""
    classes = list(metrics["classes"])
    per_class = metrics["per_class"]
    present = [c for c in classes if per_class[c]["support"] > 0]
    recall = {c: per_class[c]["recall"] for c in present}
    worst = min(present, key=lambda c: recall[c]) if present else ""
    problems = []
    zero = [c for c in present if recall[c] == 0.0]
    if zero:
        problems.append(f"never recognises {', '.join(zero)} (recall 0)")
    limit = chance_macro_f1_limit(len(classes))
    if metrics["macro_f1"] <= limit:
        problems.append(f"macro-F1 {metrics['macro_f1']:.2f} is near chance (<= {limit:.2f})")
    return ModelQuality(
        accuracy=float(metrics["accuracy"]),
        macro_f1=float(metrics["macro_f1"]),
        recall=recall,
        worst_class=worst,
        worst_recall=recall.get(worst, 0.0),
        defect_miss_rate=defect_miss_rate(metrics["confusion_matrix"], classes, good_classes),
        false_reject_rate=false_reject_rate(metrics["confusion_matrix"], classes, good_classes),
        collapsed=bool(problems),
        problems=problems,
    )


def defect_miss_rate(matrix, classes: Sequence[str], good_classes: Sequence[str]) -> float | None:
    """Of the photos whose true class is a defect, the share predicted as a good class."""
    return _crossing_share(matrix, classes, good_classes, from_good=False)


def false_reject_rate(matrix, classes: Sequence[str], good_classes: Sequence[str]) -> float | None:
    """Of the photos whose true class is good, the share predicted as a defect class."""
    return _crossing_share(matrix, classes, good_classes, from_good=True)


def _crossing_share(matrix, classes: Sequence[str], good_classes: Sequence[str], from_good: bool) -> float | None:
    """Share of one side's photos (good or defect, by true class) predicted on the other side."""
    good = [i for i, c in enumerate(classes) if c in set(good_classes)]
    if not good:
        return None
    matrix = np.asarray(matrix)
    defects = [i for i in range(len(classes)) if i not in good]
    rows, columns = (good, defects) if from_good else (defects, good)
    total = matrix[rows].sum()
    return float(matrix[np.ix_(rows, columns)].sum() / total) if total else 0.0
