"""Dashboard server CPU while idle: one browser tab open on each page, no job running.

    .venv/bin/python bench/idle_cpu.py [--seconds 300]

Starts `streamlit run app.py` with the project's .streamlit/config.toml (production settings: no file
watcher, no run-on-save) on private runs/data folders holding one finished run (so every page draws its
content), signs in as an admin in Chromium, opens Inspect, Train, Review and Models in four signed-in tabs (the
first signs in, the others by its session cookie), waits until they have drawn, then reads the server process's CPU time (utime + stime from /proc) over
--seconds. Writes `idle_server_cpu_fraction` (CPU seconds / wall seconds, 1.0 = one core) into
bench/results/perf.json, with the details under `idle`. Not part of CI.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

from browser_support import CHROMIUM, CHROMIUM_ARGS, _free_port  # noqa: E402
from reproduce_neu import machine  # noqa: E402

PAGES = ("Inspect", "Train", "Review", "Models")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=300)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    from conftest import PASSWORD
    from defect_model.access.accounts import Actor, open_accounts
    from review_support import make_dataset, write_run

    with tempfile.TemporaryDirectory(prefix="idle-cpu-") as tmp:
        tmp = Path(tmp)
        runs, data = tmp / "runs", tmp / "data"
        data.mkdir()
        write_run(runs, make_dataset(tmp / "dataset"))
        env = dict(os.environ, DEFECT_RUNS_DIR=str(runs), DEFECT_DATA_DIR=str(data),
                   DEFECT_DB=str(data / "inspections.sqlite"))
        os.environ.update(DEFECT_DB=env["DEFECT_DB"])
        open_accounts().save(Actor("bench", "admin"), "bench", "admin", PASSWORD)
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        log = open(tmp / "streamlit.log", "w")
        server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.address",
                                   "127.0.0.1", "--server.port", str(port)], cwd=ROOT, env=env, stdout=log,
                                  stderr=subprocess.STDOUT)
        try:
            for _ in range(300):
                try:
                    if urllib.request.urlopen(url + "/_stcore/health", timeout=2).read() == b"ok":
                        break
                except OSError:
                    time.sleep(0.3)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
                context = browser.new_context(viewport={"width": 1280, "height": 800})
                for number, title in enumerate(PAGES):
                    tab = context.new_page()
                    tab.set_default_timeout(120_000)
                    tab.goto(f"{url}/{title.lower()}")
                    if number == 0:  # the first tab signs in; the others are signed in by its session cookie
                        tab.get_by_label("Account", exact=True).fill("bench")
                        tab.get_by_label("Password", exact=True).fill(PASSWORD)
                        tab.get_by_role("button", name="Sign in").click()
                        tab.wait_for_function("document.cookie.includes('defect_session=')")
                    tab.get_by_text("bench · admin").wait_for()
                    tab.get_by_role("heading", name=title, exact=True).wait_for()
                time.sleep(10)  # let the pages finish drawing
                started, cpu_before = time.time(), cpu_seconds(server.pid)
                time.sleep(args.seconds)
                wall, cpu = time.time() - started, cpu_seconds(server.pid) - cpu_before
                browser.close()
        finally:
            server.terminate()
            server.wait(timeout=20)
            log.close()
    fraction = cpu / wall
    out = ROOT / "bench/results/perf.json"
    results = json.loads(out.read_text()) if out.exists() else {}
    results["idle_server_cpu_fraction"] = fraction
    results["idle"] = {"seconds": wall, "server_cpu_seconds": cpu, "tabs": list(PAGES), "signed_in": True,
                       "config": (ROOT / ".streamlit/config.toml").read_text(), "machine": machine(),
                       "measured_at": time.strftime("%Y-%m-%d %H:%M")}
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"server CPU {cpu:.2f} s over {wall:.0f} s with four tabs open: {fraction:.2%} of one core")


if __name__ == "__main__":
    main()
