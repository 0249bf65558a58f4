"""AppTest of the Inspect page with a model's operating point and an unfamiliar photo."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from defect_model.access.accounts import audit_log
from defect_model.runs.store import InspectionStore
from defect_model.serve.verdicts import UNFAMILIAR_REASON
from defect_model.workflows.operating_point import OperatingPoint, save_point
from conftest import ENGINEER, sign_in
from inspect_support import install_active_run, keep_app_py_as_the_router, metrics, photo_bytes, upload

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def run(trained_run, tmp_path, monkeypatch):
    keep_app_py_as_the_router(monkeypatch)
    runs = tmp_path / "runs"
    monkeypatch.setenv("DEFECT_RUNS_DIR", str(runs))
    monkeypatch.setenv("DEFECT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DEFECT_DB", str(tmp_path / "db" / "inspections.sqlite"))
    return install_active_run(trained_run, runs)


def noise_png(seed: int = 3) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (96, 96, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def test_the_saved_point_decides_and_the_slider_is_a_logged_override(run):
    save_point(run, OperatingPoint(good_threshold=0.999, defect_threshold=0.0), ENGINEER)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    sign_in(at, "inspector", "Ana")
    at.run()
    shown = [c.replace("\\", "") for c in at.caption.values]  # as rendered: Markdown escapes dropped
    assert any("Operating point of this model: pass from 1.00, reject from 0.00" in c for c in shown)
    assert not [s for s in at.slider if s.key == "inspect_threshold"]  # no slider unless overridden
    files = [(f"ok{i}.png", photo_bytes("ok", 40 + i)) for i in range(2)] + [("pit.png", photo_bytes("pit", 45))]
    upload(at, files)
    results = at.session_state["inspect_queue"].results()
    oks = sum(r.predicted == "ok" and not r.unfamiliar for r in results)
    sure = sum(r.predicted == "ok" and not r.unfamiliar and r.confidence >= 0.999 for r in results)
    assert oks >= 1 and metrics(at)["Pass"] == sure and metrics(at)["Needs a person"] == 3 - metrics(at)["Reject"] - sure
    log = InspectionStore().inspections().set_index("file_name")
    assert (log.loc["ok0.png", "verdict"] == "pass") == (results[0].confidence >= 0.999)
    assert not audit_log().events("threshold override", 5)

    at.toggle(key="inspect_override").set_value(True).run()
    at.slider(key="inspect_threshold").set_value(0.5).run()
    # the slider re-decides the page; the log keeps what was logged
    assert metrics(at)["Pass"] == sum(r.predicted == "ok" and not r.unfamiliar and r.confidence >= 0.5
                                      for r in results)
    upload(at, [("again.png", photo_bytes("ok", 50))])
    [event] = audit_log().events("threshold override", 5)
    assert event["actor"] == "Ana" and event["detail"]["threshold"] == 0.5 and event["detail"]["photos"] == 1


def test_an_unfamiliar_photo_needs_a_person_with_its_reason(run):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    sign_in(at, "inspector", "Ana")
    at.run()
    at.slider(key="inspect_threshold").set_value(0.5).run()  # confidence alone would decide every photo
    upload(at, [("noise.png", noise_png())])
    assert metrics(at)["Needs a person"] == 1
    warnings = [w.value for w in at.warning]
    assert any(f"Needs a person: {UNFAMILIAR_REASON}" in w for w in warnings), warnings
    [row] = InspectionStore().inspections().to_dict("records")
    assert row["verdict"] == "needs_person" and row["unfamiliar_score"] > 0
