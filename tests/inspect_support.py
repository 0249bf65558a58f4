"""Helpers for the Inspect page's app and browser tests: an active model in a private runs folder, photos."""

from __future__ import annotations

import dataclasses
import io
import shutil
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from defect_model.common.config import TrainConfig
from defect_model.workflows.lifecycle import activation_problems, set_active
from defect_model.runs.folders import RunDir
from defect_model.photos.synthetic import make_sample


def install_active_run(source: RunDir, runs_dir: Path, good_classes=("ok",), data_dir: str | None = None) -> RunDir:
    """Copy a trained run into `runs_dir`, mark its good classes (and data folder), and make it active there."""
    run = RunDir(Path(shutil.copytree(source.path, runs_dir / source.run_id)))
    cfg = TrainConfig.from_yaml(run.config)
    changes = {"good_classes": list(good_classes)}
    if data_dir is not None:
        changes["data_dir"] = data_dir
    dataclasses.replace(cfg, **changes).to_yaml(run.config)
    # These tests are about the page, not the model's accuracy: a flagged model is activated with a reason.
    reason = "page test; its accuracy does not matter" if activation_problems(run) else ""
    set_active(run, by="test", override_reason=reason, root=runs_dir)
    return run


UPLOADER = '[data-testid="stFileUploaderDropzoneInput"]'
CARDS = '[class*="st-key-inspect-result-"]'


@contextmanager
def inspector_page(browser, runs: Path, tmp_path: Path, width: int = 1280, height: int = 1600):
    """A browser page signed in as inspector Ana on the Inspect page of a dashboard serving `runs`."""
    from browser_support import signed_in_page

    with signed_in_page(browser, runs, tmp_path / "data", "inspector", "Ana", width, height) as page:
        page.wait_for_selector(UPLOADER, state="attached")
        yield page


def inspector_on(browser, app, monkeypatch, width: int = 1280, height: int = 1600):
    """A page signed in as inspector Ana on the Inspect page of a shared dashboard (browser_support.model_app)."""
    from browser_support import signed_in, use_app

    page = signed_in(browser, use_app(app, monkeypatch).url, "inspector", "Ana", width, height)
    page.wait_for_selector(UPLOADER, state="attached")
    return page


def upload_files(page, paths: list) -> None:
    """Upload `paths` on the Inspect page and wait until the whole batch has its results."""
    from playwright.sync_api import expect

    page.locator(UPLOADER).set_input_files([str(path) for path in paths])
    page.wait_for_selector(f".st-key-inspect-result-{len(paths) - 1}")
    expect(page.locator('[data-testid="stProgress"]')).to_have_count(0)


def photo_bytes(label: str, seed: int, size: int = 96, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    make_sample(label, np.random.default_rng(seed), size)[0].save(buffer, format=fmt)
    return buffer.getvalue()


def corrupt_png(seed: int = 0) -> bytes:
    """A PNG cut off half-way, as from an interrupted copy."""
    data = photo_bytes("pit", seed)
    return data[: len(data) // 2]


def keep_app_py_as_the_router(monkeypatch) -> None:
    """Make AppTest run app.py (st.navigation) on every rerun, not only the first.

    AppTest resets PagesManager.uses_pages_directory before each run, and since a
    `pages/` folder sits beside app.py it re-detects an old-style (MPA v1) app and
    from the second run on runs the page script alone: no sidebar, no inspector
    name. `streamlit run` does not do this (st.navigation clears the flag once per
    session), so the tests restore that.
    """
    import streamlit.testing.v1.app_test as app_test
    from streamlit.runtime.pages_manager import PagesManager

    class NavigationPagesManager(PagesManager):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            PagesManager.uses_pages_directory = False

    monkeypatch.setattr(app_test, "PagesManager", NavigationPagesManager)


def upload(at, files: list[tuple[str, bytes]]):
    """AppTest: upload like the browser does, then wait for the background queue and redraw."""
    at.file_uploader[0].set_value([(name, data, "application/octet-stream") for name, data in files])
    at.run()
    assert at.session_state["inspect_queue"].wait(90)
    at.run()
    assert not at.exception, at.exception
    return at


def metrics(at) -> dict[str, int]:
    """AppTest: the page's metrics, label -> count."""
    return {m.label: int(m.value) for m in at.metric}


UNTRAINED_CLASSES = ["crack", "ok", "pit"]


def untrained_run(root: Path, name: str, seed: int = 0) -> RunDir:
    """A finished run with an untrained resnet18 at 64 px (classes UNTRAINED_CLASSES, good class ok), for tests
    about where models live and how they are served, not how well they judge."""
    import torch

    from defect_model.train.checkpoint import save_checkpoint
    from defect_model.train.model import build_model
    from defect_model.train.saving import checkpoint_meta

    run = RunDir(root / name)
    run.path.mkdir(parents=True)
    cfg = TrainConfig(data_dir=str(root / "data"), backbone="resnet18", image_size=64, batch_size=8, epochs=1,
                      seed=seed, good_classes=["ok"])
    cfg.to_yaml(run.config)
    torch.manual_seed(seed)
    save_checkpoint(run.checkpoint, build_model("resnet18", len(UNTRAINED_CLASSES), 0.0).state_dict(),
                    checkpoint_meta(cfg, UNTRAINED_CLASSES, run, 1, None))
    run.write_status("done", started="2026-01-01T00:00:00+00:00")
    return run
