"""Training and evaluation. Emits events to callbacks; never prints, never draws.

Ready for torchrun/DDP as an addition: `Dist` carries rank and world size,
the sampler is chosen in `data.make_loader`, and only rank 0 writes files or
emits events.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import time
from collections.abc import Callable, Iterable
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from . import checkpoint as ckpt
from .config import TrainConfig
from .augment import augment_batch
from .hardware import autocast, resolve_precision
from .data import (DatasetScan, DecodedDataset, DecodedImages, apply_corrections, check_trainable, decode_images,
                   make_loader, photo_sizes, read_corrections_csv, read_split_csv, scan_image_folder,
                   stratified_split, write_split_csv)
from .metrics import metrics_from_predictions
from .model import build_model
from .preprocess import normalize_batch
from .presets import apply_product_preset
from .quality import assess
from .runs import RunDir, now_iso, read_json, write_json_atomic

Callback = Callable[[dict], None]


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


class Cancelled(Exception):
    pass


class EventLog:
    """Appends each event as a JSON line to the run's events.jsonl."""

    def __init__(self, path: Path):
        self.path = path

    def __call__(self, event: dict) -> None:
        with self.path.open("a") as handle:
            handle.write(json.dumps(event) + "\n")


class Emitter:
    def __init__(self, callbacks: Iterable[Callback], dist: Dist):
        self.callbacks = list(callbacks) if dist.is_main else []

    def __call__(self, kind: str, **fields) -> None:
        event = {"type": kind, "time": time.time(), **fields}
        for callback in self.callbacks:
            callback(event)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay, nesterov=True)


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int):
    """The learning-rate schedule; `steps_every_step(cfg)` says whether it is stepped per optimizer step.

    cosine (the reference recipe) is stepped once per epoch, without warm-up: the last epoch still
    trains at lr * (1 + cos(pi * (E-1) / E)) / 2 (about 0.1 * lr for 5 epochs). A per-step cosine
    decays to ~0 inside the last epoch and left NEU-CLS at 0.944 instead of 0.979
    (bench/results/reproduce-neu.md). warmup-cosine ramps up linearly over the first epoch (at most a
    quarter of the run), then follows a cosine to 0 at the last step: the form that suits runs of many
    short epochs from scratch (the product preset's).
    """
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, cfg.epochs))
    if cfg.schedule == "warmup-cosine":
        total = max(1, steps_per_epoch * cfg.epochs)
        warmup = max(1, min(steps_per_epoch, total // 4))
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_cosine_factor(step, warmup, total))
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)


def warmup_cosine_factor(step: int, warmup: int, total: int) -> float:
    """Share of the peak learning rate for optimizer step `step` (0-based) of `total`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def steps_every_step(cfg: TrainConfig) -> bool:
    return cfg.schedule == "warmup-cosine"


def to_input(pixels: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    return normalize_batch(pixels, cfg.mean, cfg.std, channels_last=cfg.channels_last)


def train_one_epoch(model, optimizer, scheduler, loader, cfg: TrainConfig, epoch: int, emit: Emitter,
                    should_stop: Callable[[], bool], skip_steps: int = 0, global_step: int = 0,
                    total_steps: int = 0, class_weights: torch.Tensor | None = None,
                    device: torch.device = torch.device("cpu")) -> tuple[float, int, bool]:
    """Train over one epoch; returns (mean loss, steps done in this epoch, stopped early)."""
    model.train()
    losses = []
    steps_per_epoch = len(loader)
    step = 0
    augment_rng = torch.Generator().manual_seed(cfg.seed * 7919 + epoch)
    for step, (pixels, labels, _) in enumerate(loader, start=1):
        pixels = augment_batch(pixels, cfg.augmentation, augment_rng)  # also for skipped steps: resume repeats it
        if step <= skip_steps:
            continue
        started = time.perf_counter()
        labels = labels.to(device)
        with autocast(cfg.precision, device):
            logits = model(to_input(pixels, cfg).to(device))
            loss = F.cross_entropy(logits.float(), labels, weight=class_weights,
                                   label_smoothing=cfg.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
        if steps_every_step(cfg):
            scheduler.step()
        seconds = time.perf_counter() - started
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(f"the training loss became {value} at epoch {epoch}, step {step}; "
                                     "lower the learning rate or turn on gradient clipping")
        losses.append(value)
        global_step += 1
        emit("step", epoch=epoch, step=step, steps_per_epoch=steps_per_epoch, global_step=global_step,
             total_steps=total_steps, loss=value, lr=lr, images_per_s=len(labels) / seconds)
        if should_stop():
            return float(np.mean(losses)), step, True
    return (float(np.mean(losses)) if losses else float("nan")), steps_per_epoch, False


@torch.inference_mode()
def evaluate(model: nn.Module, loader, cfg: TrainConfig,
             device: torch.device = torch.device("cpu")) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Probabilities, true labels and per-photo losses, in the loader's order."""
    model.eval()
    probs, labels, losses = [], [], []
    for pixels, target, _ in loader:
        logits = model(to_input(pixels, cfg).to(device)).float().cpu()
        losses.append(F.cross_entropy(logits, target, reduction="none").numpy())
        probs.append(torch.softmax(logits, dim=1).numpy())
        labels.append(target.numpy())
    if not probs:
        return np.zeros((0, 0)), np.zeros(0, dtype=np.int64), np.zeros(0)
    return np.concatenate(probs), np.concatenate(labels), np.concatenate(losses)


def predictions_table(paths: list[str], probs: np.ndarray, labels: np.ndarray, losses: np.ndarray,
                      classes: list[str]) -> pd.DataFrame:
    table = pd.DataFrame({
        "path": paths,
        "true_label": [classes[i] for i in labels],
        "pred_label": [classes[i] for i in probs.argmax(axis=1)],
    })
    for i, name in enumerate(classes):
        table[f"prob_{name}"] = probs[:, i]
    table["loss"] = losses
    return table


@dataclass
class SplitPlan:
    scan: DatasetScan
    rows: list[tuple[str, str, str]]  # (path, label, split) with corrections applied
    corrections: int

    def counts(self, split: str) -> dict[str, int]:
        found = {name: 0 for name in self.scan.classes}
        for _, label, s in self.rows:
            if s == split:
                found[label] += 1
        return found


@dataclass
class PreparedData:
    classes: list[str]
    train: DecodedImages
    val: DecodedImages
    report: dict


def plan_split(cfg: TrainConfig, run: RunDir, reuse_split: bool, write: bool) -> SplitPlan:
    """Scan the folder and fix the split: the run's own (on resume), a CSV, or seeded 80/20; then corrections."""
    scan = scan_image_folder(cfg.data_dir)
    if reuse_split and run.split.is_file():
        rows = read_split_csv(run.split, scan)
    elif cfg.split_csv:
        rows = read_split_csv(cfg.split_csv, scan)
    else:
        rows = stratified_split(scan.items, cfg.val_fraction, cfg.seed)
    if write:
        write_split_csv(run.split, rows)
    corrections = read_corrections_csv(cfg.corrections_csv, scan.classes) if cfg.corrections_csv else {}
    return SplitPlan(scan, apply_corrections(rows, corrections), len(corrections))


def decode_split(cfg: TrainConfig, plan: SplitPlan) -> PreparedData:
    """Decode every photo once at the training size; unreadable ones are reported, not fatal."""
    scan = plan.scan
    threads = max(1, torch.get_num_threads())
    decoded = {}
    for split in ("train", "val"):
        part = [(rel, label) for rel, label, s in plan.rows if s == split]
        decoded[split] = decode_images(scan.root, part, scan.classes, cfg.image_size, cfg.resize_mode, threads)
    failed = decoded["train"].failed + decoded["val"].failed
    train_counts = {name: 0 for name in scan.classes}
    for label in decoded["train"].labels.tolist():
        train_counts[scan.classes[label]] += 1
    report = {
        "root": str(scan.root),
        "classes": scan.classes,
        "images": len(scan.items),
        "train_counts": train_counts,
        "val_images": len(decoded["val"].paths),
        "skipped": [{"path": p, "reason": r} for p, r in scan.skipped],
        "unreadable": [{"path": p, "reason": r} for p, r in failed],
        "corrections_applied": plan.corrections,
    }
    check_trainable(train_counts, f"{scan.root} (training split, after skipping unreadable photos)")
    if len(decoded["val"].paths) == 0:
        raise ValueError(f"{scan.root}: no readable validation photos. Add photos or change the split.")
    return PreparedData(scan.classes, decoded["train"], decoded["val"], report)


def resolve_config(cfg: TrainConfig, plan: SplitPlan) -> TrainConfig:
    """Apply the product preset once (its decisions are kept in the config) and the step floor."""
    if cfg.preset == "product" and not cfg.decisions:
        train_paths = [rel for rel, _, split in plan.rows if split == "train"]
        cfg = apply_product_preset(cfg, plan.counts("train"), photo_sizes(plan.scan.root, train_paths, 500))
    steps_per_epoch = max(1, (cfg.epoch_images or sum(plan.counts("train").values())) // cfg.batch_size)
    if cfg.min_steps and cfg.epochs * steps_per_epoch < cfg.min_steps:
        epochs = math.ceil(cfg.min_steps / steps_per_epoch)
        cfg = dataclasses.replace(cfg, epochs=epochs, decisions=cfg.decisions + [
            f"epochs raised to {epochs} to reach the floor of {cfg.min_steps} optimizer steps"])
    return cfg


def class_loss_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Inverse-frequency weights, 1.0 on average over photos."""
    counts = torch.bincount(labels, minlength=num_classes).float().clamp(min=1)
    return len(labels) / (num_classes * counts)


def training_device() -> torch.device:
    """CPU unless $DEFECT_DEVICE names another (e.g. cuda on a GPU machine)."""
    return torch.device(os.environ.get("DEFECT_DEVICE", "cpu"))


def checkpoint_meta(cfg: TrainConfig, classes: list[str], run: RunDir, epoch: int, metrics: dict | None) -> dict:
    return {
        "classes": classes,
        "config": cfg.to_dict(),
        "preprocessing": cfg.preprocessing(),
        "run_id": run.run_id,
        "epoch": epoch,
        "val_accuracy": None if metrics is None else metrics["accuracy"],
        "val_macro_f1": None if metrics is None else metrics["macro_f1"],
        "saved_at": now_iso(),
    }


def fit(cfg: TrainConfig, run: RunDir, callbacks: Iterable[Callback] = (), resume: bool = False,
        dist: Dist = Dist(), should_stop: Callable[[], bool] | None = None) -> dict:
    """Train `cfg` into `run`; returns the final metrics. Marks the run done, cancelled or failed."""
    writes = dist.is_main
    emit = Emitter([EventLog(run.events), *callbacks], dist)
    stop_flag = {"signal": False}
    should_stop = should_stop or (lambda: False)

    def stop_requested() -> bool:
        return stop_flag["signal"] or run.cancel_requested() or should_stop()

    previous = _install_sigterm(stop_flag)
    try:
        if writes:
            if not resume:
                cfg.to_yaml(run.config)
            run.write_status("running", pid=os.getpid(), started=now_iso())
        return _fit(cfg, run, emit, resume, dist, stop_requested)
    except Cancelled:
        if writes:
            run.write_status("cancelled")
        emit("end", state="cancelled")
        return read_json(run.metrics, {}) or {}
    except BaseException as exc:
        message = f"{type(exc).__name__}: {exc}"
        if writes:
            run.write_status("failed", error=message)
        emit("end", state="failed", error=message)
        raise
    finally:
        _restore_sigterm(previous)


def _fit(cfg, run, emit, resume, dist, stop_requested) -> dict:
    seed_everything(cfg.seed)
    device = training_device()
    plan = plan_split(cfg, run, reuse_split=resume, write=dist.is_main)
    cfg = resolve_config(cfg, plan)
    precision, reason = resolve_precision(cfg.precision, device)
    if reason:
        cfg = dataclasses.replace(cfg, precision=precision, decisions=cfg.decisions + [reason])
    if dist.is_main:
        cfg.to_yaml(run.config)  # the resolved settings, with the preset's decisions
    for decision in cfg.decisions:
        emit("decision", text=decision)
    data = decode_split(cfg, plan)
    if dist.is_main:
        write_json_atomic(run.data_report, data.report)
    classes = data.classes
    train_set, val_set = DecodedDataset(data.train), DecodedDataset(data.val)
    model = build_model(cfg.backbone, len(classes), cfg.dropout, cfg.zero_init_residual).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    class_weights = (class_loss_weights(data.train.labels, len(classes)).to(device)
                     if cfg.loss_weighting == "class" else None)
    steps_per_epoch = len(make_loader(train_set, cfg.batch_size, True, cfg.seed, 0, dist.world_size, dist.rank,
                                      cfg.sampling, cfg.epoch_images))
    total_steps = steps_per_epoch * cfg.epochs
    optimizer = make_optimizer(model, cfg)
    scheduler = make_scheduler(optimizer, cfg, steps_per_epoch)

    start_epoch, skip_steps, elapsed_before, best = 1, 0, 0.0, -1.0
    if resume and run.checkpoint.is_file():
        payload = ckpt.load_checkpoint(run.checkpoint)
        if payload["meta"]["classes"] != classes:
            raise ValueError(f"{run.checkpoint}: the checkpoint's classes {payload['meta']['classes']} differ from "
                             f"the dataset's {classes}; start a new run instead of resuming.")
        model.load_state_dict(payload["model"])
        state = payload.get("training", {})
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        start_epoch, skip_steps = state["epoch"], state["step_in_epoch"]
        elapsed_before, best = state.get("elapsed_s", 0.0), state.get("best_macro_f1", -1.0)
    emit("start", run_id=run.run_id, classes=classes, train_images=len(train_set), val_images=len(val_set),
         epochs=cfg.epochs, steps_per_epoch=steps_per_epoch, total_steps=total_steps, resumed=resume,
         start_epoch=start_epoch, skip_steps=skip_steps, unreadable=len(data.report["unreadable"]),
         config=cfg.to_dict())

    started = time.perf_counter() - elapsed_before
    metrics = read_json(run.metrics, None) if resume else None
    for epoch in range(start_epoch, cfg.epochs + 1):
        epoch_started = time.perf_counter()
        loader = make_loader(train_set, cfg.batch_size, True, cfg.seed, epoch, dist.world_size, dist.rank,
                             cfg.sampling, cfg.epoch_images)
        train_loss, steps_done, stopped = train_one_epoch(
            model, optimizer, scheduler, loader, cfg, epoch, emit, stop_requested, skip_steps,
            (epoch - 1) * steps_per_epoch + skip_steps, total_steps, class_weights, device)
        skip_steps = 0
        finished_epoch = not stopped or steps_done == steps_per_epoch
        if finished_epoch and not steps_every_step(cfg):
            scheduler.step()
        next_position = (epoch + 1, 0) if finished_epoch else (epoch, steps_done)
        metrics, table = _evaluate(model, val_set, data, cfg, epoch, next_position, device)
        improved = finished_epoch and metrics["macro_f1"] > best
        best = max(best, metrics["macro_f1"]) if finished_epoch else best
        if dist.is_main:
            _save(run, model, optimizer, scheduler, data, cfg, metrics, table, next_position,
                  time.perf_counter() - started, best, improved)
        quality = assess(metrics, cfg.good_classes)
        elapsed = time.perf_counter() - started
        epochs_left = cfg.epochs - epoch
        emit("epoch", epoch=epoch, epochs=cfg.epochs, complete=finished_epoch, train_loss=train_loss,
             val_loss=metrics["val_loss"], val_accuracy=metrics["accuracy"], val_micro_f1=metrics["micro_f1"],
             val_macro_f1=metrics["macro_f1"], worst_recall=quality.worst_recall, worst_class=quality.worst_class,
             defect_miss_rate=quality.defect_miss_rate, collapsed=quality.collapsed, problems=quality.problems,
             best=improved, epoch_seconds=time.perf_counter() - epoch_started,
             elapsed_s=elapsed, eta_s=elapsed / epoch * epochs_left if finished_epoch else None)
        if stopped:
            raise Cancelled()
    quality = assess(metrics, cfg.good_classes)
    if quality.collapsed:
        emit("warning", text="This model is useless as it stands: " + "; ".join(quality.problems)
             + ". It would pass defective parts; it cannot be made active without an explicit override.")
    if dist.is_main:
        run.write_status("done", finished=now_iso(), val_accuracy=metrics["accuracy"],
                         val_macro_f1=metrics["macro_f1"], collapsed=quality.collapsed, problems=quality.problems)
    emit("end", state="done", val_accuracy=metrics["accuracy"], val_macro_f1=metrics["macro_f1"],
         collapsed=quality.collapsed, elapsed_s=time.perf_counter() - started)
    return metrics


def _evaluate(model, val_set, data: PreparedData, cfg, epoch: int, next_position: tuple[int, int],
              device: torch.device) -> tuple[dict, pd.DataFrame]:
    val_loader = make_loader(val_set, cfg.batch_size, False, cfg.seed)
    probs, labels, losses = evaluate(model, val_loader, cfg, device)
    table = predictions_table(data.val.paths, probs, labels, losses, data.classes)
    metrics = metrics_from_predictions(table, data.classes)
    metrics.update(val_loss=float(losses.mean()), epoch=epoch, complete_epoch=next_position[1] == 0)
    return metrics, table


def _save(run: RunDir, model, optimizer, scheduler, data: PreparedData, cfg, metrics: dict, table: pd.DataFrame,
          next_position: tuple[int, int], elapsed: float, best: float, improved: bool) -> None:
    """Write predictions, metrics and a checkpoint that resumes at `next_position` (and best.pt if improved)."""
    table.to_csv(run.val_predictions, index=False)
    write_json_atomic(run.metrics, metrics)
    meta = checkpoint_meta(cfg, data.classes, run, metrics["epoch"], metrics)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    training_state = {
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "epoch": next_position[0],
        "step_in_epoch": next_position[1],
        "elapsed_s": elapsed,
        "best_macro_f1": best,
    }
    ckpt.save_checkpoint(run.checkpoint, state, meta, training_state)
    if improved:
        ckpt.save_checkpoint(run.best_checkpoint, state, meta)


def _install_sigterm(stop_flag: dict):
    def handler(signum, frame):
        stop_flag["signal"] = True
    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (e.g. called from a test thread)
        return None


def _restore_sigterm(previous) -> None:
    if previous is not None:
        signal.signal(signal.SIGTERM, previous)
