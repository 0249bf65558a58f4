import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from defect_model.train.metrics import confusion_matrix, metrics_from_predictions, summarize


@pytest.mark.parametrize("seed", range(5))
def test_metrics_equal_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    n_classes = int(rng.integers(2, 7))
    y_true = rng.integers(0, n_classes, 200)
    # Mostly right, sometimes wrong, and one class never predicted.
    y_pred = np.where(rng.random(200) < 0.6, y_true, rng.integers(0, n_classes, 200))
    y_pred[y_pred == n_classes - 1] = 0
    labels = list(range(n_classes))
    matrix = confusion_matrix(y_true, y_pred, n_classes)
    np.testing.assert_array_equal(matrix, skm.confusion_matrix(y_true, y_pred, labels=labels))

    names = [f"c{i}" for i in labels]
    result = summarize(matrix, names)
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0)
    for i, name in enumerate(names):
        assert result["per_class"][name]["precision"] == pytest.approx(precision[i])
        assert result["per_class"][name]["recall"] == pytest.approx(recall[i])
        assert result["per_class"][name]["f1"] == pytest.approx(f1[i])
        assert result["per_class"][name]["support"] == support[i]
    assert result["micro_f1"] == pytest.approx(skm.f1_score(y_true, y_pred, average="micro"))
    assert result["macro_f1"] == pytest.approx(skm.f1_score(y_true, y_pred, labels=labels, average="macro",
                                                            zero_division=0))
    assert result["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred))


def test_metrics_from_a_predictions_table():
    table = pd.DataFrame({"true_label": ["a", "a", "b", "c"], "pred_label": ["a", "b", "b", "a"]})
    result = metrics_from_predictions(table, ["a", "b", "c"])
    assert result["confusion_matrix"] == [[1, 1, 0], [0, 1, 0], [1, 0, 0]]
    assert result["per_class"]["c"]["recall"] == 0.0
    assert result["accuracy"] == 0.5
