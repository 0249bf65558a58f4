"""What a run trains on and with, before its first step: the split fixed (the run's own, a CSV, or seeded), the
label corrections applied, every photo decoded once, and the settings resolved on that split and this machine."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from defect_model.common.backbones import backbone as registered
from defect_model.common.config import TrainConfig
from defect_model.runs.folders import RunDir
from defect_model.train import presets
from defect_model.train.data import (DatasetScan, DecodedImages, apply_corrections, check_trainable, decode_images,
                                     photo_sizes, read_corrections_csv, read_split_csv, scan_image_folder,
                                     stratified_split, write_split_csv)
from defect_model.train.hardware import resolve_precision


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
