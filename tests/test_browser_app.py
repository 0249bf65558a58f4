"""The app as a whole in a real browser: routing from a fresh server."""

import pytest
from playwright.sync_api import expect

from browser_support import shared_app, sign_in, streamlit_server, use_app


def test_a_deep_link_as_the_first_request_gets_the_apps_navigation(browser, tmp_path, artifacts_dir):
    (tmp_path / "runs").mkdir()
    (tmp_path / "data").mkdir()
    with streamlit_server(tmp_path / "runs", tmp_path / "data") as url:
        page = browser.new_page(viewport={"width": 1300, "height": 800})
        page.goto(url + "/models")
        page.get_by_role("heading", name="Sign in").wait_for(timeout=60_000)  # before sign-in, every address
        assert page.get_by_role("heading", name="Models").count() == 0
        sign_in(page, None, "admin")  # the sign-in form that the deep link showed
        page.locator('[data-testid="stSidebarNav"]').get_by_text("Models", exact=True).click()
        page.get_by_role("heading", name="Models").wait_for(timeout=60_000)
        page.get_by_text("adm · admin").wait_for(timeout=30_000)  # app.py's sidebar, not a bare page
        nav = page.locator('[data-testid="stSidebarNav"]')
        assert nav.get_by_text("Inspect", exact=True).count() == 1
        assert nav.get_by_text("app", exact=True).count() == 0  # the old pages/ listing would show "app"
        page.screenshot(path=str(artifacts_dir / "deep-link-models.png"))


@pytest.fixture(scope="module")
def two_runs_app(tmp_path_factory):
    """One dashboard over two finished runs (neither active) for the two tests below; the second, which makes one
    of them look like it is training and then cancelled, comes last."""
    from review_support import make_dataset, write_run

    base = tmp_path_factory.mktemp("two-runs-app")
    dataset = make_dataset(base / "dataset")
    write_run(base / "runs", dataset)
    training = write_run(base / "runs", dataset, "20260102-120000-resnet18-live", started="2026-01-02T12:00:00+00:00")
    with shared_app(base) as app:
        yield app, training


def test_roles_in_a_real_browser(browser, two_runs_app, artifacts_dir, monkeypatch):
    """An inspector reaches no Train, Review or Models page, not by address either; an engineer sees Models
    but may not activate or delete; a wrong password is refused; sign-out ends the session."""
    url = use_app(two_runs_app[0], monkeypatch).url
    page = browser.new_page(viewport={"width": 1300, "height": 800})
    page.goto(url)
    page.get_by_label("Account", exact=True).fill("nobody")
    page.get_by_label("Password", exact=True).fill("wrong password")
    page.get_by_role("button", name="Sign in").click()
    page.get_by_text("Wrong account name or password").wait_for(timeout=30_000)

    sign_in(page, url, "inspector")
    nav = page.locator('[data-testid="stSidebarNav"]')
    assert nav.get_by_text("Train", exact=True).count() == 0 and nav.get_by_text("Models", exact=True).count() == 0
    for address, inside in (("/train", "Training job"), ("/review", "Click a cell"), ("/models", "Manage a run")):
        page.goto(url + address)  # a new browser session, still signed in by its cookie (issue #26 item 5)
        page.get_by_text("ana · inspector").wait_for(timeout=30_000)
        title = address[1:].capitalize()
        page.get_by_text(f"{title} is not available for your role (inspector)").wait_for(timeout=30_000)
        page.wait_for_timeout(500)
        assert page.get_by_text(inside).count() == 0, address  # nothing of the page itself
    page.screenshot(path=str(artifacts_dir / "inspector-signed-in.png"))
    page.get_by_role("button", name="Sign out").click()
    page.get_by_role("heading", name="Sign in").wait_for(timeout=30_000)

    sign_in(page, None, "engineer")
    page.locator('[data-testid="stSidebarNav"]').get_by_text("Models", exact=True).click()
    page.get_by_text("Only an admin can make a model active").wait_for(timeout=60_000)
    assert page.get_by_role("button", name="Delete run").count() == 0
    page.screenshot(path=str(artifacts_dir / "engineer-models.png"), full_page=True)


def test_the_models_page_follows_a_runs_state_while_it_trains(browser, two_runs_app, artifacts_dir, monkeypatch):
    """Issue 14 item 7 (labels follow the status) on the Models page: a run shows "running" while its process
    runs and "cancelled" once it was cancelled, without a click, and the page stops polling afterwards."""
    import subprocess

    from defect_model.runs.folders import process_start_time

    app, training = two_runs_app
    url = use_app(app, monkeypatch).url
    stand_in = subprocess.Popen(["sleep", "600"])  # plays the training process
    try:
        training.write_status("running", pid=stand_in.pid, pid_started=process_start_time(stand_in.pid))
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.set_default_timeout(60_000)
        sign_in(page, url, "admin")
        page.locator('[data-testid="stSidebarNav"]').get_by_text("Models", exact=True).click()
        page.get_by_role("heading", name="Manage a run").wait_for()
        page.wait_for_load_state("networkidle")
        chosen = page.locator('[class*="st-key-manage_run"]')
        for attempt in range(3):  # a rerun that lands while the list is open closes it
            chosen.get_by_role("combobox").click()
            try:
                page.get_by_role("option", name=f"{training.run_id} · running").click(timeout=10_000)
                break
            except Exception:
                if attempt == 2:
                    raise
        expect(chosen.get_by_role("combobox")).to_have_value(f"{training.run_id} · running", timeout=30_000)
        expect(page.get_by_text("is still training")).to_be_visible(timeout=30_000)  # not offered for activation
        page.get_by_role("heading", name="Manage a run").click()  # the list loses the focus, as a user's would
        training.write_status("cancelled")  # what the engine writes when it stops on a cancel
        expect(chosen.get_by_role("combobox")).to_have_value(f"{training.run_id} · cancelled", timeout=20_000)
        page.screenshot(path=str(artifacts_dir / "models-run-cancelled.png"), full_page=True)
    finally:
        stand_in.kill()
        stand_in.wait()
