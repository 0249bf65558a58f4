"""Hot folder throughput and latency: photos per second through `python -m defect_model watch` against
`python -m defect_model predict` on the same files, and the time from a photo's arrival to its result line.

    .venv/bin/python bench/watch.py [--run RUN] [--photos 1000] [--epochs 3]

The model: the demo model's network and input size (resnet18 at 96 px) trained --epochs epochs on the
synthetic demo set, or an existing run given with --run; it is made active in a private runs folder. The
photos: a second synthetic demo set (128 px PNG, ok + 4 defects), --photos of them.

Measured, each with the real command in its own process (the model already loaded, unless said):
  - burst: every photo renamed into the watched folder at once (the 1,000-file burst of issue 18); photos per
    second from the first arrival to the last result line, at the watcher's default threads (half the cores,
    as the dashboard) and at all cores (what `predict` uses);
  - line: photos arriving one at a time at --rate per second, as from a line camera; the latency from each
    photo's arrival (its rename into the folder) to its line in the results CSV, p50 and p95, with the default
    settle time (size unchanged for 1 s) and with a `.ready` marker written beside each photo;
  - predict: the same burst's files through `predict` (one photo at a time, no heatmap, no log, no moves),
    photos per second from its first output line to its last, and its wall time with start-up.

Writes bench/results/watch.json (photos_per_s, p50_s, p95_s, the predict baseline, every case) and watch.md.
Not part of CI (a few minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from defect_model.photos import synthetic  # noqa: E402
from defect_model.runs.folders import RunDir  # noqa: E402


# -- set-up -------------------------------------------------------------------------------------------
def demo_run(work: Path, epochs: int) -> tuple[RunDir, str]:
    """The demo model's network and input size (resnet18, 96 px) trained briefly on the synthetic demo set:
    speed depends on the network and the photo size, not on how well it learned."""
    from defect_model.common.config import TrainConfig
    from defect_model.train.engine import fit

    data = synthetic.ensure_demo_dataset(work / "demo-data")
    cfg = TrainConfig(data_dir=str(data), backbone="resnet18", image_size=96, epochs=epochs, batch_size=32,
                      good_classes=list(synthetic.GOOD_CLASSES))
    run = RunDir(work / "train" / "demo-run")
    run.path.mkdir(parents=True)
    started = time.perf_counter()
    fit(cfg, run)
    accuracy = run.status().get("val_accuracy", float("nan"))
    return run, (f"resnet18 at 96 px (the demo model's network and input size), trained {epochs} epochs "
                 f"({time.perf_counter() - started:.0f} s) on the synthetic demo set, validation accuracy "
                 f"{accuracy:.2f}")


def activate_in(run: RunDir, runs_dir: Path) -> dict:
    from defect_model.access.accounts import Actor
    from defect_model.workflows.lifecycle import activate

    copy = RunDir(Path(shutil.copytree(run.path, runs_dir / run.run_id)))
    return activate(copy, Actor("bench", "admin"), override_reason="benchmark: speed, not accuracy", root=runs_dir)


def burst_photos(out: Path, count: int) -> list[Path]:
    per_class = -(-count // len(synthetic.CLASSES))
    synthetic.generate(out, per_class=per_class, size=128, seed=7)
    return sorted(out.rglob("*.png"))[:count]


# -- the watcher and its results -----------------------------------------------------------------------
class Watcher:
    """`python -m defect_model watch` in its own process, and a thread that timestamps each new result line."""

    def __init__(self, env: dict, incoming: Path, done: Path, *extra: str):
        self.results = done / "results.csv"
        self.seen: dict[str, float] = {}
        command = [sys.executable, "-m", "defect_model", "watch", str(incoming), "--done", str(done), *extra]
        started = time.perf_counter()
        self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, text=True)
        for line in self.process.stderr:
            if line.startswith("watching"):
                break
        else:
            raise RuntimeError(f"the watcher did not start: {self.process.stderr.read()}")
        self.startup_s = time.perf_counter() - started
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._follow, daemon=True)
        self.thread.start()

    def _follow(self) -> None:
        offset, partial = 0, ""
        while not self.stop.is_set():
            if self.results.exists():
                with self.results.open() as handle:
                    handle.seek(offset)
                    chunk = handle.read()
                    offset = handle.tell()
                now = time.perf_counter()
                partial += chunk
                *lines, partial = partial.split("\n")
                for fields in csv.reader(lines):
                    if fields and fields[0] != "time":
                        self.seen.setdefault(fields[1], now)
            time.sleep(0.002)

    def wait_for(self, count: int, timeout: float = 900) -> None:
        deadline = time.perf_counter() + timeout
        while len(self.seen) < count:
            if time.perf_counter() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"{len(self.seen)} of {count} results; watcher: {self.process.poll()}")
            time.sleep(0.01)

    def close(self) -> None:
        self.stop.set()
        self.process.terminate()
        self.process.communicate(timeout=120)
        self.thread.join()


def arrive(source: Path, incoming: Path, staging: Path, marker: bool) -> float:
    """Copy a photo in as a camera would (written aside, renamed in); returns the arrival time."""
    staged = staging / source.name
    shutil.copyfile(source, staged)
    os.replace(staged, incoming / source.name)
    arrived = time.perf_counter()
    if marker:
        (incoming / (source.name + ".ready")).touch()
    return arrived


def fresh_folders(work: Path, name: str) -> tuple[Path, Path, Path]:
    base = work / name
    folders = base / "in", base / "done", base / "staging"
    for folder in folders:
        folder.mkdir(parents=True)
    return folders


def percentiles(values: list[float]) -> dict:
    ordered = sorted(values)
    at = lambda q: ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]  # noqa: E731
    return {"p50_s": round(statistics.median(ordered), 3), "p95_s": round(at(0.95), 3),
            "max_s": round(ordered[-1], 3)}


def burst_case(env, work, name, photos, *extra) -> dict:
    incoming, done, staging = fresh_folders(work, name)
    for photo in photos:  # staged first, so the burst is only renames
        shutil.copyfile(photo, staging / photo.name)
    watcher = Watcher(env, incoming, done, *extra)
    try:
        arrivals = {}
        for photo in photos:
            os.replace(staging / photo.name, incoming / photo.name)
            arrivals[photo.name] = time.perf_counter()
        watcher.wait_for(len(photos))
    finally:
        watcher.close()
    first = min(arrivals.values())
    seconds = max(watcher.seen.values()) - first
    latency = percentiles([watcher.seen[n] - arrivals[n] for n in arrivals])
    return {"photos": len(photos), "seconds": round(seconds, 2), "photos_per_s": round(len(photos) / seconds, 1),
            "latency_in_burst": latency, "watcher_startup_s": round(watcher.startup_s, 1),
            "options": " ".join(extra)}


def line_case(env, work, name, photos, rate: float, marker: bool, *extra) -> dict:
    incoming, done, staging = fresh_folders(work, name)
    watcher = Watcher(env, incoming, done, *extra)
    try:
        arrivals, started = {}, time.perf_counter()
        for index, photo in enumerate(photos):
            time.sleep(max(0.0, started + index / rate - time.perf_counter()))
            arrivals[photo.name] = arrive(photo, incoming, staging, marker)
        watcher.wait_for(len(photos))
    finally:
        watcher.close()
    return {"photos": len(photos), "rate_per_s": rate, "ready_marker": marker, "options": " ".join(extra),
            **percentiles([watcher.seen[n] - arrivals[n] for n in arrivals])}


def predict_case(env, run: RunDir, photos: list[Path]) -> dict:
    """`predict` on the same files: wall time with start-up, and photos per second once the first result is out."""
    command = [sys.executable, "-m", "defect_model", "predict", "--run", str(run.path), *map(str, photos)]
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               text=True)
    stamps = [time.perf_counter() for _ in process.stdout]
    process.wait()
    wall = time.perf_counter() - started
    if len(stamps) != len(photos):
        raise RuntimeError(f"predict printed {len(stamps)} results for {len(photos)} photos")
    steady = (len(stamps) - 1) / (stamps[-1] - stamps[0])
    return {"photos": len(photos), "wall_s_with_startup": round(wall, 1), "startup_s": round(stamps[0] - started, 1),
            "photos_per_s": round(steady, 1), "photos_per_s_with_startup": round(len(photos) / wall, 1)}


# -- report --------------------------------------------------------------------------------------------
def machine() -> dict:
    import torch

    from defect_model.workflows.inspection import inference_threads

    return {"cpu_cores": os.cpu_count(), "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
            "python": platform.python_version(), "watcher_default_threads": inference_threads(),
            "load_average_1_5_15": [round(v, 2) for v in os.getloadavg()]}


def markdown(result: dict) -> str:
    m, default, full, pred = result["machine"], result["burst"], result["burst_all_cores"], result["predict"]
    settle, marker = result["line_settle"], result["line_ready_marker"]
    return f"""# Hot folder: throughput and latency

Command: `{result["command"]}`. Model: {result["model"]}. Photos: {result["photos"]}.
Each case runs the real command (`python -m defect_model watch` / `predict`) in its own process; the model is
loaded before the clock starts, except where start-up is named.

| case | photos | photos/s | latency p50 | latency p95 |
|---|---|---|---|---|
| hot folder, burst of {default["photos"]}, default threads ({m["watcher_default_threads"]}) | {default["photos"]} | **{default["photos_per_s"]}** | {default["latency_in_burst"]["p50_s"]} s | {default["latency_in_burst"]["p95_s"]} s |
| hot folder, burst, all {m["cpu_cores"]} cores (`--threads {m["cpu_cores"]}`) | {full["photos"]} | {full["photos_per_s"]} | {full["latency_in_burst"]["p50_s"]} s | {full["latency_in_burst"]["p95_s"]} s |
| `predict` on the same files (all cores, one photo at a time, no heatmap/log/move) | {pred["photos"]} | {pred["photos_per_s"]} | | |
| hot folder, line camera at {settle["rate_per_s"]:g}/s, settle 1 s | {settle["photos"]} | | **{settle["p50_s"]} s** | **{settle["p95_s"]} s** |
| hot folder, line camera at {marker["rate_per_s"]:g}/s, `.ready` marker | {marker["photos"]} | | {marker["p50_s"]} s | {marker["p95_s"]} s |

Latency is from a photo's arrival (its rename into the watched folder) to its line in the results CSV; in a
burst it includes the wait behind the photos before it. The settle time (a file counts as complete once its
size and modification time stayed unchanged for 1 s) is most of a line photo's latency; a camera that writes
a `NAME.ready` marker skips it. `predict` with start-up took {pred["wall_s_with_startup"]} s
({pred["photos_per_s_with_startup"]} photos/s); the watcher starts in {default["watcher_startup_s"]} s (imports, model,
heatmap warm-up) once and then keeps the model loaded.

Per photo the hot folder does what the Inspect page does (checks, one forward pass with the Grad-CAM maps, a
stored copy, a hash-chained log row) plus an fsynced CSV line, a journal write per batch and two renames;
`predict` only classifies.

Machine: {m["cpu_cores"]} cores ({m["cpu"]}), torch {m["torch"]}, Python {m["python"]}; load average before
{result["load_before"]}, after {m["load_average_1_5_15"]} (above {m["cpu_cores"]}: other sessions' work shared the cores, so
these numbers are pessimistic).
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", help="use this trained run instead of training the demo model")
    parser.add_argument("--epochs", type=int, default=3, help="epochs to train the demo network (default 3)")
    parser.add_argument("--photos", type=int, default=1000, help="photos in the burst (default 1000)")
    parser.add_argument("--line-photos", type=int, default=60, help="photos in each line-camera case (default 60)")
    parser.add_argument("--rate", type=float, default=4.0, help="line camera photos per second (default 4)")
    parser.add_argument("--out", default=str(ROOT / "bench/results/watch"))
    args = parser.parse_args()
    load_before = [round(v, 2) for v in os.getloadavg()]
    work = Path(tempfile.mkdtemp(prefix="bench-watch-"))
    try:
        env = dict(os.environ, DEFECT_RUNS_DIR=str(work / "runs"), DEFECT_DB=str(work / "db" / "inspections.sqlite"))
        os.environ.update(DEFECT_DB=env["DEFECT_DB"])  # activation's audit record goes there too
        if args.run:
            run, model_note = RunDir(Path(args.run).resolve()), f"run {Path(args.run).name}"
        else:
            run, model_note = demo_run(work, args.epochs)
        activate_in(run, work / "runs")
        photos = burst_photos(work / "photos", args.photos)
        cores = str(os.cpu_count())
        result = {"command": " ".join([".venv/bin/python bench/watch.py", *sys.argv[1:]]), "model": model_note,
                  "photos": f"{len(photos)} synthetic demo photos (128 px PNG)", "load_before": load_before}
        result["burst"] = burst_case(env, work, "burst", photos)
        result["burst_all_cores"] = burst_case(env, work, "burst-all", photos, "--threads", cores)
        result["predict"] = predict_case(env, run, photos)
        line = photos[:args.line_photos]
        result["line_settle"] = line_case(env, work, "line", line, args.rate, False)
        result["line_ready_marker"] = line_case(env, work, "line-marker", line, args.rate, True)
        result["machine"] = machine()
        result.update(photos_per_s=result["burst"]["photos_per_s"], p50_s=result["line_settle"]["p50_s"],
                      p95_s=result["line_settle"]["p95_s"], predict_photos_per_s=result["predict"]["photos_per_s"])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(result))
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
