"""Headless Chromium: the Monitor page over a seeded log (tests/monitor_support.py). The p-charts render with the
spike day ringed as outside the limits, drift shows, and labelling the first queued photo adds a correction.
Screenshots go to tests/artifacts/monitor/."""

from __future__ import annotations

from browser_support import sign_in, streamlit_server
from defect_model.workflows.monitor import QUEUE_SOURCE
from monitor_support import SPIKE_DAY, UNSURE, seeded_log

# Per chart: the x of the points drawn by the trace named "outside the limits" (read from the SVG plotly drew).
RINGED = """gd => { const i = gd._fullData.findIndex(t => t.name === 'outside the limits');
    const trace = gd.querySelectorAll('.scatterlayer .trace')[i];
    return {x: gd._fullData[i].x, drawn: trace ? trace.querySelectorAll('path.point').length : 0,
            title: gd._fullLayout.title.text}; }"""


def _shot(page, folder, name):
    page.mouse.move(5, 5)  # no tooltip over the charts
    page.wait_for_timeout(800)
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def test_monitor_charts_drift_and_queue_label(browser, tmp_path, artifacts_dir, monkeypatch):
    shots = artifacts_dir / "monitor"
    shots.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("DEFECT_DB", str(tmp_path / "app-data" / "inspections.sqlite"))
    env = seeded_log(tmp_path)
    with streamlit_server(env["runs"], env["app_data"]) as url:
        page = browser.new_page(viewport={"width": 1400, "height": 1400})
        page.set_default_timeout(90_000)
        sign_in(page, url, "engineer", "Eve")
        page.get_by_role("link", name="Monitor", exact=True).click()
        page.get_by_text("Reject rate outside its control limits").wait_for()
        charts = page.locator(".js-plotly-plot")
        charts.nth(1).locator("path.point").first.wait_for()
        ringed = [charts.nth(i).evaluate(RINGED) for i in range(2)]
        reject, needs_person = sorted(ringed, key=lambda r: "Reject rate" not in r["title"])
        assert reject["x"] == [f"2026-02-{SPIKE_DAY:02d}"] and reject["drawn"] == 1, ringed
        assert needs_person["x"] == [] and "Needs-a-person rate" in needs_person["title"]  # one a day: in control
        _shot(page, shots, "01-control-charts")

        page.get_by_role("tab", name="Drift").click()
        page.get_by_text("Drift: the photos inspected differ").wait_for()
        page.locator(".js-plotly-plot").first.wait_for()
        _shot(page, shots, "02-drift")

        page.get_by_role("tab", name="Label these next").click()
        card = page.locator(".st-key-queue-card-0")
        card.get_by_text(UNSURE).wait_for()
        card.get_by_text("Heatmap (Grad-CAM)").wait_for()
        _shot(page, shots, "03-queue")
        card.get_by_role("combobox").click()
        page.get_by_role("option", name="scratch", exact=True).click()
        card.get_by_role("button", name="Save label").click()
        page.get_by_text("labelled scratch").wait_for()
        _shot(page, shots, "04-labelled")

        # The drift the Monitor found is on the Inspect page's model line too.
        page.get_by_role("link", name="Inspect", exact=True).click()
        page.get_by_text("this week's photos look different from the ones the model learned from").wait_for()
        _shot(page, shots, "05-inspect-drift-alarm")

    saved = env["store"].corrections()
    assert len(saved) == 1
    row = saved.iloc[0]
    assert (row["source"], row["action"], row["new_label"], row["who"], row["status"]) == (
        QUEUE_SOURCE, "relabel", "scratch", "Eve", "confirmed")
    assert row["dataset"] == str(env["dataset"]) and row["photo_path"].endswith(".png")
