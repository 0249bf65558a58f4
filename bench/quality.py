"""Both recipes on NEU-CLS, balanced (split.csv) and imbalanced (split-imbalanced.csv), and on ELPV (solar
cells: a dominant good class, graded defects), through the CLI.

    .venv/bin/python bench/quality.py [--only KEY ...] [--reuse-reference bench/results/reproduce-neu.json]

Writes bench/results/quality.json and .md. The reference run on split.csv is the same run as
bench/reproduce_neu.py; pass --reuse-reference to take it from there instead of training it again.
Not part of CI (about two hours on 2 cores without bf16). Run it on a quiet machine: times are wall-clock.
Without --reuse-reference the full-split reference run also rewrites bench/results/reproduce-neu.json/.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from reproduce_neu import (kept_findings, machine, run_cli, summarise,  # noqa: E402
                           write_markdown as write_reproduction)

from defect_model.train.hardware import cpu_native_bf16  # noqa: E402
from defect_model.common.quality import assess  # noqa: E402
from defect_model.runs.folders import RunDir  # noqa: E402

DATASETS = ROOT.parent / "shared/datasets"
# key -> (dataset folder, split file, what the user says besides the recipe)
SPLITS = {
    "full": ("neu-cls", "split.csv", []),
    "imbalanced": ("neu-cls", "split-imbalanced.csv", []),
    # ELPV's good class is `functional`; its acceptance asks for <= 15 minutes, so that is the budget asked for
    # (the default, what the reference recipe takes here, is about 35 minutes).
    "elpv": ("elpv", "split.csv", ["--good-classes", "functional"]),
}
BUDGETS = {"elpv/product": ["--time-budget-min", "14"]}
KEYS = ("full/reference", "imbalanced/product", "full/product", "imbalanced/reference", "elpv/product",
        "elpv/reference")
GOOD = {"elpv": ["functional"]}


def train(key: str, keep: Path | None = None) -> dict:
    split_key, preset = key.split("/")
    folder, split, extra = SPLITS[split_key]
    data = DATASETS / folder
    with tempfile.TemporaryDirectory(prefix="quality-") as tmp:
        run = RunDir((keep or Path(tmp)) / key.replace("/", "-"))
        wall, rss = run_cli(data, data / split, run.path, ["--preset", preset, *extra, *BUDGETS.get(key, [])])
        events = run.read_events()
        metrics = json.loads(run.metrics.read_text())
        config = (run.path / "config.yaml").read_text()
        reproduction = summarise(run, wall, data / split, rss)
    epochs = [e for e in events if e["type"] == "epoch"]
    quality = assess(metrics, GOOD.get(split_key, ()))
    settings = yaml.safe_load(config)
    return {
        "preset": preset,
        "backbone": settings["backbone"],
        "pretrained": bool(settings.get("pretrained")),
        "image_size": settings["image_size"],
        "precision": settings.get("precision"),
        "dataset": folder,
        "split": split,
        "accuracy": metrics["accuracy"],
        "macro_f1": metrics["macro_f1"],
        "per_class_recall": {k: v["recall"] for k, v in metrics["per_class"].items()},
        "defect_miss_rate": quality.defect_miss_rate,
        "false_reject_rate": quality.false_reject_rate,
        "model_epoch": metrics["epoch"],
        "best_epoch_macro_f1": max(e["val_macro_f1"] for e in epochs),
        "train_minutes": wall / 60,  # end to end: decode, every epoch's training and validation
        "epochs": [{"epoch": e["epoch"], "val_accuracy": e["val_accuracy"], "val_macro_f1": e["val_macro_f1"],
                    "seconds": e["epoch_seconds"]} for e in epochs],
        "decisions": [e["text"] for e in events if e["type"] == "decision"],
        "config": config,
        "load_average_1_5_15": [round(v, 2) for v in os.getloadavg()],
        "reproduction": reproduction,  # the reproduce-neu.json record of the same run
    }


def reference_from_reproduction(path: Path) -> dict:
    result = json.loads(path.read_text())
    return {"preset": "reference", "split": result["split"], "accuracy": result["final_val_accuracy"],
            "macro_f1": result["final_val_macro_f1"], "per_class_recall": result["per_class_recall"],
            "train_minutes": result["total_seconds"] / 60, "epochs": result["epochs"], "decisions": [],
            "source": str(path.relative_to(ROOT))}


def write_markdown(runs: dict, summary: dict, path: Path) -> None:
    lines = ["# Reference recipe vs product preset on NEU-CLS and ELPV", "",
             "Command: `.venv/bin/python bench/quality.py [--only KEY ...]` "
             "(every run through `python -m defect_model train`, times end to end on the machine named in each "
             "run's record).", "",
             "| data | split | recipe | val accuracy | val macro-F1 | worst class recall | defect miss rate | "
             "false-reject rate | minutes | measured |",
             "|---|---|---|---|---|---|---|---|---|---|"]

    def pct(value):
        return "–" if value is None else f"{value:.1%}"

    for key, run in runs.items():
        worst = min(run["per_class_recall"].items(), key=lambda kv: kv[1])
        network = f" ({run['backbone']}{' from ImageNet' if run.get('pretrained') else ''})" if "backbone" in run else ""
        lines.append(f"| {run.get('dataset', 'neu-cls')} | {run['split']} | {run['preset']}{network} | {run['accuracy']:.4f} | "
                     f"{run['macro_f1']:.4f} | {worst[1]:.3f} ({worst[0]}) | {pct(run.get('defect_miss_rate'))} | "
                     f"{pct(run.get('false_reject_rate'))} | {run['train_minutes']:.1f} | "
                     f"{run.get('measured', '2026-11-26, Zen 4 with bf16')} |")
    missing = [key for key in KEYS if key not in runs]
    if missing:
        lines += ["", f"Not run yet: {', '.join(missing)} (null in the JSON)."]
    lines += ["", "Acceptance (issue 25, pretrained backbones): ELPV preset accuracy >= 0.85, defect miss rate <= 0.10 "
              "and false-reject rate <= 0.15 in <= 15 minutes; NEU split.csv >= 0.99 in <= 6 minutes; "
              "split-imbalanced macro-F1 >= 0.95 in <= 6 minutes. (Issue 12, from scratch: ELPV >= 0.85 with miss "
              "rate <= 0.10; NEU split.csv >= 0.98, split-imbalanced macro-F1 >= 0.90.)", "",
              "```json", json.dumps(summary, indent=2), "```", ""]
    for key, run in runs.items():
        if run["decisions"] and run["preset"] == "product":  # a reference run decides only its precision
            lines += [f"## What the preset decided on {run.get('dataset', 'neu-cls')} `{run['split']}`", ""] + [f"- {d}" for d in run["decisions"]] + [""]
    m = summary["machine"]
    lines.append(f"Machine: {m['cpu_cores']} cores, torch {m['torch']}, tcmalloc: {m['tcmalloc'] or 'no'}.")
    path.write_text("\n".join(lines) + "\n" + kept_findings(path))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reuse-reference", help="reproduce-neu.json to take the full-split reference run from")
    parser.add_argument("--out", default=str(ROOT / "bench/results/quality"))
    parser.add_argument("--only", nargs="*", help="run only these keys, e.g. imbalanced/product; the others "
                                                  "are kept from earlier results where there are any")
    parser.add_argument("--keep", help="keep each run folder under this folder (e.g. for bench/trust.py)")
    args = parser.parse_args()
    for folder in sorted({folder for folder, _, _ in SPLITS.values()}):
        if not (DATASETS / folder).is_dir():
            raise SystemExit(f"{DATASETS / folder}: the dataset is not there; this benchmark needs it.")
    if args.keep:
        Path(args.keep).mkdir(parents=True, exist_ok=True)
    out = Path(args.out)
    previous = {}
    for done in (out.with_suffix(".json"), out.with_suffix(".partial.json")):  # runs kept from an earlier call
        if done.exists():
            previous.update(json.loads(done.read_text())["runs"])
    runs = {}
    for key in KEYS:
        if args.only and key not in args.only:
            if key in previous:
                runs[key] = previous[key]
            continue
        if key == "full/reference" and args.reuse_reference:
            runs[key] = reference_from_reproduction(Path(args.reuse_reference).resolve())
        else:
            runs[key] = train(key, Path(args.keep) if args.keep else None)
            trained_in = runs[key].get("precision") or ("bf16" if cpu_native_bf16() else "fp32")
            runs[key]["measured"] = time.strftime("%Y-%m-%d") + f", {trained_in}" + (
                "" if cpu_native_bf16() else " (no bf16)")
            if key == "full/reference":  # the same run is the reproduction of the published result
                reproduction = ROOT / "bench/results/reproduce-neu"
                reproduction.with_suffix(".json").write_text(json.dumps(runs[key]["reproduction"], indent=2) + "\n")
                write_reproduction(runs[key]["reproduction"], reproduction.with_suffix(".md"))
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".partial.json").write_text(json.dumps({"runs": runs}, indent=2) + "\n")
        print(f"{key}: accuracy {runs[key]['accuracy']:.4f}, macro-F1 {runs[key]['macro_f1']:.4f}, "
              f"{runs[key]['train_minutes']:.1f} min", flush=True)

    def figure(key: str, name: str):
        return runs[key].get(name) if key in runs else None  # a run not done yet stays null

    summary = {
        "imbalanced": {"preset_macro_f1": figure("imbalanced/product", "macro_f1"),
                       "preset_accuracy": figure("imbalanced/product", "accuracy"),
                       "preset_train_minutes": figure("imbalanced/product", "train_minutes"),
                       "reference_macro_f1": figure("imbalanced/reference", "macro_f1"),
                       "reference_accuracy": figure("imbalanced/reference", "accuracy"),
                       "reference_train_minutes": figure("imbalanced/reference", "train_minutes")},
        "full": {"preset_accuracy": figure("full/product", "accuracy"),
                 "preset_macro_f1": figure("full/product", "macro_f1"),
                 "preset_train_minutes": figure("full/product", "train_minutes"),
                 "reference_accuracy": figure("full/reference", "accuracy"),
                 "reference_train_minutes": figure("full/reference", "train_minutes")},
        "elpv": {"preset_accuracy": figure("elpv/product", "accuracy"),
                 "preset_macro_f1": figure("elpv/product", "macro_f1"),
                 "preset_defect_miss_rate": figure("elpv/product", "defect_miss_rate"),
                 "preset_false_reject_rate": figure("elpv/product", "false_reject_rate"),
                 "preset_train_minutes": figure("elpv/product", "train_minutes"),
                 "reference_accuracy": figure("elpv/reference", "accuracy"),
                 "reference_macro_f1": figure("elpv/reference", "macro_f1"),
                 "reference_train_minutes": figure("elpv/reference", "train_minutes")},
        "machine": machine(),
    }
    out.with_suffix(".partial.json").unlink(missing_ok=True)
    out.with_suffix(".json").write_text(json.dumps({**summary, "runs": runs}, indent=2) + "\n")
    write_markdown(runs, summary, out.with_suffix(".md"))
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
