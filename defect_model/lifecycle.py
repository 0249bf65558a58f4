"""A run's life after training: its summary row, becoming the active model (with a quality gate and a
history of who did it), and deletion.

A model that would pass defective parts never looks fine here: every summary carries per-class recall
and, where good classes are marked, the defect miss rate; a collapsed model is only made active with
an override whose reason is recorded.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from .config import TrainConfig
from .quality import ModelQuality, assess
from .runs import ActivationRefused, RunDir, activation_log, get_active, read_json, set_active
from .review import RETRAIN_FILE


class ActivationError(ValueError):
    """A run that may not become the active model as asked; the message says what to do."""


class DeleteError(ValueError):
    """A run that may not be deleted now; the message says what to do."""


def run_quality(run: RunDir) -> ModelQuality | None:
    metrics = run.read_metrics()
    if not metrics:
        return None
    return assess(metrics, TrainConfig.from_yaml(run.config).good_classes)


def training_seconds(run: RunDir) -> float | None:
    """Training time from the events: the end event, else the last epoch's elapsed time."""
    seconds = None
    for event in run.read_events():
        if event.get("type") == "end" and event.get("elapsed_s") is not None:
            seconds = event["elapsed_s"]
        elif event.get("type") == "epoch" and event.get("elapsed_s") is not None:
            seconds = event["elapsed_s"]
    return seconds


def run_summary(run: RunDir, active_id: str | None = None) -> dict:
    """One row of the Models table. Numbers are None where the run has none yet."""
    cfg = TrainConfig.from_yaml(run.config)
    status = run.status()
    metrics = run.read_metrics()
    quality = assess(metrics, cfg.good_classes) if metrics else None
    parent = read_json(run.path / RETRAIN_FILE, {}) or {}
    return {
        "active": run.run_id == active_id,
        "run": run.run_id,
        "defect_miss_rate": None if quality is None else quality.defect_miss_rate,
        "worst_recall": None if quality is None else quality.worst_recall,
        "worst_class": "" if quality is None else quality.worst_class,
        "recall": "" if quality is None else ", ".join(f"{c} {r:.0%}" for c, r in quality.recall.items()),
        "accuracy": None if quality is None else quality.accuracy,
        "macro_f1": None if quality is None else quality.macro_f1,
        "collapsed": bool(quality and quality.collapsed),
        "problems": "" if quality is None else "; ".join(quality.problems),
        "date": str(status.get("started") or status.get("updated") or "")[:16].replace("T", " "),
        "dataset": cfg.data_dir,
        "classes": ", ".join(metrics["classes"]) if metrics else "",
        "settings": key_settings(cfg),
        "good_classes": ", ".join(cfg.good_classes),
        "training_s": training_seconds(run),
        "status": status.get("state", ""),
        "parent": parent.get("parent_run", ""),
    }


def key_settings(cfg: TrainConfig) -> str:
    """The settings that tell runs apart, in one short line."""
    parts = [cfg.backbone, f"{cfg.image_size}px", f"{cfg.epochs} ep", f"bs {cfg.batch_size}",
             f"{cfg.optimizer} lr {cfg.lr:g}"]
    augmentation = getattr(cfg, "augmentation", None) or ("soft" if getattr(cfg, "augment", False) else "none")
    if augmentation != "none":
        parts.append(f"augment {augmentation}")
    preset = getattr(cfg, "preset", "reference")
    if preset != "reference":
        parts.append(f"{preset} preset")
    if cfg.corrections_csv:
        parts.append("with corrections")
    return ", ".join(parts)


def activation_history(root: str | Path | None = None) -> list[dict]:
    """Who made which run active, and when (with any override reason), newest first."""
    return activation_log(root)[::-1]


def activate(run: RunDir, by: str, override_reason: str = "", root: str | Path | None = None) -> dict:
    """Make `run` the active model, recorded with who and when. A flagged (collapsed) run needs an override
    reason, which runs.set_active logs; a run that is still training is refused."""
    by = by.strip()
    if not by:
        raise ActivationError("Enter your name in the sidebar first: the active model is recorded with who chose it.")
    run.mark_dead_run_failed()
    status = run.status()
    if status.get("state") in ("queued", "running"):
        raise ActivationError(f"{run.run_id} is still training (pid {status.get('pid')}); its checkpoint changes "
                              "every epoch. Wait until it has finished.")
    try:
        return set_active(run, by=by, override_reason=override_reason.strip(), root=root)
    except ActivationRefused as exc:
        raise ActivationError(str(exc)) from None


def delete_run(run: RunDir, root: str | Path | None = None) -> None:
    """Remove a run's folder. Refused for the active model and for a run still training."""
    active = get_active(root if root is not None else run.path.parent)
    if active and active.get("run_id") == run.run_id:
        raise DeleteError(f"{run.run_id} is the active model. Make another run active first, then delete this one.")
    run.mark_dead_run_failed()
    if run.status().get("state") in ("queued", "running"):
        raise DeleteError(f"{run.run_id} is still training (pid {run.status().get('pid')}). "
                          "Cancel it on the Train page first.")
    if not run.config.is_file():
        raise DeleteError(f"{run.path}: not a run folder (no config.yaml); nothing was deleted.")
    shutil.rmtree(run.path)
