"""The Monitor's engine: control limits against a hand computation, drift of brightened photos, the label queue's
order, and labelling from the queue."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from conftest import ENGINEER, INSPECTOR
from defect_model.access.accounts import PermissionDenied
from defect_model.access.audit import verify
from defect_model.photos.uploads import Upload
from defect_model.runs.store import InspectionStore
from defect_model.serve.inference import Predictor, Preprocessing
from defect_model.train.unfamiliar_score import FEATURES, LAYERS, calibrate, fit_layers, layer_features, layered_scores
from defect_model.serve.unfamiliar import Familiarity
from defect_model.train.model import build_model
from defect_model.workflows.inspection import InspectionSettings, inspect_batch
from defect_model.workflows.monitor import (QUEUE_SOURCE, REFERENCE_FILE, MonitorError, Periods, default_reference,
                                            drift_alarm, drift_report, label_from_queue, label_queue, load_log,
                                            p_chart, validation_reference)
from review_support import CLASSES, make_dataset, write_run


# -- control charts --------------------------------------------------------------------------
def synthetic_log(days: list[tuple[str, int, int, int]]) -> pd.DataFrame:
    """Per day (date, inspections, rejects, errors): rows at noon UTC, rejects first, then passes, then errors."""
    rows = []
    for date, n, rejects, errors in days:
        verdicts = ["reject"] * rejects + ["pass"] * (n - rejects) + ["error"] * errors
        rows += [{"time": f"{date}T12:00:00+00:00", "verdict": v, "run_id": "m1"} for v in verdicts]
    log = pd.DataFrame(rows)
    log["when"] = pd.to_datetime(log["time"], utc=True)
    return log


DAYS = [("2026-03-01", 20, 2, 1), ("2026-03-02", 25, 3, 0), ("2026-03-03", 20, 2, 0), ("2026-03-04", 30, 3, 5),
        ("2026-03-05", 25, 2, 0),  # reference: 12 rejects of 120 judged photos (errors do not count): p̄ = 0.1
        ("2026-03-06", 20, 3, 0), ("2026-03-07", 20, 10, 0), ("2026-03-08", 40, 0, 0), ("2026-03-09", 400, 4, 0)]


def test_p_chart_limits_and_marks_match_a_hand_computation():
    log = synthetic_log(DAYS)
    reference = (pd.Timestamp("2026-03-01", tz="UTC"), pd.Timestamp("2026-03-06", tz="UTC"))
    table, center = p_chart(log, "reject", Periods(), reference)
    assert center == pytest.approx(0.1)
    assert list(table["period"]) == [d for d, *_ in DAYS]
    assert list(table["n"]) == [n for _, n, _, _ in DAYS]
    # By hand: sigma_i = sqrt(0.1 * 0.9 / n_i) = 0.3 / sqrt(n_i).
    #   n=20: 0.1 ± 0.2012 -> [0, 0.3012];  n=40: 0.1 ± 0.1423 -> [0, 0.2423];  n=400: 0.1 ± 0.045 -> [0.055, 0.145]
    day = table.set_index("period")
    assert day.loc["2026-03-07", "ucl"] == pytest.approx(0.1 + 3 * 0.3 / math.sqrt(20))
    assert day.loc["2026-03-07", "lcl"] == 0.0  # 0.1 - 0.2012 clipped
    assert day.loc["2026-03-08", "ucl"] == pytest.approx(0.24230, abs=1e-5)
    assert day.loc["2026-03-09", "lcl"] == pytest.approx(0.055) and day.loc["2026-03-09", "ucl"] == pytest.approx(0.145)
    # 10/20 = 0.5 is above 0.3012; 4/400 = 0.01 is below 0.055; 0/40 = 0 is not below a limit of 0; 3/20 is inside.
    assert list(table.loc[table["out"], "period"]) == ["2026-03-07", "2026-03-09"]
    assert list(table["reference"]) == [True] * 5 + [False] * 4


def test_needs_person_chart_and_no_reference_marks_nothing():
    log = synthetic_log(DAYS)
    log.loc[[0, 1, 2], "verdict"] = "needs_person"
    table, center = p_chart(log, "needs_person", Periods(), None)
    assert math.isnan(center) and not table["out"].any() and table["ucl"].isna().all()
    table, center = p_chart(log, "needs_person", Periods(), default_reference(log, Periods(), "m1", days=1))
    assert center == pytest.approx(3 / 20) and list(table["count"])[:2] == [3, 0]
    with pytest.raises(MonitorError, match="No chart of 'pass'"):
        p_chart(log, "pass", Periods(), None)


def test_shifts_cut_the_day_from_their_first_hour():
    times = ["2026-03-01T05:59:00+00:00", "2026-03-01T06:00:00+00:00", "2026-03-01T22:30:00+00:00",
             "2026-03-02T03:00:00+00:00"]
    log = pd.DataFrame({"time": times, "verdict": ["reject", "pass", "reject", "pass"], "run_id": "m1"})
    log["when"] = pd.to_datetime(log["time"], utc=True)
    table, _ = p_chart(log, "reject", Periods.shifts(3, first_hour=6), None)
    assert list(table["period"]) == ["2026-02-28 22:00–06:00", "2026-03-01 06:00–14:00", "2026-03-01 22:00–06:00"]
    assert list(table["n"]) == [1, 1, 2] and list(table["p"]) == [1.0, 0.0, 0.5]


# -- drift ------------------------------------------------------------------------------------
def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def brightened(image: Image.Image, by: int = 50) -> Image.Image:
    return Image.fromarray(np.clip(np.asarray(image, dtype=np.int16) + by, 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def drift_setup(tmp_path_factory):
    """A run whose validation photos are 15 per class of a synthetic set, its validation predictions made by the
    same (untrained) network that inspects; the other 15 per class are the photos the line sends."""
    base = tmp_path_factory.mktemp("drift")
    data = make_dataset(base / "data", per_class=30)
    torch.manual_seed(0)
    predictor = Predictor(build_model("resnet18", len(CLASSES), 0.0), CLASSES,
                          Preprocessing(64, (0.5,) * 3, (0.25,) * 3), {"run_id": "drift-run"})
    val = [f"{c}/{c}_{i:04d}.png" for c in CLASSES for i in range(15)]
    probs = predictor.predict_arrays([predictor.prepare(Image.open(data / p).convert("RGB")) for p in val])
    rows = [(p, p.split("/")[0], CLASSES[int(np.argmax(q))], float(np.max(q))) for p, q in zip(val, probs)]
    run = write_run(base / "runs", data, run_id="drift-run", rows=rows, checkpoint=False)
    line = [Image.open(data / c / f"{c}_{i:04d}.png").convert("RGB") for c in CLASSES for i in range(15, 30)]
    return run, predictor, line


def inspected_log(tmp_path, predictor, photos) -> InspectionStore:
    store = InspectionStore(tmp_path / "db" / "inspections.sqlite")
    settings = InspectionSettings(run_id="drift-run", good_classes=["ok"], inspector="ana")
    inspect_batch(predictor, [Upload(f"p{i}.png", png(photo)) for i, photo in enumerate(photos)], settings, store)
    return store


def test_drift_flags_brightened_photos_and_not_unchanged_ones(drift_setup, tmp_path):
    run, predictor, line = drift_setup
    reference = validation_reference(run)
    assert len(reference["brightness"]) == 45 and len(reference["confidence"]) == 45
    assert (run.path / REFERENCE_FILE).is_file()

    same = inspected_log(tmp_path / "same", predictor, line)
    logged = load_log(same)
    assert logged[["brightness", "contrast", "width", "height"]].notna().all().all()  # logged at inspection
    report = {d.feature: d for d in drift_report(logged, reference)}
    assert set(report) == {"brightness", "contrast", "width", "height", "confidence"}
    assert not any(d.drifted for d in report.values()), [d.text() for d in report.values()]
    assert drift_alarm(same, run) == []

    bright = inspected_log(tmp_path / "bright", predictor, [brightened(p) for p in line])
    report = {d.feature: d for d in drift_report(load_log(bright), reference)}
    assert report["brightness"].drifted and report["brightness"].p_value < 1e-6
    assert report["brightness"].log_median > report["brightness"].reference_median + 30
    assert not report["width"].drifted and not report["height"].drifted
    assert "brightness" in [d.feature for d in drift_alarm(bright, run)]
    assert verify(bright.path) == []  # the new columns keep the log's hash chain


def test_reference_is_read_from_the_cache_and_follows_the_split(drift_setup):
    run, _, _ = drift_setup
    validation_reference(run)
    cached = json.loads((run.path / REFERENCE_FILE).read_text())
    cached["stats"]["brightness"] = [1.0] * 45
    (run.path / REFERENCE_FILE).write_text(json.dumps(cached))
    assert validation_reference(run, compute=False)["brightness"] == [1.0] * 45
    cached["split_sha256"] = "another split"
    (run.path / REFERENCE_FILE).write_text(json.dumps(cached))
    assert validation_reference(run, compute=False) is None
    assert validation_reference(run)["brightness"] != [1.0] * 45


def test_unfamiliar_scores_are_compared_when_both_sides_have_them(drift_setup):
    run, _, _ = drift_setup
    log = pd.DataFrame({"unfamiliar": np.linspace(5, 9, 40), "confidence": np.linspace(0.3, 0.4, 40)})
    reference = {"unfamiliar": list(np.linspace(0, 1, 40)), "confidence": list(np.linspace(0.3, 0.4, 40))}
    report = {d.feature: d for d in drift_report(log, reference)}
    assert report["unfamiliar"].drifted and not report["confidence"].drifted
    assert "unfamiliar" not in {d.feature for d in drift_report(log.drop(columns="unfamiliar"), reference)}


# -- the label queue ----------------------------------------------------------------------------
def probs(ok: float, pit: float, scratch: float) -> dict:
    return {"ok": ok, "pit": pit, "scratch": scratch}


@pytest.fixture()
def queue_store(tmp_path):
    """A hand-made log: A sure, B unsure, C sure but corrected by an inspector, D contradicting a confirmed label,
    E already labelled from the queue, F an error, G the same photo as B inspected again (surer)."""
    store = InspectionStore(tmp_path / "inspections.sqlite")
    ids = {}
    for name, p in [("A", probs(.85, .10, .05)), ("B", probs(.50, .45, .05)), ("C", probs(.90, .05, .05)),
                    ("D", probs(.80, .10, .10)), ("E", probs(.70, .10, .20)), ("F", None), ("G", probs(.90, .05, .05))]:
        photo = tmp_path / "photos" / f"{'B' if name == 'G' else name}.png"
        photo.parent.mkdir(exist_ok=True)
        photo.write_bytes(b"photo " + photo.name.encode())
        ids[name] = store.log_inspection(
            file_name=f"{name}.png", sha256=f"sha-{photo.stem}", photo_path=str(photo),
            verdict="error" if p is None else "pass", inspector="ana", run_id="m1",
            predicted="" if p is None else max(p, key=p.get), probabilities=p, error="bad" if p is None else "")
    store.add_correction(source="inspection", action="relabel", photo_path=str(tmp_path / "photos" / "C.png"),
                         new_label="pit", who="ana", sha256="sha-C", inspection_id=ids["C"])
    store.add_correction(source="review", action="relabel", photo_path=str(tmp_path / "photos" / "D.png"),
                         new_label="pit", who="eng", sha256="sha-D", status="confirmed", dataset="/data")
    store.add_correction(source=QUEUE_SOURCE, action="confirm", photo_path=str(tmp_path / "photos" / "E.png"),
                         new_label="ok", who="eng", sha256="sha-E", status="confirmed", dataset="/data")
    return store, ids


def test_queue_order_on_a_hand_made_log(queue_store):
    store, ids = queue_store
    # By hand: score = (1 - margin) + 2 if an inspector corrected it + 2 if a confirmed label differs.
    #   D 0.3 + 2 = 2.3;  C 0.15 + 2 = 2.15;  B 0.95;  A 0.25;  G is B's photo (0.15, B kept);  E, F left out.
    queue = label_queue(load_log(store), store.corrections())
    assert list(queue["file_name"]) == ["D.png", "C.png", "B.png", "A.png"]
    assert list(queue["score"]) == pytest.approx([2.3, 2.15, 0.95, 0.25])
    assert "confirmed label pit, model said ok" in queue.loc[0, "reasons"]
    assert "an inspector corrected it" in queue.loc[1, "reasons"]
    # With an unfamiliar score the most unfamiliar photo gains up to 1 (its rank in the log): ranks of
    # B 0.5, G 1.0, C 2.0, D 3.0, A 5.0 are 0.2, 0.4, 0.6, 0.8, 1.0: A 1.25 now passes B 1.15.
    log = load_log(store)
    log["unfamiliar"] = log["file_name"].map({"A.png": 5.0, "B.png": 0.5, "C.png": 2.0, "D.png": 3.0, "G.png": 1.0,
                                              "E.png": 9.0, "F.png": 9.0})
    queue = label_queue(log, store.corrections())
    assert list(queue["file_name"]) == ["D.png", "C.png", "A.png", "B.png"]
    assert list(queue["score"]) == pytest.approx([3.1, 2.75, 1.25, 1.15])


def test_labelling_from_the_queue_files_a_correction_for_the_next_retrain(queue_store):
    store, ids = queue_store
    queue = label_queue(load_log(store), store.corrections())
    row = queue[queue["file_name"] == "B.png"].iloc[0].to_dict()
    with pytest.raises(PermissionDenied):
        label_from_queue(store, INSPECTOR, row, "dent", CLASSES, "/data")
    with pytest.raises(MonitorError, match="not one of the model's classes"):
        label_from_queue(store, ENGINEER, row, "dent", CLASSES, "/data")
    correction = label_from_queue(store, ENGINEER, row, "pit", CLASSES, "/data")
    saved = store.corrections().set_index("id").loc[correction]
    assert (saved["source"], saved["action"], saved["new_label"], saved["status"], saved["who"], saved["dataset"],
            saved["inspection_id"]) == (QUEUE_SOURCE, "relabel", "pit", "confirmed", "eng", "/data", ids["B"])
    assert "B.png" not in list(label_queue(load_log(store), store.corrections())["file_name"])
    assert store.write_corrections_csv("/data", store.path.parent / "c.csv") == 3  # D, E and B go to the retrain
    assert saved["photo_path"] in (store.path.parent / "c.csv").read_text()


def test_unfamiliar_scores_of_the_validation_photos_join_the_reference(drift_setup, tmp_path):
    """With a model that has the unfamiliar-photo statistics (issue 17), the reference holds its score of each
    validation photo, the log holds the score of each inspected one, and the two are compared."""
    run, predictor, line = drift_setup
    split = pd.read_csv(run.split)
    val = split[split["split"] == "val"]
    arrays = [predictor.prepare(Image.open(run.settings().data_dir + "/" + p).convert("RGB")) for p in val["path"]]
    features = layer_features(predictor.predict_with_activations(arrays)[1], LAYERS)
    stats = fit_layers(features, torch.tensor([CLASSES.index(c) for c in val["label"]]), len(CLASSES))
    expected = layered_scores(features, stats)
    info = {"features": FEATURES, "layers": list(LAYERS)}
    familiar = Predictor(predictor.model, CLASSES, predictor.preprocessing, {"run_id": "drift-run"},
                         familiarity=Familiarity(stats, calibrate(expected, 0.02), info))
    reference = validation_reference(run, familiar, "with-familiarity")
    # batched differently, float32 features differ in the last digits; the standardised sum passes that on
    np.testing.assert_allclose(sorted(reference["unfamiliar_score"]), sorted(expected), rtol=1e-4, atol=0.01)
    logged = load_log(inspected_log(tmp_path, familiar, [brightened(p, 120) for p in line]))
    assert logged["unfamiliar_score"].notna().all()
    report = {d.feature: d for d in drift_report(logged, reference)}
    assert report["unfamiliar_score"].n_reference == 45 and report["unfamiliar_score"].n_log == 45
    assert report["unfamiliar_score"].log_median > report["unfamiliar_score"].reference_median
