"""Issue #26 item 1: the demo model works at the first click, on a machine whose cores are all busy."""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import contextmanager

from playwright.sync_api import expect

from browser_support import signed_in_page
from defect_model.runs.folders import RunDir
from defect_model.common.config import TrainConfig
from inspect_support import UPLOADER


@contextmanager
def busy_cores():
    """One process spinning on each core for as long as the block runs (a shared plant PC under other work)."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 2)]
    try:
        yield spinners
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


def test_the_demo_model_trains_to_a_usable_model_with_every_core_busy(browser, tmp_path, artifacts_dir):
    runs = tmp_path / "runs"
    runs.mkdir()
    with busy_cores() as spinners, signed_in_page(browser, runs, tmp_path / "data", "admin", "Boss", 1280, 800) as page:
        assert all(spinner.poll() is None for spinner in spinners)
        expect(page.get_by_text("keeps training until it recognises every class")).to_be_visible()
        page.get_by_role("button", name="Train the demo model").click()
        progress = page.locator('[data-testid="stProgress"]')
        expect(progress).to_contain_text("left", timeout=300_000)  # the time left, measured from its own steps
        page.screenshot(path=str(artifacts_dir / "demo-busy-training.png"))
        expect(page.get_by_text("is trained", exact=False)).to_be_visible(timeout=900_000)
        page.screenshot(path=str(artifacts_dir / "demo-busy-trained.png"))
        expect(page.get_by_text("cannot be used here")).to_have_count(0)  # not flagged
        page.get_by_role("button", name="Use the demo model").click()
        page.wait_for_selector(UPLOADER, state="attached")
        assert all(spinner.poll() is None for spinner in spinners)  # the cores stayed busy throughout
    run = RunDir(next(path.parent for path in runs.glob("*/config.yaml")))
    status = run.status()
    assert status["state"] == "done" and status["collapsed"] is False, status
    assert TrainConfig.from_yaml(run.config).until_usable
