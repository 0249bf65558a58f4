"""A prepared run directory for the Review and Models tests, made in a second, without training.

The dataset is tiny (ok / pit / scratch, 64 px) with planted problems: `pit/zz_planted.png` (validation)
and `pit/zz_planted_train.png` (training) are really scratch photos filed under pit, and
`ok/zz_blank.png` is a blank frame. The run's
val_predictions.csv is written by hand (so the confusion matrix is known), its checkpoint is a
randomly initialised resnet18 (enough for Grad-CAM and ONNX), and its config trains in seconds.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from defect_model.photos import synthetic
from defect_model.train.checkpoint import save_checkpoint
from defect_model.common.config import TrainConfig
from defect_model.train.saving import checkpoint_meta
from defect_model.train.metrics import metrics_from_predictions
from defect_model.train.model import build_model
from defect_model.runs.folders import RunDir, write_json_atomic

CLASSES = ["ok", "pit", "scratch"]
PLANTED = "pit/zz_planted.png"  # a scratch photo filed as pit (validation split)
PLANTED_TRAIN = "pit/zz_planted_train.png"  # another scratch photo filed as pit (training split)
BLANK = "ok/zz_blank.png"  # an unusable frame
RUN_ID = "20260101-120000-resnet18-prep"

# (path, true label, predicted label, confidence of the prediction)
VAL = [
    ("ok/ok_0000.png", "ok", "ok", 0.90), ("ok/ok_0001.png", "ok", "ok", 0.80),
    ("ok/ok_0002.png", "ok", "pit", 0.60), (BLANK, "ok", "ok", 0.50),
    ("pit/pit_0000.png", "pit", "pit", 0.85), ("pit/pit_0001.png", "pit", "pit", 0.70),
    ("pit/pit_0002.png", "pit", "ok", 0.55), (PLANTED, "pit", "scratch", 0.95),
    ("scratch/scratch_0000.png", "scratch", "scratch", 0.90),
    ("scratch/scratch_0001.png", "scratch", "scratch", 0.75),
    ("scratch/scratch_0002.png", "scratch", "pit", 0.65),
]


def make_dataset(folder: Path, per_class: int = 8) -> Path:
    data = synthetic.generate(folder, per_class=per_class, size=64, seed=5, classes=tuple(CLASSES))
    shutil.copyfile(data / "scratch" / f"scratch_{per_class - 1:04d}.png", data / PLANTED)
    shutil.copyfile(data / "scratch" / f"scratch_{per_class - 2:04d}.png", data / PLANTED_TRAIN)
    Image.new("RGB", (64, 64), (128, 128, 128)).save(data / BLANK)
    return data.resolve()


def predictions_table(rows=VAL) -> pd.DataFrame:
    records = []
    for path, true, pred, confidence in rows:
        rest = (1.0 - confidence) / (len(CLASSES) - 1)
        probs = {c: (confidence if c == pred else rest) for c in CLASSES}
        record = {"path": path, "true_label": true, "pred_label": pred}
        record.update({f"prob_{c}": probs[c] for c in CLASSES})
        record["loss"] = -math.log(probs[true])
        records.append(record)
    return pd.DataFrame(records)


def write_run(root: Path, data: Path, run_id: str = RUN_ID, rows=VAL, started: str = "2026-01-01T12:00:00+00:00",
              checkpoint: bool = True, **config) -> RunDir:
    """A finished run over `data` whose validation predictions are `rows`."""
    run = RunDir(root / run_id)
    run.path.mkdir(parents=True)
    settings = dict(data_dir=str(data), backbone="resnet18", image_size=64, batch_size=8, epochs=1, seed=0,
                    good_classes=["ok"])
    settings.update(config)
    cfg = TrainConfig(**settings)
    cfg.to_yaml(run.config)
    val = {path for path, *_ in rows}
    split = [(str(p.relative_to(data)), p.parent.name, "val" if str(p.relative_to(data)) in val else "train")
             for p in sorted(data.glob("*/*.png"))]
    pd.DataFrame(split, columns=["path", "label", "split"]).to_csv(run.split, index=False)
    table = predictions_table(rows)
    table.to_csv(run.val_predictions, index=False)
    metrics = metrics_from_predictions(table, CLASSES)
    metrics.update(val_loss=float(table["loss"].mean()), epoch=2, complete_epoch=True)
    write_json_atomic(run.metrics, metrics)
    if checkpoint:
        torch.manual_seed(0)
        model = build_model("resnet18", len(CLASSES), 0.0)
        save_checkpoint(run.checkpoint, model.state_dict(), checkpoint_meta(cfg, CLASSES, run, 2, metrics))
    events = [{"type": "start", "run_id": run_id, "classes": CLASSES}]
    for epoch, (train_loss, val_loss, acc) in enumerate([(1.2, 1.0, 0.5), (0.8, metrics["val_loss"],
                                                                          metrics["accuracy"])], start=1):
        events.append({"type": "epoch", "epoch": epoch, "epochs": 2, "train_loss": train_loss, "val_loss": val_loss,
                       "val_accuracy": acc, "val_macro_f1": acc - 0.05, "elapsed_s": 4.0 * epoch})
    events.append({"type": "end", "state": "done", "elapsed_s": 8.5})
    run.events.write_text("".join(json.dumps(e) + "\n" for e in events))
    run.write_status("done", started=started, finished=started)
    return run


def tree_fingerprint(folder: Path) -> dict[str, tuple[int, float, bytes]]:
    """Every file under `folder` with its size, modification time and content."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime, p.read_bytes())
            for p in sorted(folder.rglob("*")) if p.is_file()}


def expected_confusion(table: pd.DataFrame) -> np.ndarray:
    """Counted straight from a val_predictions table, independently of the app."""
    matrix = np.zeros((len(CLASSES), len(CLASSES)), dtype=int)
    for true, pred in zip(table["true_label"], table["pred_label"]):
        matrix[CLASSES.index(true), CLASSES.index(pred)] += 1
    return matrix


def review_env(tmp_path: Path, monkeypatch) -> dict:
    """A dataset, a finished active run over it, and empty app data, all private to the test."""
    from defect_model.runs.store import InspectionStore
    from defect_model.workflows.lifecycle import set_active

    dataset = make_dataset(tmp_path / "dataset")
    runs, app_data = tmp_path / "runs", tmp_path / "app-data"
    monkeypatch.setenv("DEFECT_RUNS_DIR", str(runs))
    monkeypatch.setenv("DEFECT_DATA_DIR", str(app_data))
    monkeypatch.setenv("DEFECT_DB", str(app_data / "inspections.sqlite"))
    run = write_run(runs, dataset)
    set_active(run, by="setup", root=runs)
    return {"dataset": dataset, "runs": runs, "run": run, "store": InspectionStore(app_data / "inspections.sqlite")}


def open_app_page(page: str, role: str = "engineer", name: str | None = None):
    """Run app.py in AppTest signed in as a new account of `role` and switch to `page` (e.g. "pages/review.py")."""
    from streamlit.testing.v1 import AppTest

    from conftest import sign_in

    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app.py"), default_timeout=120)
    sign_in(at, role, name)
    at.switch_page(page)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at
