"""Headless Chromium: an unfamiliar photo on the Inspect page goes to a person with its reason; the Review page's
operating point tab. Screenshots in tests/artifacts/trust/."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from playwright.sync_api import expect

from browser_support import signed_in_page
from defect_model.serve.verdicts import UNFAMILIAR_REASON
from defect_model.workflows.lifecycle import set_active
from inspect_support import CARDS, inspector_on, photo_bytes, upload_files
from review_support import make_dataset, write_run

expect.set_options(timeout=60_000)  # a loaded 2-core machine draws slowly


def test_an_unfamiliar_photo_needs_a_person_with_its_reason(browser, model_app, tmp_path, monkeypatch,
                                                             artifacts_dir):
    shots = artifacts_dir / "trust"
    shots.mkdir(parents=True, exist_ok=True)
    noise = io.BytesIO()
    Image.fromarray(np.random.default_rng(4).integers(0, 256, (160, 160, 3), dtype=np.uint8)).save(noise, "PNG")
    (tmp_path / "noise.png").write_bytes(noise.getvalue())
    (tmp_path / "ok-part.png").write_bytes(photo_bytes("ok", 1))  # the model's own size

    page = inspector_on(browser, model_app, monkeypatch, 1400, 2000)
    upload_files(page, [tmp_path / "ok-part.png", tmp_path / "noise.png"])
    expect(page.locator(CARDS)).to_have_count(2)
    card = page.locator(".st-key-inspect-result-1")
    expect(card).to_contain_text("NEEDS A PERSON")
    expect(card).to_contain_text("unfamiliar photo")
    expect(page.locator(".st-key-inspect-result-0")).not_to_contain_text("unfamiliar photo")  # the demo photo
    card.get_by_role("button", name="Open").click()
    detail = page.locator(".st-key-inspect-detail")
    expect(detail).to_contain_text("noise.png")
    expect(detail).to_contain_text(f"Needs a person: {UNFAMILIAR_REASON}")
    expect(detail).to_contain_text("whatever its confidence")
    detail.scroll_into_view_if_needed()
    page.screenshot(path=str(shots / "inspect-unfamiliar.png"), full_page=True)


def test_review_operating_point_tab(browser, tmp_path, monkeypatch, artifacts_dir):
    shots = artifacts_dir / "trust"
    shots.mkdir(parents=True, exist_ok=True)
    runs, app_data = tmp_path / "runs", tmp_path / "app-data"
    app_data.mkdir()
    monkeypatch.setenv("DEFECT_DB", str(app_data / "inspections.sqlite"))
    run = write_run(runs, make_dataset(tmp_path / "dataset"))
    set_active(run, by="setup", root=runs)
    with signed_in_page(browser, runs, app_data, "engineer", "Eve", 1400, 1600, link="Review") as page:
        page.get_by_role("tab", name="Operating point").click()
        expect(page.get_by_text("Per class at this point")).to_be_visible()
        expect(page.locator('[data-testid="stMetric"]', has_text="Review load")).to_be_visible()
        page.get_by_role("button", name="Save this operating point with the model").click()
        expect(page.get_by_text("Saved with this model: pass from")).to_be_visible()
        page.screenshot(path=str(shots / "review-operating-point.png"), full_page=True)
