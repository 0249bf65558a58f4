"""A plant with several lines on this machine: two dashboard servers and two hot-folder watchers sharing one
PostgreSQL database, one model store and one runs folder; then the same run on the embedded default (SQLite, one
server) for comparison.

    .venv/bin/python bench/plant.py [--sessions 8] [--photos 20] [--watched 400] [--epochs 4]

PostgreSQL: a throwaway cluster of Debian's postgresql (tests/postgres_support.py), its schema made by
`python -m defect_model db upgrade`. Every process gets DEFECT_DATABASE_URL and the shared folders a plant's
machines mount at the same path (README, "Several lines"): DEFECT_MODEL_STORE (served checkpoints, the active
record, the audit head log), DEFECT_RUNS_DIR and DEFECT_DATA_DIR (the kept photo copies).

1. Inspecting: --sessions browser sessions (headless Debian Chromium, a context each, its own inspector account),
   half on each server, upload --photos photos each at one moment, while --watched photos arrive in the two
   watchers' folders (half each, renamed in as a camera writes them). p50_s / p95_s: from the upload to each
   result card in the page (as bench/load.py measures it).
2. Activation: a second model is made active (workflows.lifecycle.activate, as the Models page does on one
   server); then each server is handed a new photo through a signed-in page every 0.5 s (or as soon as the one
   before is logged, when that takes longer) and each watcher one every 0.5 s in its folder. A server or watcher
   has "seen" the activation once a photo it judged is logged under the new checkpoint's sha256; its time is when
   the benchmark found that row, after the activation (so it includes the photo's own inspection, and a
   watcher's 1 s settle time: an upper bound of the switch), and activation_seen_s is the largest over every
   server and watcher.
3. The log: every photo handed in (their bytes are all different) must be logged exactly once: `lost` counts
   photos with no row, `duplicated` photos with more than one; `audit_verified`: `python -m defect_model audit
   verify` exits 0 (chains and head log of both tables).

Writes bench/results/plant.json and plant.md. Not part of CI (several minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

from browser_support import CHROMIUM, CHROMIUM_ARGS, streamlit_process  # noqa: E402
from load import (UPLOADER, inspect_session, machine, make_accounts, percentile, session_photos,  # noqa: E402
                  sign_in)
from report import write_report  # noqa: E402

PROBE_EVERY_S = 0.5
SEEN_LIMIT_S = 60.0  # give up on a process that has not switched after this long (reported as null)


# -- set-up ---------------------------------------------------------------------------------------------
def train_models(work: Path, runs: Path, epochs: int):
    """Two runs of the demo recipe (resnet18, 96 px) on the synthetic demo set, different seeds: the first is
    made active before the servers start, the second during the benchmark."""
    from defect_model.common.config import TrainConfig
    from defect_model.photos import synthetic
    from defect_model.runs.folders import RunDir
    from defect_model.train.engine import fit

    data = synthetic.generate(work / "demo-data", per_class=40, size=96, seed=2)
    made = []
    for seed in (0, 1):
        run = RunDir(runs / f"plant-model-{seed}")
        run.path.mkdir(parents=True)
        fit(TrainConfig(data_dir=str(data), backbone="resnet18", image_size=96, epochs=epochs, batch_size=16,
                        augmentation="soft", good_classes=["ok"], seed=seed), run)
        made.append(run)
    return made


def activate(run) -> str:
    """Make `run` active as an admin does on the Models page; returns the served checkpoint's sha256."""
    from defect_model.access.accounts import Actor
    from defect_model.workflows.lifecycle import activate as activate_run
    from defect_model.workflows.lifecycle import activation_problems

    reason = "plant benchmark: propagation, not accuracy" if activation_problems(run) else ""
    return activate_run(run, Actor("bench", "admin"), override_reason=reason, golden_ack=True)["sha256"]


def watched_photos(out: Path, count: int) -> list[Path]:
    """`count` different 128 px synthetic photos, every class."""
    from defect_model.photos import synthetic

    per_class = -(-count // len(synthetic.CLASSES))
    synthetic.generate(out, per_class=per_class, size=128, seed=11)
    return sorted(out.rglob("*.png"))[:count]


def probe_photos(out: Path, processes: int, count: int) -> list[list[Path]]:
    """Photos for the activation probes, different from every other photo here (their own seed)."""
    import numpy as np

    from defect_model.photos.synthetic import CLASSES, make_sample

    rng = np.random.default_rng(9090)
    batches = []
    for p in range(processes):
        (out / f"probe-{p}").mkdir(parents=True)
        batches.append([])
        for i in range(count):
            path = out / f"probe-{p}" / f"probe{p}-{i:03d}.png"
            make_sample(CLASSES[i % len(CLASSES)], rng, 160)[0].save(path)
            batches[-1].append(path)
    return batches


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Watcher:
    """`python -m defect_model watch` as a line's PC runs it."""

    def __init__(self, env: dict, base: Path):
        self.incoming, self.done, self.staging = base / "in", base / "done", base / "staging"
        for folder in (self.incoming, self.done, self.staging):
            folder.mkdir(parents=True)
        self.log = (base / "watcher.log").open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "defect_model", "watch", str(self.incoming), "--done", str(self.done)],
            cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def wait_started(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while "watching" not in Path(self.log.name).read_text():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the watcher did not start: {Path(self.log.name).read_text()[-2000:]}")
            time.sleep(0.2)

    def hand_in(self, photo: Path) -> float:
        """Written aside, renamed in (as a camera does); returns the time."""
        staged = self.staging / photo.name
        shutil.copyfile(photo, staged)
        os.replace(staged, self.incoming / photo.name)
        return time.monotonic()

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


def logged_rows() -> dict[str, list[str]]:
    """sha256 -> the model_sha256 of every row that logged it, from the database the environment names."""
    from defect_model.runs.store import InspectionStore

    rows: dict[str, list[str]] = {}
    for row in InspectionStore().inspections().itertuples():
        rows.setdefault(row.sha256, []).append(row.model_sha256)
    return rows


# -- phase 1: inspecting through every server and watcher at once -------------------------------------------
async def inspect_everywhere(urls: list[str], batches: list[list[Path]], watchers: list[Watcher],
                             watched: list[Path], timeout_ms: int) -> tuple[list[dict], dict]:
    from playwright.async_api import async_playwright

    handed: dict[str, float] = {}

    def feed() -> None:
        for index, photo in enumerate(watched):
            handed[photo.name] = watchers[index % len(watchers)].hand_in(photo)

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            go, ready = asyncio.Event(), []
            tasks = [asyncio.create_task(inspect_session(browser, urls[i % len(urls)], f"inspector{i + 1}", files,
                                                         go, ready, timeout_ms))
                     for i, files in enumerate(batches)]
            while len(ready) < len(tasks):
                await asyncio.sleep(0.2)
            feeder = threading.Thread(target=feed)
            go.set()
            feeder.start()
            sessions = await asyncio.gather(*tasks)
            await asyncio.to_thread(feeder.join)
        finally:
            await browser.close()
    return sessions, handed


def wait_logged(shas: set[str], timeout: float) -> set[str]:
    """Wait until every sha256 in `shas` is in the log (or `timeout`); returns those still missing."""
    deadline = time.monotonic() + timeout
    while True:
        missing = shas - set(logged_rows())
        if not missing or time.monotonic() > deadline:
            return missing
        time.sleep(1.0)


# -- phase 2: an activation seen everywhere ------------------------------------------------------------------
async def probe_everywhere(urls: list[str], photos: list[list[Path]], activate_now, new_sha: str,
                           probe_watchers_from) -> dict:
    """Sign a probe account in on every server, make the new model active, then hand each server a new photo
    every PROBE_EVERY_S until one is logged under `new_sha`, while `probe_watchers_from(activated_at)` does the
    same for the watchers in a thread of its own. Returns {"servers": {url: seconds or None}, "watchers": [...]}."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            pages = []
            for index, url in enumerate(urls):
                page = await (await browser.new_context(viewport={"width": 1400, "height": 1200})).new_page()
                page.set_default_timeout(180_000)
                await sign_in(page, url, f"probe{index + 1}", "inspector")
                await page.wait_for_selector(UPLOADER, state="attached")
                pages.append(page)
            activated_at = await asyncio.to_thread(activate_now)
            watchers_seen: dict = {}
            watching = threading.Thread(target=lambda: watchers_seen.update(seen=probe_watchers_from(activated_at)))
            watching.start()
            seen: dict[str, float | None] = {}

            async def probe(page, url, files):
                # One photo at a time, each left to be logged before the next (a new upload would replace the one
                # being judged): the server has seen the activation by the time it was handed the first photo
                # judged by the new model.
                for photo in files:
                    handed, sha = time.monotonic(), digest(photo)
                    await page.locator(UPLOADER).set_input_files([str(photo)])
                    while sha not in (rows := await asyncio.to_thread(logged_rows)):
                        if time.monotonic() - handed > SEEN_LIMIT_S:
                            seen[url] = None
                            return
                        await asyncio.sleep(0.1)
                    if new_sha in rows[sha]:
                        seen[url] = round(time.monotonic() - activated_at, 2)
                        return
                    await asyncio.sleep(max(0.0, handed + PROBE_EVERY_S - time.monotonic()))
                    if time.monotonic() - activated_at > SEEN_LIMIT_S:
                        break
                seen[url] = None

            await asyncio.gather(*(probe(page, url, files) for page, url, files in zip(pages, urls, photos)))
            await asyncio.to_thread(watching.join)
        finally:
            await browser.close()
    return {"servers": seen, "watchers": watchers_seen.get("seen", [None] * 2)}


def probe_watchers(watchers: list[Watcher], photos: list[list[Path]], activated_at: float,
                   new_sha: str) -> list[float | None]:
    """Hand each watcher a new photo every PROBE_EVERY_S until one of them is logged under `new_sha`."""
    seen: list[float | None] = [None] * len(watchers)
    handed: list[dict[str, float]] = [{} for _ in watchers]
    rounds = iter(range(len(photos[0])))
    while any(s is None for s in seen) and time.monotonic() - activated_at < SEEN_LIMIT_S:
        index = next(rounds, None)
        for w, watcher in enumerate(watchers):
            if seen[w] is None and index is not None:
                handed[w][digest(photos[w][index])] = watcher.hand_in(photos[w][index])
        time.sleep(PROBE_EVERY_S)
        rows = logged_rows()
        for w in range(len(watchers)):
            if seen[w] is None and any(new_sha in rows.get(s, []) for s in handed[w]):
                seen[w] = round(time.monotonic() - activated_at, 2)
    return seen


# -- one plant ---------------------------------------------------------------------------------------------
def plant(work: Path, args, database_url: str | None, servers: int) -> dict:
    """Everything on one backend: `database_url` (PostgreSQL) or None (SQLite, the embedded default)."""
    runs, store = work / "runs", work / "store"
    env = dict(os.environ, DEFECT_RUNS_DIR=str(runs), DEFECT_DATA_DIR=str(work / "data"),
               DEFECT_MODEL_STORE=str(store))
    env.pop("DEFECT_DATABASE_URL", None)
    env.pop("DEFECT_DB", None)
    if database_url:
        env["DEFECT_DATABASE_URL"] = database_url
        subprocess.run([sys.executable, "-m", "defect_model", "db", "upgrade"], cwd=ROOT, env=env, check=True)
    os.environ.clear()
    os.environ.update(env)  # this process is the admin's server side: activation, accounts, the log's read-back

    started = time.monotonic()
    first, second = train_models(work, runs, args.epochs)
    activate(first)
    print(f"models ready in {time.monotonic() - started:.0f} s", flush=True)
    batches = session_photos(work / "photos", args.sessions, args.photos)
    watched = watched_photos(work / "watched", args.watched)
    probes = probe_photos(work / "probes", servers + 2, int(SEEN_LIMIT_S / PROBE_EVERY_S) + 2)
    make_accounts([(f"inspector{i + 1}", "inspector") for i in range(args.sessions)]
                  + [(f"probe{i + 1}", "inspector") for i in range(servers)])

    watchers = [Watcher(env, work / f"line-{i + 1}") for i in range(2)]
    try:
        for watcher in watchers:
            watcher.wait_started()
        from contextlib import ExitStack

        with ExitStack() as stack:
            urls = []
            for index in range(servers):
                url, _ = stack.enter_context(streamlit_process(runs, work / "data", work / f"server-{index + 1}.log",
                                                               timeout=240))
                urls.append(url)
            sessions, handed = asyncio.run(inspect_everywhere(urls, batches, watchers, watched,
                                                              int(args.timeout_s * 1000)))
            times = [t for s in sessions for t in s["times_s"]]
            handed_in = [f for files in batches for f in files] + watched
            wait_logged({digest(f) for f in handed_in}, timeout=600)
            print(f"inspected: p50 {percentile(times, 0.5):.2f} s, p95 {percentile(times, 0.95):.2f} s",
                  flush=True)

            new_sha_holder: dict = {}

            def activate_now() -> float:
                new_sha_holder["sha"] = activate(second)
                return time.monotonic()

            from defect_model.runs.folders import file_sha256

            new_sha = file_sha256(second.checkpoint)
            probed = asyncio.run(probe_everywhere(
                urls, probes[:servers], activate_now, new_sha,
                lambda activated_at: probe_watchers(watchers, probes[servers:], activated_at, new_sha)))
            servers_seen, watchers_seen = probed["servers"], probed["watchers"]
    finally:
        for watcher in watchers:
            watcher.close()

    rows = logged_rows()
    expected = {digest(f) for f in handed_in}
    assert len(expected) == len(handed_in), "two photos handed in have the same bytes: lost/duplicated would lie"
    lost = sorted(s for s in expected if s not in rows)
    duplicated = sorted(s for s in expected if len(rows.get(s, [])) > 1)
    verify = subprocess.run([sys.executable, "-m", "defect_model", "audit", "verify"], cwd=ROOT, env=env,
                            capture_output=True, text=True)
    seen = list(servers_seen.values()) + watchers_seen
    problems = [p for s in sessions for p in s["problems"]]
    return {
        "backend": "postgresql" if database_url else "sqlite", "servers": servers, "watchers": len(watchers),
        "sessions": args.sessions, "photos": len(expected), "logged_once": len(expected) - len(lost) - len(duplicated),
        "lost": len(lost), "duplicated": len(duplicated), "audit_verified": verify.returncode == 0,
        "audit_verify_output": verify.stdout.strip().splitlines()[-3:] + verify.stderr.strip().splitlines()[-3:],
        "p50_s": round(percentile(times, 0.5), 2), "p95_s": round(percentile(times, 0.95), 2),
        "verdicts_timed": len(times), "session_problems": problems[:20],
        "activation_seen_s": max((s for s in seen if s is not None), default=None)
        if all(s is not None for s in seen) else None,
        "activation_seen_per_process_s": {**{f"server {i + 1}": s for i, s in enumerate(servers_seen.values())},
                                          **{f"watcher {i + 1}": s for i, s in enumerate(watchers_seen)}},
        "model_sha256_new": new_sha_holder.get("sha"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--photos", type=int, default=20, help="photos per browser session")
    parser.add_argument("--watched", type=int, default=400, help="photos through the two watchers together")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--timeout-s", type=float, default=900.0)
    parser.add_argument("--out", default=str(ROOT / "bench/results/plant"))
    args = parser.parse_args()
    from postgres_support import fresh_database, postgres_server

    load_before = [round(v, 2) for v in os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="plant-bench-") as tmp:
        tmp = Path(tmp)
        with postgres_server() as server_url:
            shared = plant(tmp / "postgresql", args, fresh_database(server_url), servers=2)
        print(shared, flush=True)
        embedded = plant(tmp / "sqlite", args, None, servers=1)
    result = {**shared, "sqlite_one_server": embedded,
              "what": "two dashboard servers and two hot-folder watchers on one PostgreSQL, one model store and one "
                      "runs folder, on this machine; the same on SQLite with one server",
              "command": "python bench/plant.py " + " ".join(sys.argv[1:]), "machine": machine(),
              "load_average_before": load_before}
    write_report(result, args.out, write_markdown)


def write_markdown(result: dict, path: Path) -> None:
    keys = ("servers", "watchers", "photos", "logged_once", "lost", "duplicated", "audit_verified", "p50_s",
            "p95_s", "activation_seen_s")
    lines = ["# Several lines on one PostgreSQL (bench/plant.py)", "", result["what"] + ".", "",
             f"`{result['command']}` on {result['machine']['cpu_cores']} cores, {result['machine']['cpu']}.", "",
             "| | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for name, row in (("PostgreSQL", result), ("SQLite (embedded)", result["sqlite_one_server"])):
        lines.append(f"| {name} | " + " | ".join(str(row.get(k)) for k in keys) + " |")
    lines += ["", "Activation seen, per process (s from the activation until a photo it judged was found logged under "
              "the new model; the photo's own inspection included):", ""]
    for name, row in (("PostgreSQL", result), ("SQLite", result["sqlite_one_server"])):
        lines.append(f"- {name}: " + ", ".join(f"{k} {v}" for k, v in row["activation_seen_per_process_s"].items()))
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
