"""Browser test of the Train page: demo data, a tiny recipe, start, reload while it runs, finish, make active."""

from __future__ import annotations

import re
import time

import pytest
from playwright.sync_api import expect

from browser_support import shared_app, sign_in, use_app
from defect_model.runs.folders import get_active, list_runs

PROGRESS = re.compile(r"Epoch 1/1 · step (\d+)/(\d+)")


def _step_shown(page) -> int | None:
    """The step number the progress bar shows, or None while there is none."""
    for text in page.get_by_text(PROGRESS).all_inner_texts():
        match = PROGRESS.search(text)
        if match:
            return int(match.group(1))
    return None


def _wait_for_step(page, above: int, timeout: float) -> int:
    deadline = time.time() + timeout
    while time.time() < deadline:
        step = _step_shown(page)
        if step is not None and step > above:
            return step
        page.wait_for_timeout(250)
    raise AssertionError(f"the progress bar did not pass step {above} within {timeout:.0f} s")


def _set_number(page, label: str, value: int) -> None:
    field = page.get_by_label(label, exact=True)
    field.fill(str(value))
    field.press("Enter")
    page.wait_for_timeout(300)


def _shows(page, values: dict[str, str]) -> None:
    """The select boxes and number fields labelled so show these values, as the user sees them, once the page has
    settled (a slow rerun on a busy machine may still be drawing the preset's picks)."""
    for label, value in values.items():
        expect(page.get_by_label(label, exact=True)).to_have_value(value, timeout=30_000)


@pytest.fixture(scope="module")
def train_app(tmp_path_factory):
    """One dashboard with no runs for this module's two tests (and the demo set generated once, on the first
    visit to Train). Its training processes inherit OMP_NUM_THREADS=1: faster on a busy 2-core box."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", "1")
        with shared_app(tmp_path_factory.mktemp("train-app")) as app:
            yield app


def test_the_form_shows_what_the_preset_will_use(browser, train_app, monkeypatch):
    """Issue 14 item 7: with the product preset the fields show its picks for this dataset, not the reference
    recipe beneath it; the reference preset shows the reference recipe; a field chosen by hand stays."""
    url = use_app(train_app, monkeypatch).url
    page = browser.new_page(viewport={"width": 1400, "height": 2400})
    page.set_default_timeout(60_000)
    sign_in(page, url, "engineer", "form check")
    page.get_by_role("link", name="Train").click()
    page.get_by_text("Photos per class").wait_for(timeout=120_000)
    page.get_by_text("network efficientnet_lite0 from ImageNet weights").first.wait_for()  # the preset's reasons
    _shows(page, {"Backbone": "efficientnet_lite0", "Image size (px)": "128", "Augmentation": "strong"})
    expect(page.get_by_label("Start from ImageNet weights", exact=True)).to_be_checked()

    page.get_by_role("combobox", name="Recipe preset", exact=True).click()
    page.get_by_role("option", name="reference").click()
    page.wait_for_function("() => document.body.innerText.includes('5 epoch(s) of resnet50 from scratch at 224 px')")
    _shows(page, {"Backbone": "resnet50", "Image size (px)": "224", "Epochs": "5"})

    page.get_by_role("combobox", name="Recipe preset", exact=True).click()
    page.get_by_role("option", name="product").click()
    page.get_by_text("network efficientnet_lite0").first.wait_for()  # the preset's picks are back in the form
    page.get_by_role("combobox", name="Backbone", exact=True).click()
    page.get_by_role("option", name="resnet34").click()
    page.get_by_text("resnet34 from scratch at").first.wait_for()  # a ResNet has no packaged weights
    _shows(page, {"Backbone": "resnet34", "Augmentation": "strong"})
    expect(page.get_by_label("Start from ImageNet weights", exact=True)).not_to_be_checked()


def test_train_the_demo_set_reload_while_it_runs_and_make_it_active(browser, train_app, monkeypatch, artifacts_dir):
    """Comes after the form test, which starts nothing: the runs folder is empty when it starts."""
    started = time.time()

    def mark(what: str) -> None:  # shown with a failure: where the time went
        print(f"{time.time() - started:6.1f} s  {what}")

    runs, url = use_app(train_app, monkeypatch).runs, train_app.url
    monkeypatch.setenv("DEFECT_RUNS_DIR", str(runs))
    assert list_runs(runs) == []
    page = browser.new_page(viewport={"width": 1400, "height": 2400})
    page.set_default_timeout(60_000)
    sign_in(page, url, "admin", "browser test")
    page.get_by_role("link", name="Train").click()
    page.get_by_text("Photos per class").wait_for(timeout=120_000)  # the demo set, generated on first use
    mark("demo dataset shown")
    expect(page.get_by_text("Demo dataset")).to_be_visible()

    # A tiny recipe: the reference preset (the product preset would add its step floor), resnet18, 32 px
    # photos, 1 epoch; batches of 2 (120 steps), so that it runs long enough to be reloaded mid-way even
    # on a quiet machine.
    page.get_by_role("combobox", name="Recipe preset", exact=True).click()
    page.get_by_role("option", name="reference").click()
    page.get_by_text("5 epoch(s) of resnet50 from scratch at 224 px").wait_for()  # the form shows the reference recipe
    page.get_by_role("combobox", name="Backbone", exact=True).click()
    page.get_by_role("option", name="resnet18").click()
    page.get_by_text("5 epoch(s) of resnet18 from scratch at 224 px").wait_for()
    _set_number(page, "Image size (px)", 32)
    _set_number(page, "Epochs", 1)
    _set_number(page, "Batch size", 2)
    page.get_by_text("1 epoch(s) of resnet18 from scratch at 32 px").wait_for()
    page.get_by_role("button", name="Start training").click()

    page.get_by_text("started. It runs on in the background").wait_for()
    mark("started")
    first = _wait_for_step(page, 0, timeout=120)
    mark(f"step {first} shown")
    page.reload()  # the job outlives the page: after a reload (still signed in: the session's cookie) it is found
    page.get_by_role("link", name="Train").click()
    assert not page.get_by_label("Password", exact=True).is_visible()
    later = _wait_for_step(page, first, timeout=60)
    mark(f"after the reload: step {later} shown")
    assert later > first
    (run,) = list_runs(runs)
    assert page.get_by_text(run.run_id).first.is_visible()
    page.screenshot(path=str(artifacts_dir / "train_live.png"))

    page.get_by_text(f"{run.run_id} finished").wait_for(timeout=240_000)
    mark("finished")
    # loss, learning rate, validation scores, and the dataset's photos per class (a busy box draws them one by one)
    page.wait_for_function("document.querySelectorAll('.js-plotly-plot').length >= 4")
    # One epoch on 32 px photos may well give a model that is flagged as useless: then making it active
    # takes a reason, which is logged with it.
    flagged = page.get_by_text("this model is flagged as useless").is_visible()
    if flagged:
        page.get_by_label("Reason for making a flagged model active (logged with it)").fill("browser test")
        page.keyboard.press("Tab")
        page.get_by_role("button", name="Make active anyway").click()
    else:
        page.get_by_role("button", name="Make this the active model").click()
    page.get_by_text("This run is the active model").wait_for()
    page.locator("[data-testid='stSidebar']").get_by_text(run.run_id).wait_for()
    page.wait_for_timeout(1000)
    page.screenshot(path=str(artifacts_dir / "train_done.png"))
    assert get_active(runs)["run_id"] == run.run_id
    assert get_active(runs).get("override") == ("browser test" if flagged else None)
    assert run.status()["state"] == "done"
