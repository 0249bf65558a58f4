"""Speed on this CPU box: each product path timed beside its plain baseline in the same run.

    .venv/bin/python bench/perf.py [--only SECTION ...] [--repeats 3] [--data ../shared/datasets/neu-cls]

Sections (all by default; with --only, the other sections' earlier results are kept):
  matmul     4096x4096 matmul GFLOP/s, fp32 and bf16: the practical ceiling of these cores
  train      reference recipe steps (resnet50, 224, batch 32, AdamW), alternating subprocesses:
             plain = torchvision ImageFolder + DataLoader decoding JPEGs every step, eager fp32 NCHW,
             glibc malloc; product = the engine's path (photos decoded once, channels_last, bf16 mixed
             precision where native, tcmalloc preloaded as the job launcher does); compiled = product
             + torch.compile, whose compile time is charged to a 5-epoch run
  inspect    32 photos and 1 photo, decode + preprocess + predict: the default Predictor (ONNX Runtime)
             vs eager fp32 NCHW torch, alternating in one process
  heatmap    one photo, prediction + Grad-CAM on the default path vs prediction alone
  memory     peak RSS of a 500-photo inspection batch through the page's queue (subprocess)
  dashboard  `streamlit run` to an interactive Inspect page in Chromium, cold (new server) and warm
  reference  reads bench/results/reproduce-neu.json (the 5-epoch CLI run, `bench/reproduce_neu.py`)
  backbones  per backbone (resnet18 beside the EfficientNet-Lites), at the size the product preset trains it
             (224 px, the Lites' native size at most): training images/s in the precision a run picks here,
             one-photo latency, a 32-photo batch and the heatmap's cost, all on the default (ONNX Runtime) path

Writes bench/results/perf.json and perf.md. Not part of CI (about 10 minutes on 2 cores; run it on a
quiet machine: every figure is a ratio of two timings taken side by side, but both need the cores).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "tests")]

from defect_model.runs.jobs import training_env  # noqa: E402
from reproduce_neu import machine  # noqa: E402

RESULTS = ROOT / "bench/results/perf"
NEU = ROOT.parent / "shared/datasets/neu-cls"
CLASSES = ["crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale", "scratches"]
SECTIONS = ("matmul", "train", "inspect", "heatmap", "memory", "dashboard", "reference", "backbones")
BACKBONES = ("resnet18", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
TRAIN_IMAGES, VAL_IMAGES, EPOCHS = 1440, 360, 5  # NEU-CLS split.csv


def summary(values: list[float]) -> dict:
    """Median and spread (min, max) of repeated timings."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values),
            "samples": [round(v, 5) for v in values]}


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


def dataset_dir(data: Path) -> tuple[Path, str]:
    """NEU-CLS when present, else a synthetic demo set of 200 px photos written to a temp folder."""
    if data.is_dir():
        return data, f"NEU-CLS ({data})"
    from defect_model.photos.synthetic import generate

    out = Path(tempfile.mkdtemp(prefix="perf-data-"))
    generate(out, per_class=60, size=200, seed=0)
    return out, "synthetic demo photos (NEU-CLS absent)"


# -- matmul ceiling -------------------------------------------------------------------------------------
def matmul_section(repeats: int) -> dict:
    import torch

    out = {}
    for dtype in (torch.float32, torch.bfloat16):
        a, b = torch.randn(4096, 4096, dtype=dtype), torch.randn(4096, 4096, dtype=dtype)
        a @ b  # warm-up
        times = []
        for _ in range(max(3, repeats)):
            started = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - started)
        out[str(dtype).removeprefix("torch.")] = 2 * 4096**3 / statistics.median(times) / 1e9
    return {"gflops_fp32": out["float32"], "gflops_bf16": out["bfloat16"]}


def flops_per_image(train: bool, size: int = 224) -> float:
    """FLOPs of one resnet50 image, forward only or forward + backward, counted by torch."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from defect_model.train.model import build_model

    model = build_model("resnet50", 6)
    with FlopCounterMode(display=False) as counter:
        out = model(torch.randn(2, 3, size, size))
        if train:
            out.sum().backward()
    return counter.get_total_flops() / 2


# -- training throughput (children) ---------------------------------------------------------------------
def child_train(variant: str, data: Path, warmup: int, steps: int) -> dict:
    """Runs in its own process (LD_PRELOAD differs per variant). Seconds per step include loading the batch."""
    import torch
    import torch.nn.functional as F

    from defect_model.common.config import IMAGENET_MEAN, IMAGENET_STD
    from defect_model.train.model import build_model

    torch.manual_seed(0)
    setup_started = time.perf_counter()
    if variant == "plain":
        from torchvision import datasets, transforms

        transform = transforms.Compose([transforms.Resize((224, 224)), transforms.ToTensor(),
                                        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
        dataset = datasets.ImageFolder(str(data), transform)
        loader = iter(torch.utils.data.DataLoader(dataset, batch_size=32, shuffle=True, num_workers=0,
                                                  drop_last=True))
        model = build_model("resnet50", len(dataset.classes), 0.2).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        setup = time.perf_counter() - setup_started
        times = []
        for _ in range(warmup + steps):
            started = time.perf_counter()
            images, labels = next(loader)
            loss = F.cross_entropy(model(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            times.append(time.perf_counter() - started)
        return {"variant": variant, "setup_s": setup, "step_s": times[warmup:], "first_steps_s": times[:warmup],
                "peak_rss_gib": peak_rss_gib(), "precision": "fp32", "layout": "NCHW"}

    from defect_model.common.config import TrainConfig
    from defect_model.train.data import DecodedDataset, decode_images, make_loader, scan_image_folder
    from defect_model.train.engine import train_one_epoch
    from defect_model.train.hardware import resolve_precision

    cfg = TrainConfig(data_dir=str(data))
    precision, _ = resolve_precision(cfg.precision, torch.device("cpu"))
    cfg.precision = precision
    scan = scan_image_folder(data)
    decoded = decode_images(scan.root, scan.items, scan.classes, cfg.image_size, cfg.resize_mode,
                            torch.get_num_threads())
    model = build_model(cfg.backbone, len(scan.classes), cfg.dropout).to(memory_format=torch.channels_last)
    if variant == "compiled":
        model = torch.compile(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    loader = make_loader(DecodedDataset(decoded), batch_size=cfg.batch_size, train=True, seed=cfg.seed, epoch=1,
                         epoch_images=cfg.batch_size * (warmup + steps))
    setup = time.perf_counter() - setup_started
    stamps = [time.perf_counter()]

    def emit(kind, **fields):
        if kind == "step":
            stamps.append(time.perf_counter())

    train_one_epoch(model, optimizer, None, loader, cfg, epoch=1, emit=emit, should_stop=lambda: False)
    times = [b - a for a, b in zip(stamps, stamps[1:])]
    return {"variant": variant, "setup_s": setup, "decode_photos": len(decoded.paths), "step_s": times[warmup:],
            "first_steps_s": times[:warmup], "peak_rss_gib": peak_rss_gib(), "precision": precision,
            "layout": "channels_last"}


def run_child(args: list[str], env: dict) -> dict:
    output = subprocess.run([sys.executable, __file__, "--child", *args], env=env, cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def train_section(data: Path, repeats: int, compiled: bool) -> dict:
    plain_env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    variants = {"plain": plain_env, "product": training_env()}
    if compiled:
        variants["compiled"] = training_env()
    samples: dict[str, list[dict]] = {name: [] for name in variants}
    for repeat in range(repeats):
        for name, env in variants.items():  # alternating, so drift in the machine hits both alike
            if name == "compiled" and repeat:
                continue  # compiling costs minutes; one sample says whether it can pay off
            warmup = 3 if name == "compiled" else 2
            result = run_child(["train", name, str(data), str(warmup), "4"], env)
            samples[name].append(result)
            print(f"  train {name}: {32 / statistics.median(result['step_s']):.2f} images/s", flush=True)
    out = {"samples": samples}
    for name, runs in samples.items():
        steps = [s for run in runs for s in run["step_s"]]
        out[name] = {"images_per_s": 32 / statistics.median(steps), "step_s": summary(steps),
                     "setup_s": statistics.median(r["setup_s"] for r in runs),
                     "peak_rss_gib": max(r["peak_rss_gib"] for r in runs),
                     "precision": runs[0]["precision"], "layout": runs[0]["layout"]}
    out["speedup"] = out["product"]["images_per_s"] / out["plain"]["images_per_s"]
    if compiled:
        run = samples["compiled"][0]
        compile_s = max(0.0, sum(run["first_steps_s"]) - len(run["first_steps_s"]) * statistics.median(run["step_s"]))
        steps = EPOCHS * TRAIN_IMAGES // 32
        out["compiled"]["compile_s"] = compile_s
        out["compiled"]["five_epoch_train_s"] = compile_s + steps * 32 / out["compiled"]["images_per_s"]
        out["product"]["five_epoch_train_s"] = steps * 32 / out["product"]["images_per_s"]
        out["compile_wins"] = out["compiled"]["five_epoch_train_s"] < out["product"]["five_epoch_train_s"]
    return out


# -- inspection and heatmaps (in this process, alternating) ----------------------------------------------
def photo_paths(data: Path, count: int) -> list[Path]:
    files = sorted(p for p in data.rglob("*") if p.suffix.lower() in (".jpg", ".png", ".bmp"))
    return files[::max(1, len(files) // count)][:count]


def predictors(checkpoint: Path):
    """The default Predictor and the eager fp32 NCHW torch baseline of the same checkpoint."""
    import torch

    from defect_model.train.checkpoint import load_checkpoint
    from defect_model.serve.inference import Predictor
    from defect_model.train.model import build_model

    torch.set_num_threads(os.cpu_count() or 1)
    default = Predictor.from_checkpoint(checkpoint)
    payload = load_checkpoint(checkpoint)
    config = payload["meta"]["config"]
    model = build_model(config["backbone"], len(default.classes), config["dropout"])
    model.load_state_dict(payload["model"])
    return default, Predictor(model, default.classes, default.preprocessing, channels_last=False)


def alternate(cases: dict, repeats: int, settle_s: float = 0.05) -> dict:
    """Time each callable `repeats` times, round-robin, after one warm-up each. A short pause before each
    call lets the previous one's thread pool go idle (torch's OpenMP threads spin for a while after work),
    as it is when an inspector uploads a photo."""
    for run in cases.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, run in cases.items():
            time.sleep(settle_s)
            started = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - started)
    return {name: summary(values) for name, values in times.items()}


def inspect_section(checkpoint: Path, photos: list[Path], repeats: int) -> dict:
    import numpy as np

    from defect_model.serve.inference import Predictor

    started = time.perf_counter()
    default, eager = predictors(checkpoint)  # the first load of a new checkpoint exports and checks its graph
    first_load = time.perf_counter() - started
    started = time.perf_counter()
    Predictor.from_checkpoint(checkpoint)
    cached_load = time.perf_counter() - started
    batch = photos[:32]
    agree = float(np.abs(default.predict(batch) - eager.predict(batch)).max())
    batch_times = alternate({"default": lambda: default.predict(batch), "eager": lambda: eager.predict(batch)},
                            repeats)
    single_times = alternate({"default": lambda: default.predict(batch[0]),
                              "eager": lambda: eager.predict(batch[0])}, repeats * 5)
    return {
        "backend": default.backend, "backend_note": default.backend_note,
        "first_load_s": first_load, "cached_load_s": cached_load,
        "max_abs_probability_diff_vs_eager": agree,
        "batch_photos": len(batch),
        "batch_s": batch_times,
        "batch_photos_per_s": {k: len(batch) / v["median"] for k, v in batch_times.items()},
        "batch_speedup": batch_times["eager"]["median"] / batch_times["default"]["median"],
        "single_s": single_times,
        "single_speedup": single_times["eager"]["median"] / single_times["default"]["median"],
    }


def heatmap_section(checkpoint: Path, photos: list[Path], repeats: int) -> dict:
    from defect_model.serve.explain import explain, library_cam

    default, _ = predictors(checkpoint)
    photo = photos[0]
    times = alternate({
        "predict": lambda: default.predict(photo),
        "predict_and_heatmap": lambda: explain(default, photo),
        "pytorch_grad_cam": lambda: library_cam(default, [default.prepare(photo)]),
    }, repeats * 5)
    return {"backend": default.backend, "times_s": times,
            "heatmap_cost_ratio": times["predict_and_heatmap"]["median"] / times["predict"]["median"],
            "library_cost_ratio": times["pytorch_grad_cam"]["median"] / times["predict"]["median"]}


def backbones_section(runs: Path, photos: list[Path], repeats: int) -> dict:
    """Each backbone's training and inspection speed, measured one after the other in this process."""
    from inspect_latency import make_run
    from train_throughput import images_per_s

    from defect_model.common.backbones import backbone as registered

    found = {}
    for name in BACKBONES:
        size = min(224, registered(name).native_size)
        run = make_run(runs, f"bench-{name}", name, size, CLASSES)
        default, _ = predictors(run.checkpoint)
        batch = photos[:32]
        from defect_model.serve.explain import explain

        times = alternate({"one_photo": lambda: default.predict(batch[0]),
                           "batch_32": lambda: default.predict(batch),
                           "one_photo_with_heatmap": lambda: explain(default, batch[0])}, repeats * 3)
        found[name] = {
            "image_size": size, "backend": default.backend,
            "train_images_per_s": images_per_s(name, size),
            "one_photo_s": times["one_photo"]["median"],
            "batch_32_s": times["batch_32"]["median"],
            "batch_32_photos_per_s": len(batch) / times["batch_32"]["median"],
            "heatmap_cost_ratio": times["one_photo_with_heatmap"]["median"] / times["one_photo"]["median"],
            "times_s": times,
        }
        print(f"  {name}: {found[name]['train_images_per_s']:.1f} training images/s, one photo "
              f"{found[name]['one_photo_s'] * 1000:.0f} ms, 32 photos {found[name]['batch_32_s']:.2f} s", flush=True)
    return found


def child_inspect_rss(checkpoint: Path, data: Path, count: int) -> dict:
    """A batch through the Inspect page's own queue (heatmaps, inspection log), in a fresh process."""
    from defect_model.serve.inference import Predictor
    from defect_model.workflows.inspection import InspectionSettings, inference_threads
    from defect_model.workflows.inspection_queue import InspectionQueue

    files = photo_paths(data, count)
    predictor = Predictor.from_checkpoint(checkpoint)
    uploads = [(f.name, f.read_bytes()) for f in files]
    before = peak_rss_gib()
    queue = InspectionQueue(threads=inference_threads())
    started = time.perf_counter()
    queue.submit(predictor, uploads, InspectionSettings(run_id="bench"))
    queue.wait()
    return {"photos": len(files), "seconds": time.perf_counter() - started, "peak_rss_gib": peak_rss_gib(),
            "rss_before_batch_gib": before}


# -- dashboard start ------------------------------------------------------------------------------------
def dashboard_section(runs: Path, repeats: int) -> dict:
    from playwright.sync_api import sync_playwright

    from browser_support import CHROMIUM, CHROMIUM_ARGS, sign_in, streamlit_server
    from inspect_latency import UPLOADER

    opened = iter(range(10_000))

    def open_inspect(browser, url: str) -> float:
        page = browser.new_page()
        page.set_default_timeout(120_000)
        try:
            started = time.perf_counter()
            page.goto(url)
            sign_in(page, None, "inspector", f"inspector{next(opened)}")  # an inspector lands on Inspect
            page.wait_for_selector(UPLOADER, state="attached")
            page.wait_for_selector('[data-testid="stStatusWidget"]', state="detached")
            return time.perf_counter() - started
        finally:
            page.close()

    cold, warm = [], []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            for _ in range(repeats):
                started = time.perf_counter()
                with streamlit_server(runs, runs.parent / "data", timeout=180) as url:
                    server_up = time.perf_counter() - started
                    cold.append(server_up + open_inspect(browser, url))
                    warm.append(open_inspect(browser, url))
        finally:
            browser.close()
    return {"cold_s": summary(cold), "warm_s": summary(warm),
            "what": "cold: `streamlit run` started to the Inspect page's uploader shown and the page idle (server "
                    "start, the sign-in form, an inspector signing in, the page run, model load); warm: the same "
                    "from a new browser tab on the running server"}


# -- the whole reference run ----------------------------------------------------------------------------
def reference_section(train: dict | None, inspect: dict | None) -> dict:
    path = ROOT / "bench/results/reproduce-neu.json"
    if not path.is_file():
        return {"missing": f"{path} not found: run bench/reproduce_neu.py first"}
    run = json.loads(path.read_text())
    # Peak RSS of the whole CLI training process, from whichever reference runs recorded it (seed reruns too).
    rss = [json.loads(p.read_text()).get("peak_rss_gib") for p in sorted(path.parent.glob("reproduce-neu*.json"))]
    out = {"minutes": run["total_seconds"] / 60, "val_accuracy": run["epochs"][-1]["val_accuracy"],
           "peak_rss_gib": max((r for r in rss if r), default=None), "source": "bench/results/reproduce-neu*.json",
           "train_images_per_s": run.get("train_images_per_s")}
    if train and inspect:
        plain_train = EPOCHS * TRAIN_IMAGES / train["plain"]["images_per_s"]
        plain_val = EPOCHS * VAL_IMAGES / inspect["batch_photos_per_s"]["eager"]
        out["plain_estimate_minutes"] = (plain_train + plain_val) / 60
    return out


def headline(result: dict) -> dict:
    """The keys the issue asks for, from whichever sections were measured."""
    get = lambda *keys: _dig(result, keys)  # noqa: E731
    train_gflops = None
    if get("train", "product", "images_per_s") and get("matmul", "gflops_fp32"):
        train_gflops = result["train_flops_per_image"] * result["train"]["product"]["images_per_s"] / 1e9
    return {
        "train_speedup": get("train", "speedup"),
        "train_gflops": train_gflops,
        "matmul_ceiling_fraction": train_gflops / result["matmul"]["gflops_fp32"] if train_gflops else None,
        "matmul_bf16_ceiling_fraction": train_gflops / result["matmul"]["gflops_bf16"] if train_gflops else None,
        "reference_run_minutes": get("reference", "minutes"),
        "reference_run_val_accuracy": get("reference", "val_accuracy"),
        "inspect_batch_speedup": get("inspect", "batch_speedup"),
        "single_photo_latency_speedup": get("inspect", "single_speedup"),
        "heatmap_cost_ratio": get("heatmap", "heatmap_cost_ratio"),
        "train_peak_rss_gib": get("reference", "peak_rss_gib") or get("train", "product", "peak_rss_gib"),
        "inspect_500_peak_rss_gib": get("memory", "peak_rss_gib"),
        "dashboard_cold_start_s": get("dashboard", "cold_s", "median"),
        "dashboard_warm_start_s": get("dashboard", "warm_s", "median"),
    }


def _dig(data, keys):
    for key in keys:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        kind, *rest = sys.argv[2:]
        if kind == "train":
            variant, data, warmup, steps = rest
            print(json.dumps(child_train(variant, Path(data), int(warmup), int(steps))))
        else:
            checkpoint, data, count = rest
            print(json.dumps(child_inspect_rss(Path(checkpoint), Path(data), int(count))))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=SECTIONS, help="measure only these sections")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data", default=str(NEU))
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile training trial")
    args = parser.parse_args()
    sections = args.only or list(SECTIONS)
    json_path = RESULTS.with_suffix(".json")
    result = json.loads(json_path.read_text()) if json_path.is_file() and args.only else {}
    data, data_note = dataset_dir(Path(args.data))
    result.update(machine=machine(), data=data_note, train_flops_per_image=flops_per_image(train=True),
                  inference_flops_per_image=flops_per_image(train=False))
    result.setdefault("commands", {})["perf"] = "bench/perf.py " + " ".join(sys.argv[1:])

    from inspect_latency import make_run

    with tempfile.TemporaryDirectory(prefix="perf-") as tmp:
        runs = Path(tmp) / "runs"
        os.environ["DEFECT_DB"] = str(Path(tmp) / "inspections.sqlite")
        run = make_run(runs, "bench-resnet50", "resnet50", 224, CLASSES)  # untrained: speed only
        photos = photo_paths(data, 32)
        for section in sections:
            print(f"{section} ...", flush=True)
            started = time.perf_counter()
            if section == "matmul":
                result["matmul"] = matmul_section(args.repeats)
            elif section == "train":
                result["train"] = train_section(data, args.repeats, compiled=not args.no_compile)
            elif section == "inspect":
                result["inspect"] = inspect_section(run.checkpoint, photos, args.repeats * 2)
            elif section == "heatmap":
                result["heatmap"] = heatmap_section(run.checkpoint, photos, args.repeats)
            elif section == "memory":
                result["memory"] = run_child(["inspect", str(run.checkpoint), str(data), "500"], dict(os.environ))
            elif section == "dashboard":
                result["dashboard"] = dashboard_section(runs, args.repeats)
            elif section == "reference":
                result["reference"] = reference_section(result.get("train"), result.get("inspect"))
            elif section == "backbones":
                result["backbones"] = backbones_section(runs, photos, args.repeats)
            print(f"{section} done in {time.perf_counter() - started:.0f} s", flush=True)
            result.setdefault("measured_at", {})[section] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
            result["headline"] = headline(result)
            json_path.parent.mkdir(parents=True, exist_ok=True)
            json_path.write_text(json.dumps(result, indent=2) + "\n")  # partial results survive an interruption
    result["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    json_path.write_text(json.dumps({**result, **result["headline"]}, indent=2) + "\n")  # the headline wins over keys kept from an earlier run
    write_markdown(result, RESULTS.with_suffix(".md"))
    print(RESULTS.with_suffix(".md").read_text())


def write_markdown(result: dict, path: Path) -> None:
    h = result["headline"]
    fmt = lambda v, spec=".2f": "not measured" if v is None else format(v, spec)  # noqa: E731
    m = result["machine"]
    lines = [
        "# Speed on this CPU box (bench/perf.py)", "",
        f"Machine: {m['cpu_cores']} cores ({m['cpu']}), torch {m['torch']}, {m['torch_threads']} threads, "
        f"tcmalloc {'at ' + m['tcmalloc'] if m['tcmalloc'] else 'not installed'}; load average at start "
        f"{m['load_average_1_5_15']}, at end {result.get('load_average_after')}. Data: {result['data']}.",
        f"Last command: `.venv/bin/python {result['commands']['perf']}`; each section's time: "
        + ", ".join(f"{k} {v}" for k, v in result.get("measured_at", {}).items()) + ".", "",
        "| figure | product | baseline | ratio | target |", "|---|---|---|---|---|",
    ]
    train, inspect, heat = result.get("train"), result.get("inspect"), result.get("heatmap")
    if train:
        lines.append(f"| training images/s (resnet50, 224, batch 32) | {train['product']['images_per_s']:.2f} "
                     f"({train['product']['precision']}, {train['product']['layout']}, tcmalloc) | "
                     f"{train['plain']['images_per_s']:.2f} (ImageFolder, fp32 NCHW, glibc) | "
                     f"{h['train_speedup']:.2f}x | >= 2.0x |")
    ref = result.get("reference", {})
    if "minutes" in ref:
        lines.append(f"| 5-epoch reference run on NEU-CLS, end to end (CLI) | {ref['minutes']:.1f} min, val accuracy "
                     f"{ref['val_accuracy']:.3f} | {fmt(ref.get('plain_estimate_minutes'), '.1f')} min (estimate) | "
                     f"| <= 12 min, >= 0.979 |")
    if inspect:
        p = inspect["batch_photos_per_s"]
        lines.append(f"| inspect 32 photos, photos/s (decode + preprocess + predict) | {p['default']:.1f} "
                     f"({inspect['backend']}) | {p['eager']:.1f} (eager fp32 NCHW) | {h['inspect_batch_speedup']:.2f}x "
                     "| >= 1.8x |")
        s = inspect["single_s"]
        lines.append(f"| one photo, ms | {1000 * s['default']['median']:.0f} | {1000 * s['eager']['median']:.0f} | "
                     f"{h['single_photo_latency_speedup']:.2f}x | >= 1.6x |")
    if heat:
        t = heat["times_s"]
        lines.append(f"| prediction + Grad-CAM vs prediction alone, one photo, ms | "
                     f"{1000 * t['predict_and_heatmap']['median']:.0f} | {1000 * t['predict']['median']:.0f} | "
                     f"{heat['heatmap_cost_ratio']:.2f}x cost (pytorch-grad-cam: {heat['library_cost_ratio']:.2f}x, "
                     f"{1000 * t['pytorch_grad_cam']['median']:.0f} ms) | <= 1.2x |")
    if h.get("train_gflops"):
        lines.append(f"| training GFLOP/s vs 4096^2 matmul | {h['train_gflops']:.0f} | fp32 "
                     f"{result['matmul']['gflops_fp32']:.0f}, bf16 {result['matmul']['gflops_bf16']:.0f} | "
                     f"{h['matmul_ceiling_fraction']:.2f} of fp32, {h['matmul_bf16_ceiling_fraction']:.2f} of bf16 | |")
    lines.append(f"| peak RSS, training (whole 5-epoch CLI run) | {fmt(h['train_peak_rss_gib'])} GiB | | | <= 6 GiB |")
    lines.append(f"| peak RSS, 500-photo inspection batch | {fmt(h['inspect_500_peak_rss_gib'])} GiB | | | |")
    lines.append(f"| dashboard start to interactive Inspect page | cold {fmt(h['dashboard_cold_start_s'], '.1f')} s, "
                 f"warm {fmt(h['dashboard_warm_start_s'], '.1f')} s | | | |")
    if result.get("backbones"):
        lines += ["", "Per backbone, measured one after the other in one run (`--only backbones`), at the size the "
                  "product preset trains it; training in the precision a run picks here, inspection on the default "
                  "path:", "",
                  "| backbone | size | training images/s | one photo, ms | 32 photos, s | heatmap cost |",
                  "|---|---|---|---|---|---|"]
        for name, b in result["backbones"].items():
            lines.append(f"| {name} | {b['image_size']} | {b['train_images_per_s']:.1f} | {1000 * b['one_photo_s']:.0f} "
                         f"| {b['batch_32_s']:.2f} | {b['heatmap_cost_ratio']:.2f}x |")
    lines += ["", "Medians of alternating repetitions; spreads (min-max) and every sample are in perf.json."]
    if train and "compiled" in train:
        c = train["compiled"]
        lines.append(f"torch.compile for training: {c['images_per_s']:.2f} images/s after {c['compile_s']:.0f} s of "
                     f"compiling; a 5-epoch reference run would train in {c['five_epoch_train_s'] / 60:.1f} min vs "
                     f"{train['product']['five_epoch_train_s'] / 60:.1f} min without: "
                     f"{'kept' if train['compile_wins'] else 'not kept (it does not pay off)'}.")
    if inspect:
        lines.append(f"Inspection backend by default: {inspect['backend']}; its probabilities differ from eager "
                     f"torch by at most {inspect['max_abs_probability_diff_vs_eager']:.1e} on these photos. "
                     f"Loading a new checkpoint took {inspect['first_load_s']:.1f} s (ONNX export and check "
                     f"included, once per checkpoint), a cached one {inspect['cached_load_s']:.1f} s.")
        if result.get("matmul"):
            single = inspect["single_s"]["default"]["median"]
            rate = result["inference_flops_per_image"] / single / 1e9
            lines.append(f"One photo on the default path runs the network at {rate:.0f} GFLOP/s (decode and "
                         f"preprocessing included), {rate / result['matmul']['gflops_fp32']:.2f}x the fp32 matmul "
                         "figure above: an fp32 path has little left to gain on these cores. Faster needs lower "
                         "precision, which changes the confidences an inspector sees, so it is not the default.")
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
