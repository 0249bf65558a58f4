"""Headless Chromium: review a finished run, open a confusion cell, relabel a photo, retrain with the
correction, then compare the two runs on Models and make the new one active. Screenshots go to
tests/artifacts/review/."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from playwright.sync_api import expect

from browser_support import choose_option, shared_app, signed_in, signed_in_page, use_app
from defect_model.workflows.lifecycle import set_active
from defect_model.runs.folders import get_active, list_runs
from defect_model.runs.store import InspectionStore
from review_support import PLANTED, make_dataset, tree_fingerprint, write_run



def _shot(page, folder, name):
    page.mouse.move(5, 5)  # no tooltip over the picture
    page.wait_for_timeout(300)
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def _click_cell(page, true_label: str, pred_label: str) -> None:
    """Click the middle of one cell of the confusion-matrix heatmap."""
    chart = page.locator(".js-plotly-plot").first
    chart.scroll_into_view_if_needed()
    box = chart.bounding_box()
    point = chart.evaluate(
        """(gd, cell) => { const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
             return {x: xa._offset + xa.d2p(cell[1]), y: ya._offset + ya.d2p(cell[0])}; }""",
        [true_label, pred_label])
    page.mouse.click(box["x"] + point["x"], box["y"] + point["y"])


def _wait_for_text(page, text: str, timeout_s: float) -> None:
    page.get_by_text(text).first.wait_for(timeout=timeout_s * 1000)


def test_review_relabel_retrain_compare_activate(browser, tmp_path, artifacts_dir, monkeypatch):
    shots = artifacts_dir / "review"
    shots.mkdir(parents=True, exist_ok=True)
    dataset = make_dataset(tmp_path / "dataset")
    runs_dir, app_data = tmp_path / "runs", tmp_path / "app-data"
    app_data.mkdir()
    monkeypatch.setenv("DEFECT_DB", str(app_data / "inspections.sqlite"))
    first = write_run(runs_dir, dataset)
    set_active(first, by="setup", root=runs_dir)
    before = tree_fingerprint(dataset)

    with signed_in_page(browser, runs_dir, app_data, "admin", "Ana", 1400, 1600, link="Review") as page:
        _wait_for_text(page, "Click a cell", 90)
        _shot(page, shots, "01-review")

        # Open the cell "pit predicted as scratch" by clicking it in the plotly heatmap.
        _click_cell(page, "pit", "scratch")
        _wait_for_text(page, "photo(s) of pit predicted as scratch", 60)
        card = page.locator(".st-key-card-cell-0")
        card.get_by_text("Heatmap (Grad-CAM): filed as pit").wait_for()
        card.scroll_into_view_if_needed()
        _shot(page, shots, "02-cell-opened")

        # The planted photo is a scratch filed as pit: relabel it to scratch (the model's prediction), chosen by
        # hand: the box starts empty, and Relabel waits for a choice.
        assert PLANTED in card.inner_text()
        expect(card.locator('[data-testid="stSelectbox"] input')).to_have_attribute("placeholder",
                                                                            "choose the correct class")
        expect(card.get_by_role("button", name="Relabel")).to_be_disabled()
        choose_option(page, card.locator('[data-testid="stSelectbox"]'), "scratch")
        card.get_by_role("button", name="Relabel").click()
        _wait_for_text(page, "relabelled to scratch. Saved as a correction.", 60)
        _shot(page, shots, "03-relabelled")
        rows = InspectionStore(app_data / "inspections.sqlite").corrections()
        assert len(rows) == 1 and rows.loc[0, "new_label"] == "scratch" and rows.loc[0, "who"] == "Ana"

        # The other views of the run, for the record.
        for number, (tab, ready) in enumerate([("Per-class metrics", "macro-F1 0."),
                                               ("Misclassified", "wrong validation prediction(s)"),
                                               ("Calibration", "Expected calibration error")], start=1):
            page.get_by_role("tab", name=tab).click()
            _wait_for_text(page, ready, 60)
            page.wait_for_timeout(1500)  # charts and heatmaps finish drawing
            _shot(page, shots, f"03{chr(96 + number)}-{tab.lower().replace(' ', '-')}")

        # Retrain with the correction (a real background job; tiny, about 10-30 s).
        page.get_by_role("tab", name="Retrain with corrections").click()
        page.get_by_role("button", name="Retrain with corrections").click()
        dialog = page.get_by_role("dialog")
        dialog.get_by_text("of training on this machine").wait_for()  # the estimate, before anything starts
        assert [run.run_id for run in list_runs(runs_dir)] == [first.run_id]
        _shot(page, shots, "04a-retrain-confirmation")
        dialog.get_by_role("button", name="Start the retrain").click()
        _wait_for_text(page, "Compare it with this run on the Models page", 180)
        _shot(page, shots, "04-retrained")
        second = next(run for run in list_runs(runs_dir) if run.run_id != first.run_id)
        assert second.status()["state"] == "done"
        val = pd.read_csv(second.val_predictions)
        assert val.loc[val["path"] == PLANTED, "true_label"].item() == "scratch"

        # Models: compare the two runs (A = active, B = the retrain by default) and make the new one active.
        page.get_by_role("link", name="Models", exact=True).click()
        _wait_for_text(page, "validation photo(s) changed prediction", 90)
        page.get_by_text("Compare two runs").scroll_into_view_if_needed()
        _shot(page, shots, "05-compare")
        reason = page.get_by_label("Override reason")
        if reason.count():  # a one-epoch model on 15 photos is usually flagged as collapsed
            reason.fill("browser test: tiny model, never used for inspection")
            reason.press("Enter")
            page.get_by_role("button", name="Make active anyway").click()
        else:
            page.get_by_role("button", name="Make active").click()
        page.get_by_role("dialog").get_by_role("button", name="Yes, make it active").click()
        _wait_for_text(page, "is now the active model", 60)
        _shot(page, shots, "06-activated")

    record = get_active(runs_dir)
    assert record["run_id"] == second.run_id and record["by"] == "Ana"
    assert tree_fingerprint(dataset) == before, "the review must never edit or delete dataset files"
    parent = json.loads((second.path / "retrain.json").read_text())
    assert parent["parent_run"] == first.run_id and parent["by"] == "Ana"


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """A dataset, its active run and a second finished run, served by one dashboard for the two tests below: the
    first only adds an inspector's correction, the second only changes which run is active (it comes last)."""
    base = tmp_path_factory.mktemp("two-runs")
    dataset = make_dataset(base / "dataset")
    runs_dir = base / "runs"
    first = write_run(runs_dir, dataset)
    set_active(first, by="setup", root=runs_dir)
    second = write_run(runs_dir, dataset, "20260102-120000-resnet18-next", started="2026-01-02T12:00:00+00:00")
    with shared_app(base, runs_dir) as app:
        yield app, dataset, first, second


def test_a_correction_sent_with_enter_then_the_button_is_stored_once(browser, two_runs, tmp_path, artifacts_dir,
                                                                     monkeypatch):
    """Issue 14 item 9: an inspector's correction saved with Enter in the note and then the button is one
    correction, and the Review page names it by the file the inspector uploaded, not by its stored copy."""
    shots = artifacts_dir / "review"
    shots.mkdir(parents=True, exist_ok=True)
    app, dataset, _, _ = two_runs
    app_data = use_app(app, monkeypatch).data
    upload = tmp_path / "line3_scratch-07.png"
    upload.write_bytes((dataset / PLANTED).read_bytes())

    page = signed_in(browser, app.url, "admin", "Ana", 1280, 1400)
    page.wait_for_selector('[data-testid="stFileUploaderDropzoneInput"]', state="attached")
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files([str(upload)])
    detail = page.locator(".st-key-inspect-detail")
    detail.get_by_text("Disagree with the model?").wait_for(timeout=90_000)

    # Choose the class, type a note, press Enter (that sends the form), then also click the button.
    for attempt in range(3):  # a rerun that lands while the list is open closes it
        detail.get_by_role("combobox", name="the correct class is").click()
        try:
            page.get_by_role("option").first.click(timeout=10_000)
            break
        except Exception:
            if attempt == 2:
                raise
    note = detail.locator(".st-key-inspect_correct_note_0 input")
    note.fill("deep scratch")
    note.press("Enter")
    detail.get_by_text("Correction saved").wait_for()
    detail.get_by_role("button", name="Save correction").click()
    page.wait_for_timeout(2000)  # the second run of the form has stored whatever it stores
    _shot(page, shots, "10-correction-enter-then-click")
    corrections = InspectionStore(app_data / "inspections.sqlite").corrections()
    assert len(corrections) == 1, corrections[["id", "who", "new_label", "note"]]
    assert corrections.loc[0, "who"] == "Ana" and corrections.loc[0, "note"] == "deep scratch"

    # The engineer's view of it: one proposal, named by the file the inspector uploaded.
    page.get_by_role("link", name="Review", exact=True).click()
    page.get_by_role("tab", name="Inspector corrections").click()
    page.get_by_text("inspector correction(s) waiting").wait_for()
    cards = page.locator('[class*="st-key-proposal-"]')
    assert cards.count() == 1
    text = cards.first.inner_text()
    assert "line3_scratch-07.png" in text and corrections.loc[0, "sha256"][:12] not in text
    _shot(page, shots, "11-inspector-correction")


def test_make_active_asks_first_with_what_changes(browser, two_runs, artifacts_dir, monkeypatch):
    """Issue 14 item 10: "Make active" changes nothing until a summary of what changes (classes, numbers, recall
    per class, who) is confirmed; Cancel leaves the active model as it was."""
    shots = artifacts_dir / "review"
    shots.mkdir(parents=True, exist_ok=True)
    app, _, first, second = two_runs
    runs_dir = use_app(app, monkeypatch).runs

    page = signed_in(browser, app.url, "admin", "Ana", 1280, 1400, link="Models")
    page.get_by_role("heading", name="Manage a run").wait_for()
    page.get_by_role("button", name="Make active").click()
    page.wait_for_timeout(2000)  # whatever the click does, it has done it
    assert get_active(runs_dir)["run_id"] == first.run_id, "made active without a confirmation"
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("Inspections will use").wait_for()
    for words in ("Classes (unchanged)", "recall is the share", "Recorded as made active by Ana"):
        assert dialog.get_by_text(words).count(), words
    expect(dialog.locator('[data-testid="stDataFrame"]')).to_have_count(2)  # overall numbers; recall per class
    _shot(page, shots, "12-activation-confirmation")
    dialog.get_by_role("button", name="Cancel").click()
    dialog.wait_for(state="detached")
    assert get_active(runs_dir)["run_id"] == first.run_id
    page.get_by_role("button", name="Make active").click()
    page.get_by_role("dialog").get_by_role("button", name="Yes, make it active").click()
    _wait_for_text(page, "is now the active model", 60)
    record = get_active(runs_dir)
    assert record["run_id"] == second.run_id and record["by"] == "Ana"
