"""Screenshots of Inspect, Review and Models at a laptop's 1280x800 and a tablet's 768x1024, for a person to look
at (issue 14: what an inspector meets). The trained demo-set model is active, as the Inspect browser test arranges
it, beside two prepared runs and a cancelled one. Pictures go to tests/artifacts/screens/, one per screenful.

A tour, not a check (it asserts only that the pages open), so the suite leaves it out unless asked:
    DEFECT_SCREENS=1 .venv/bin/python -m pytest tests/test_browser_screens.py
"""

from __future__ import annotations

import os
import re
import shutil

import pytest
from playwright.sync_api import expect

from browser_support import sign_in, streamlit_server
from inspect_support import corrupt_png, install_active_run, photo_bytes
from review_support import make_dataset, write_run

pytestmark = pytest.mark.skipif(
    not os.environ.get("DEFECT_SCREENS"),
    reason="a screenshot tour for a person to look at, 100 s; DEFECT_SCREENS=1 takes the pictures")

SIZES = {"laptop": (1280, 800), "tablet": (768, 1024)}
UPLOADER = '[data-testid="stFileUploaderDropzoneInput"]'


def screenfuls(page, folder, name: str, most: int = 6) -> None:
    """One picture per screenful of the page, top to bottom (Streamlit scrolls its main area, not the page)."""
    width, height = page.viewport_size["width"], page.viewport_size["height"]
    main = page.locator('[data-testid="stMain"]').bounding_box()
    margin = (main["x"] + 6, height * 0.6)  # the main area's left margin: no table or chart takes the wheel there
    page.mouse.move(*margin)
    page.mouse.wheel(0, -100_000)
    page.wait_for_timeout(500)
    last = None
    for number in range(1, most + 1):
        page.mouse.move(*margin)  # and no tooltip over the content
        page.wait_for_timeout(400)
        page.screenshot(path=str(folder / f"{name}-{number}.png"))
        top = page.evaluate("() => [...document.querySelectorAll('*')].filter(e => e.scrollHeight > e.clientHeight "
                            "+ 2 && getComputedStyle(e).overflowY !== 'visible').map(e => e.scrollTop).join(',')")
        if top == last:
            (folder / f"{name}-{number}.png").unlink()  # the end was already in the previous picture
            break
        last = top
        page.mouse.wheel(0, height * 0.85)
        page.wait_for_timeout(700)


def go_to(page, title: str) -> None:
    """Open a page from the sidebar; on a tablet the sidebar is folded away first and afterwards."""
    link = page.get_by_role("link", name=title, exact=True)
    narrow = page.viewport_size["width"] < 1000
    if narrow:
        page.locator('[data-testid="stExpandSidebarButton"]').click()
    link.click()
    if narrow:
        page.wait_for_timeout(1000)
        collapse = page.locator('[data-testid="stSidebarCollapseButton"] button')
        if collapse.count() and collapse.first.is_visible():
            collapse.first.click()


def choose(page, where: str, option: str) -> None:
    """Pick `option` in the selectbox at `where` (again if a rerun closed the list first)."""
    box = page.locator(where).get_by_role("combobox")
    for attempt in range(3):
        if box.input_value().startswith(option):
            return
        box.click()
        try:
            page.get_by_role("option", name=option).first.click(timeout=10_000)
        except Exception:
            if attempt == 2:
                raise
    expect(box).to_have_value(re.compile("^" + re.escape(option)))


def test_screenshots_of_inspect_review_and_models(browser, trained_run, tmp_path, monkeypatch, artifacts_dir):
    folder = artifacts_dir / "screens"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    runs = tmp_path / "runs"
    runs.mkdir()
    install_active_run(trained_run, runs)
    dataset = make_dataset(tmp_path / "line-2")
    write_run(runs, dataset, "20260101-120000-resnet18-line2")
    write_run(runs, dataset, "20260102-120000-resnet18-line2-retrain", started="2026-01-02T12:00:00+00:00")
    write_run(runs, dataset, "20260103-120000-resnet18-stopped", started="2026-01-03T12:00:00+00:00"
              ).write_status("cancelled")
    monkeypatch.setenv("DEFECT_DB", str(tmp_path / "db" / "inspections.sqlite"))
    photos = {f"line3_{label}-{i:02d}.png": photo_bytes(label, 300 + i)
              for i, label in enumerate(["ok", "pit", "scratch", "crack", "stain", "ok", "pit"])}
    photos["half-copied.png"] = corrupt_png()
    for name, data in photos.items():
        (tmp_path / name).write_bytes(data)

    with streamlit_server(runs, tmp_path / "data") as url:
        for size, (width, height) in SIZES.items():
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(120_000)
            sign_in(page, url, "admin", "Ana")
            page.wait_for_selector(UPLOADER, state="attached")
            screenfuls(page, folder, f"inspect-{size}-empty", most=1)
            page.locator(UPLOADER).set_input_files([str(tmp_path / name) for name in photos])
            page.wait_for_selector(f".st-key-inspect-result-{len(photos) - 1}")
            expect(page.locator('[data-testid="stProgress"]')).to_have_count(0)
            page.wait_for_timeout(1500)
            screenfuls(page, folder, f"inspect-{size}")

            go_to(page, "Review")
            page.get_by_text("Click a cell").wait_for()
            page.wait_for_timeout(1500)
            screenfuls(page, folder, f"review-{size}-matrix", most=3)
            for tab, ready in (("Misclassified", "wrong validation prediction"), ("Per-class metrics", "macro-F1"),
                               ("Retrain with corrections", "Confirmed decisions")):
                page.get_by_role("tab", name=tab).click()
                page.get_by_text(ready).first.wait_for()
                page.wait_for_timeout(1500)
                screenfuls(page, folder, f"review-{size}-{tab.split()[0].lower()}", most=3)

            go_to(page, "Models")
            page.get_by_role("heading", name="Manage a run").wait_for()
            page.wait_for_timeout(1500)
            screenfuls(page, folder, f"models-{size}")
            choose(page, '[class*="st-key-manage_run"]', "20260102-120000-resnet18-line2-retrain")
            page.get_by_role("button", name="Make active").click()
            page.get_by_role("dialog").get_by_text("Inspections will use").wait_for()
            page.wait_for_timeout(800)
            page.screenshot(path=str(folder / f"models-{size}-activation-dialog.png"))
            page.get_by_role("dialog").get_by_role("button", name="Cancel").click()
            page.close()
