"""Reproduce the reference recipe on NEU-CLS through the CLI and record per-epoch results.

    .venv/bin/python bench/reproduce_neu.py [--data ../shared/datasets/neu-cls] [--split split.csv]

Writes bench/results/reproduce-neu.json and .md. Not part of CI (about 15 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from defect_model.runs.jobs import find_tcmalloc, training_env  # noqa: E402
from defect_model.runs.folders import RunDir  # noqa: E402
from report import write_report  # noqa: E402

FINDINGS = "<!-- findings: kept when the benchmark rewrites this file -->"
PUBLISHED = [0.616, 0.771, 0.860, 0.961, 0.979]


def machine() -> dict:
    import torch

    return {
        "cpu_cores": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "tcmalloc": find_tcmalloc(),
        "load_average_1_5_15": [round(v, 2) for v in os.getloadavg()],  # >2 means other work shared the cores
    }


def run_cli(data: Path, split: Path, run_dir: Path, extra: list[str]) -> tuple[float, float]:
    """Train through the CLI as the dashboard's job launcher would; returns (wall seconds, peak RSS GiB)."""
    command = [sys.executable, "-m", "defect_model", "train", "--data", str(data), "--split", str(split),
               "--run-dir", str(run_dir), *extra]
    started = time.perf_counter()
    process = subprocess.Popen(command, env=training_env(), cwd=ROOT)
    _, status, usage = os.wait4(process.pid, 0)  # this child's own resource usage
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise subprocess.CalledProcessError(process.returncode, command)
    return time.perf_counter() - started, usage.ru_maxrss / 2**20  # Linux reports KiB


def summarise(run: RunDir, wall_seconds: float, split: Path, peak_rss_gib: float | None = None) -> dict:
    events = run.read_events()
    epochs = [e for e in events if e["type"] == "epoch"]
    steps = [e for e in events if e["type"] == "step"]
    start = next(e for e in events if e["type"] == "start")
    rates = sorted(e["images_per_s"] for e in steps[5:]) or [0.0]  # the first steps warm up
    metrics = json.loads(run.metrics.read_text())
    config = start["config"]
    return {
        "recipe": "reference (resnet50 from scratch, 224, batch 32, 5 epochs, AdamW 1e-3, cosine, wd 0, dropout 0.2)",
        "split": split.name,
        "epochs": [{"epoch": e["epoch"], "train_loss": e["train_loss"], "val_loss": e["val_loss"],
                    "val_accuracy": e["val_accuracy"], "val_macro_f1": e["val_macro_f1"],
                    "seconds": e["epoch_seconds"]} for e in epochs],
        "published_val_micro_f1": PUBLISHED,
        "train_images": start["train_images"],
        "val_images": start["val_images"],
        "train_images_per_s": rates[len(rates) // 2],
        "total_seconds": wall_seconds,
        "peak_rss_gib": peak_rss_gib,
        "precision": config.get("precision", "fp32"),
        "final_val_accuracy": metrics["accuracy"],
        "final_val_macro_f1": metrics["macro_f1"],
        "per_class_recall": {k: v["recall"] for k, v in metrics["per_class"].items()},
        "machine": machine(),
    }


def write_markdown(result: dict, path: Path) -> None:
    lines = [
        "# Reference recipe on NEU-CLS",
        "",
        f"Recipe: {result['recipe']}. Split: `{result['split']}` "
        f"({result['train_images']} train / {result['val_images']} val).",
        f"Command: `.venv/bin/python bench/reproduce_neu.py` (training through `python -m defect_model train`).",
        "",
        "| epoch | val accuracy (micro-F1) | published | val macro-F1 | train loss | val loss | seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    for e, published in zip(result["epochs"], result["published_val_micro_f1"] + [None] * 10):
        lines.append(f"| {e['epoch']} | {e['val_accuracy']:.4f} | {published if published else '-'} | "
                     f"{e['val_macro_f1']:.4f} | {e['train_loss']:.4f} | {e['val_loss']:.4f} | {e['seconds']:.0f} |")
    m = result["machine"]
    lines += [
        "",
        f"Final val accuracy **{result['final_val_accuracy']:.4f}** (published 0.979), "
        f"macro-F1 {result['final_val_macro_f1']:.4f}.",
        "Per-class recall: " + ", ".join(f"{k} {v:.3f}" for k, v in result["per_class_recall"].items()) + ".",
        f"Training throughput (median step): {result['train_images_per_s']:.1f} images/s; "
        f"whole run {result['total_seconds'] / 60:.1f} min end to end (decode, train, validate each epoch); "
        f"training arithmetic {result.get('precision', 'fp32')} (validation fp32); peak RSS of the training "
        f"process: {_gib(result.get('peak_rss_gib'))}.",
        "",
        f"Machine: {m['cpu_cores']} cores ({m['cpu']}), torch {m['torch']} with {m['torch_threads']} threads, "
        f"Python {m['python']}, tcmalloc: {m['tcmalloc'] or 'not installed'}; load average at the end "
        f"{m['load_average_1_5_15']} (above 2, other work shared the two cores and the times are pessimistic).",
    ]
    path.write_text("\n".join(lines) + "\n" + kept_findings(path))


def _gib(value: float | None) -> str:
    return "not recorded" if value is None else f"{value:.2f} GiB"


def kept_findings(path: Path) -> str:
    """Hand-written analysis below FINDINGS in an earlier file survives a rerun."""
    text = path.read_text() if path.is_file() else ""
    return "\n" + text[text.index(FINDINGS):] if FINDINGS in text else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT.parent / "shared/datasets/neu-cls"))
    parser.add_argument("--split", default="split.csv", help="split file name inside --data")
    parser.add_argument("--out", default=str(ROOT / "bench/results/reproduce-neu"))
    parser.add_argument("extra", nargs="*", help="extra train options after --, e.g. -- --epochs 1")
    args = parser.parse_args()
    data = Path(args.data)
    if not data.is_dir():
        raise SystemExit(f"{data}: NEU-CLS is not there; pass --data.")
    split = data / args.split
    with tempfile.TemporaryDirectory(prefix="neu-run-") as tmp:
        run = RunDir(Path(tmp) / "run")
        wall, rss = run_cli(data, split, run.path, args.extra)
        result = summarise(run, wall, split, rss)
    write_report(result, args.out, write_markdown)


if __name__ == "__main__":
    main()
