"""The app as a whole in a real browser: routing from a fresh server."""

from browser_support import sign_in, streamlit_server


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


def test_roles_in_a_real_browser(browser, tmp_path, artifacts_dir):
    """An inspector reaches no Train, Review or Models page, not by address either; an engineer sees Models
    but may not activate or delete; a wrong password is refused; sign-out ends the session."""
    from review_support import make_dataset, write_run

    write_run(tmp_path / "runs", make_dataset(tmp_path / "dataset"))
    (tmp_path / "data").mkdir()
    with streamlit_server(tmp_path / "runs", tmp_path / "data") as url:
        page = browser.new_page(viewport={"width": 1300, "height": 800})
        page.goto(url)
        page.get_by_label("Account", exact=True).fill("nobody")
        page.get_by_label("Password", exact=True).fill("wrong password")
        page.get_by_role("button", name="Sign in").click()
        page.get_by_text("Wrong account name or password").wait_for(timeout=30_000)

        sign_in(page, url, "inspector")
        nav = page.locator('[data-testid="stSidebarNav"]')
        assert nav.get_by_text("Train", exact=True).count() == 0 and nav.get_by_text("Models", exact=True).count() == 0
        for address in ("/train", "/review", "/models"):
            page.goto(url + address)
            page.get_by_role("heading", name="Sign in").wait_for(timeout=30_000)  # a new session: sign in first
            page.get_by_label("Account", exact=True).fill("ana")
            page.get_by_label("Password", exact=True).fill(__import__("conftest").PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            page.get_by_text("ana · inspector").wait_for(timeout=30_000)
            page.wait_for_timeout(500)
            assert page.get_by_role("heading", name=address[1:].capitalize()).count() == 0, address
        page.screenshot(path=str(artifacts_dir / "inspector-signed-in.png"))
        page.get_by_role("button", name="Sign out").click()
        page.get_by_role("heading", name="Sign in").wait_for(timeout=30_000)

        sign_in(page, None, "engineer")
        page.locator('[data-testid="stSidebarNav"]').get_by_text("Models", exact=True).click()
        page.get_by_text("Only an admin can make a model active").wait_for(timeout=60_000)
        assert page.get_by_role("button", name="Delete run").count() == 0
        page.screenshot(path=str(artifacts_dir / "engineer-models.png"), full_page=True)
