"""Waiting in tests for something another process does, and handing a file to a watched folder as a camera does."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path


def wait_for(predicate, timeout: float = 30, what: str = "the condition", process: subprocess.Popen | None = None,
             interval: float = 0.05):
    """Poll `predicate` until it returns something true and return that; AssertionError naming `what` after
    `timeout` seconds, or at once when `process` (what should make it true) has ended."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if process is not None and process.poll() is not None:
            said = process.stderr.read() if process.stderr else ""
            raise AssertionError(f"the process ended (exit {process.returncode}) before {what}: {said}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout:.0f} s")
        time.sleep(interval)


def drop(folder: Path, name: str, data: bytes) -> None:
    """Put a file into `folder` the way a careful writer does: written beside it, then renamed in."""
    staging = folder.parent / "staging"
    staging.mkdir(exist_ok=True)
    (staging / name).write_bytes(data)
    os.replace(staging / name, folder / name)
