"""Verdicts an inspector can trust (issue 17): the unfamiliar-photo score and the operating point.

    .venv/bin/python bench/trust.py --neu-run RUN --elpv-run RUN
    .venv/bin/python bench/trust.py --train            # trains both runs first through the CLI (see RECIPES)

Unfamiliar photos: a model trained on NEU-CLS split.csv scores its own validation photos (ordinary) against
ELPV photos, the synthetic demo set and the NEU validation photos under a strong lighting shift
(`lighting_shift`); AUROC of each pair, the share of NEU validation photos above the calibrated threshold,
and the score's cost beside the prediction's. The score the product uses (Mahalanobis summed over layers 2-4) is
compared with Mahalanobis on layer4 alone (the product's earlier score), the k-nearest-neighbour cosine distance
and the energy score. A run trained before today's statistics existed gets them through
`familiarity.add_to_run` (the same code the end of training runs).

Operating point: on an ELPV model (product preset, good class `functional`), the least review load at
"at most 5 % escapes" over its validation predictions (defect threshold: the Inspect default 0.7).

Writes bench/results/trust.json and .md. Not part of CI.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from reproduce_neu import machine, run_cli  # noqa: E402

from defect_model.photos.images import load_image  # noqa: E402
from defect_model.photos.synthetic import CLASSES as DEMO_CLASSES, make_sample  # noqa: E402
from defect_model.runs.folders import RunDir  # noqa: E402
from defect_model.serve.inference import Predictor  # noqa: E402
from defect_model.train.unfamiliar_score import (FEATURES, energy_scores, fit_mahalanobis, knn_scores,  # noqa: E402
                                                 mahalanobis_scores, pooled)
from defect_model.train import checkpoint as ckpt  # noqa: E402
from defect_model.train.familiarity import add_to_run  # noqa: E402
from defect_model.workflows.inspection import inference_threads  # noqa: E402
from defect_model.workflows.operating_point import least_review_load, probability_table  # noqa: E402
from defect_model.workflows.review import load_predictions  # noqa: E402
from report import write_report  # noqa: E402

DATASETS = ROOT.parent / "shared/datasets"
NEU, ELPV = DATASETS / "neu-cls", DATASETS / "elpv"
RECIPES = {  # the product preset as a user gets it (EfficientNet-Lite0 from ImageNet weights), as bench/quality.py
    "neu": (NEU, ["--preset", "product"]),
    "elpv": (ELPV, ["--preset", "product", "--good-classes", "functional", "--time-budget-min", "14"]),
}
MAX_ESCAPE = 0.05
DEFECT_THRESHOLD = 0.7
FOREIGN = 360  # photos per foreign set (as many as NEU's validation photos)
LIGHTING = ("gamma 2.2 (darker mid-tones), then a side light: brightness falling linearly from 100 % at the "
            "left edge to 25 % at the right")


def lighting_shift(photo: np.ndarray) -> np.ndarray:
    """A strong change of lighting: darker mid-tones and light from one side."""
    x = (photo.astype(np.float32) / 255.0) ** 2.2
    ramp = np.linspace(1.0, 0.25, photo.shape[1], dtype=np.float32)[None, :, None]
    return np.clip(x * ramp * 255.0, 0, 255).astype(np.uint8)


# Never used to choose the score's variant (bench/results/trust-variants.txt chose among variants on the three
# sets above): an estimate of how the chosen score does on changes it was not picked for.
HELD_OUT = {
    "bright_light": "gamma 0.5 (brighter mid-tones) with light from the other side: brightness rising from 40 % "
                    "at the left edge to 100 % at the right",
    "defocus": "out of focus: Gaussian blur of radius 3 px on the 200 px photo",
}


def held_out_shift(name: str, photo: np.ndarray) -> np.ndarray:
    if name == "bright_light":
        x = (photo.astype(np.float32) / 255.0) ** 0.5
        ramp = np.linspace(0.4, 1.0, photo.shape[1], dtype=np.float32)[None, :, None]
        return np.clip(x * ramp * 255.0, 0, 255).astype(np.uint8)
    from PIL import Image, ImageFilter
    return np.asarray(Image.fromarray(photo).filter(ImageFilter.GaussianBlur(3)))


def split_rows(split: Path, which: str) -> list[tuple[str, str]]:
    with split.open(newline="") as handle:
        return [(row["path"], row["label"]) for row in csv.DictReader(handle) if row["split"] == which]


def photos(root: Path, rows: list[tuple[str, str]]) -> list[np.ndarray]:
    return [np.asarray(load_image(root / rel, rel).convert("RGB")) for rel, _ in rows]


def forward(predictor: Predictor, arrays: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Square-rooted pooled layer4 features (the comparison scores' input), logits and the product's unfamiliar
    scores, 32 photos at a time."""
    features, logits, scores = [], [], []
    for start in range(0, len(arrays), 32):
        batch = predictor.to_tensor([predictor.prepare(a) for a in arrays[start:start + 32]])
        out, activations = predictor.logits_and_activations(batch)
        features.append(pooled(activations.maps, "sqrt-mean"))
        logits.append(out)
        scores.append(predictor.unfamiliar_scores(activations))
    return torch.cat(features), torch.cat(logits), np.concatenate(scores)


def auroc(ordinary: np.ndarray, foreign: np.ndarray) -> float:
    return float(roc_auc_score([0] * len(ordinary) + [1] * len(foreign), np.r_[ordinary, foreign]))


def overhead(predictor: Predictor, arrays: list[np.ndarray], repeats: int = 20) -> dict:
    """Seconds per 32-photo batch: the prediction (one forward pass giving logits and maps) and the score on its
    maps, with the threads the dashboard's inspection worker uses (inference_threads: half the cores). On a shared, loaded machine a millisecond's work is often pre-empted, so the ratio is taken of the
    fastest of `repeats` runs of each (the least disturbed), with the medians and the CPU time beside it."""
    batch = [predictor.prepare(a) for a in arrays[:32]]
    torch.set_num_threads(inference_threads())  # as the dashboard's inspection worker does (inspection_queue)
    predict, score, predict_cpu, score_cpu = [], [], 0.0, 0.0
    for _ in range(repeats):
        started, cpu = time.perf_counter(), time.process_time()
        _, activations = predictor.predict_with_activations(batch)
        predict.append(time.perf_counter() - started)
        predict_cpu += time.process_time() - cpu
        started, cpu = time.perf_counter(), time.process_time()
        predictor.unfamiliar_scores(activations)
        score.append(time.perf_counter() - started)
        score_cpu += time.process_time() - cpu
    return {"threads": inference_threads(), "predict_s": float(np.min(predict)), "score_s": float(np.min(score)),
            "overhead_ratio": float(np.min(score) / np.min(predict)),
            "overhead_ratio_median": float(np.median(score) / np.median(predict)),
            "overhead_ratio_cpu": score_cpu / predict_cpu}


def unfamiliar(neu_run: RunDir) -> dict:
    refit_stale_statistics(neu_run)
    predictor = Predictor.from_checkpoint(neu_run.checkpoint, threads=inference_threads())
    added = bool(predictor.familiarity.info.get("added_after_training"))
    split = neu_run.split
    rng = np.random.default_rng(0)
    val = photos(NEU, split_rows(split, "val"))
    elpv_rows = split_rows(ELPV / "split.csv", "val")
    elpv = photos(ELPV, [elpv_rows[i] for i in sorted(rng.choice(len(elpv_rows), FOREIGN, replace=False))])
    demo = [np.asarray(make_sample(DEMO_CLASSES[i % len(DEMO_CLASSES)], rng, 128)[0].convert("RGB"))
            for i in range(FOREIGN)]
    sets = {"val": val, "elpv": elpv, "demo": demo, "lighting": [lighting_shift(p) for p in val],
            **{name: [held_out_shift(name, p) for p in val] for name in HELD_OUT}}
    outputs = {name: forward(predictor, arrays) for name, arrays in sets.items()}
    train_features = forward(predictor, photos(NEU, split_rows(split, "train")))[0]
    labels = torch.tensor([predictor.classes.index(label) for _, label in split_rows(split, "train")])
    layer4 = fit_mahalanobis(train_features, labels, len(predictor.classes))
    methods = {
        "mahalanobis": {k: o[2] for k, o in outputs.items()},
        "mahalanobis_layer4_only": {k: mahalanobis_scores(o[0], layer4) for k, o in outputs.items()},
        "knn_cosine": {k: knn_scores(o[0], train_features) for k, o in outputs.items()},
        "energy": {k: energy_scores(o[1]) for k, o in outputs.items()},
    }
    comparison = {method: {f"auroc_{k}": auroc(s["val"], s[k]) for k in ("elpv", "demo", "lighting", *HELD_OUT)}
                  for method, s in methods.items()}
    threshold = predictor.unfamiliar_threshold
    scores = methods["mahalanobis"]
    result = {
        **{k: v for k, v in comparison["mahalanobis"].items() if k.split("_", 1)[1] not in HELD_OUT},
        "held_out": {f"auroc_{k}": comparison["mahalanobis"][f"auroc_{k}"] for k in HELD_OUT},
        "val_flag_rate": float(np.mean(scores["val"] > threshold)),
        **{f"flag_rate_{k}": float(np.mean(scores[k] > threshold)) for k in ("elpv", "demo", "lighting")},
        **overhead(predictor, val),
        "method": "mahalanobis",
        "features": predictor.familiarity.info.get("features", "mean"),
        "layers": predictor.familiarity.info.get("layers", ["layer4"]),
        "shrinkage": predictor.familiarity.info.get("shrinkage"),
        "threshold": threshold,
        "statistics_added_after_training": added,
        "comparison": comparison,
        "model": model_summary(neu_run),
        "lighting_shift": LIGHTING,
        "held_out_shifts": HELD_OUT,
    }
    return result


def refit_stale_statistics(run: RunDir) -> None:
    """A run trained before the statistics existed, or with an earlier kind of them, gets today's through
    `familiarity.add_to_run` (the code the end of training runs; it also rewrites the validation flags)."""
    info = ckpt.load_checkpoint(run.checkpoint)["meta"].get("unfamiliar") or {}
    if info.get("features") != FEATURES:
        add_to_run(run.path)


def model_summary(run: RunDir) -> dict:
    metrics = json.loads(run.metrics.read_text())
    events = run.read_events()
    epochs = [e for e in events if e["type"] == "epoch"]
    start = next((e["time"] for e in events if e["type"] == "start"), None)
    return {"run": str(run.path), "val_accuracy": metrics["accuracy"], "val_macro_f1": metrics["macro_f1"],
            "recall": metrics.get("per_class", {}) and {c: v.get("recall") for c, v in metrics["per_class"].items()},
            "epochs_trained": len(epochs), "best_epoch": metrics.get("epoch"),
            "training_minutes": (epochs[-1]["time"] - start) / 60 if epochs and start else None,
            "settings": run.settings().to_dict(),
            "backbone_text": f"{run.settings().network_text()} at {run.settings().image_size} px"}


def operating_point(elpv_run: RunDir) -> dict:
    refit_stale_statistics(elpv_run)
    cfg = elpv_run.settings()
    classes = json.loads(elpv_run.metrics.read_text())["classes"]
    table = load_predictions(elpv_run, classes)
    probs, labels = probability_table(table, classes)
    # as the Review page decides: photos the unfamiliar check flags go to a person at every point
    flagged = table["unfamiliar"].to_numpy(dtype=bool) if "unfamiliar" in table.columns else None
    point = least_review_load(probs, labels, classes, cfg.good_classes, MAX_ESCAPE, DEFECT_THRESHOLD, flagged)
    plain = least_review_load(probs, labels, classes, cfg.good_classes, MAX_ESCAPE, DEFECT_THRESHOLD)
    return {"max_escape_rate": MAX_ESCAPE, "escape_rate": point.escape_rate, "review_load": point.review_load,
            "false_reject_rate": point.false_reject_rate, "good_threshold": point.good_threshold,
            "class_thresholds": dict(point.class_thresholds), "defect_threshold": point.defect_threshold,
            "val_photos": len(table), "unfamiliar_flagged": None if flagged is None else int(flagged.sum()),
            "review_load_confidence_only": plain.review_load, "escape_rate_confidence_only": plain.escape_rate,
            "model": model_summary(elpv_run)}


def _ok(passed: bool) -> str:
    return "met" if passed else "**not met**"


def write_markdown(result: dict, path: Path) -> None:
    u, o = result["unfamiliar"], result["operating_point"]
    rows = "\n".join(f"| {m} | {c['auroc_elpv']:.3f} | {c['auroc_demo']:.3f} | {c['auroc_lighting']:.3f} | "
                     f"{c['auroc_bright_light']:.3f} | {c['auroc_defocus']:.3f} |" for m, c in u["comparison"].items())
    held = "; ".join(f"{name.replace('_', ' ')}: {text}" for name, text in u["held_out_shifts"].items())
    um, om = u["model"], o["model"]
    path.write_text(f"""# Verdicts an inspector can trust (issue 17)

Command: `{result['command']}`. Machine: {result['machine']['cpu_cores']} cores, load average
{result['machine']['load_average_1_5_15']} (above 2: other work shared the cores).

## Unfamiliar photos (NEU-CLS model, split.csv)

Model: `{um['settings']['backbone']}` at {um['settings']['image_size']} px, validation accuracy
{um['val_accuracy']:.3f}, macro-F1 {um['val_macro_f1']:.3f}; per-class recall {um['recall']}.
Statistics {"added after training with familiarity.add_to_run (the run was trained before this kind existed; the same code the end of training runs)"
            if u['statistics_added_after_training'] else "written by the end of training"}.

| score | AUROC NEU val vs ELPV | vs demo set | vs lighting shift | held out: bright light | held out: defocus |
|---|---|---|---|---|---|
{rows}

Held-out changes (never used to choose the variant): {held}.

Chosen: **Mahalanobis summed over layers {", ".join(u['layers'])}** (the product's score, first row): per layer,
class means + one shared covariance shrunk {_shrinkage_text(u['shrinkage'])} towards a scaled identity on the square roots of that
stage's spatial means, each distance standardised by its mean and spread on the training photos, then summed. The
other rows use the square-rooted pooled features of the last stage alone (the head's input): the product's earlier
score (Mahalanobis on that stage only), the k-nearest-neighbour cosine distance and the energy score. Mahalanobis, the root and 0.3 were chosen on
these same foreign sets (`bench/results/trust-variants.txt`), so those AUROCs are not a held-out estimate; the layer
set was chosen on two other changes used for nothing else, noise and low contrast
(`bench/results/trust-layers.txt`), and the held-out changes were used for no choice at all: they estimate how
the score does on changes nobody chose it for. At its calibrated threshold ({u['threshold']:.1f}): {u['val_flag_rate']:.1%} of the
NEU validation photos flagged (the threshold was calibrated on these same photos for 2 %), ELPV
{u['flag_rate_elpv']:.1%}, demo {u['flag_rate_demo']:.1%}, lighting-shifted NEU {u['flag_rate_lighting']:.1%}.

Lighting shift: {u['lighting_shift']}.

Cost: the score on a 32-photo batch's activations takes {u['score_s'] * 1000:.2f} ms against {u['predict_s'] * 1000:.0f} ms
for the prediction itself (one ONNX pass giving logits, the last stage's maps and the earlier stages' means; fastest of 20 runs each; torch and onnxruntime
with the dashboard's inspection threads, {u['threads']}): overhead ratio
{u['overhead_ratio']:.4f} (target <= 0.10); ratio of the medians {u['overhead_ratio_median']:.4f}, of the CPU
time {u['overhead_ratio_cpu']:.4f}. With torch's default threads (2 here) the score's worker threads spin and get
pre-empted on this loaded machine: an earlier run measured 93 ms for the score then (ratio 0.16); the dashboard
runs inspections with inference_threads(), as measured here.

## Acceptance (issue 17)

| check | target | measured | |
|---|---|---|---|
| AUROC NEU val vs ELPV | >= 0.95 | {u['auroc_elpv']:.3f} | {_ok(u['auroc_elpv'] >= 0.95)} |
| AUROC NEU val vs demo set | >= 0.95 | {u['auroc_demo']:.3f} | {_ok(u['auroc_demo'] >= 0.95)} |
| AUROC NEU val vs lighting shift | >= 0.95 | {u['auroc_lighting']:.3f} | {_ok(u['auroc_lighting'] >= 0.95)} |
| held out: AUROC vs bright light / defocus | reported | {u['held_out']['auroc_bright_light']:.3f} / {u['held_out']['auroc_defocus']:.3f} | |
| NEU validation photos flagged | <= 3 % | {u['val_flag_rate']:.1%} | {_ok(u['val_flag_rate'] <= 0.03)} |
| score time / prediction time | <= 0.10 | {u['overhead_ratio']:.4f} | {_ok(u['overhead_ratio'] <= 0.10)} |
| ELPV review load at <= 5 % escapes | reported | {o['review_load']:.1%} (escapes {o['escape_rate']:.1%}) | |

Training ({"at a load average near " + str(result['machine']['load_average_1_5_15'][0]) if result['machine']['load_average_1_5_15'][0] > 2.5 else "on a quiet machine"}):
the NEU run ({um['backbone_text']}) trained {um['epochs_trained']} epochs in {um['training_minutes']:.1f} min (kept
epoch {um['best_epoch']}; validation accuracy {um['val_accuracy']:.3f}); the ELPV run ({om['backbone_text']}) trained
{om['epochs_trained']} epochs in {om['training_minutes']:.1f} min (accuracy {om['val_accuracy']:.3f}). Both are the
product preset's runs of `bench/quality.py` (or RECIPES with `--train`).

## Operating point (ELPV, product preset, good class `functional`)

Model: validation accuracy {om['val_accuracy']:.3f}, macro-F1 {om['val_macro_f1']:.3f}; per-class recall
{om['recall']}.

At most {o['max_escape_rate']:.0%} escapes (defective photos that pass), defect threshold
{o['defect_threshold']:.2f}: the least review load is {o['review_load']:.1%} of the {o['val_photos']} validation photos
(good threshold {o['good_threshold']:.4f}; escapes {o['escape_rate']:.1%}; good photos rejected
{o['false_reject_rate']:.1%}). That counts the {o['unfamiliar_flagged']} validation photos the unfamiliar check flags as
sent to a person, as the Review page and Inspect do; by confidence alone the least review load would be
{o['review_load_confidence_only']:.1%} (escapes {o['escape_rate_confidence_only']:.1%}). ELPV has one good class, so
one pass threshold is the exact optimum (per-class thresholds apply with several good classes).

```json
{json.dumps({k: {kk: vv for kk, vv in v.items() if kk not in ('model', 'comparison')} if isinstance(v, dict)
             else v for k, v in result.items()}, indent=2)}
```
""")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--neu-run", help="a run trained on NEU-CLS split.csv")
    parser.add_argument("--elpv-run", help="a run trained on ELPV split.csv with the product preset")
    parser.add_argument("--train", action="store_true", help="train both runs first (RECIPES)")
    parser.add_argument("--out", default=str(ROOT / "bench/results/trust"))
    args = parser.parse_args()
    runs = {"neu": args.neu_run, "elpv": args.elpv_run}
    if args.train:
        base = Path(tempfile.mkdtemp(prefix="trust-"))
        for key, (data, extra) in RECIPES.items():
            runs[key] = str(base / key)
            run_cli(data, data / "split.csv", Path(runs[key]), extra)
    if not all(runs.values()):
        parser.error("give --neu-run and --elpv-run, or --train")
    result = {"unfamiliar": unfamiliar(RunDir(Path(runs["neu"]))),
              "operating_point": operating_point(RunDir(Path(runs["elpv"]))),
              "machine": machine(), "command": "bench/trust.py " + " ".join(sys.argv[1:])}
    write_report(result, args.out, write_markdown)


def _shrinkage_text(shrinkage) -> str:
    """The shrinkage as recorded: one share (runs from before it adapted to the feature count) or one per layer."""
    if isinstance(shrinkage, dict):
        return "by " + ", ".join(f"{value:.0%} ({layer})" for layer, value in shrinkage.items())
    return f"{shrinkage:.0%}"


if __name__ == "__main__":
    main()
