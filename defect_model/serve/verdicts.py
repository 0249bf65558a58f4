"""The verdict rule: pass, reject or needs a person, from a photo's class probabilities."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np


VERDICTS = ("pass", "reject", "needs_person", "error")
VERDICT_LABELS = {"pass": "pass", "reject": "reject", "needs_person": "needs a person", "error": "error"}
DEFAULT_THRESHOLD = 0.7


def decide_verdict(probabilities: Sequence[float], classes: Sequence[str], good_classes: Iterable[str],
                   threshold: float) -> str:
    """pass, reject or needs_person for one photo's class probabilities.

    Below the confidence threshold a person decides, whatever the class. A
    confident "good" class passes and a confident defect class is rejected.

    When the run marks no class as good (NEU-CLS: six defect types, no photos of
    good parts), the model cannot recognise a good part at all, so nothing it
    says can pass one: a confident prediction is a confident defect, "reject".
    Passing parts by default would let every defect through unseen.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim != 1 or len(probabilities) != len(classes) or not len(classes):
        raise ValueError(f"{len(probabilities)} probabilities for {len(classes)} classes")
    top = int(probabilities.argmax())
    if probabilities[top] < threshold:
        return "needs_person"
    return "pass" if classes[top] in set(good_classes) else "reject"
