"""AppTest of sign-in: the one-time link, the password form, roles in the navigation, sign-out."""

from pathlib import Path

from streamlit.testing.v1 import AppTest

from defect_model.access.accounts import open_accounts
from conftest import PASSWORD, make_account
from inspect_support import keep_app_py_as_the_router

APP = str(Path(__file__).resolve().parents[1] / "app.py")


def _app() -> AppTest:
    return AppTest.from_file(APP, default_timeout=60)


def test_before_sign_in_only_the_sign_in_page_exists(tmp_path, monkeypatch):
    keep_app_py_as_the_router(monkeypatch)
    monkeypatch.setenv("DEFECT_RUNS_DIR", str(tmp_path / "runs"))
    at = _app()
    at.switch_page("pages/models.py")
    at.run()
    assert [t.value for t in at.title] == ["Sign in"]
    assert not at.sidebar.button


def test_the_first_start_link_signs_the_admin_in_once(tmp_path, monkeypatch):
    keep_app_py_as_the_router(monkeypatch)
    monkeypatch.setenv("DEFECT_RUNS_DIR", str(tmp_path / "runs"))
    token = open_accounts().first_admin_link()
    at = _app()
    at.query_params["token"] = token
    at.run()
    assert not at.exception, at.exception
    assert any(t.value == "Inspect" for t in at.title)
    assert at.sidebar.text[0].value == "admin · admin"
    assert any("Set a password" in w.value for w in at.sidebar.warning)

    again = _app()
    again.query_params["token"] = token
    again.run()
    assert any("used already or has expired" in e.value for e in again.error)


def test_password_sign_in_wrong_then_right_and_sign_out(tmp_path, monkeypatch):
    keep_app_py_as_the_router(monkeypatch)
    monkeypatch.setenv("DEFECT_RUNS_DIR", str(tmp_path / "runs"))
    make_account("inspector", "ana")
    at = _app()
    at.run()
    at.text_input(key="sign_in_name").input("ana")
    at.text_input(key="sign_in_password").input("not it")
    at.button[0].click().run()
    assert any("Wrong account name or password" in e.value for e in at.error)
    at.text_input(key="sign_in_password").input(PASSWORD)
    at.button[0].click().run()
    assert at.sidebar.text[0].value == "ana · inspector"
    assert any(t.value == "Inspect" for t in at.title)
    at.sidebar.button(key="sign_out").click().run()
    assert [t.value for t in at.title] == ["Sign in"]
