"""Training and evaluation. Emits events to callbacks; never prints, never draws.

Under torchrun (several processes, `distributed`): `Dist` carries rank and world size, the sampler's share
of each process is chosen in `data.make_loader`, the model is wrapped in DistributedDataParallel, validation
is shared out and gathered, and only rank 0 writes files or emits events.
"""

from __future__ import annotations

import math
import os
import random
import signal
import socket
import time
from collections.abc import Callable, Iterable
import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from defect_model.train import checkpoint as ckpt
from defect_model.train import distributed
from defect_model.train.distributed import Dist
from defect_model.train import familiarity
from defect_model.train.config import MAX_EPOCHS, TrainConfig
from defect_model.runs.events import Callback, Emitter, EventLog
from defect_model.train.augment import augment_batch
from defect_model.train.hardware import autocast, resolve_precision
from defect_model.runs.durable import write_text_atomic
from defect_model.train.data import (DatasetScan, DecodedDataset, DecodedImages, apply_corrections, check_trainable, decode_images,
                   make_loader, photo_sizes, read_corrections_csv, read_split_csv, scan_image_folder,
                   stratified_split, write_split_csv)
from defect_model.train.metrics import metrics_from_predictions
from defect_model.train.backbones import backbone as registered
from defect_model.train.model import build_model, head_name, warm_start
from defect_model.photos.preprocess import normalize_batch
from defect_model.train import presets
from defect_model.train.quality import assess
from defect_model.runs.folders import RunDir, now_iso, process_start_time, read_json, write_json_atomic



class Cancelled(Exception):
    pass


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    groups = parameter_groups(model, cfg)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay, nesterov=True)


def parameter_groups(model: nn.Module, cfg: TrainConfig) -> list[dict]:
    """One group at the peak learning rate, or (body_lr_share < 1) the head's group at the peak first, then the
    body's at its share: the schedule scales both alike, and the first group's rate is the one reported."""
    if cfg.body_lr_share >= 1.0:
        return [{"params": list(model.parameters())}]
    head = list(getattr(model, head_name(model)).parameters())
    in_head = {id(p) for p in head}
    body = [p for p in model.parameters() if id(p) not in in_head]
    return [{"params": head}, {"params": body, "lr": cfg.lr * cfg.body_lr_share}]


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
        return torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(warmup, total))
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)


def replan_scheduler(scheduler, cfg: TrainConfig, epochs: int, steps_per_epoch: int) -> None:
    """Stretch or shrink the schedule's end to `epochs` (a time budget re-planned after measuring)."""
    if cfg.schedule == "cosine":
        scheduler.T_max = max(1, epochs)
    elif cfg.schedule == "warmup-cosine":
        scheduler.lr_lambdas[0].total = max(1, steps_per_epoch * epochs)


class WarmupCosine:
    """Share of the peak learning rate per optimizer step. An object, not a lambda, so that the scheduler's
    state_dict saves `total` and a resumed run keeps a re-planned schedule."""

    def __init__(self, warmup: int, total: int):
        self.warmup, self.total = warmup, total

    def __call__(self, step: int) -> float:
        return warmup_cosine_factor(step, self.warmup, self.total)


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


def training_loader(train_set: DecodedDataset, cfg: TrainConfig, epoch: int, dist: Dist):
    """The training photos of `epoch`, in the order and number the settings and the process's rank ask for:
    each of the processes takes an equal share of every step's `batch_size` photos."""
    return make_loader(train_set, batch_size=cfg.batch_size // dist.world_size, train=True, seed=cfg.seed,
                       epoch=epoch, world_size=dist.world_size, rank=dist.rank, sampling=cfg.sampling,
                       epoch_images=cfg.epoch_images)


def train_one_epoch(model, optimizer, scheduler, loader, cfg: TrainConfig, *, epoch: int, emit: Emitter,
                    should_stop: Callable[[], bool], skip_steps: int = 0, global_step: int = 0,
                    total_steps: int = 0, class_weights: torch.Tensor | None = None,
                    device: torch.device = torch.device("cpu"), after_step: Callable[[int, int], None] | None = None,
                    dist: Dist = Dist()) -> tuple[float, int, bool]:
    """Train over one epoch; returns (mean loss, steps done in this epoch, stopped early). `skip_steps`: steps
    of this epoch done before a resume (their photos are drawn again, not trained on); `global_step` and
    `total_steps` number the steps' events across the run; `after_step(epoch, step)` is called after each step
    but the last (a mid-epoch checkpoint). Over several processes a step's loss is the mean of theirs, its
    images/s counts all their photos, and all of them stop at a step where any was asked to."""
    model.train()
    losses = []
    steps_per_epoch = len(loader)
    step = 0
    augment_rng = torch.Generator().manual_seed(cfg.seed * 7919 + epoch + AUGMENT_RANK_STRIDE * dist.rank)
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
        value = distributed.mean(dist, float(loss.detach()))
        if not math.isfinite(value):
            raise FloatingPointError(f"the training loss became {value} at epoch {epoch}, step {step}; "
                                     "lower the learning rate or turn on gradient clipping")
        losses.append(value)
        global_step += 1
        emit("step", epoch=epoch, step=step, steps_per_epoch=steps_per_epoch, global_step=global_step,
             total_steps=total_steps, loss=value, lr=lr, images_per_s=len(labels) * dist.world_size / seconds)
        if distributed.any_rank(dist, should_stop()):
            return float(np.mean(losses)), step, True
        if after_step is not None and step < steps_per_epoch:
            after_step(epoch, step)
    return (float(np.mean(losses)) if losses else float("nan")), steps_per_epoch, False


# Augmentation streams of different processes start this far apart (rank 0 keeps a single process's stream).
AUGMENT_RANK_STRIDE = 104_729


@torch.inference_mode()
def evaluate(model: nn.Module, loader, cfg: TrainConfig,
             device: torch.device = torch.device("cpu")) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Probabilities, true labels, per-photo losses and the photos' indices in the set, in the loader's order."""
    model.eval()
    probs, labels, losses, indices = [], [], [], []
    for pixels, target, index in loader:
        logits = model(to_input(pixels, cfg).to(device)).float().cpu()
        losses.append(F.cross_entropy(logits, target, reduction="none").numpy())
        probs.append(torch.softmax(logits, dim=1).numpy())
        labels.append(target.numpy())
        indices.append(index.numpy())
    if not probs:
        return np.zeros((0, 0)), np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros(0, dtype=np.int64)
    return np.concatenate(probs), np.concatenate(labels), np.concatenate(losses), np.concatenate(indices)


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


def resolve_settings(cfg: TrainConfig, plan: SplitPlan, device: torch.device, processes: int = 1) -> TrainConfig:
    """The settings this run trains with on `processes` processes: the preset resolved on the real split and
    the precision this machine can do, marked resolved (settings that already are come back as they are)."""
    if cfg.resolved:
        if cfg.processes != processes:
            raise ValueError(f"this run trains on {cfg.processes} process(es) and was started on {processes}: "
                             f"resume it with `torchrun --nproc_per_node={cfg.processes} -m defect_model resume RUN` "
                             "(the Train page does), so that every step learns from the same batch")
        return cfg
    asked = [] if cfg.processes in (1, processes) else [
        f"{processes} training process(es), not the {cfg.processes} asked for: that is how many were started"]
    cfg = dataclasses.replace(cfg, processes=processes, decisions=cfg.decisions + asked)
    train_paths = [rel for rel, _, split in plan.rows if split == "train"]
    sizes = photo_sizes(plan.scan.root, train_paths, 500) if cfg.preset == "product" else None
    cfg = presets.resolve(cfg, plan.counts("train"), sizes, sum(plan.counts("val").values()))
    precision, reason = resolve_precision(cfg.precision, device, registered(cfg.backbone).family)
    reasons = [reason] if reason else []
    sync_batchnorm = cfg.sync_batchnorm
    if sync_batchnorm and processes > 1 and device.type != "cuda":
        sync_batchnorm = False
        reasons.append(f"SyncBatchNorm off: torch synchronises BatchNorm only between GPUs, and this run trains on "
                       f"{device.type.upper()}; each process normalises its own {cfg.batch_size // processes} photos")
    return dataclasses.replace(cfg, precision=precision, resolved=True, sync_batchnorm=sync_batchnorm,
                               decisions=cfg.decisions + reasons)


LOSS_WEIGHT_POWER = {"none": 0.0, "class": 1.0, "sqrt": 0.5}


def class_loss_weights(labels: torch.Tensor, num_classes: int, power: float = 1.0) -> torch.Tensor:
    """Inverse-frequency weights raised to `power` (1: inverse, 0.5: inverse square root), 1.0 on average
    over the training photos."""
    counts = torch.bincount(labels, minlength=num_classes).float().clamp(min=1)
    weights = counts.pow(-power)
    return weights * len(labels) / (weights * counts).sum()


def training_device(dist: Dist = Dist()) -> torch.device:
    """CPU unless $DEFECT_DEVICE names another (e.g. cuda on a GPU machine); under torchrun each process on a
    GPU machine takes the GPU of its local rank."""
    device = torch.device(os.environ.get("DEFECT_DEVICE", "cpu"))
    if device.type == "cuda" and dist.several:
        return torch.device("cuda", dist.local_rank)
    return device


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
    emit = Emitter([EventLog(run.events), *callbacks], dist.is_main)
    stop_flag = {"signal": False}
    should_stop = should_stop or (lambda: False)

    def stop_requested() -> bool:
        return stop_flag["signal"] or run.cancel_requested() or should_stop()

    previous = _install_sigterm(stop_flag)
    try:
        me = {"pid": os.getpid(), "pid_started": process_start_time(os.getpid()), "host": socket.gethostname()}
        ranks = distributed.gather_json(dist, me)
        if writes:
            run.write_status("running", pid=me["pid"], pid_started=me["pid_started"], started=now_iso(),
                             **({"ranks": ranks} if dist.several else {}))
        return _fit(cfg, run, emit, resume, dist, stop_requested)
    except Cancelled:
        if writes:
            run.write_status("cancelled")
        emit("end", state="cancelled")
        distributed.wait_for_all(dist)  # rank 0 has saved the metrics every process returns
        return read_json(run.metrics, {}) or {}
    except BaseException as exc:
        message = distributed.failure_text(exc, dist) or f"{type(exc).__name__}: {exc}"
        if writes:
            run.write_status("failed", error=message)
        emit("end", state="failed", error=message)
        raise
    finally:
        _restore_sigterm(previous)


def _fit(cfg, run, emit, resume, dist, stop_requested) -> dict:
    seed_everything(cfg.seed)
    device = training_device(dist)
    plan = plan_split(cfg, run, reuse_split=resume, write=dist.is_main)
    # Rank 0 decides the settings (the preset measures photos and reads timing tables) and tells the others.
    cfg = TrainConfig.from_dict(distributed.from_main(
        dist, lambda: resolve_settings(cfg, plan, device, dist.world_size).to_dict()))
    if dist.is_main and not run.config.is_file():
        cfg.to_yaml(run.config)  # written once: the settings this run trains with, the preset's decisions included
    for decision in cfg.decisions:
        emit("decision", text=decision)
    if dist.several and device.type == "cpu":
        torch.set_num_threads(distributed.cpu_threads(dist))
        emit("decision", text=f"{dist.world_size} training processes ({dist.local_world_size} on this machine), "
                              f"{torch.get_num_threads()} CPU thread(s) each")
    data = decode_split(cfg, plan)
    if dist.is_main:
        write_json_atomic(run.data_report, data.report)
    classes = data.classes
    train_set, val_set = DecodedDataset(data.train), DecodedDataset(data.val)
    fresh = not (resume and run.checkpoint.is_file()) and not cfg.init_from
    model = build_model(cfg.backbone, len(classes), cfg.dropout, cfg.zero_init_residual,
                        pretrained=cfg.pretrained and fresh).to(device)
    if cfg.pretrained and fresh:
        entry = registered(cfg.backbone)
        emit("decision", text=f"the network starts from ImageNet weights (package {entry.weights.package}, its "
                              "sha256 checked); the head is new")
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    class_weights = (class_loss_weights(data.train.labels, len(classes), LOSS_WEIGHT_POWER[cfg.loss_weighting])
                     .to(device) if cfg.loss_weighting != "none" else None)
    steps_per_epoch = len(training_loader(train_set, cfg, 0, dist))
    optimizer = make_optimizer(model, cfg)
    scheduler = make_scheduler(optimizer, cfg, steps_per_epoch)

    start_epoch, skip_steps, elapsed_before = 1, 0, 0.0
    course = Course(epochs=cfg.epochs)
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
        elapsed_before = state.get("elapsed_s", 0.0)
        course = Course.from_state(state, cfg.epochs)
    elif cfg.init_from:
        state, source_classes, source = ckpt.read_weights(cfg.init_from)
        emit("decision", text=warm_start(model, state, source_classes, classes, str(source)))
    step_model = distributed.wrap(model, dist, device, cfg.sync_batchnorm)  # what the steps call; `model` is saved
    emit("start", run_id=run.run_id, classes=classes, train_images=len(train_set), val_images=len(val_set),
         epochs=course.epochs, steps_per_epoch=steps_per_epoch, total_steps=steps_per_epoch * course.epochs,
         resumed=resume, start_epoch=start_epoch, skip_steps=skip_steps, unreadable=len(data.report["unreadable"]),
         config=cfg.to_dict())

    started = time.perf_counter() - elapsed_before
    metrics = read_json(run.metrics, None) if resume else None
    mid_epoch = MidEpochCheckpoints(run, model, optimizer, scheduler, cfg=cfg, classes=classes, course=course,
                                    started=started, emit=emit, steps_per_epoch=steps_per_epoch)
    epoch = start_epoch
    while epoch <= course.epochs:
        epoch_started = time.perf_counter()
        train_loss, steps_done, stopped = train_one_epoch(
            step_model, optimizer, scheduler, training_loader(train_set, cfg, epoch, dist), cfg, epoch=epoch, emit=emit,
            should_stop=stop_requested, skip_steps=skip_steps,
            global_step=(epoch - 1) * steps_per_epoch + skip_steps, total_steps=steps_per_epoch * course.epochs,
            class_weights=class_weights, device=device, after_step=mid_epoch if dist.is_main else None, dist=dist)
        skip_steps = 0
        finished_epoch = not stopped or steps_done == steps_per_epoch
        if finished_epoch and not steps_every_step(cfg):
            scheduler.step()
        next_position = (epoch + 1, 0) if finished_epoch else (epoch, steps_done)
        distributed.sync_buffers(dist, model)  # BatchNorm statistics: rank 0's, which its checkpoint holds
        rank_weights = distributed.check_same_weights(dist, model, f"after epoch {epoch}, step {steps_done}")
        metrics, table = _evaluate(model, val_set, data, cfg, epoch, next_position, device, dist)
        improved = course.record(epoch, metrics["macro_f1"]) if finished_epoch else False
        # Every process plans with rank 0's clock, so that all of them take the same decisions.
        elapsed, epoch_seconds = distributed.same_as_main(
            dist, [time.perf_counter() - started, time.perf_counter() - epoch_started])
        if finished_epoch and cfg.time_budget_min and not course.replanned:
            course.replanned = True
            planned = budget_epochs(cfg.time_budget_min * 60, elapsed, epoch, epoch_seconds)
            if planned != course.epochs:
                emit("plan", epochs=planned, total_steps=steps_per_epoch * planned,
                     text=f"{planned} epoch(s) fit the budget of {cfg.time_budget_min:g} min: the first epoch took "
                          f"{epoch_seconds:.0f} s with its validation (planned before measuring: {course.epochs})")
                course.epochs = planned
                replan_scheduler(scheduler, cfg, planned, steps_per_epoch)
        if dist.is_main:
            _save(run, model, optimizer, scheduler, data=data, cfg=cfg, metrics=metrics, table=table,
                  next_position=next_position, elapsed=elapsed, course=course, improved=improved)
            mid_epoch.clock.saved()
        quality = assess(metrics, cfg.good_classes)
        epochs_left = course.epochs - epoch
        emit("epoch", epoch=epoch, epochs=course.epochs, complete=finished_epoch, train_loss=train_loss,
             val_loss=metrics["val_loss"], val_accuracy=metrics["accuracy"], val_micro_f1=metrics["micro_f1"],
             val_macro_f1=metrics["macro_f1"], worst_recall=quality.worst_recall, worst_class=quality.worst_class,
             defect_miss_rate=quality.defect_miss_rate, false_reject_rate=quality.false_reject_rate,
             collapsed=quality.collapsed, problems=quality.problems, best=improved, epoch_seconds=epoch_seconds,
             elapsed_s=elapsed, eta_s=epoch_seconds * epochs_left if finished_epoch else None,
             **({"processes": dist.world_size, "rank_weights": rank_weights} if dist.several else {}))
        if stopped:
            raise Cancelled()
        if (finished_epoch and not course.warned and quality.collapsed and epoch < course.epochs
                and epoch / course.epochs >= WARN_AFTER):
            course.warned = True
            emit("warning", early=True, text=early_warning(quality, epoch, course.epochs, cfg))
        if finished_epoch and cfg.until_usable and quality.collapsed and epoch >= course.epochs \
                and course.epochs < min(MAX_EPOCHS, USABLE_LIMIT * cfg.epochs):
            course.epochs = epoch + 1
            emit("plan", epochs=course.epochs, total_steps=steps_per_epoch * course.epochs,
                 text=f"one more epoch ({course.epochs}): after epoch {epoch} the model still "
                      + "; ".join(quality.problems))
            replan_scheduler(scheduler, cfg, course.epochs, steps_per_epoch)
        reason = course.stop_reason(cfg, elapsed, epoch_seconds, epoch, usable=not quality.collapsed)
        if reason:
            emit("decision", text=reason)
            break
        epoch += 1
    if cfg.keep_best and course.best_epoch and course.best_epoch != metrics["epoch"] and dist.is_main:
        metrics = _promote_best(run, model, val_set, data, cfg, device, course, metrics)
        emit("decision", text=f"kept epoch {course.best_epoch} (validation macro-F1 {course.best:.3f}) as the "
                              f"run's model instead of the last epoch")
    if dist.is_main:
        _fit_familiarity(run, model, data, cfg, device, emit)
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


# A run still near chance, or blind to a class, after this share of its epochs is called out while it runs.
WARN_AFTER = 0.3
# Share of the planned epochs after which a plateau may end a run that is not perfect.
SETTLED_SHARE = 0.8
# A validation macro-F1 this high cannot improve further in any way that matters.
PERFECT = 0.999
# Past the budget by more than this share, a run stops after the epoch it is in instead of starting another.
BUDGET_SLACK = 0.05
# A run told to train until usable goes on, one epoch at a time, up to this many times its planned epochs.
USABLE_LIMIT = 4


@dataclass
class Course:
    """Where a run is heading: its planned epochs (re-planned once for a time budget) and its best epoch."""

    epochs: int
    best: float = -1.0
    best_epoch: int = 0
    since_best: int = 0
    replanned: bool = False
    warned: bool = False

    def record(self, epoch: int, macro_f1: float) -> bool:
        """Note a finished epoch's score; True when it is the best so far."""
        if macro_f1 > self.best:
            self.best, self.best_epoch, self.since_best = macro_f1, epoch, 0
            return True
        self.since_best += 1
        return False

    def stop_reason(self, cfg: TrainConfig, elapsed: float, epoch_seconds: float, epoch: int,
                    usable: bool = True) -> str | None:
        """Why the run stops after `epoch` before its planned end, or None to go on (always, for a run told to
        train until usable whose model is not yet)."""
        if epoch >= self.epochs or (cfg.until_usable and not usable):
            return None
        # While the learning rate is high validation scores wobble, and a cosine's low-rate end is where they
        # gain most (ELPV: a stop after 10 of 13 epochs kept macro-F1 0.43): a plateau counts only in the last
        # fifth of the plan, or at once when the score cannot get better.
        settled = epoch >= SETTLED_SHARE * self.epochs or self.best >= PERFECT
        if cfg.patience and self.since_best >= cfg.patience and settled:
            return (f"stopped early after epoch {epoch}: validation macro-F1 has not improved for {self.since_best} "
                    f"epochs (best {self.best:.3f} at epoch {self.best_epoch})")
        budget = cfg.time_budget_min * 60
        if budget and elapsed + epoch_seconds > budget * (1 + BUDGET_SLACK):
            return (f"stopped after epoch {epoch} of {self.epochs}: another epoch ({epoch_seconds:.0f} s) would "
                    f"overrun the budget of {cfg.time_budget_min:g} min (the machine is slower than measured)")
        return None

    def state(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_state(cls, state: dict, epochs: int) -> "Course":
        saved = state.get("course") or {"epochs": epochs, "best": state.get("best_macro_f1", -1.0)}
        return cls(**saved)


def budget_epochs(budget_s: float, elapsed: float, epochs_done: int, epoch_seconds: float) -> int:
    """Epochs a run can finish within `budget_s`, measured after `epochs_done` epochs took `elapsed` seconds."""
    more = math.floor(max(0.0, budget_s - elapsed) / max(epoch_seconds, 1e-3))
    return max(epochs_done, min(MAX_EPOCHS, epochs_done + more))


def early_warning(quality, epoch: int, epochs: int, cfg: TrainConfig) -> str:
    """What an engineer watching a run should know when it is still failing after a fair part of its time."""
    advice = ["check that the photos of " + quality.worst_class + " are labelled right and that there are enough "
              "of them"]
    if cfg.image_size < 224:
        advice.append(f"small defects may vanish at {cfg.image_size} px: try a larger image size")
    if cfg.loss_weighting == "none" and cfg.sampling == "shuffle":
        advice.append("weight the loss by class (loss weighting sqrt) if some classes are rare")
    kept = " The best epoch so far is kept." if cfg.keep_best else ""
    return (f"After epoch {epoch} of {epochs} this run still " + "; ".join(quality.problems)
            + f". It keeps training (early epochs of a from-scratch network are often like this).{kept} "
            "If it does not improve: " + "; ".join(advice) + ".")


def _evaluate(model, val_set, data: PreparedData, cfg, epoch: int, next_position: tuple[int, int],
              device: torch.device, dist: Dist = Dist()) -> tuple[dict, pd.DataFrame]:
    """Metrics and predictions over the whole validation set; several processes each predict a share of it and
    every process gets all of them."""
    val_loader = make_loader(val_set, batch_size=max(1, cfg.batch_size // dist.world_size), train=False,
                             seed=cfg.seed, world_size=dist.world_size, rank=dist.rank)
    probs, _, losses, indices = evaluate(model, val_loader, cfg, device)
    indices, probs, losses = distributed.gather_rows(dist, indices, probs, losses)
    labels = data.val.labels.numpy()[indices]
    table = predictions_table([data.val.paths[i] for i in indices], probs, labels, losses, data.classes)
    metrics = metrics_from_predictions(table, data.classes)
    metrics.update(val_loss=float(losses.mean()), epoch=epoch, complete_epoch=next_position[1] == 0)
    return metrics, table


def _save(run: RunDir, model, optimizer, scheduler, *, data: PreparedData, cfg, metrics: dict, table: pd.DataFrame,
          next_position: tuple[int, int], elapsed: float, course: Course, improved: bool) -> None:
    """Write predictions, metrics and a checkpoint that resumes at `next_position` (and best.pt if improved)."""
    write_text_atomic(run.val_predictions, table.to_csv(index=False))
    write_json_atomic(run.metrics, metrics)
    meta = checkpoint_meta(cfg, data.classes, run, metrics["epoch"], metrics)
    state = _weights(model)
    ckpt.save_checkpoint(run.checkpoint, state, meta,
                         _training_state(optimizer, scheduler, next_position, elapsed, course))
    if improved:
        ckpt.save_checkpoint(run.best_checkpoint, state, meta)


def _weights(model) -> dict:
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def _training_state(optimizer, scheduler, next_position: tuple[int, int], elapsed: float, course: Course) -> dict:
    """All that resuming at `next_position` (epoch, steps of it done) needs besides the weights."""
    return {
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "epoch": next_position[0],
        "step_in_epoch": next_position[1],
        "elapsed_s": elapsed,
        "best_macro_f1": course.best,
        "course": course.state(),
    }


class CheckpointClock:
    """Whether a mid-epoch checkpoint is due: `every_s` seconds after the last checkpoint (never when 0)."""

    def __init__(self, every_s: float, now: Callable[[], float] = time.monotonic):
        self.every_s, self.now = every_s, now
        self.last = now()

    def due(self) -> bool:
        return self.every_s > 0 and self.now() - self.last >= self.every_s

    def saved(self) -> None:
        self.last = self.now()


class MidEpochCheckpoints:
    """Called after each step (train_one_epoch's `after_step`): when `checkpoint_every_min` has passed, saves a
    checkpoint that resumes after this step, through the same file as the end of an epoch. It does not validate:
    metrics.json, the validation predictions and best.pt stay those of the last full validation, and the
    checkpoint's metadata has no scores (its weights were never measured)."""

    def __init__(self, run: RunDir, model, optimizer, scheduler, *, cfg: TrainConfig, classes: list[str],
                 course: Course, started: float, emit: Emitter, steps_per_epoch: int):
        self.run, self.model, self.optimizer, self.scheduler = run, model, optimizer, scheduler
        self.cfg, self.classes, self.course, self.started = cfg, classes, course, started
        self.emit, self.steps_per_epoch = emit, steps_per_epoch
        self.clock = CheckpointClock(cfg.checkpoint_every_min * 60)

    def __call__(self, epoch: int, step: int) -> None:
        if not self.clock.due():
            return
        meta = checkpoint_meta(self.cfg, self.classes, self.run, epoch, None)
        training = _training_state(self.optimizer, self.scheduler, (epoch, step),
                                   time.perf_counter() - self.started, self.course)
        ckpt.save_checkpoint(self.run.checkpoint, _weights(self.model), meta, training)
        self.clock.saved()
        self.emit("checkpoint", epoch=epoch, step=step, steps_per_epoch=self.steps_per_epoch)


def _promote_best(run: RunDir, model, val_set, data: PreparedData, cfg, device, course: Course,
                  last: dict) -> dict:
    """Make the best epoch the run's model: its weights, validation predictions and metrics replace the last's."""
    payload = ckpt.load_checkpoint(run.best_checkpoint)
    model.load_state_dict(payload["model"])
    metrics, table = _evaluate(model, val_set, data, cfg, course.best_epoch, (last["epoch"] + 1, 0), device)
    metrics["last_epoch"] = {key: last[key] for key in ("epoch", "accuracy", "macro_f1")}
    write_text_atomic(run.val_predictions, table.to_csv(index=False))
    write_json_atomic(run.metrics, metrics)
    meta = checkpoint_meta(cfg, data.classes, run, course.best_epoch, metrics)
    ckpt.save_checkpoint(run.checkpoint, payload["model"], meta)  # a finished run is not resumed
    return metrics


def _fit_familiarity(run: RunDir, model, data: PreparedData, cfg, device, emit: Emitter) -> None:
    """The unfamiliar-photo statistics into the finished checkpoint; without them the model still works (its
    photos get no unfamiliar score), so a failure here is a warning, not a failed run."""
    try:
        tensors, meta, scores = familiarity.fit_familiarity(model, data.train, data.val, len(data.classes),
                                                            cfg.mean, cfg.std, cfg.unfamiliar_share, device)
        familiarity.store_familiarity(run.checkpoint, tensors, meta)
        familiarity.flag_predictions(run.val_predictions, data.val.paths, scores, meta["unfamiliar"]["threshold"])
        emit("decision", text=familiarity.describe(meta))
    except Exception as exc:  # e.g. too few photos for the statistics
        emit("warning", text=f"no unfamiliar-photo check for this model ({type(exc).__name__}: {exc}); its photos "
                             "are judged by confidence alone")


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
