"""The unfamiliar-photo score: statistics fitted at the end of training, stored in the checkpoint, a threshold
calibrated on validation, and the verdict "needs a person" above it."""

import io
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score

from defect_model.access.audit import verify
from defect_model.photos.synthetic import make_sample
from defect_model.photos.uploads import Upload
from defect_model.runs.store import InspectionStore
from defect_model.serve.inference import Predictor
from defect_model.serve.unfamiliar import calibrate, fit_mahalanobis, mahalanobis_scores
from defect_model.serve.verdicts import UNFAMILIAR_REASON, decide_verdict
from defect_model.train.checkpoint import load_checkpoint, save_checkpoint
from defect_model.workflows.inspection import InspectionSettings, inspect_batch


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def demo_photos(count: int, seed: int = 7, size: int = 96) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = ["ok", "scratch", "pit", "stain", "crack"]
    return [np.asarray(make_sample(labels[i % 5], rng, size)[0].convert("RGB")) for i in range(count)]


def noise_photos(count: int, seed: int = 8, size: int = 96) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(count)]


def test_calibrated_threshold_flags_the_chosen_share():
    scores = np.random.default_rng(0).gamma(2.0, size=5000)
    for share in (0.02, 0.1):
        assert abs(np.mean(scores > calibrate(scores, share)) - share) < 0.002
    with pytest.raises(ValueError, match="between 0 and 1"):
        calibrate(scores, 0)


def test_mahalanobis_distance_to_the_nearest_class_mean():
    rng = np.random.default_rng(1)
    centres = np.array([[5.0] * 8, [-5.0] * 8])
    labels = np.repeat([0, 1], 200)
    features = torch.tensor(centres[labels] + rng.normal(size=(400, 8)), dtype=torch.float32)
    stats = fit_mahalanobis(features, torch.tensor(labels), 2)
    near = torch.tensor(centres + rng.normal(size=(2, 8)) * 0.5, dtype=torch.float32)
    between = torch.zeros((1, 8))  # the middle of the two classes: near neither
    far = torch.tensor([[40.0] * 8])
    scores = mahalanobis_scores(torch.cat([near, between, far]), stats)
    assert scores[0] < 20 and scores[1] < 20  # each near its own class's mean
    assert scores[2] > 5 * max(scores[:2]) and scores[3] > scores[2]


def test_unfamiliar_goes_to_a_person_whatever_the_confidence():
    probs, classes = [0.01, 0.99], ["ok", "crack"]
    assert decide_verdict(probs, classes, ["ok"], 0.7) == "reject"
    assert decide_verdict(probs, classes, ["ok"], 0.7, unfamiliar=True) == "needs_person"


@pytest.fixture(scope="module")
def predictor(trained_run):
    return Predictor.from_checkpoint(trained_run.checkpoint)


def test_training_stores_the_statistics_and_a_threshold_calibrated_on_validation(trained_run, predictor):
    payload = torch.load(trained_run.checkpoint, map_location="cpu", weights_only=True)
    info = payload["meta"]["unfamiliar"]
    assert set(payload["unfamiliar"]) == {"means", "whiten"}
    assert info["method"] == "mahalanobis" and info["flag_share"] == 0.02
    # at most the chosen share of the validation photos is above the threshold (one photo of rounding)
    assert info["val_flag_rate"] <= 0.02 + 1 / info["val_images"]
    assert predictor.unfamiliar_threshold == info["threshold"]


def test_each_validation_photo_carries_its_score_and_flag_for_the_operating_point(trained_run):
    from defect_model.workflows.review import load_review

    info = torch.load(trained_run.checkpoint, map_location="cpu", weights_only=True)["meta"]["unfamiliar"]
    table = load_review(trained_run).predictions
    assert table["unfamiliar_score"].notna().all() and len(table) == info["val_images"]
    flagged = table["unfamiliar"].astype(str).eq("True")
    assert flagged.mean() == pytest.approx(info["val_flag_rate"])
    assert (flagged == (table["unfamiliar_score"] > info["threshold"])).all()


def test_the_score_separates_demo_photos_from_noise(predictor):
    from defect_model.serve.explain import heatmaps_and_unfamiliar

    def scores(photos):
        return heatmaps_and_unfamiliar(predictor, [predictor.prepare(p) for p in photos])[2]

    familiar, strange = scores(demo_photos(30)), scores(noise_photos(30))
    assert roc_auc_score([0] * 30 + [1] * 30, np.r_[familiar, strange]) >= 0.95
    assert np.mean(familiar > predictor.unfamiliar_threshold) <= 0.1
    assert np.mean(strange > predictor.unfamiliar_threshold) >= 0.9


def test_an_unfamiliar_photo_is_logged_as_needing_a_person_with_its_score(predictor, trained_run, tmp_path):
    store = InspectionStore(tmp_path / "log.sqlite")
    uploads = [Upload("noise.png", png(noise_photos(1)[0])), Upload("pit.png", png(demo_photos(3)[2]))]
    settings = InspectionSettings(run_id="run", good_classes=["ok"], threshold=0.0)
    noise, pit = inspect_batch(predictor, uploads, settings, store)
    assert noise.verdict == "needs_person" and noise.unfamiliar and noise.reason == UNFAMILIAR_REASON
    assert pit.verdict == "reject" and not pit.unfamiliar and pit.reason == ""
    assert noise.verdict_at(0.0, ["ok"]) == "needs_person"  # no slider setting passes it
    logged = store.inspections().set_index("file_name")["unfamiliar_score"]
    assert logged["noise.png"] == pytest.approx(noise.unfamiliar_score)
    assert logged["pit.png"] == pytest.approx(pit.unfamiliar_score)
    assert verify(store.path) == []


def test_a_checkpoint_from_before_the_check_has_no_score_and_still_inspects(trained_run, tmp_path):
    old = tmp_path / "old" / "checkpoint.pt"
    old.parent.mkdir()
    payload = load_checkpoint(trained_run.checkpoint)
    meta = {k: v for k, v in payload["meta"].items() if k != "unfamiliar"}
    save_checkpoint(old, payload["model"], meta)
    predictor = Predictor.from_checkpoint(old, backend="torch")
    assert predictor.familiarity is None and predictor.unfamiliar_threshold is None
    store = InspectionStore(tmp_path / "log.sqlite")
    [result] = inspect_batch(predictor, [Upload("noise.png", png(noise_photos(1)[0]))],
                             InspectionSettings(run_id="old", threshold=0.0), store)
    assert result.ok and result.unfamiliar_score is None and not result.unfamiliar
    assert result.verdict == "reject"  # judged by confidence alone, as before
    assert store.inspections()["unfamiliar_score"].isna().all()
    assert verify(store.path) == []
