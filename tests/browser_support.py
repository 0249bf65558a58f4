"""Browser tests: a real `streamlit run` on 127.0.0.1 driven by Debian's Chromium through Playwright."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def streamlit_process(runs_dir: Path, data_dir: Path, log_path: Path | None = None, timeout: float = 90,
                      db: Path | None = None):
    """Start the dashboard on a free port with its own runs and data folders (and database `db`, else the test's
    $DEFECT_DB; its log at `log_path`, else beside the runs folder); yields (URL, server process)."""
    port = _free_port()
    env = dict(os.environ, DEFECT_RUNS_DIR=str(runs_dir), DEFECT_DATA_DIR=str(data_dir))
    if db is not None:
        env["DEFECT_DB"] = str(db)
    log = open(log_path or runs_dir.parent / f"streamlit-{port}.log", "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.address", "127.0.0.1",
         "--server.port", str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false",
         "--server.fileWatcherType", "none"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                if urllib.request.urlopen(url + "/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                time.sleep(0.3)
        else:
            raise RuntimeError(f"streamlit did not start within {timeout} s; see {log.name}")
        yield url, process
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


@contextmanager
def streamlit_server(runs_dir: Path, data_dir: Path, timeout: float = 90, db: Path | None = None):
    """The dashboard for a test (or for a module's tests, given a database of its own); yields the URL."""
    with streamlit_process(runs_dir, data_dir, timeout=timeout, db=db) as (url, _):
        yield url


@pytest.fixture(scope="module")
def chromium():
    """One headless Debian Chromium for a module's tests; skipped with the reason when it is not installed (`make
    test` installs it)."""
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed: `apt-get install -y chromium` (make test does it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            instance.close()


@pytest.fixture()
def browser(chromium):
    """The module's Chromium for one test: every page or context the test opened is closed after it, so the next
    test starts with no cookie, storage or page of this one."""
    yield chromium
    for context in chromium.contexts:
        context.close()


def sign_in(page, url: str | None, role: str = "admin", name: str | None = None):
    """Create an account of `role` in the server's database and sign in through the sign-in form (of `url`, or
    of the page already open when `url` is None)."""
    from conftest import PASSWORD, make_account

    actor = make_account(role, name)
    if url is not None:
        page.goto(url)
    page.get_by_label("Account", exact=True).fill(actor.name)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_text(f"{actor.name} · {actor.role}").wait_for(timeout=60_000)
    # The session cookie is written by a script in a frame after the page shows the name; a typed address or a
    # reload before it has run starts signed out (a busy CI machine lost that race).
    page.wait_for_function("document.cookie.includes('defect_session=')", timeout=60_000)
    return actor


@contextmanager
def signed_in_page(browser, runs_dir: Path, data_dir: Path, role: str, name: str, width: int = 1280,
                   height: int = 1600, link: str | None = None):
    """A page of a dashboard serving `runs_dir`, signed in as a new account `name` of `role`, on the page named
    `link` in the navigation (the landing page when None)."""
    with streamlit_server(runs_dir, data_dir) as url:
        yield signed_in(browser, url, role, name, width, height, link)


def signed_in(browser, url: str, role: str, name: str, width: int = 1280, height: int = 1600,
              link: str | None = None):
    """A new page of the dashboard at `url`, signed in as a new account `name` of `role`, on the page named `link`
    in the navigation (the landing page when None)."""
    page = browser.new_page(viewport={"width": width, "height": height}, accept_downloads=True)
    page.set_default_timeout(90_000)
    sign_in(page, url, role, name)
    if link:
        page.get_by_role("link", name=link, exact=True).click()
    return page


def same_session(page, width: int, height: int):
    """A new page at another size in a context of its own (no stored sidebar state or page of the first) that
    carries `page`'s session cookie: signed in without another sign-in."""
    context = page.context.browser.new_context(viewport={"width": width, "height": height}, accept_downloads=True)
    context.add_cookies(page.context.cookies())
    fresh = context.new_page()
    fresh.set_default_timeout(90_000)
    return fresh


@dataclass(frozen=True)
class SharedApp:
    """A dashboard a module's tests share (one server start, one warm-up): its URL, folders and database."""
    url: str
    runs: Path
    data: Path
    db: Path


@contextmanager
def shared_app(base: Path, runs: Path | None = None):
    """Start a dashboard over `runs` (else an empty runs folder) with data folder and database under `base`; tests
    of a module use it through `use_app`, each on a page of its own."""
    runs = runs or base / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    data, db = base / "app-data", base / "app-data" / "inspections.sqlite"
    data.mkdir(parents=True, exist_ok=True)
    with streamlit_server(runs, data, db=db) as url:
        yield SharedApp(url, runs, data, db)


def use_app(app: SharedApp, monkeypatch) -> SharedApp:
    """Point this test's accounts and database reads at the shared dashboard's database."""
    monkeypatch.setenv("DEFECT_DB", str(app.db))
    return app


def choose_file(page, uploader, path: Path) -> None:
    """Put one file into a single-file uploader and wait until the server holds it: its chip shows the name with
    no spinner and the rerun the upload starts has ended (a click before then finds no file)."""
    from playwright.sync_api import expect

    uploader.set_input_files(str(path))
    chip = page.locator('[data-testid="stFileChip"]')
    expect(chip.locator('[data-testid="stFileChipName"]')).to_have_text(path.name)
    expect(chip.locator('[data-testid="stFileChipIconSpinner"]')).to_have_count(0)
    page.wait_for_timeout(300)  # the upload's rerun starts after the chip settles
    expect(page.locator('[data-testid="stStatusWidget"]')).to_have_count(0)


def choose_option(page, selectbox, option: str) -> None:
    """Open a Streamlit selectbox and pick `option` from its list."""
    selectbox.locator("input").click()
    page.get_by_role("option", name=option, exact=True).click()
    from playwright.sync_api import expect

    expect(selectbox.get_by_role("combobox")).to_have_value(option)


@pytest.fixture(scope="session")
def model_app(trained_run, tmp_path_factory):
    """One dashboard for the whole run with the shared trained model active, for the browser tests that only
    inspect with it (each on a page of its own, signed in afresh, through `use_app`): one server start and one
    warm-up of the model instead of one per test. A test that changes the active model or the runs starts its
    own dashboard."""
    from inspect_support import install_active_run

    base = tmp_path_factory.mktemp("model-app")
    (base / "runs").mkdir()
    install_active_run(trained_run, base / "runs")
    with shared_app(base) as app:
        yield app

