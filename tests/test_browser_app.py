"""The app as a whole in a real browser: routing from a fresh server."""

from browser_support import streamlit_server


def test_a_deep_link_as_the_first_request_gets_the_apps_navigation(browser, tmp_path, artifacts_dir):
    (tmp_path / "runs").mkdir()
    (tmp_path / "data").mkdir()
    with streamlit_server(tmp_path / "runs", tmp_path / "data") as url:
        page = browser.new_page(viewport={"width": 1300, "height": 800})
        page.goto(url + "/models")
        page.get_by_role("heading", name="Models").wait_for(timeout=60_000)
        page.get_by_text("Inspector name").wait_for(timeout=30_000)  # app.py's sidebar, not a bare page
        nav = page.locator('[data-testid="stSidebarNav"]')
        assert nav.get_by_text("Inspect", exact=True).count() == 1
        assert nav.get_by_text("app", exact=True).count() == 0  # the old pages/ listing would show "app"
        page.screenshot(path=str(artifacts_dir / "deep-link-models.png"))
