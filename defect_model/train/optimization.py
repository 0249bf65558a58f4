"""The optimiser and the learning-rate schedule of a run: parameter groups (the head at the peak rate, the body
at its share), cosine, warm-up cosine or constant, and the re-plan when a time budget changes the epochs."""

from __future__ import annotations

import math

import torch
from torch import nn

from defect_model.common.config import TrainConfig
from defect_model.train.model import head_name


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
