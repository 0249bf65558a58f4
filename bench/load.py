"""Load on one dashboard server: 8 browser sessions inspecting 20 photos each at once, and the server's CPU while
one tab watches a running training job.

    .venv/bin/python bench/load.py [--sessions 8] [--photos 20] [--watch-s 60] [--epochs 8]

One `streamlit run app.py` on 127.0.0.1 (started as the browser tests start it, with this repository's
.streamlit/config.toml), driven by headless Debian Chromium through Playwright (one browser, a context per
session, so each is its own Streamlit session with its own inspector account).

Inspect under load: every session signs in, opens Inspect, and at one moment all of them hand their photos
(synthetic demo photos, 160 px PNG, different in every session) to the page's file input. Time to verdict: from
that moment to the photo's result card appearing in its page (each card shows the verdict), per photo; p50 and
p95 over all photos. Every verdict is checked: each session's 20 photos must be logged under its account, each
with the class and verdict that the same model gives the same bytes outside the server
(inspection.inspect_batch), and the page must show 20 verdicts and no error. Anything else counts in `errors`.

Watching a job: a training job (resnet18 on the demo set, started through jobs.start like the Train page) runs;
the server's CPU time (utime + stime of its process, from /proc/PID/stat) is read over --watch-s seconds with no
tab open (idle) and then with one tab on the Train page showing the job's live view (watch). The training
process is separate and not counted. `watch_cpu_fraction` = server CPU seconds / wall seconds (target <= 0.05).

Sign-in burst (issue 27): --burst pages (default 50) sit on the sign-in form of one server with the same account
and a wrong password each; at one moment every page presses "Sign in". `attempts_checked`: how many of them had
their password checked (Argon2id), read back from the audit trail (each checked wrong password is one
`sign_in_failed` event; the lockout refuses the rest before any check), target <= 5. `peak_rss_delta_mib`: the
server's resident memory (VmRSS, sampled every 10 ms) at its highest during the burst minus just before it,
target <= 200 MiB (Argon2id takes 64 MiB per check). `--only signin_burst` runs this part alone on a fresh server
and replaces only the `signin_burst` key of an existing load.json.

The model: the demo recipe (resnet18, 96 px) trained --epochs epochs on the synthetic demo set, good class ok.
Writes bench/results/load.json and load.md. Not part of CI (several minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from browser_support import CHROMIUM, CHROMIUM_ARGS, streamlit_process  # noqa: E402
from report import write_report  # noqa: E402

UPLOADER = '[data-testid="stFileUploaderDropzoneInput"]'
PASSWORD = "bench-password-1"
THRESHOLD = 0.7  # the Inspect page's default (inspection.DEFAULT_THRESHOLD)
SCREENSHOTS: Path | None = None  # where a failed session's page is saved (--screenshots)
# Records, in the page, when each result card first appears (performance.now(), ms).
WATCH_CARDS = """() => {
    window.__cards = {};
    const seen = () => document.querySelectorAll('[class*="st-key-inspect-result-"]').forEach(card => {
        const key = [...card.classList].find(c => c.startsWith('st-key-inspect-result-'));
        if (key && !(key in window.__cards)) window.__cards[key] = performance.now();
    });
    new MutationObserver(seen).observe(document.body, {childList: true, subtree: true});
    window.__t0 = performance.now();
}"""
ALL_DONE = """n => {
    if (document.querySelector('[data-testid="stProgress"]')) return false;
    const values = [...document.querySelectorAll('[data-testid="stMetricValue"]')].map(e => parseInt(e.innerText));
    return values.length === 4 && values.reduce((a, b) => a + b, 0) === n;
}"""


# -- set-up ---------------------------------------------------------------------------------------------
def trained_model(work: Path, runs: Path, epochs: int, reuse: Path | None = None) -> tuple:
    """The demo recipe trained on the synthetic demo set (or a copy of the finished run `reuse`, trained so
    before), made active in `runs`; returns (run, data folder)."""
    import shutil

    from defect_model.photos import synthetic
    from defect_model.common.config import TrainConfig
    from defect_model.train.engine import fit
    from defect_model.workflows.lifecycle import activation_problems, set_active
    from defect_model.runs.folders import RunDir

    data = synthetic.generate(work / "demo-data", per_class=40, size=96, seed=2)
    run = RunDir(runs / "bench-demo-model")
    if reuse is not None:
        shutil.copytree(reuse, run.path)
    else:
        run.path.mkdir(parents=True)
        fit(TrainConfig(data_dir=str(data), backbone="resnet18", image_size=96, epochs=epochs, batch_size=16,
                        augmentation="soft", good_classes=["ok"]), run)
    reason = "load benchmark" if activation_problems(run) else ""
    set_active(run, by="bench", override_reason=reason, root=runs)
    return run, data


def session_photos(out: Path, sessions: int, photos: int) -> list[list[Path]]:
    """Different synthetic photos (160 px PNG, every class) for every session, none seen in training."""
    import numpy as np

    from defect_model.photos.synthetic import CLASSES, make_sample

    rng = np.random.default_rng(1234)
    batches = []
    for s in range(sessions):
        folder = out / f"session-{s}"
        folder.mkdir(parents=True)
        files = []
        for i in range(photos):
            path = folder / f"s{s}-{i:02d}-{CLASSES[i % len(CLASSES)]}.png"
            make_sample(CLASSES[i % len(CLASSES)], rng, 160)[0].save(path)
            files.append(path)
        batches.append(files)
    return batches


def expected_verdicts(checkpoint: Path, files: list[Path]) -> dict[str, tuple[str, str]]:
    """sha256 -> (class, verdict) that the same model gives each photo outside the server, by the page's path."""
    from defect_model.serve.inference import Predictor
    from defect_model.workflows.inspection import InspectionSettings, inspect_batch
    try:
        from defect_model.photos.uploads import expand_uploads
    except ImportError:  # before reading uploads moved out of defect_model.workflows.inspection
        from defect_model.workflows.inspection import expand_uploads

    predictor = Predictor.from_checkpoint(checkpoint)
    settings = InspectionSettings(run_id="bench", good_classes=["ok"], threshold=THRESHOLD)
    expected = {}
    for start in range(0, len(files), 16):
        part = [(f.name, f.read_bytes()) for f in files[start:start + 16]]
        for result in inspect_batch(predictor, expand_uploads(part), settings):
            expected[result.sha256] = (result.predicted, result.verdict)
    return expected


def make_accounts(names_roles: list[tuple[str, str]]) -> None:
    from defect_model.access.accounts import Actor, open_accounts

    accounts = open_accounts()
    for name, role in names_roles:
        accounts.save(Actor("bench set-up", "admin"), name, role, PASSWORD)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` so far (its threads included), from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- inspecting under load --------------------------------------------------------------------------------
async def sign_in(page, url: str, name: str, role: str) -> None:
    await page.goto(url)
    await page.get_by_label("Account", exact=True).fill(name)
    await page.get_by_label("Password", exact=True).fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await page.get_by_text(f"{name} · {role}").wait_for(timeout=180_000)


async def inspect_session(browser, url: str, name: str, files: list[Path], go: asyncio.Event,
                          ready: list, timeout_ms: int) -> dict:
    """One inspector: sign in, open Inspect, wait for `go`, upload `files`, wait for every verdict."""
    context = await browser.new_context(viewport={"width": 1400, "height": 2000})
    page = await context.new_page()
    page.set_default_timeout(timeout_ms)
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"{name}: page error {exc}"))
    doing = "signing in"
    try:
        await sign_in(page, url, name, "inspector")
        doing = "waiting for the Inspect page"
        await page.wait_for_selector(UPLOADER, state="attached")
        await page.wait_for_selector('[data-testid="stStatusWidget"]', state="detached")
        ready.append(name)
        await go.wait()
        started = time.perf_counter()
        doing = "uploading"
        await page.evaluate(WATCH_CARDS)
        await page.locator(UPLOADER).set_input_files([str(f) for f in files])
        doing = "waiting for the verdicts"
        await page.wait_for_function(ALL_DONE, arg=len(files), polling=100)
        wall = time.perf_counter() - started
        # The counts are drawn above the cards, in the same run: the last card may follow a moment later.
        try:
            await page.wait_for_function("n => Object.keys(window.__cards).length >= n", arg=len(files),
                                         polling=100, timeout=30_000)
        except Exception:
            pass  # reported below as missing cards
        marks = await page.evaluate("() => ({t0: window.__t0, cards: window.__cards})")
        times = sorted((stamp - marks["t0"]) / 1000 for stamp in marks["cards"].values())
        shown_errors = int(await page.locator('[data-testid="stMetric"]', has_text="Error")
                           .locator('[data-testid="stMetricValue"]').inner_text())
        exceptions = await page.locator('[data-testid="stException"]').count()
        if shown_errors:
            problems.append(f"{name}: the page shows {shown_errors} error verdict(s)")
        if exceptions:
            problems.append(f"{name}: {exceptions} traceback(s) on the page")
        if len(times) != len(files):
            problems.append(f"{name}: {len(times)} result cards for {len(files)} photos")
        return {"session": name, "times_s": times, "all_verdicts_s": wall, "problems": problems}
    except Exception as exc:  # a session that fails is an error of the benchmark, not its end
        if SCREENSHOTS is not None:
            try:
                await page.screenshot(path=str(SCREENSHOTS / f"{name}-failed.png"), full_page=True)
            except Exception:
                pass  # the page itself is gone: the message says enough
        if name not in ready:
            ready.append(name)  # do not hold the others back
        return {"session": name, "times_s": [], "all_verdicts_s": None,
                "problems": problems + [f"{name}, {doing}: {type(exc).__name__}: {str(exc).splitlines()[0]}"]}
    finally:
        await context.close()


async def inspect_under_load(url: str, batches: list[list[Path]], timeout_ms: int) -> list[dict]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            go, ready = asyncio.Event(), []
            names = [f"inspector{i + 1}" for i in range(len(batches))]
            tasks = [asyncio.create_task(inspect_session(browser, url, name, files, go, ready, timeout_ms))
                     for name, files in zip(names, batches)]
            while len(ready) < len(tasks):  # every session signed in with its page open: then all at once
                await asyncio.sleep(0.2)
            go.set()
            return await asyncio.gather(*tasks)
        finally:
            await browser.close()


def check_log(db_path: Path, batches: list[list[Path]], expected: dict[str, tuple[str, str]]) -> list[str]:
    """Every photo logged once under its session's account with the class and verdict the model gives it."""
    import hashlib

    from defect_model.runs.store import InspectionStore

    log = InspectionStore(db_path).inspections()
    problems = []
    for index, files in enumerate(batches):
        name = f"inspector{index + 1}"
        mine = log[log["inspector"] == name]
        logged = {row.sha256: (row.predicted, row.verdict) for row in mine.itertuples()}
        if len(mine) != len(files):
            problems.append(f"{name}: {len(mine)} inspections logged for {len(files)} photos")
        for path in files:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            if digest not in logged:
                problems.append(f"{name}: {path.name} was not logged")
            elif logged[digest] != expected[digest]:
                problems.append(f"{name}: {path.name} logged as {logged[digest]}, the model gives {expected[digest]}")
    return problems


# -- watching a training job --------------------------------------------------------------------------------
def start_training_job(data: Path, runs: Path):
    """A resnet18 job long enough to be watched for minutes (the Train page's way: jobs.start)."""
    from defect_model.runs import jobs
    from defect_model.access.accounts import Actor
    from defect_model.common.config import TrainConfig

    cfg = TrainConfig(data_dir=str(data), backbone="resnet18", image_size=96, epochs=200, batch_size=16)
    os.environ["OMP_NUM_THREADS"] = "1"  # the job inherits it: it leaves the server a core on a 2-core machine
    return jobs.start(cfg, runs, actor=Actor("engineer1", "engineer"))


def server_cpu_fraction(pid: int, seconds: float) -> float:
    before, started = cpu_seconds(pid), time.perf_counter()
    time.sleep(seconds)
    return (cpu_seconds(pid) - before) / (time.perf_counter() - started)


async def watch_job(url: str, pid: int, seconds: float, timeout_ms: int) -> dict:
    """The server's CPU while one signed-in tab shows the running job on the Train page."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1400, "height": 1600})
            page.set_default_timeout(timeout_ms)
            await sign_in(page, url, "engineer1", "engineer")
            await page.get_by_role("link", name="Train").click()
            await page.locator('[data-testid="stProgress"]').first.wait_for()  # the live view of the job
            await asyncio.sleep(10)  # the page's first full run (it may write the demo set) is not the view's cost
            fraction = await asyncio.to_thread(server_cpu_fraction, pid, seconds)
            progress = await page.locator('[data-testid="stProgress"]').first.inner_text()
            return {"watch_cpu_fraction": fraction, "progress_text_at_end": progress.strip()}
        finally:
            await browser.close()


# -- a burst of sign-ins ------------------------------------------------------------------------------------
def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class PeakMemory:
    """The highest VmRSS of process `pid` while the `with` block runs, sampled every 10 ms."""

    def __init__(self, pid: int):
        self.pid, self.peak, self._stop = pid, 0.0, threading.Event()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mib(self.pid))
            time.sleep(0.01)

    def __enter__(self) -> "PeakMemory":
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


async def signin_burst(url: str, pid: int, name: str, attempts: int, timeout_ms: int) -> dict:
    """`attempts` pages press Sign in for `name` with a wrong password at the same moment."""
    from playwright.async_api import async_playwright

    from defect_model.access.accounts import audit_log

    failed_before = sum(e["target"] == name for e in audit_log().events("sign_in_failed", limit=100_000))
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            pages = []
            for i in range(attempts):  # one context per page: each its own Streamlit session, as separate people
                context = await browser.new_context(viewport={"width": 900, "height": 700})
                page = await context.new_page()
                page.set_default_timeout(timeout_ms)
                await page.goto(url)
                await page.get_by_label("Account", exact=True).fill(name)
                await page.get_by_label("Password", exact=True).fill(f"wrong password {i}")
                pages.append(page)
            await asyncio.sleep(3)  # the server settles after the pages' first runs
            before = rss_mib(pid)
            with PeakMemory(pid) as memory:
                started = time.perf_counter()
                await asyncio.gather(*(page.get_by_role("button", name="Sign in").click() for page in pages))
                answers = await asyncio.gather(*(page.get_by_text(
                    re.compile("Wrong account name or password|Too many failed sign-ins")).first.inner_text()
                    for page in pages), return_exceptions=True)
                wall = time.perf_counter() - started
                await asyncio.sleep(2)  # memory freed after the checks is still inside the window
        finally:
            await browser.close()
    checked = sum(e["target"] == name for e in audit_log().events("sign_in_failed", limit=100_000)) - failed_before
    texts = [a if isinstance(a, str) else f"no answer ({type(a).__name__})" for a in answers]
    return {"attempts": attempts, "attempts_checked": checked, "target_checked": 5,
            "wrong_password_answers": sum("Wrong account" in t for t in texts),
            "locked_answers": sum("Too many failed" in t for t in texts),
            "no_answer": sum(t.startswith("no answer") for t in texts),
            "rss_before_mib": round(before, 1), "peak_rss_mib": round(memory.peak, 1),
            "peak_rss_delta_mib": round(memory.peak - before, 1), "target_peak_rss_delta_mib": 200,
            "all_answers_s": round(wall, 2)}


def only_signin_burst(args, command: str) -> None:
    """The sign-in burst alone, on a fresh server; the other keys of an existing load.json are kept."""
    out = Path(args.out)
    result = json.loads(out.with_suffix(".json").read_text()) if out.with_suffix(".json").is_file() else {}
    with tempfile.TemporaryDirectory(prefix="load-bench-") as tmp:
        tmp = Path(tmp)
        os.environ["DEFECT_DB"] = str(tmp / "db" / "inspections.sqlite")
        make_accounts([("engineer1", "engineer")])
        (tmp / "runs").mkdir()
        with streamlit_process(tmp / "runs", tmp / "data", tmp / "streamlit.log", timeout=240) as (url, server):
            burst = asyncio.run(signin_burst(url, server.pid, "engineer1", args.burst, int(args.timeout_s * 1000)))
    burst.update(command=command, load_average=[round(v, 2) for v in os.getloadavg()])
    print(json.dumps(burst, indent=2), flush=True)
    result["signin_burst"] = burst
    write_report(result, out, write_markdown)


# -- report -------------------------------------------------------------------------------------------------
def percentile(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))]


def machine() -> dict:
    import torch

    return {"cpu_cores": os.cpu_count(), "cpu": platform.processor() or platform.machine(),
            "torch": torch.__version__, "python": platform.python_version(),
            "browser": "Debian Chromium (headless) via Playwright", "memory_gb": round(
                os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--photos", type=int, default=20, help="photos per session")
    parser.add_argument("--watch-s", type=float, default=60.0, help="seconds of CPU measurement, idle and watched")
    parser.add_argument("--epochs", type=int, default=8, help="epochs of the model the sessions inspect with")
    parser.add_argument("--model", metavar="RUN", help="a finished run of this recipe to inspect with instead of "
                                                       "training one (e.g. kept from an earlier run with --keep)")
    parser.add_argument("--keep", metavar="DIR", help="copy the trained model's run folder here")
    parser.add_argument("--screenshots", metavar="DIR", help="save the page of a session that fails here")
    parser.add_argument("--timeout-s", type=float, default=900.0, help="longest wait for one page step")
    parser.add_argument("--burst", type=int, default=50, help="pages pressing Sign in at once (wrong passwords)")
    parser.add_argument("--only", choices=("signin_burst",), help="run this part alone; keep the rest of load.json")
    parser.add_argument("--out", default=str(ROOT / "bench/results/load"))
    args = parser.parse_args()
    global SCREENSHOTS
    if args.screenshots:
        SCREENSHOTS = Path(args.screenshots)
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    command = "python bench/load.py " + " ".join(sys.argv[1:])
    if args.only == "signin_burst":
        return only_signin_burst(args, command)
    load_before = [round(v, 2) for v in os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="load-bench-") as tmp:
        tmp = Path(tmp)
        runs, data = tmp / "runs", tmp / "data"
        os.environ["DEFECT_DB"] = str(tmp / "db" / "inspections.sqlite")
        started = time.perf_counter()
        run, demo_data = trained_model(tmp, runs, args.epochs, Path(args.model) if args.model else None)
        print(f"model ready in {time.perf_counter() - started:.0f} s", flush=True)
        if args.keep:
            import shutil

            shutil.copytree(run.path, args.keep, dirs_exist_ok=True)
        batches = session_photos(tmp / "photos", args.sessions, args.photos)
        expected = expected_verdicts(run.checkpoint, [f for files in batches for f in files])
        make_accounts([(f"inspector{i + 1}", "inspector") for i in range(args.sessions)]
                      + [("engineer1", "engineer")])
        with streamlit_process(runs, data, tmp / "streamlit.log", timeout=240) as (url, server):
            load_inspect = [round(v, 2) for v in os.getloadavg()]
            sessions = asyncio.run(inspect_under_load(url, batches, int(args.timeout_s * 1000)))
            problems = [p for s in sessions for p in s["problems"]]
            problems += check_log(Path(os.environ["DEFECT_DB"]), batches, expected)
            times = [t for s in sessions for t in s["times_s"]]
            print(f"inspected: p50 {percentile(times, 0.5):.2f} s, p95 {percentile(times, 0.95):.2f} s, "
                  f"{len(problems)} problem(s)", flush=True)
            burst = asyncio.run(signin_burst(url, server.pid, "engineer1", args.burst, int(args.timeout_s * 1000)))

            job = start_training_job(demo_data, runs)
            time.sleep(20)  # the job imports torch and decodes its photos
            load_watch = [round(v, 2) for v in os.getloadavg()]
            idle = server_cpu_fraction(server.pid, args.watch_s)
            watched = asyncio.run(watch_job(url, server.pid, args.watch_s, int(args.timeout_s * 1000)))
            load_after = [round(v, 2) for v in os.getloadavg()]
            from defect_model.runs import jobs
            from defect_model.access.accounts import Actor

            jobs.cancel(job, actor=Actor("engineer1", "engineer"))
            log_lines = (tmp / "streamlit.log").read_text().splitlines()[-20:]
        print(f"server CPU while one tab watches the job: {watched['watch_cpu_fraction']:.3f} of a core "
              f"(no tab: {idle:.3f})", flush=True)
    result = {
        "what": "8 browser sessions inspecting at once against one server; server CPU while one tab watches a job",
        "sessions": args.sessions, "photos": args.photos, "errors": len(problems), "problems": problems[:50],
        "p50_s": percentile(times, 0.5), "p95_s": percentile(times, 0.95), "max_s": max(times, default=None),
        "verdicts_timed": len(times),
        "all_verdicts_per_session_s": [s["all_verdicts_s"] for s in sessions],
        "watch_cpu_fraction": watched["watch_cpu_fraction"], "idle_cpu_fraction": idle, "watch_s": args.watch_s,
        "watch_target": 0.05, "watch_progress_at_end": watched["progress_text_at_end"],
        "model": "resnet18, 96 px, demo recipe trained on the synthetic demo set, good class ok",
        "threshold": THRESHOLD, "command": command, "machine": machine(),
        "load_average": {"before": load_before, "inspect_start": load_inspect, "watch_start": load_watch,
                         "after": load_after},
        "server_log_tail": log_lines,
        "signin_burst": dict(burst, command=command),
    }
    write_report(result, args.out, write_markdown)


def write_markdown(result: dict, path: Path) -> None:
    m, load = result["machine"], result["load_average"]
    busy = max(load["inspect_start"] + load["watch_start"]) > m["cpu_cores"]
    lines = [
        "# Load: 8 inspectors at once, and watching a training job",
        "",
        f"Command: `.venv/bin/{result['command']}`. One `streamlit run app.py` on 127.0.0.1, "
        f"{m['browser']}, one browser context (Streamlit session, inspector account) per session.",
        f"Model: {result['model']}; threshold {result['threshold']}.",
        "",
        "## Inspect: every session uploads its photos at the same moment",
        "",
        "| sessions | photos each | errors | time to verdict p50 | p95 | slowest | all verdicts, per session |",
        "|---|---|---|---|---|---|---|",
        f"| {result['sessions']} | {result['photos']} | {result['errors']} | **{result['p50_s']:.1f} s** | "
        f"**{result['p95_s']:.1f} s** | {result['max_s']:.1f} s | "
        + ", ".join(f"{t:.0f} s" if t is not None else "failed" for t in result["all_verdicts_per_session_s"])
        + " |",
        "",
        "Time to verdict: from the moment every session hands its photos to the page's file input to that photo's "
        f"result card appearing (with its verdict), over all {result['verdicts_timed']} photos. Checked: each "
        "photo logged once under its session's account, with the class and verdict the same model gives the "
        "same bytes outside the server; the page shows every verdict and no error. "
        + ("Problems: " + "; ".join(result["problems"]) if result["problems"] else "No problem found."),
        "",
        "## Watching a training job",
        "",
        f"Server CPU while one tab shows the running job on the Train page (live view refreshing every 2 s), "
        f"{result['watch_s']:.0f} s: **{result['watch_cpu_fraction']:.3f}** of one core (target <= "
        f"{result['watch_target']}); with no tab open: {result['idle_cpu_fraction']:.3f}. The training process "
        "is separate and not counted.",
        "",
        f"Machine: {m['cpu_cores']} cores ({m['cpu']}), {m['memory_gb']} GB, torch {m['torch']}, Python "
        f"{m['python']}. Load average (1, 5, 15 min): before {load['before']}, when the uploads started "
        f"{load['inspect_start']}, when the watch started {load['watch_start']}, after {load['after']}.",
    ]
    burst = result.get("signin_burst")
    if burst:
        lines += [
            "", "## Sign-in burst", "",
            f"Command: `.venv/bin/{burst['command']}`. {burst['attempts']} pages on the sign-in form of one server "
            "press Sign in at the same moment, one account, a wrong password each.", "",
            "| attempts | passwords checked (target <= 5) | answered wrong password | answered locked | no answer | "
            "server memory before | peak | peak delta (target <= 200 MiB) | all answered in |",
            "|---|---|---|---|---|---|---|---|---|",
            f"| {burst['attempts']} | **{burst['attempts_checked']}** | {burst['wrong_password_answers']} | "
            f"{burst['locked_answers']} | {burst['no_answer']} | {burst['rss_before_mib']} MiB | "
            f"{burst['peak_rss_mib']} MiB | **{burst['peak_rss_delta_mib']} MiB** | {burst['all_answers_s']} s |",
            "", "Checked passwords are counted from the audit trail (one `sign_in_failed` event per checked wrong "
                "password); memory is the server process's VmRSS sampled every 10 ms."
            + (" The same burst against the code before issue 27 (commit {commit}, same machine, this script): "
               "{attempts_checked} of {attempts} passwords checked, peak delta {peak_rss_delta_mib} MiB.".format(
                   **burst["before_issue_27"]) if burst.get("before_issue_27") else "")
            + (f" Load average at the end: {burst['load_average']}." if burst.get("load_average") else "")]
    if busy:
        lines += ["", f"The load average was above the {m['cpu_cores']} cores: other work (other sessions' tests) "
                      "shared the machine with the server, the 8 browsers and the training job, so the times to "
                      "verdict are pessimistic (the server waited for a core). The CPU fractions count only the "
                      "time the server ran, so they hold on a busy machine. Rerun on a quiet machine for times "
                      "to compare."]
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
