import io
import struct
import subprocess
import sys
import threading
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from defect_model.serve.inference import Predictor, Preprocessing
from defect_model.workflows.inspection import InspectionSettings, inspect_batch
from defect_model.workflows.inspection_export import (heatmap_for_class, overlays_zip, results_csv, results_table,
                                           verdict_counts)
from defect_model.workflows.inspection_queue import InspectionQueue
from defect_model.photos.uploads import expand_uploads
from defect_model.serve.verdicts import decide_verdict
from defect_model.train.model import build_model
from defect_model.runs.store import InspectionStore, sha256_bytes
from defect_model.photos.synthetic import make_sample

from conftest import zip_of

CLASSES = ["ok", "pit", "crack"]


# -- photos, good and bad -------------------------------------------------------
def png_bytes(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def sample_png(label: str = "pit", seed: int = 0, size: int = 80) -> bytes:
    return png_bytes(make_sample(label, np.random.default_rng(seed), size)[0])


def bomb_png(width: int = 20000, height: int = 20000) -> bytes:
    """A tiny PNG whose header claims a decompression-bomb sized photo."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def predictor():
    torch.manual_seed(0)
    return Predictor(build_model("resnet18", len(CLASSES), 0.0), CLASSES, Preprocessing(64, (0.5,) * 3, (0.25,) * 3),
                     {"run_id": "untrained"})


@pytest.fixture()
def store(tmp_path):
    return InspectionStore(tmp_path / "inspections.sqlite")


SETTINGS = InspectionSettings(run_id="run-1", good_classes=["ok"], threshold=0.0, inspector="ana")


# -- the verdict rule -------------------------------------------------------------
@pytest.mark.parametrize("probs, good, threshold, expected", [
    ([0.9, 0.05, 0.05], ["ok"], 0.7, "pass"),
    ([0.1, 0.8, 0.1], ["ok"], 0.7, "reject"),
    ([0.6, 0.3, 0.1], ["ok"], 0.7, "needs_person"),  # a "good" guess below the threshold is not a pass
    ([0.1, 0.6, 0.3], ["ok"], 0.7, "needs_person"),
    ([0.1, 0.7, 0.2], ["ok"], 0.7, "reject"),  # exactly at the threshold counts as confident
    ([0.9, 0.05, 0.05], [], 0.7, "reject"),  # no good class: a confident prediction is a defect
    ([0.5, 0.25, 0.25], [], 0.7, "needs_person"),
    ([0.1, 0.1, 0.8], ["ok", "crack"], 0.5, "pass"),
])
def test_verdict_rule(probs, good, threshold, expected):
    assert decide_verdict(probs, CLASSES, good, threshold) == expected


def test_verdict_refuses_probabilities_for_other_classes():
    with pytest.raises(ValueError, match="2 probabilities for 3 classes"):
        decide_verdict([0.5, 0.5], CLASSES, ["ok"], 0.5)


# -- reading uploads ----------------------------------------------------------------
def test_zip_members_are_expanded_and_a_bad_zip_is_one_error():
    good = sample_png()
    uploads = expand_uploads([
        ("a.png", good),
        ("batch.zip", zip_of({"line/b.png": good, "c.txt": b"notes", "__MACOSX/._b.png": b"x", "inner.zip": b"z"})),
        ("broken.zip", b"PK\x03\x04 not really"),
    ])
    names = [u.name for u in uploads]
    assert names == ["a.png", "batch.zip/line/b.png", "batch.zip/c.txt", "batch.zip/inner.zip", "broken.zip"]
    assert uploads[1].data == good and not uploads[1].problem
    assert "zip inside a zip" in uploads[3].problem
    assert uploads[4].problem.startswith("broken.zip: this is not a valid .zip file")


# -- a batch with every kind of bad file -----------------------------------------------------
def bad_and_good_files() -> list[tuple[str, bytes]]:
    rgba = Image.new("RGBA", (70, 50), (120, 120, 120, 0))
    rgba.paste((200, 60, 60, 255), (10, 10, 40, 30))
    sixteen = Image.fromarray(np.linspace(0, 60000, 64 * 64).reshape(64, 64).astype(np.uint16))
    cmyk = Image.new("CMYK", (60, 60), (10, 200, 30, 0))
    good = sample_png("crack", 3)
    return [
        ("good-1.png", sample_png("pit", 1)),
        ("notes.png", b"this is a text file, not a photo"),
        ("truncated.png", good[: len(good) // 2]),
        ("bomb.png", bomb_png()),
        ("big.png", bomb_png(9000, 9000)),
        ("alpha.png", png_bytes(rgba)),
        ("deep.png", png_bytes(sixteen)),
        ("cmyk.jpg", png_bytes(cmyk, "JPEG")),
        ("really-a-png.txt", good),
        ("jpeg-named.png", png_bytes(make_sample("ok", np.random.default_rng(5), 64)[0], "JPEG")),
        ("empty.jpg", b""),
        ("good-2.bmp", png_bytes(make_sample("ok", np.random.default_rng(2), 90)[0], "BMP")),
    ]


def test_bad_files_get_a_message_each_and_never_stop_the_batch(predictor, store):
    files = bad_and_good_files()
    results = inspect_batch(predictor, [u for u in expand_uploads(files)], SETTINGS, store)
    by_name = {r.name: r for r in results}
    assert [r.name for r in results] == [name for name, _ in files]
    assert [r.index for r in results] == list(range(len(files)))

    errors = {name: r.error for name, r in by_name.items() if not r.ok}
    assert set(errors) == {"notes.png", "truncated.png", "bomb.png", "big.png", "really-a-png.txt", "empty.jpg"}
    assert "not an image file" in errors["notes.png"] and "Upload a JPEG" in errors["notes.png"]
    assert "damaged or truncated" in errors["truncated.png"]
    assert "too large to decode safely" in errors["bomb.png"] and "Resize it" in errors["bomb.png"]
    assert "9000x9000 pixels" in errors["big.png"] and "Resize it below 64 megapixels" in errors["big.png"]
    assert "rename it to really-a-png.png" in errors["really-a-png.txt"]
    assert "empty" in errors["empty.jpg"]
    for name, message in errors.items():
        assert message.startswith(name + ":"), message

    for name in ("good-1.png", "alpha.png", "deep.png", "cmyk.jpg", "jpeg-named.png", "good-2.bmp"):
        result = by_name[name]
        assert result.ok and result.verdict in ("pass", "reject")
        assert result.probabilities.shape == (3,) and abs(result.probabilities.sum() - 1) < 1e-5
        assert result.heatmap.shape == (64, 64) and result.heatmap.dtype == np.uint8
        assert max(result.thumbnail.size) <= 320 and result.thumbnail.mode == "RGB"
    assert "alpha channel" in by_name["alpha.png"].message
    assert "16-bit" in by_name["deep.png"].message
    assert "CMYK" in by_name["cmyk.jpg"].message
    assert "it is a JPEG file" in by_name["jpeg-named.png"].message
    assert by_name["good-2.bmp"].photo_size == (90, 90)

    # Every upload is logged, failed ones with verdict "error"; only photos keep a stored copy of what was sent,
    # a file that is no photo is logged by its sha256 alone (issue 16 item 4).
    log = store.inspections().sort_values("id")
    assert list(log["file_name"]) == [name for name, _ in files]
    assert list(log["id"]) == [r.inspection_id for r in results]
    logged = dict(zip(log["file_name"], log["verdict"]))
    assert all(logged[name] == "error" for name in errors)
    assert (log.loc[log["verdict"] == "error", "error"] != "").all()
    assert set(log["inspector"]) == {"ana"} and set(log["run_id"]) == {"run-1"}
    for (name, data), path, digest in zip(files, log["photo_path"], log["sha256"]):
        assert digest == sha256_bytes(data)
        if name in errors:
            assert path == ""
        else:
            assert Path(path).is_absolute() and open(path, "rb").read() == data


def test_queue_inspects_in_batches_in_the_background_and_keeps_upload_order(predictor, store):
    batches = []
    queue = InspectionQueue(batch_size=3, first_batch_size=1, on_batch=lambda results: batches.append(len(results)))
    files = [(f"p{i}.png", sample_png(seed=i)) for i in range(7)]
    files.insert(4, ("broken.jpg", b"\xff\xd8\xff garbage"))
    assert queue.submit(predictor, files, SETTINGS, store) == 8
    assert queue.wait(60)
    assert batches == [1, 3, 3, 1]  # a small first batch, so the first verdict comes quickly
    results = queue.results()
    assert [r.name for r in results] == [name for name, _ in files]
    assert [r.verdict == "error" for r in results] == [name == "broken.jpg" for name, _ in files]
    assert queue.progress() == (8, 8)
    assert len(store.inspections()) == 8

    queue.clear()
    assert queue.results() == [] and queue.progress() == (0, 0)
    assert len(store.inspections()) == 8  # clearing the page never touches the log


def test_stop_drops_only_what_has_not_started(predictor, store):
    first_done, gate = threading.Event(), threading.Event()

    def hold_after_first_batch(results):
        first_done.set()
        gate.wait(10)

    queue = InspectionQueue(batch_size=2, first_batch_size=2, on_batch=hold_after_first_batch)
    queue.submit(predictor, [(f"p{i}.png", sample_png(seed=i)) for i in range(6)], SETTINGS, store)
    assert first_done.wait(30)
    assert queue.running
    assert queue.stop() == 4
    gate.set()
    assert queue.wait(60)
    assert queue.progress() == (6, 6)
    assert [r.name for r in queue.results()] == ["p0.png", "p1.png"]
    assert len(store.inspections()) == 2


def test_two_sessions_on_one_predictor_get_the_same_results_as_one_alone(predictor):
    files = [(f"p{i}.png", sample_png(label, seed=i)) for i, label in enumerate(["ok", "pit", "crack", "pit"] * 3)]
    alone = inspect_batch(predictor, expand_uploads(files), SETTINGS)
    queues = [InspectionQueue(batch_size=2), InspectionQueue(batch_size=5, first_batch_size=3)]
    for queue in queues:
        queue.submit(predictor, files, SETTINGS)
    assert all(queue.wait(60) for queue in queues)
    for queue in queues:
        for mine, reference in zip(queue.results(), alone):
            np.testing.assert_allclose(mine.probabilities, reference.probabilities, atol=1e-5)
            assert np.abs(mine.heatmap.astype(int) - reference.heatmap.astype(int)).max() <= 1


# -- exports -------------------------------------------------------------------------
def test_results_table_csv_and_overlays_zip(predictor, store):
    files = [("a.png", sample_png("pit", 1)), ("bad.png", b"nope"), ("b.png", sample_png("ok", 2))]
    results = inspect_batch(predictor, expand_uploads(files), SETTINGS, store)
    table = results_table(results, threshold=0.0, good_classes=["ok"])
    assert list(table.columns[:6]) == ["file_name", "sha256", "predicted", "p_ok", "p_pit", "p_crack"]
    assert {"verdict", "model_id", "time", "threshold", "message"} <= set(table.columns)
    assert list(table["file_name"]) == ["a.png", "bad.png", "b.png"]
    assert table.loc[1, "verdict"] == "error" and "not an image" in table.loc[1, "message"]
    assert pd.isna(table.loc[1, "p_ok"])
    np.testing.assert_allclose(table.loc[[0, 2], ["p_ok", "p_pit", "p_crack"]].sum(axis=1), 1, atol=1e-5)

    # The page's threshold decides the verdicts in the export; 1.01 sends every photo to a person.
    strict = pd.read_csv(io.BytesIO(results_csv(results, 1.01, ["ok"])))
    assert list(strict["verdict"]) == ["needs_person", "error", "needs_person"]
    assert list(strict["logged_verdict"]) == [r.verdict for r in results]  # what the log kept at threshold 0.0
    assert strict.loc[0, "logged_verdict"] != "needs_person"
    assert verdict_counts(results, 1.01, ["ok"]) == {"pass": 0, "reject": 0, "needs_person": 2, "error": 1}
    assert list(strict["sha256"]) == [sha256_bytes(data) for _, data in files]

    with zipfile.ZipFile(io.BytesIO(overlays_zip(results, opacity=0.5))) as archive:
        names = archive.namelist()
        assert len(names) == 3 and names[-1] == "errors.txt"
        assert names[0].startswith("0001_a_gradcam_") and names[1].startswith("0003_b_gradcam_")
        first = Image.open(io.BytesIO(archive.read(names[0])))
        assert first.size == (80, 80)  # the stored full-size photo, not the thumbnail
        assert np.abs(np.asarray(first, dtype=int) - np.asarray(Image.open(io.BytesIO(files[0][1])).convert("RGB"),
                                                                 dtype=int)).mean() > 5  # a heatmap is drawn
        assert "bad.png" in archive.read("errors.txt").decode()


def test_heatmap_for_another_class_comes_from_the_stored_photo(predictor, store):
    from defect_model.serve.explain import fast_gradcam

    data = sample_png("crack", 7)
    result = inspect_batch(predictor, expand_uploads([("c.png", data)]), SETTINGS, store)[0]
    predicted = result.predicted_index
    other = (predicted + 1) % len(CLASSES)
    assert np.array_equal(heatmap_for_class(predictor, result, predicted), result.heatmap_float())
    heat = heatmap_for_class(predictor, result, other)
    _, expected = fast_gradcam(predictor, [predictor.prepare(data)], [other])
    np.testing.assert_allclose(heat, expected[0], atol=1e-5)
    assert np.abs(heat - result.heatmap_float()).mean() > 0.01  # another class, another map

    Path(result.photo_path).unlink()
    assert heatmap_for_class(predictor, result, other) is None


def test_inspection_code_never_imports_streamlit_or_torch_at_import():
    code = "import sys, defect_model.workflows.inspection; print('streamlit' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_the_worker_uses_the_configured_number_of_torch_threads(predictor, monkeypatch):
    seen, before = [], torch.get_num_threads()
    queue = InspectionQueue(threads=1, on_batch=lambda results: seen.append(torch.get_num_threads()))
    queue.submit(predictor, [("a.png", sample_png())], SETTINGS)
    assert queue.wait(60) and seen == [1]
    restore = threading.Thread(target=torch.set_num_threads, args=(before,))  # the default for new threads
    restore.start()
    restore.join()

    from defect_model.workflows.inspection import inference_threads

    monkeypatch.setenv("DEFECT_INFERENCE_THREADS", "3")
    assert inference_threads() == 3
    monkeypatch.delenv("DEFECT_INFERENCE_THREADS")
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert inference_threads() == 8


def test_a_damaged_zip_between_two_photos_is_one_error_and_the_photos_are_inspected(predictor, store):
    """Issue 16 item 6: a bad CRC (or encryption, Deflate64, a name that is not UTF-8) once sank the batch."""
    from hostile_corpus import ENCRYPTED, Member, raw_zip

    damaged = raw_zip([Member(b"line/a.png", sample_png(seed=1), crc=1)])
    locked = raw_zip([Member(b"line/b.png", sample_png(seed=2), flags=ENCRYPTED)])
    files = [("first.png", sample_png(seed=3)), ("damaged.zip", damaged), ("locked.zip", locked),
             ("last.png", sample_png(seed=4))]
    queue = InspectionQueue(batch_size=4)
    assert queue.submit(predictor, files, SETTINGS, store) == 4
    assert queue.wait(60)
    results = {r.name: r for r in queue.results()}
    assert results["first.png"].ok and results["last.png"].ok
    assert results["damaged.zip"].error.startswith("damaged.zip: member 'line/a.png' is damaged")
    assert results["locked.zip"].error.startswith("locked.zip: member 'line/b.png' is encrypted")
    logged = dict(zip(store.inspections()["file_name"], store.inspections()["verdict"]))
    assert logged["damaged.zip"] == logged["locked.zip"] == "error" and len(logged) == 4


def test_good_classes_come_from_the_run_and_from_the_checkpoint_when_its_settings_are_gone(tmp_path):
    """One answer for Inspect, the hot folder and the golden check: the run's settings, else the checkpoint's copy;
    only classes the model has."""
    from types import SimpleNamespace

    from defect_model.runs.folders import RunDir
    from defect_model.common.config import TrainConfig
    from defect_model.workflows.inspection import good_classes_of

    predictor = SimpleNamespace(classes=["ok", "pit", "scratch"], meta={"config": {"good_classes": ["pit"]}})
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    TrainConfig(data_dir=str(tmp_path), good_classes=["ok", "gone"]).to_yaml(run.config)
    assert good_classes_of(run, predictor) == ["ok"]
    run.config.unlink()
    assert good_classes_of(run, predictor) == ["pit"]
