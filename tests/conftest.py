"""Shared fixtures: tiny synthetic datasets and one small trained run, made once per session."""

from __future__ import annotations

import io
import os
import re
import shutil
import zipfile
from pathlib import Path

import pytest

from defect_model.photos import synthetic
from defect_model.access.accounts import Actor
from defect_model.common.config import TrainConfig
from defect_model.train.engine import fit
from defect_model.runs.folders import RunDir

ROOT = Path(__file__).resolve().parents[1]
NEU = ROOT.parent / "shared" / "datasets" / "neu-cls"
ARTIFACTS = ROOT / "tests" / "artifacts"


def tiny_config(data_dir: Path, **overrides) -> TrainConfig:
    """A seconds-long recipe for tests: resnet18 on small photos."""
    settings = dict(data_dir=str(data_dir), backbone="resnet18", image_size=64, batch_size=16, epochs=1, seed=0)
    settings.update(overrides)
    return TrainConfig(**settings)


def zip_of(members: dict[str, bytes]) -> bytes:
    """A zip archive in memory: member name -> bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def shown(markdown: str) -> str:
    """The text Streamlit shows for Markdown whose names went through ui.text.md: escapes and zero-width spaces out."""
    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", markdown).replace("\u200b", "")


PASSWORD = "test-password-1"
NAMES = {"admin": "adm", "engineer": "eng", "inspector": "ana"}


def make_account(role: str = "admin", name: str | None = None) -> Actor:
    """An account in the current $DEFECT_DB database (password PASSWORD); returns it as an Actor."""
    from defect_model.access.accounts import open_accounts

    name = name or NAMES[role]
    open_accounts().save(Actor("test setup", "admin"), name, role, PASSWORD)
    return Actor(name, role)


def sign_in(at, role: str = "admin", name: str | None = None) -> Actor:
    """Sign an AppTest session in as a new account of `role` (before its first run)."""
    from defect_model.access.accounts import open_accounts

    actor = make_account(role, name)
    _, token = open_accounts().sign_in(actor.name, PASSWORD)
    at.session_state["session_token"] = token
    return actor


ADMIN = Actor("adm", "admin")
ENGINEER = Actor("eng", "engineer")
INSPECTOR = Actor("ana", "inspector")


@pytest.fixture(autouse=True)
def private_database(tmp_path, monkeypatch):
    """Every test writes its audit trail and accounts to a database of its own (a test may point elsewhere): a
    SQLite file, whatever DEFECT_DATABASE_URL the shell has (the `database` fixture sets one for its PostgreSQL
    case)."""
    monkeypatch.delenv("DEFECT_DATABASE_URL", raising=False)
    if "DEFECT_DB" not in os.environ:
        monkeypatch.setenv("DEFECT_DB", str(tmp_path / "test-db" / "inspections.sqlite"))
    yield
    from defect_model.database import close_all

    close_all()  # the pooled connections to this test's files go with it


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """5 classes x 10 photos of 64 px."""
    return synthetic.generate(tmp_path_factory.mktemp("tiny") / "data", per_class=10, size=64, seed=1)


@pytest.fixture()
def dataset_copy(tiny_dataset, tmp_path) -> Path:
    """A private copy a test may damage."""
    return Path(shutil.copytree(tiny_dataset, tmp_path / "data"))


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> RunDir:
    """A resnet18 trained on the demo set long enough to tell the classes apart (about 30 s on 2 cores)."""
    base = tmp_path_factory.mktemp("trained")
    data = synthetic.generate(base / "data", per_class=40, size=96, seed=2)
    run = RunDir(base / "run")
    run.path.mkdir()
    cfg = tiny_config(data, image_size=96, epochs=10, batch_size=16, augmentation="soft")  # 100 steps: ~0.97
    fit(cfg, run)
    assert not run.status()["collapsed"], "the shared test model collapsed; tests built on it would mean nothing"
    return run


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


def pytest_configure(config):
    os.environ.setdefault("DEFECT_RUNS_DIR", str(ROOT / "tests" / "artifacts" / "runs-unused"))


from browser_support import browser, chromium, model_app  # noqa: E402,F401  (fixtures)


@pytest.fixture(scope="session")
def postgres_server_url():
    """One real PostgreSQL server for the whole run (tests/postgres_support.py); stopped at the end."""
    from contextlib import ExitStack

    from postgres_support import PostgresMissing, postgres_server

    with ExitStack() as stack:
        try:
            url = stack.enter_context(postgres_server())
        except PostgresMissing as missing:  # CI must not pass on a silently smaller suite
            (pytest.fail if os.environ.get("CI") else pytest.skip)(str(missing))
        yield url


@pytest.fixture()
def postgres_url(postgres_server_url):
    """A new empty database of its own for one test, on the run's PostgreSQL server."""
    from postgres_support import fresh_database

    return fresh_database(postgres_server_url)


@pytest.fixture()
def plant_database_url(postgres_url):
    """A fresh PostgreSQL database set up as a plant's is, by `python -m defect_model db upgrade`'s two steps: the
    newest schema and the training queue's tables."""
    from defect_model.database import close_all, migrate
    from defect_model.runs.queue import apply_queue_schema

    migrate.upgrade(postgres_url)
    apply_queue_schema(postgres_url)
    yield postgres_url
    close_all()


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, tmp_path, monkeypatch):
    """The project's database on each backend, as the tool finds it from the environment: a SQLite file
    ($DEFECT_DB), or a fresh PostgreSQL database at the newest schema ($DEFECT_DATABASE_URL; its head log in the
    data folder). Yields the location (the file's path, or the URL)."""
    from defect_model.database import close_all

    monkeypatch.setenv("DEFECT_DATA_DIR", str(tmp_path / "app-data"))
    if request.param == "sqlite":
        where = tmp_path / "app-data" / "inspections.sqlite"
        monkeypatch.setenv("DEFECT_DB", str(where))
        monkeypatch.delenv("DEFECT_DATABASE_URL", raising=False)
    else:
        from defect_model.database import migrate

        where = request.getfixturevalue("postgres_url")
        migrate.upgrade(where)
        monkeypatch.setenv("DEFECT_DATABASE_URL", where)
    yield where
    close_all()
