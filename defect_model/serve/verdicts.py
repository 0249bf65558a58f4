"""The verdict rule: pass, reject or needs a person, from a photo's class probabilities."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

# What a good class's probability must clear to pass: one number for every good class, or one per good class
# (an operating point chosen on the Review page with per-class thresholds).
PassThreshold = float | Mapping[str, float]


VERDICTS = ("pass", "reject", "needs_person", "error")
VERDICT_LABELS = {"pass": "pass", "reject": "reject", "needs_person": "needs a person", "error": "error"}
DEFAULT_THRESHOLD = 0.7


def decide_verdict(probabilities: Sequence[float], classes: Sequence[str], good_classes: Iterable[str],
                   threshold: float, good_threshold: PassThreshold | None = None, unfamiliar: bool = False) -> str:
    """pass, reject or needs_person for one photo's class probabilities.

    A photo unlike the training photos (`unfamiliar`) goes to a person whatever the confidence: the model
    answers with one of its classes, confidently, even for a photo of something it has never seen.
    Below the confidence threshold a person decides, whatever the class. A confident "good" class passes
    and a confident defect class is rejected. `good_threshold`, when given (an operating point chosen on
    the Review page), is the threshold a good class's probability must clear to pass (one for all good classes
    or one per good class); `threshold` then applies to defect classes only.

    When the run marks no class as good (NEU-CLS: six defect types, no photos of
    good parts), the model cannot recognise a good part at all, so nothing it
    says can pass one: a confident prediction is a confident defect, "reject".
    Passing parts by default would let every defect through unseen.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim != 1 or len(probabilities) != len(classes) or not len(classes):
        raise ValueError(f"{len(probabilities)} probabilities for {len(classes)} classes")
    if unfamiliar:
        return "needs_person"
    top = int(probabilities.argmax())
    good = classes[top] in set(good_classes)
    needed = pass_threshold(good_threshold, classes[top], threshold) if good else threshold
    if probabilities[top] < needed:
        return "needs_person"
    return "pass" if good else "reject"


def pass_threshold(good_threshold: PassThreshold | None, good_class: str, default: float) -> float:
    """The probability `good_class` must clear to pass (`default` when no good threshold is in force)."""
    if good_threshold is None:
        return default
    if isinstance(good_threshold, Mapping):
        return float(good_threshold.get(good_class, default))
    return float(good_threshold)


def is_unfamiliar(score: float | None, threshold: float | None) -> bool:
    """Whether a photo's unfamiliar score (None: no score, a model from before the check) lies above the model's
    threshold (serve.unfamiliar)."""
    return score is not None and threshold is not None and not np.isnan(score) and score > threshold


def verdict_reason(verdict: str, unfamiliar: bool) -> str:
    """Why a person is needed, in words ('' for other verdicts)."""
    if verdict != "needs_person":
        return ""
    return UNFAMILIAR_REASON if unfamiliar else "not confident enough"


UNFAMILIAR_REASON = "unlike the photos this model was trained on"
