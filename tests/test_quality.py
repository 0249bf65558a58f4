import pandas as pd

from defect_model.train.metrics import metrics_from_predictions
from defect_model.common.quality import assess


def _metrics(true, pred, classes):
    return metrics_from_predictions(pd.DataFrame({"true_label": true, "pred_label": pred}), classes)


def test_a_model_that_always_says_ok_is_collapsed_and_misses_every_defect():
    classes = ["ok", "pit", "scratch"]
    metrics = _metrics(["ok"] * 8 + ["pit", "scratch"], ["ok"] * 10, classes)
    quality = assess(metrics, good_classes=["ok"])
    assert quality.accuracy == 0.8  # looks fine by accuracy alone
    assert quality.collapsed and "pit, scratch" in quality.problems[0]
    assert quality.defect_miss_rate == 1.0
    assert quality.worst_recall == 0.0


def test_a_good_model_is_not_flagged():
    classes = ["ok", "pit", "scratch"]
    metrics = _metrics(["ok", "ok", "pit", "pit", "scratch", "scratch"],
                       ["ok", "ok", "pit", "ok", "scratch", "scratch"], classes)
    quality = assess(metrics, good_classes=["ok"])
    assert not quality.collapsed
    assert quality.defect_miss_rate == 0.25 and quality.worst_class == "pit"
    assert quality.headline().startswith("defect miss rate 25.0%")
    assert assess(metrics).defect_miss_rate is None
