"""Inspect page latency: from pressing upload to seeing the first verdict with its heatmap, for 1 and 32 photos.

    .venv/bin/python bench/inspect_latency.py [--repeats 3] [--photos ../shared/datasets/neu-cls]

Drives the real page: `streamlit run app.py` on 127.0.0.1 and headless Debian Chromium through Playwright,
one fresh browser session per measurement. The clock starts when the files are handed to the page's file
input (the moment an inspector drops them) and stops when the first result card shows its heatmap image,
then when every photo has a verdict. The model is cached by then (as for every inspection after the
first page load); the page load with the model load is reported apart. For comparison, the page's own
code path (defect_model.workflows.inspection.inspect_batch, no browser) is timed on the same photos.

Two models: the demo model's recipe (ResNet18, 96 px) and the reference recipe (ResNet50, 224 px), with
untrained weights: latency does not depend on what the weights are.

Writes bench/results/inspect-latency.json and .md. Not part of CI (a few minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from browser_support import CHROMIUM, CHROMIUM_ARGS, sign_in, streamlit_server  # noqa: E402
from defect_model.common.config import TrainConfig  # noqa: E402
from defect_model.workflows.lifecycle import set_active  # noqa: E402
from defect_model.runs.folders import RunDir  # noqa: E402
from report import write_report  # noqa: E402

MODELS = {  # name: (label, recipe)
    "demo": ("demo recipe (resnet18, 96 px)", dict(backbone="resnet18", image_size=96)),
    "reference": ("reference recipe (resnet50, 224 px)", dict(backbone="resnet50", image_size=224)),
}
UPLOADER = '[data-testid="stFileUploaderDropzoneInput"]'
CARDS = '[class*="st-key-inspect-result-"]'
SESSIONS = iter(range(1_000_000))  # a new inspector account per browser session
ALL_DONE = """n => {
    if (document.querySelector('[data-testid="stProgress"]')) return false;
    const values = [...document.querySelectorAll('[data-testid="stMetricValue"]')].map(e => parseInt(e.innerText));
    return values.length === 4 && values.reduce((a, b) => a + b, 0) === n;
}"""


def make_run(root: Path, name: str, backbone: str, image_size: int, classes: list[str]) -> RunDir:
    """A run with an untrained checkpoint of the given recipe, made active under `root`."""
    import torch

    from defect_model.train.checkpoint import save_checkpoint
    from defect_model.train.model import build_model

    run = RunDir(root / name)
    run.path.mkdir(parents=True)
    cfg = TrainConfig(data_dir="(benchmark)", backbone=backbone, image_size=image_size)
    cfg.to_yaml(run.config)
    torch.manual_seed(0)
    model = build_model(backbone, len(classes), cfg.dropout)
    meta = {"classes": classes, "config": cfg.to_dict(), "preprocessing": cfg.preprocessing(), "run_id": name}
    save_checkpoint(run.checkpoint, model.state_dict(), meta)
    run.write_status("done")
    set_active(run, by="bench", override_reason="latency benchmark: untrained weights, accuracy is irrelevant",
               root=root)
    return run


def photo_files(source: Path | None, count: int, out: Path) -> tuple[list[Path], str]:
    """`count` photo files: NEU-CLS photos (200x200 JPEG) when there, else synthetic 200 px PNGs."""
    out.mkdir(parents=True, exist_ok=True)
    if source is not None and source.is_dir():
        found = sorted(p for p in source.rglob("*.jpg"))[::37][:count]
        if len(found) == count:
            return found, f"NEU-CLS photos from {source} (200x200 JPEG)"
    import numpy as np

    from defect_model.photos.synthetic import CLASSES, make_sample

    rng = np.random.default_rng(0)
    files = []
    for i in range(count):
        path = out / f"photo_{i:03d}.png"
        make_sample(CLASSES[i % len(CLASSES)], rng, 200)[0].save(path)
        files.append(path)
    return files, "synthetic demo photos (200x200 PNG)"


def upload_and_time(page, files: list[Path]) -> tuple[float, float]:
    """Seconds from handing `files` to the file input to the first heatmap card, and to the last verdict."""
    started = time.perf_counter()
    page.locator(UPLOADER).set_input_files([str(f) for f in files])
    page.wait_for_selector(".st-key-inspect-result-0 img", state="visible")
    first = time.perf_counter() - started
    page.wait_for_function(ALL_DONE, arg=len(files), polling=50)
    return first, time.perf_counter() - started


def browser_latency(browser, url: str, files: list[Path], timeout_ms: int = 180_000) -> dict:
    """One fresh browser session: open the page, upload `files` (the session's first upload, which also
    loads the page's result components), clear, and upload them again (as every later upload)."""
    page = browser.new_page(viewport={"width": 1400, "height": 1600})
    page.set_default_timeout(timeout_ms)
    try:
        started = time.perf_counter()
        page.goto(url)
        sign_in(page, None, "inspector", f"inspector{next(SESSIONS)}")  # an inspector lands on Inspect
        page.wait_for_selector(UPLOADER, state="attached")
        page.wait_for_selector('[data-testid="stStatusWidget"]', state="detached")
        page_ready = time.perf_counter() - started  # sign-in included
        time.sleep(0.5)
        first, last = upload_and_time(page, files)
        page.wait_for_selector('[data-testid="stStatusWidget"]', state="detached")
        time.sleep(0.5)
        page.get_by_role("button", name="Clear results").first.click()
        page.wait_for_selector(CARDS, state="detached")
        page.wait_for_selector('[data-testid="stStatusWidget"]', state="detached")
        time.sleep(0.5)
        again_first, again_last = upload_and_time(page, files)
        return {"page_ready_s": page_ready, "first_verdict_s": first, "all_verdicts_s": last,
                "next_first_verdict_s": again_first, "next_all_verdicts_s": again_last}
    finally:
        page.close()


def code_path_latency(checkpoint: Path, files: list[Path]) -> dict:
    """The same work without Streamlit or the browser: the queue's first batch (1 photo) and the whole set."""
    from defect_model.serve.inference import Predictor
    from defect_model.workflows.inspection import InspectionSettings, inference_threads
    from defect_model.workflows.inspection_queue import InspectionQueue

    predictor = Predictor.from_checkpoint(checkpoint)
    data = [(f.name, f.read_bytes()) for f in files]
    settings = InspectionSettings(run_id="bench")
    warm = InspectionQueue(threads=inference_threads())
    warm.submit(predictor, data[:1], settings)  # warm up, as the page does on load
    warm.wait()
    times = {}
    queue = InspectionQueue(on_batch=lambda results: times.setdefault("first", time.perf_counter()),
                            threads=inference_threads())
    started = time.perf_counter()
    queue.submit(predictor, data, settings)
    queue.wait()
    return {"first_verdict_s": times["first"] - started, "all_verdicts_s": time.perf_counter() - started}


def machine() -> dict:
    import torch

    from defect_model.workflows.inspection import inference_threads

    return {"cpu_cores": os.cpu_count(), "cpu": platform.processor() or platform.machine(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "browser": "Debian Chromium (headless) via Playwright",
            "inference_threads": inference_threads()}


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="fresh browser sessions per case (default 3)")
    parser.add_argument("--photos", default=str(ROOT.parent / "shared/datasets/neu-cls"))
    parser.add_argument("--counts", default="1,32", help="batch sizes to time (default 1,32)")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of: {', '.join(MODELS)}")
    parser.add_argument("--out", default=str(ROOT / "bench/results/inspect-latency"))
    args = parser.parse_args()
    counts = [int(c) for c in args.counts.split(",")]
    from playwright.sync_api import sync_playwright

    classes = ["crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale", "scratches"]
    load_before = os.getloadavg()
    cases = []
    with tempfile.TemporaryDirectory(prefix="inspect-latency-") as tmp:
        tmp = Path(tmp)
        files, photo_source = photo_files(Path(args.photos), max(counts), tmp / "photos")
        for name in args.models.split(","):
            label, recipe = MODELS[name.strip()]
            runs = tmp / name.strip() / "runs"
            run = make_run(runs, f"bench-{recipe['backbone']}", recipe["backbone"], recipe["image_size"], classes)
            os.environ["DEFECT_DB"] = str(runs.parent / "inspections.sqlite")
            with streamlit_server(runs, runs.parent / "data", timeout=180) as url, sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
                try:
                    cold = browser_latency(browser, url, files[:1])  # loads the model; reported apart
                    for count in counts:
                        samples = [browser_latency(browser, url, files[:count]) for _ in range(args.repeats)]
                        code = [code_path_latency(run.checkpoint, files[:count]) for _ in range(args.repeats)]
                        cases.append({
                            "model": label, "photos": count, "samples": samples, "code_path_samples": code,
                            **{key: median([s[key] for s in samples]) for key in (
                                "first_verdict_s", "all_verdicts_s", "next_first_verdict_s", "next_all_verdicts_s")},
                            "code_first_verdict_s": median([c["first_verdict_s"] for c in code]),
                            "code_all_verdicts_s": median([c["all_verdicts_s"] for c in code]),
                            "page_ready_s": median([s["page_ready_s"] for s in samples]),
                            "cold_page_ready_s": cold["page_ready_s"],
                        })
                        print(json.dumps({k: v for k, v in cases[-1].items() if "samples" not in k}), flush=True)
                finally:
                    browser.close()
    result = {"what": "upload to first verdict with heatmap (and to the last verdict) on the Inspect page",
              "photos": photo_source, "repeats": args.repeats, "cases": cases, "machine": machine(),
              "load_average_before": [round(v, 2) for v in load_before],
              "load_average_after": [round(v, 2) for v in os.getloadavg()]}
    write_report(result, args.out, write_markdown)


def write_markdown(result: dict, path: Path) -> None:
    m = result["machine"]
    lines = [
        "# Inspect page latency",
        "",
        "From handing the photos to the page's file input (an inspector dropping them) to the first result card",
        "showing its verdict and Grad-CAM heatmap, and to the last verdict. Real page: `streamlit run app.py` on",
        f"127.0.0.1, {m['browser']}, a fresh browser session each time, median of {result['repeats']}.",
        "A session's first upload also downloads the page's result components (image list, chart, buttons)",
        "into the browser; the next column is a later upload in the same session (after Clear results).",
        "The model is already loaded (it loads with the page); the \"code path\" columns time the same inspection",
        "(`InspectionQueue`, first batch of 1 photo, then batches of 8) without Streamlit or a browser.",
        f"Photos: {result['photos']}. Command: `.venv/bin/python bench/inspect_latency.py`.",
        "",
        "| model | photos | first verdict + heatmap | all verdicts | same, a later upload in the session "
        "| code path: first | code path: all |",
        "|---|---|---|---|---|---|---|",
    ]
    for case in result["cases"]:
        lines.append(f"| {case['model']} | {case['photos']} | **{case['first_verdict_s']:.2f} s** | "
                     f"{case['all_verdicts_s']:.2f} s | **{case['next_first_verdict_s']:.2f} s**, all "
                     f"{case['next_all_verdicts_s']:.2f} s | {case['code_first_verdict_s']:.2f} s | "
                     f"{case['code_all_verdicts_s']:.2f} s |")
    colds = {c["model"]: c["cold_page_ready_s"] for c in result["cases"]}
    lines += [
        "",
        "Opening the page the first time after the server starts (imports torch, loads and warms up the model): "
        + ", ".join(f"{model} {seconds:.1f} s" for model, seconds in colds.items()) + ".",
        "",
        f"Machine: {m['cpu_cores']} cores ({m['cpu']}), torch {m['torch']}; inspection uses "
        f"{m['inference_threads']} torch thread(s) (`DEFECT_INFERENCE_THREADS`, default half the cores), "
        f"Python {m['python']}. Load average before {result['load_average_before']}, after "
        f"{result['load_average_after']}: above 2, other work (a training benchmark, other sessions' tests) "
        "shared the two cores with the server and the browser, so these times are pessimistic.",
    ]
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
