"""Browser test of the Inspect page: headless Chromium against `streamlit run` on 127.0.0.1."""

from __future__ import annotations

import hashlib
import re

import pandas as pd
from playwright.sync_api import expect

from inspect_support import CARDS, UPLOADER, corrupt_png, inspector_on, photo_bytes, upload_files



def metric(page, label: str) -> str:
    return page.locator('[data-testid="stMetric"]', has_text=label).locator(
        '[data-testid="stMetricValue"]').inner_text().strip()


def test_inspector_uploads_three_photos_changes_the_threshold_and_downloads_the_csv(
        browser, model_app, trained_run, tmp_path, monkeypatch, artifacts_dir):
    photos = {"ok-part.png": photo_bytes("ok", 1, 160), "pitted.png": photo_bytes("pit", 2, 160),
              "half.png": corrupt_png()}
    for name, data in photos.items():
        (tmp_path / name).write_bytes(data)

    page = inspector_on(browser, model_app, monkeypatch, 1400, 2400)
    try:
        upload_files(page, [tmp_path / name for name in photos])
    except Exception:
        page.screenshot(path=str(artifacts_dir / "inspect-page-failed.png"), full_page=True)
        raise
    cards = page.locator(CARDS)
    expect(cards).to_have_count(3)
    for index in (0, 1):  # two results, each with its heatmap overlay and a verdict
        card = page.locator(f".st-key-inspect-result-{index}")
        expect(card.locator("img")).to_have_count(1)
        expect(card.get_by_role("button", name="Shown above" if index == 0 else "Open")).to_be_visible()
    error = page.locator(".st-key-inspect-result-2")
    expect(error.locator("img")).to_have_count(0)
    expect(error).to_contain_text("half.png: the image data is damaged or truncated")
    expect(error).to_contain_text("Export the photo again")
    # The detail of the first photo: photo, heatmap and the probability chart.
    detail = page.locator(".st-key-inspect-detail")
    expect(detail.locator("img")).to_have_count(2)
    expect(detail.locator('[data-testid="stPlotlyChart"]')).to_be_visible()
    assert metric(page, "Error") == "1"
    decided = int(metric(page, "Pass")) + int(metric(page, "Reject")) + int(metric(page, "Needs a person"))
    assert decided == 2

    # The threshold at its maximum: photos below 100% confidence now go to a person.
    slider = page.locator('.st-key-inspect_threshold input[type="range"]')
    slider.focus()
    slider.press("End")
    expect(slider).to_have_attribute("aria-valuetext", "1.00")
    expect(page.locator('[data-testid="stMetric"]', has_text="Needs a person")
           .locator('[data-testid="stMetricValue"]')).not_to_have_text("0")
    for card in (".st-key-inspect-result-0", ".st-key-inspect-result-1"):  # the grid follows the threshold
        expect(page.locator(card)).to_contain_text("NEEDS A PERSON")
    page.locator(".st-key-inspect-detail").scroll_into_view_if_needed()
    page.screenshot(path=str(artifacts_dir / "inspect-page.png"), full_page=True)

    with page.expect_download() as download:
        page.get_by_role("button", name="Download results CSV").click()
    path = download.value.path()
    assert download.value.suggested_filename.endswith(".csv")

    table = pd.read_csv(path)
    assert list(table["file_name"]) == list(photos)
    assert list(table["sha256"]) == [hashlib.sha256(data).hexdigest() for data in photos.values()]
    assert (table["threshold"] == 1.0).all()
    probabilities = table[[c for c in table.columns if c.startswith("p_")]]
    assert list(probabilities.columns) == ["p_crack", "p_ok", "p_pit", "p_scratch", "p_stain"]
    good, bad = table.iloc[:2], table.iloc[2]
    assert (probabilities.iloc[:2].sum(axis=1) - 1).abs().max() < 1e-4
    expected = ["needs_person" if conf < 1.0 else ("pass" if cls == "ok" else "reject")
                for conf, cls in zip(good["confidence"], good["predicted"])]
    assert list(good["verdict"]) == expected and "needs_person" in expected
    assert (good["model_id"] == trained_run.run_id).all() and good["time"].str.match(r"\d{4}-\d\d-\d\dT").all()
    assert bad["verdict"] == "error" and "truncated" in bad["message"] and probabilities.iloc[2].isna().all()


def test_a_reload_keeps_the_batch_and_open_scrolls_to_the_detail(browser, model_app, tmp_path, monkeypatch,
                                                                 artifacts_dir):
    """Issue 14 item 6: the batch survives a reload (and signing in again) through the address; "Open" on a card
    far down brings the detail it changed into view, each time; the results CSV names the inspector. Any model
    will do here: the shared dashboard's, already loaded."""
    names = [f"part-{i:02d}.png" for i in range(9)]
    for i, name in enumerate(names):
        (tmp_path / name).write_bytes(photo_bytes(("ok", "pit", "scratch")[i % 3], 100 + i, 160))

    page = inspector_on(browser, model_app, monkeypatch, 1280, 800)
    page.locator(UPLOADER).set_input_files([str(tmp_path / name) for name in names])
    page.wait_for_selector(".st-key-inspect-result-8")
    expect(page.locator('[data-testid="stProgress"]')).to_have_count(0)
    expect(page).to_have_url(re.compile(r"[?&]batch=\d+-\d+"))

    # "Open" on the last card (below the fold) scrolls up to the detail, which now shows that photo.
    last = page.locator(".st-key-inspect-result-8")
    last.scroll_into_view_if_needed()
    last.get_by_role("button", name="Open").click()
    detail = page.locator(".st-key-inspect-detail")
    expect(detail.get_by_role("heading", name="part-08.png")).to_be_visible()
    page.wait_for_timeout(1000)  # the smooth scroll
    box = detail.bounding_box()
    assert -5 <= box["y"] <= 800 * 0.5, f"the detail is not in view after Open (top at {box['y']:.0f} px)"
    page.screenshot(path=str(artifacts_dir / "inspect-open-scrolled.png"))
    other = page.locator(".st-key-inspect-result-7")  # and again: the page scrolls on every Open
    other.scroll_into_view_if_needed()
    other.get_by_role("button", name="Open").click()
    expect(detail.get_by_role("heading", name="part-07.png")).to_be_visible()
    page.wait_for_timeout(1000)
    assert -5 <= detail.bounding_box()["y"] <= 800 * 0.5, "the second Open did not scroll"

    with page.expect_download() as download:
        page.get_by_role("button", name="Download results CSV").click()
    table = pd.read_csv(download.value.path())
    assert list(table["inspector"]) == ["Ana"] * 9

    # A reload is a new session, still signed in (its cookie, issue #26 item 5), and the same batch is on the
    # page, read back from the log.
    address = page.url
    page.reload()
    page.get_by_text("Ana · inspector").wait_for()
    page.wait_for_selector(".st-key-inspect-result-8")
    expect(page.locator(CARDS)).to_have_count(9)
    assert page.url == address
    assert sum(int(metric(page, name)) for name in ("Pass", "Reject", "Needs a person", "Error")) == 9
    expect(page.locator(".st-key-inspect-result-0 img")).to_have_count(1)  # the photo drawn again
    page.screenshot(path=str(artifacts_dir / "inspect-after-reload.png"), full_page=True)
