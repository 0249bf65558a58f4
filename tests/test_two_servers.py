"""Two dashboard servers of one plant (one PostgreSQL database, one model store) in a real browser: a sign-in on one
is valid on the other, and a model made active elsewhere is what the other serves at its next page run, without a
restart."""

from __future__ import annotations

from playwright.sync_api import expect

from browser_support import sign_in, streamlit_server
from conftest import ADMIN
from test_model_store import REASON, make_run

from defect_model.workflows.lifecycle import activate


def served(page):
    """The Inspect page's line about the model it judges with (not the sidebar's record)."""
    return page.locator('[data-testid="stCaptionContainer"]', has_text="classes: crack, ok, pit").first


def test_a_sign_in_and_an_activation_are_seen_by_the_other_server(browser, tmp_path, monkeypatch, artifacts_dir,
                                                                  plant_database_url):
    runs = tmp_path / "runs"  # shared in a plant, as the database and the store are
    monkeypatch.setenv("DEFECT_DATABASE_URL", plant_database_url)  # the one database both servers use
    monkeypatch.setenv("DEFECT_MODEL_STORE", str(tmp_path / "store"))
    monkeypatch.setenv("DEFECT_RUNS_DIR", str(runs))
    first, second = make_run(runs, "20260101-000000-first", 0), make_run(runs, "20260102-000000-second", 1)
    activate(first, ADMIN, override_reason=REASON)
    (tmp_path / "data-a").mkdir()
    (tmp_path / "data-b").mkdir()
    with streamlit_server(runs, tmp_path / "data-a") as line1, streamlit_server(runs, tmp_path / "data-b") as line2:
        assert line1 != line2
        page = browser.new_page(viewport={"width": 1300, "height": 900})
        page.set_default_timeout(90_000)
        actor = sign_in(page, line1, "inspector", "Ana")
        expect(served(page)).to_contain_text(first.run_id, timeout=90_000)  # loaded from the store and serving

        page.goto(line2)  # the other server: the cookie's session is in the shared database
        page.get_by_text(f"{actor.name} · inspector").wait_for()
        assert page.get_by_role("heading", name="Sign in").count() == 0
        expect(served(page)).to_contain_text(first.run_id, timeout=90_000)

        activate(second, ADMIN, override_reason=REASON)  # on another machine, as far as line 2 knows
        page.reload()  # a new page run on line 2, no restart
        expect(served(page)).to_contain_text(second.run_id, timeout=90_000)
        assert page.get_by_text(first.run_id).count() == 0
        page.screenshot(path=str(artifacts_dir / "two-servers-line2-new-model.png"))
