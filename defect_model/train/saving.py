"""What a run's folder holds after each epoch (predictions, metrics, a checkpoint that resumes exactly there,
best.pt) and inside a long epoch (a mid-epoch checkpoint every `checkpoint_every_min`); rank 0 writes them."""

from __future__ import annotations

import time
from collections.abc import Callable

import pandas as pd
import torch

from defect_model.common.config import TrainConfig
from defect_model.common.durable import write_text_atomic
from defect_model.runs.events import Emitter
from defect_model.runs.folders import RunDir, now_iso, write_json_atomic
from defect_model.train import checkpoint as ckpt
from defect_model.train.course import Course
from defect_model.train.prepare import PreparedData


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


def save_epoch(run: RunDir, model, optimizer, scheduler, *, data: PreparedData, cfg, metrics: dict,
               table: pd.DataFrame, next_position: tuple[int, int], elapsed: float, course: Course,
               improved: bool) -> None:
    """Write predictions, metrics and a checkpoint that resumes at `next_position` (and best.pt if improved)."""
    write_text_atomic(run.val_predictions, table.to_csv(index=False))
    write_json_atomic(run.metrics, metrics)
    meta = checkpoint_meta(cfg, data.classes, run, metrics["epoch"], metrics)
    state = cpu_weights(model)
    ckpt.save_checkpoint(run.checkpoint, state, meta,
                         training_state(optimizer, scheduler, next_position, elapsed, course))
    if improved:
        ckpt.save_checkpoint(run.best_checkpoint, state, meta)


def cpu_weights(model) -> dict:
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def training_state(optimizer, scheduler, next_position: tuple[int, int], elapsed: float, course: Course) -> dict:
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
        training = training_state(self.optimizer, self.scheduler, (epoch, step),
                                   time.perf_counter() - self.started, self.course)
        ckpt.save_checkpoint(self.run.checkpoint, cpu_weights(self.model), meta, training)
        self.clock.saved()
        self.emit("checkpoint", epoch=epoch, step=step, steps_per_epoch=self.steps_per_epoch)
