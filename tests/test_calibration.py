import numpy as np
import pandas as pd
import pytest

from defect_model.workflows.calibration import reliability, reliability_from_arrays


def table(rows, classes=("ok", "pit")):
    """rows: (true label, probability of the first class)."""
    records = []
    for true, p in rows:
        probs = {classes[0]: p, classes[1]: 1 - p}
        records.append({"true_label": true, "pred_label": max(probs, key=probs.get),
                        **{f"prob_{c}": v for c, v in probs.items()}})
    return pd.DataFrame(records)


def test_hand_computed_bins_and_ece():
    # Confidences 0.9, 0.9, 0.9, 0.9 (3 right) and 0.6, 0.6 (both wrong).
    rows = [("ok", 0.9), ("ok", 0.9), ("ok", 0.9), ("pit", 0.9), ("ok", 0.4), ("pit", 0.6)]
    result = reliability(table(rows), ["ok", "pit"], n_bins=10)
    filled = result.bins[result.bins["count"] > 0]
    assert filled["count"].tolist() == [2, 4]
    assert filled["confidence"].tolist() == pytest.approx([0.6, 0.9])
    assert filled["accuracy"].tolist() == pytest.approx([0.0, 0.75])
    # ECE = 2/6 * |0 - 0.6| + 4/6 * |0.75 - 0.9|
    assert result.ece == pytest.approx(2 / 6 * 0.6 + 4 / 6 * 0.15)
    assert result.mce == pytest.approx(0.6)
    assert result.accuracy == pytest.approx(3 / 6) and result.overconfident


def test_calibrated_model_has_small_ece_and_overconfident_one_does_not():
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0.5, 1.0, 20000)
    calibrated = rng.uniform(size=confidence.size) < confidence
    assert reliability_from_arrays(confidence, calibrated).ece < 0.02
    overconfident = rng.uniform(size=confidence.size) < confidence - 0.2
    result = reliability_from_arrays(confidence, overconfident)
    assert result.ece == pytest.approx(0.2, abs=0.02) and result.overconfident


def test_confidence_one_lands_in_the_last_bin_and_empty_input_is_zero():
    result = reliability_from_arrays(np.array([1.0, 0.0, 0.5]), np.array([1, 0, 1]), n_bins=4)
    assert result.bins["count"].tolist() == [1, 0, 1, 1]
    empty = reliability_from_arrays(np.array([]), np.array([]))
    assert empty.ece == 0.0 and empty.photos == 0


def test_missing_probability_column_is_named():
    with pytest.raises(ValueError, match="prob_crack"):
        reliability(table([("ok", 0.9)]), ["ok", "pit", "crack"])
