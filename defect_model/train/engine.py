"""The training loop: steps, epochs, validation, the end of a run. Emits events to callbacks; never prints, never
draws. What it trains on (`prepare`), with what optimiser (`optimization`), how long (`course`) and what it saves
(`saving`) are modules of their own.

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
import sys
import time
from collections.abc import Callable, Iterable

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from defect_model.common.backbones import backbone as registered
from defect_model.common.config import MAX_EPOCHS, TrainConfig
from defect_model.common.durable import disk_full, write_text_atomic
from defect_model.common.quality import assess
from defect_model.photos.preprocess import normalize_batch
from defect_model.runs.events import Callback, Emitter, EventLog
from defect_model.runs.folders import RunDir, now_iso, process_start_time, read_json, write_json_atomic
from defect_model.train import checkpoint as ckpt
from defect_model.train import distributed, familiarity
from defect_model.train.augment import augment_batch
from defect_model.train.course import USABLE_LIMIT, WARN_AFTER, Course, budget_epochs, early_warning
from defect_model.train.data import DecodedDataset, make_loader
from defect_model.train.distributed import Dist
from defect_model.train.hardware import autocast
from defect_model.train.metrics import metrics_from_predictions
from defect_model.train.model import build_model, warm_start
from defect_model.train.optimization import make_optimizer, make_scheduler, replan_scheduler, steps_every_step
from defect_model.train.prepare import PreparedData, decode_split, plan_split, resolve_settings
from defect_model.train.saving import MidEpochCheckpoints, checkpoint_meta, save_epoch


class Cancelled(Exception):
    pass


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


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
        full = disk_full(exc, run.path) if isinstance(exc, (OSError, RuntimeError)) else None
        message = distributed.failure_text(exc, dist) or (str(full) if full else f"{type(exc).__name__}: {exc}")
        try:
            if writes:
                run.write_status("failed", error=message)
            emit("end", state="failed", error=message)
        except OSError:  # the disk is full even for the status: the message goes to train.log's stream at least
            try:
                print(f"error: {message}", file=sys.stderr, flush=True)
            except OSError:
                pass
        if full is not None:
            raise full from None
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
            save_epoch(run, model, optimizer, scheduler, data=data, cfg=cfg, metrics=metrics, table=table,
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
