"""Fine-tuning trials for the product preset's pretrained network, judged on an inner split of ELPV's *training*
photos (a seeded, stratified 80/20 of split.csv's train rows): the validation split is never looked at, so the
choice made here can be checked on it afterwards by bench/quality.py without having been tuned to it.

    .venv/bin/python bench/finetune_trials.py [--only NAME ...] [--minutes 5]

Results are kept per trial and budget ("size224 @ 12 min"): a later call with --only adds to them.

Each trial is the product preset through the CLI with the same time budget and one or two settings changed.
Writes bench/results/finetune-trials.json and .md. Not part of CI; run it on a quiet machine (the budget is
wall-clock, so a busy machine buys every trial fewer passes).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from reproduce_neu import machine, run_cli  # noqa: E402

from defect_model.runs.folders import RunDir  # noqa: E402
from defect_model.common.quality import assess  # noqa: E402

ELPV = ROOT.parent / "shared/datasets/elpv"
GOOD = ["functional"]
# name -> (what it changes, CLI flags)
TRIALS = {
    "size160": ("160 px: what the preset picked when it lowered the size to buy 7 passes", ["--image-size", "160"]),
    "size224": ("224 px, the network's native size", ["--image-size", "224"]),
    "size288": ("288 px, the photos' own resolution (300 px) in steps of 32", ["--image-size", "288"]),
    "body0.3": ("224 px, the pretrained body at 0.3 of the head's peak learning rate",
                ["--image-size", "224", "--body-lr-share", "0.3"]),
}
RESULTS = ROOT / "bench/results/finetune-trials"


def inner_split(out: Path, seed: int = 0) -> Path:
    """split.csv's training rows, a fifth of each class marked val (seeded); its val rows left out."""
    rows = pd.read_csv(ELPV / "split.csv")
    train = rows[rows["split"] == "train"].copy()
    rng = np.random.default_rng(seed)
    for _, group in train.groupby("label"):
        held = rng.permutation(group.index)[: round(0.2 * len(group))]
        train.loc[held, "split"] = "val"
    train.to_csv(out, index=False)
    return out


def trial(name: str, split: Path, minutes: float, tmp: Path) -> dict:
    what, flags = TRIALS[name]
    run = RunDir(tmp / name)
    wall, _ = run_cli(ELPV, split, run.path, ["--preset", "product", "--good-classes", *GOOD,
                                              "--time-budget-min", f"{minutes:g}", *flags])
    metrics = json.loads(run.metrics.read_text())
    quality = assess(metrics, GOOD)
    epochs = [e for e in run.read_events() if e["type"] == "epoch"]
    return {"what": what, "flags": flags, "accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"],
            "defect_miss_rate": quality.defect_miss_rate, "false_reject_rate": quality.false_reject_rate,
            "per_class_recall": {k: v["recall"] for k, v in metrics["per_class"].items()},
            "epochs": len(epochs), "model_epoch": metrics["epoch"], "wall_minutes": wall / 60,
            "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def write_markdown(result: dict, path: Path) -> None:
    lines = ["# Fine-tuning trials on an inner split of ELPV's training photos (bench/finetune_trials.py)", "",
             "Each trial: the product preset through the CLI with the time budget in its name, judged on a "
             "seeded 20 % of each class of split.csv's training rows (the validation split is never read). "
             f"Machine: {result['machine']['cpu_cores']} cores, torch {result['machine']['torch']}.", "",
             "| trial | what changes | accuracy | macro-F1 | defect miss rate | false-reject rate | epochs | minutes |",
             "|---|---|---|---|---|---|---|---|"]
    for name, t in result["trials"].items():
        lines.append(f"| {name} | {t['what']} | {t['accuracy']:.3f} | {t['macro_f1']:.3f} | "
                     f"{t['defect_miss_rate']:.3f} | {t['false_reject_rate']:.3f} | {t['epochs']} | "
                     f"{t['wall_minutes']:.1f} |")
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", choices=list(TRIALS))
    parser.add_argument("--minutes", type=float, default=5.0)
    args = parser.parse_args()
    if not ELPV.is_dir():
        raise SystemExit(f"{ELPV}: the dataset is not there; this benchmark needs it.")
    json_path = RESULTS.with_suffix(".json")
    result = json.loads(json_path.read_text()) if json_path.is_file() and args.only else {"trials": {}}
    result.update(machine=machine(), command="bench/finetune_trials.py " + " ".join(sys.argv[1:]))
    with tempfile.TemporaryDirectory(prefix="trials-") as tmp:
        split = inner_split(Path(tmp) / "inner-split.csv")
        for name in args.only or TRIALS:
            key = f"{name} @ {args.minutes:g} min"
            result["trials"][key] = {**trial(name, split, args.minutes, Path(tmp)), "budget_minutes": args.minutes}
            t = result["trials"][key]
            print(f"{key}: accuracy {t['accuracy']:.3f}, macro-F1 {t['macro_f1']:.3f}, "
                  f"miss {t['defect_miss_rate']:.3f}, false reject {t['false_reject_rate']:.3f}, {t['epochs']} epochs", flush=True)
            json_path.write_text(json.dumps(result, indent=2) + "\n")
    write_markdown(result, RESULTS.with_suffix(".md"))
    print(RESULTS.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
