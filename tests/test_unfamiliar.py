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
from defect_model.train.unfamiliar_score import (LAYERS, calibrate, fit_layers, fit_mahalanobis, layered_scores,
                                                 mahalanobis_scores, pooled)
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


def test_each_layer_is_standardised_on_the_training_photos_before_the_sum():
    rng = np.random.default_rng(2)
    labels = torch.tensor(np.repeat([0, 1], 150))
    small = torch.tensor(rng.normal(size=(300, 4)), dtype=torch.float32)  # 4 dims: distances near 4
    large = torch.tensor(rng.normal(size=(300, 32)), dtype=torch.float32)  # 32 dims: distances near 32
    stats = fit_layers({"a": small, "b": large}, labels, 2)
    own = {name: mahalanobis_scores(values, stats[name]) for name, values in (("a", small), ("b", large))}
    for name in ("a", "b"):
        assert float(stats[name]["centre"]) == pytest.approx(own[name].mean(), rel=1e-5)
        assert float(stats[name]["scale"]) == pytest.approx(own[name].std(), rel=1e-5)
    summed = layered_scores({"a": small, "b": large}, stats)
    expected = sum((own[n] - own[n].mean()) / own[n].std() for n in ("a", "b"))
    np.testing.assert_allclose(summed, expected, rtol=1e-4, atol=1e-4)
    assert abs(summed.mean()) < 1e-3  # the training photos sit at 0 on every layer's scale
    # a photo far off on either layer alone is far off in the sum
    off_small = layered_scores({"a": small[:1] + 6, "b": large[:1]}, stats)[0]
    off_large = layered_scores({"a": small[:1], "b": large[:1] + 6}, stats)[0]
    assert off_small > 10 and off_large > 10


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
    assert set(payload["unfamiliar"]) == set(LAYERS) == set(info["layers"])
    assert all(set(stats) == {"means", "whiten", "centre", "scale"} for stats in payload["unfamiliar"].values())
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


def _stage_means(net, batch):
    """Each stage's spatial means, computed here from the torchvision stages themselves."""
    x = net.maxpool(net.relu(net.bn1(net.conv1(batch))))
    means = {}
    for stage in ("layer1", "layer2", "layer3", "layer4"):
        x = getattr(net, stage)(x)
        means[stage] = x.mean(dim=(2, 3))
    return means


@torch.inference_mode()
def test_the_served_score_is_the_sum_of_each_layers_standardised_distance(predictor):
    assert predictor.backend == "onnxruntime"  # the served graph's own outputs feed the score
    arrays = [predictor.prepare(p) for p in demo_photos(6) + noise_photos(2)]
    served = predictor.unfamiliar_scores(predictor.predict_with_activations(arrays)[1])
    means = _stage_means(predictor.model, predictor.to_tensor(arrays))
    stats = predictor.familiarity.stats
    expected = sum((mahalanobis_scores(means[layer].sqrt(), stats[layer]) - float(stats[layer]["centre"]))
                   / float(stats[layer]["scale"]) for layer in LAYERS)
    np.testing.assert_allclose(served, expected, rtol=1e-3, atol=1e-2)


def test_a_checkpoint_with_the_earlier_layer4_score_keeps_it(trained_run, predictor, tmp_path):
    """Checkpoints from before the layer sum stored one layer4 fit ("sqrt-mean"); they are scored as then."""
    arrays = [predictor.prepare(p) for p in demo_photos(10)]
    maps = predictor.predict_with_activations(arrays)[1].maps
    stats = fit_mahalanobis(pooled(maps), torch.tensor([0, 1, 2, 3, 4] * 2), 5)
    earlier = tmp_path / "earlier" / "checkpoint.pt"
    earlier.parent.mkdir()
    payload = load_checkpoint(trained_run.checkpoint)
    meta = dict(payload["meta"], unfamiliar={"method": "mahalanobis", "features": "sqrt-mean", "threshold": 50.0})
    torch.save({"model": payload["model"], "meta": meta, "unfamiliar": stats}, earlier)
    loaded = Predictor.from_checkpoint(earlier, backend="torch")
    np.testing.assert_allclose(loaded.unfamiliar_scores(loaded.predict_with_activations(arrays)[1]),
                               mahalanobis_scores(pooled(maps), stats), rtol=1e-3)
    assert loaded.unfamiliar_threshold == 50.0
    broken = dict(meta, unfamiliar=dict(meta["unfamiliar"], features="layers-sqrt-mean", layers=["layer2"]))
    torch.save({"model": payload["model"], "meta": broken, "unfamiliar": stats}, earlier)
    assert Predictor.from_checkpoint(earlier, backend="torch").familiarity is None  # statistics that do not fit
    unknown = dict(meta, unfamiliar=dict(meta["unfamiliar"], features="layers-sqrt-mean", layers=["layer9"]))
    torch.save({"model": payload["model"], "meta": unknown, "unfamiliar": {"layer9": stats}}, earlier)
    assert Predictor.from_checkpoint(earlier, backend="torch").familiarity is None  # a layer the network lacks


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


def test_a_run_from_before_the_layer_sum_gets_todays_statistics_and_flags(trained_run, tmp_path):
    """familiarity.add_to_run (what bench/trust uses for runs trained before): the same statistics the end of
    training writes, fitted on the run's own split, and the validation flags rewritten to match."""
    from defect_model.runs.folders import RunDir
    from defect_model.train.familiarity import add_to_run
    from defect_model.workflows.review import load_review

    copy = RunDir(tmp_path / "run")
    shutil.copytree(trained_run.path, copy.path)
    payload = load_checkpoint(copy.checkpoint)
    trained = payload["meta"]["unfamiliar"]
    save_checkpoint(copy.checkpoint, payload["model"], {k: v for k, v in payload["meta"].items() if k != "unfamiliar"})
    assert Predictor.from_checkpoint(copy.checkpoint, backend="torch").familiarity is None

    meta = add_to_run(copy.path)["unfamiliar"]
    assert meta["added_after_training"] and meta["layers"] == list(LAYERS)
    assert meta["threshold"] == pytest.approx(trained["threshold"], rel=1e-3)  # same model, same photos
    predictor = Predictor.from_checkpoint(copy.checkpoint, backend="torch")
    assert predictor.unfamiliar_threshold == meta["threshold"]
    table = load_review(copy).predictions
    assert (table["unfamiliar"] == (table["unfamiliar_score"] > meta["threshold"])).all()
