"""Retrain with corrections from the corrected run's weights vs the run itself, on NEU-CLS.

    .venv/bin/python bench/warm_start.py [--minutes 9]

1. The "corrected run": the product preset on split.csv with 20 training photos filed under a wrong class
   (a corrections CSV moves them), trained from scratch for --minutes.
2. The retrain Review starts once those 20 labels are fixed: the same settings through
   `presets.warm_retrain` (the run's weights, a third of its time, a lower peak learning rate).
Both through `python -m defect_model train`. Writes bench/results/warm-start.json and .md. Not part of CI.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from reproduce_neu import machine, run_cli  # noqa: E402

from defect_model.common.config import TrainConfig  # noqa: E402
from defect_model.train.presets import warm_retrain  # noqa: E402
from defect_model.runs.folders import RunDir  # noqa: E402

DATA = ROOT.parent / "shared/datasets/neu-cls"
WRONG = 20


def wrong_labels(split: Path, out: Path) -> int:
    """A corrections CSV that files WRONG training photos (spread over the classes) under the next class."""
    with split.open(newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["split"] == "train"]
    classes = sorted({row["label"] for row in rows})
    chosen = rows[:: len(rows) // WRONG][:WRONG]
    with out.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label"])
        for row in chosen:
            writer.writerow([row["path"], classes[(classes.index(row["label"]) + 1) % len(classes)]])
    return len(chosen)


def outcome(run: RunDir, wall: float) -> dict:
    metrics = json.loads(run.metrics.read_text())
    events = run.read_events()
    return {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"], "minutes": wall / 60,
            "epochs": sum(e["type"] == "epoch" for e in events),
            "decisions": [e["text"] for e in events if e["type"] in ("decision", "plan")]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=9.0, help="the corrected run's time budget")
    parser.add_argument("--out", default=str(ROOT / "bench/results/warm-start"))
    args = parser.parse_args()
    if not DATA.is_dir():
        raise SystemExit(f"{DATA}: NEU-CLS is not there; this benchmark needs it.")
    with tempfile.TemporaryDirectory(prefix="warm-start-") as tmp:
        tmp = Path(tmp)
        wrong = tmp / "wrong.csv"
        count = wrong_labels(DATA / "split.csv", wrong)
        source = RunDir(tmp / "corrected-run")
        wall, _ = run_cli(DATA, DATA / "split.csv", source.path,
                          ["--preset", "product", "--corrections", str(wrong), "--time-budget-min", str(args.minutes)])
        first = outcome(source, wall)
        resolved = TrainConfig.from_yaml(source.config)
        fixed = warm_retrain(TrainConfig.from_dict({**resolved.to_dict(), "corrections_csv": ""}), source.path,
                             source.training_seconds(), count)
        config = tmp / "retrain.yaml"
        fixed.to_yaml(config)
        retrain = RunDir(tmp / "retrain")
        wall, _ = run_cli(DATA, DATA / "split.csv", retrain.path, ["--config", str(config)])
        second = outcome(retrain, wall)
    result = {"wrong_labels": count, "corrected_run": first, "warm_retrain": second,
              "time_share": second["minutes"] / first["minutes"],
              "reaches_corrected_accuracy": second["accuracy"] >= first["accuracy"], "machine": machine()}
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["# Retrain with corrections: warm start vs the run it corrects (NEU-CLS split.csv)", "",
             f"Command: `.venv/bin/python bench/warm_start.py --minutes {args.minutes:g}`.", "",
             "| run | val accuracy | val macro-F1 | epochs | minutes (end to end) |", "|---|---|---|---|---|",
             f"| corrected run: {count} training photos mislabelled, from scratch | {first['accuracy']:.4f} | "
             f"{first['macro_f1']:.4f} | {first['epochs']} | {first['minutes']:.1f} |",
             f"| retrain with the {count} labels fixed, from its weights | {second['accuracy']:.4f} | "
             f"{second['macro_f1']:.4f} | {second['epochs']} | {second['minutes']:.1f} |", "",
             f"The retrain took {result['time_share']:.0%} of the corrected run's time and "
             + ("reached" if result["reaches_corrected_accuracy"] else "did not reach") + " its accuracy.", "",
             "What the retrain decided:", ""] + [f"- {d}" for d in second["decisions"]]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
