"""Browser tests of the Inspect page's state (issue 14 items 3 and 4): the threshold and opacity survive a
trip to the inspection log and back, the verdicts follow the slider, and a change of the active model
starts a new batch instead of mixing two models' results."""

from __future__ import annotations

import shutil
from contextlib import contextmanager

from playwright.sync_api import expect

from defect_model.workflows.lifecycle import set_active
from defect_model.runs.folders import RunDir
from inspect_support import CARDS, inspector_on, inspector_page, install_active_run, photo_bytes, upload_files



def _upload(page, tmp_path, names: list[str]) -> None:
    paths = []
    for seed, name in enumerate(names):
        path = tmp_path / name
        # at the shared model's own size (96 px): photos rendered larger are unfamiliar to it
        path.write_bytes(photo_bytes("ok" if "ok" in name else "pit", seed))
        paths.append(path)
    upload_files(page, paths)


def _slider(page, key: str):
    return page.locator(f'.st-key-{key} input[type="range"]')


def _card(page, index: int):
    """Result card `index` once the page has settled (a rerun briefly keeps the stale copy beside the new one)."""
    card = page.locator(f".st-key-inspect-result-{index}")
    expect(card).to_have_count(1)
    return card


@contextmanager
def _inspector_with_two_results(browser, runs, tmp_path):
    """An inspector signed in on Inspect with two photos inspected by the active model of `runs`."""
    with inspector_page(browser, runs, tmp_path) as page:
        _upload(page, tmp_path, ["ok-1.png", "pit-2.png"])
        yield page


def _tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()
    page.wait_for_timeout(500)


def test_the_threshold_and_opacity_survive_the_log_tab_and_the_verdicts_follow(browser, model_app, tmp_path,
                                                                                monkeypatch):
    page = inspector_on(browser, model_app, monkeypatch)
    _upload(page, tmp_path, ["ok-1.png", "pit-2.png"])

    threshold = _slider(page, "inspect_threshold")
    threshold.focus()
    threshold.press("End")  # 100 %: nothing is that sure, every photo goes to a person
    expect(threshold).to_have_attribute("aria-valuetext", "1.00")
    for index in (0, 1):
        expect(_card(page, index)).to_contain_text("NEEDS A PERSON")
    opacity = _slider(page, "inspect_opacity")
    opacity.focus()
    opacity.press("Home")
    kept_opacity = opacity.get_attribute("aria-valuetext")

    _tab(page, "Inspection log")
    _tab(page, "Inspect photos")
    expect(_slider(page, "inspect_threshold")).to_have_attribute("aria-valuetext", "1.00")
    expect(_slider(page, "inspect_opacity")).to_have_attribute("aria-valuetext", kept_opacity)
    for index in (0, 1):
        expect(_card(page, index)).to_contain_text("NEEDS A PERSON")

    threshold = _slider(page, "inspect_threshold")
    threshold.focus()
    threshold.press("Home")  # the lowest threshold: every confident photo gets its verdict again
    expect(threshold).not_to_have_attribute("aria-valuetext", "1.00")
    for index in (0, 1):
        expect(_card(page, index)).not_to_contain_text("NEEDS A PERSON")


def test_a_change_of_the_active_model_starts_a_new_batch(browser, trained_run, tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    runs.mkdir()
    first = install_active_run(trained_run, runs)
    second = RunDir(runs / "20990101-000000-second-0000")
    shutil.copytree(first.path, second.path)
    monkeypatch.setenv("DEFECT_DB", str(tmp_path / "db" / "inspections.sqlite"))
    with _inspector_with_two_results(browser, runs, tmp_path) as page:
        expect(page.locator(CARDS)).to_have_count(2)

        set_active(second, by="test", override_reason="page test", root=runs)  # an admin elsewhere switches it
        _tab(page, "Inspection log")
        _tab(page, "Inspect photos")
        expect(page.get_by_text("The active model changed to")).to_be_visible()
        expect(page.locator(CARDS)).to_have_count(0)  # the old batch is not mixed with the new model's

        _upload(page, tmp_path, ["ok-3.png"])
        expect(page.locator(CARDS)).to_have_count(1)
        _tab(page, "Inspection log")
        expect(page.get_by_text(second.run_id).first).to_be_visible()  # the log keeps both models' rows
