"""A run's life after training: its summary row, becoming the active model (with a quality gate and a
history of who did it), and deletion.

A model that would pass defective parts never looks fine here: every summary carries per-class recall
and, where good classes are marked, the defect miss rate; a collapsed model is only made active with
an override whose reason is recorded.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

from defect_model.access.accounts import Actor, audit_log, require
from defect_model.common.config import TrainConfig
from defect_model.common.model_store import model_store
from defect_model.runs.folders import RunDir, get_active, now_iso, read_json
from defect_model.workflows.golden_check import changed_lines, compare_golden
from defect_model.workflows.review import RETRAIN_FILE


class ActivationError(ValueError):
    """A run that may not become the active model as asked; the message says what to do."""


class DeleteError(ValueError):
    """A run that may not be deleted now; the message says what to do."""


def run_summary(run: RunDir, active_id: str | None = None) -> dict:
    """One row of the Models table. Numbers are None where the run has none yet."""
    cfg = run.settings()
    status = run.status()
    metrics = run.read_metrics()
    quality = run.quality()
    parent = read_json(run.path / RETRAIN_FILE, {}) or {}
    return {
        "active": run.run_id == active_id,
        "run": run.run_id,
        "defect_miss_rate": None if quality is None else quality.defect_miss_rate,
        "false_reject_rate": None if quality is None else quality.false_reject_rate,
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
        "training_s": run.training_seconds(),
        "status": status.get("state", ""),
        "parent": parent.get("parent_run", ""),
    }


def key_settings(cfg: TrainConfig) -> str:
    """The settings that tell runs apart, in one short line."""
    network = f"{cfg.backbone} from ImageNet" if cfg.pretrained else cfg.backbone
    parts = [network, f"{cfg.image_size}px", f"{cfg.epochs} ep", f"bs {cfg.batch_size}",
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


def activation_history(limit: int = 200) -> list[dict]:
    """Who made which run active, and when (with the served checkpoint's hash and any override reason), newest
    first, from the audit trail."""
    return [{"run_id": e["target"], "by": e["actor"], "at": e["time"], **e["detail"]}
            for e in audit_log().events("activate", limit)]


def activation_problems(run: RunDir) -> list[str]:
    """Why a run should not inspect parts: no checkpoint, no validation metrics, or a collapsed model."""
    if not run.checkpoint.is_file():
        return ["it has no checkpoint yet"]
    quality = run.quality()
    if quality is None:
        return ["it has no validation metrics"]
    return quality.problems


TRIAL_PHOTOS = 8  # validation photos an activation runs the model on (its first batch, at most this many)


def trial_run(run: RunDir, checkpoint: Path) -> dict:
    """Load `checkpoint` (weights_only, as Inspect will) and run it on the first batch of the run's validation
    photos, before anything switches; ActivationError, saying why, when it does not load, does not run or gives no
    numbers. Returns what was tried, for the audit trail. Where the validation photos are gone (the dataset moved),
    a grey batch of the model's size still proves that it loads and runs."""
    import numpy as np

    from defect_model.photos.images import ImageError, load_image
    from defect_model.serve.inference import Predictor
    from defect_model.train.checkpoint import CheckpointError

    refused = (f"{run.run_id} was not made active (the active model is unchanged): its checkpoint {checkpoint}")
    try:
        predictor = Predictor.from_checkpoint(checkpoint, backend="torch")
    except CheckpointError as exc:
        raise ActivationError(f"{refused} does not load: {exc} Retrain the run (or resume it), then activate "
                              "it.") from None
    except Exception as exc:  # a network the registry lacks, weights of another shape
        raise ActivationError(f"{refused} does not load into its network ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:300]}). Retrain the run, then activate it.") from None
    arrays = []
    try:
        with run.split.open(newline="") as handle:
            val = [row["path"] for row in csv.DictReader(handle) if row.get("split") == "val"]
        dataset = Path(run.settings().data_dir)
        for rel in val[:TRIAL_PHOTOS]:
            arrays.append(predictor.prepare(load_image(dataset / rel)))
    except (OSError, ImageError, ValueError, KeyError):
        pass  # the photos are not all there any more: the grey batch below still runs the model
    source = f"{len(arrays)} validation photo(s)" if arrays else "a grey photo (the validation photos are gone)"
    if not arrays:
        size = predictor.preprocessing.image_size
        arrays = [np.full((size, size, 3), 128, dtype=np.uint8)]
    try:
        probabilities = predictor.predict_arrays(arrays)
    except Exception as exc:
        raise ActivationError(f"{refused} fails on {source} ({type(exc).__name__}: {str(exc).splitlines()[0][:300]})."
                              " Retrain the run, then activate it.") from None
    if not np.isfinite(probabilities).all():
        raise ActivationError(f"{refused} gives no numbers (NaN) on {source}: its weights are damaged. Retrain the "
                              "run, then activate it.")
    return {"trial": source}


def set_active(run: RunDir, by: str = "", override_reason: str = "", root: str | Path | None = None) -> dict:
    """Point the active-model record at a pinned copy of `run`'s checkpoint, once that copy has loaded and run on
    the first validation photos (trial_run). A flagged run needs `override_reason` (kept in the record).
    `activate` is the way in for people: it adds the role check, the run-state check and the audit trail."""
    problems = activation_problems(run)
    if problems and not run.checkpoint.is_file():
        raise ActivationError(f"{run.run_id} cannot be the active model: {'; '.join(problems)}.")
    if problems and not override_reason.strip():
        raise ActivationError(f"{run.run_id} is flagged: {'; '.join(problems)}. It would pass defective parts. "
                              "Give an override reason to activate it anyway (it is logged).")
    store = model_store(root)
    digest, where = store.put_checkpoint(run.checkpoint)
    served = store.served_path(digest)  # from an S3 store: fetched back and checked, as every server will
    if served is None:
        raise ActivationError(f"{run.run_id} was not made active: its checkpoint was stored in {where} but cannot be "
                              f"read back from {store.location}. Check the model store, then activate it again.")
    tried = trial_run(run, served)
    record = {"run_id": run.run_id, "path": str(run.path), "served": where, "sha256": digest, "by": by,
              "at": now_iso(), **tried}
    if problems:
        record.update(override=override_reason.strip(), problems=problems)
    store.write_active(record)
    return record


def activate(run: RunDir, actor: Actor, override_reason: str = "", root: str | Path | None = None,
             golden_ack: bool = False) -> dict:
    """Make `run` the active model (admins only), pinned to a copy of its checkpoint and recorded in the audit
    trail. Only a finished run qualifies; a flagged (collapsed) one needs an override reason; one that changes a
    verdict on the golden set against the active model needs `golden_ack`, and the changes are recorded."""
    require(actor, "activate")
    run.mark_dead_run_failed()
    status = run.status()
    if status.get("state") in ("queued", "running"):
        raise ActivationError(f"{run.run_id} is still training (pid {status.get('pid')}); its checkpoint changes "
                              "every epoch. Wait until it has finished.")
    if status.get("state") != "done":
        raise ActivationError(f"{run.run_id} did not finish ({status.get('state')}); only a finished run can be "
                              "made active. Resume it on the Train page first.")
    if run.checkpoint.is_file():
        trial_run(run, run.checkpoint)  # before the golden set loads it: the clearest refusal comes first
    golden = compare_golden(run, root if root is not None else run.path.parent)
    changes = changed_lines(golden, limit=len(golden))
    if changes and not golden_ack:
        raise ActivationError(f"{run.run_id} changes the verdict of {len(changes)} golden photo(s) against the active "
                              f"model: {'; '.join(changes[:5])}{' ...' if len(changes) > 5 else ''}. Look at them on "
                              f"the Models page (or: python -m defect_model golden {run.path}) and acknowledge the "
                              "changes to make it active.")
    record = set_active(run, by=actor.name, override_reason=override_reason.strip(), root=root)
    quality = run.quality()
    audit_log().record(actor, "activate", run.run_id, sha256=record["sha256"], served=record["served"],
                       override=record.get("override", ""), problems=record.get("problems", []),
                       accuracy=quality.accuracy if quality else None,
                       defect_miss_rate=quality.defect_miss_rate if quality else None,
                       golden_checked=len(golden), golden_changes_acknowledged=changes, trial=record.get("trial"))
    return record


def delete_run(run: RunDir, actor: Actor, root: str | Path | None = None) -> None:
    """Remove a run's folder (admins only, recorded). Refused for the active model and a run still training."""
    require(actor, "delete")
    active = get_active(root if root is not None else run.path.parent)
    if active and active.get("run_id") == run.run_id:
        raise DeleteError(f"{run.run_id} is the active model. Make another run active first, then delete this one.")
    run.mark_dead_run_failed()
    if run.status().get("state") in ("queued", "running"):
        raise DeleteError(f"{run.run_id} is still training (pid {run.status().get('pid')}). "
                          "Cancel it on the Train page first.")
    if not run.exists():
        raise DeleteError(f"{run.path}: not a run folder (no request.yaml or config.yaml); nothing was deleted.")
    summary = {k: v for k, v in run_summary(run).items() if k in ("accuracy", "macro_f1", "dataset", "status")}
    shutil.rmtree(run.path)
    audit_log().record(actor, "delete", run.run_id, path=str(run.path), **summary)
