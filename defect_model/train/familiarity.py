"""At the end of training: what the network's features look like on the training photos (the arithmetic:
unfamiliar_score), with the threshold that flags the chosen share of the validation photos, stored in the run's
checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from defect_model.common.config import TrainConfig
from defect_model.common.durable import write_text_atomic
from defect_model.photos.preprocess import normalize_batch
from defect_model.runs.folders import RunDir
from defect_model.train import checkpoint as ckpt
from defect_model.train.data import DecodedImages
from defect_model.train.model import build_model, forward_parts, stages_of
from defect_model.train.prepare import decode_split, plan_split
from defect_model.train.unfamiliar_score import (FEATURES, calibrate, fit_layers, layer_features, layered_scores,
                                                 score_layers, shrinkage_for)

BATCH = 64


@torch.inference_mode()
def pooled_features(model: nn.Module, images: DecodedImages, mean, std,
                    device: torch.device = torch.device("cpu")) -> dict[str, torch.Tensor]:
    """Each layer's features (unfamiliar_score.layer_features: layer -> (N, K_layer)) of decoded photos, the model
    in eval mode."""
    model.eval()
    layers = score_layers(stages_of(model))
    features = {layer: [] for layer in layers}
    for start in range(0, len(images.paths), BATCH):
        batch = normalize_batch(images.pixels[start:start + BATCH], mean, std, channels_last=False).to(device)
        _, activations = forward_parts(model, batch)
        for layer, values in layer_features(activations, layers).items():
            features[layer].append(values.float().cpu())
    return {layer: torch.cat(values) for layer, values in features.items()}


def fit_familiarity(model: nn.Module, train: DecodedImages, val: DecodedImages, num_classes: int, mean, std,
                    flag_share: float, device: torch.device = torch.device("cpu")) -> tuple[dict, dict, np.ndarray]:
    """(tensors, metadata) for checkpoint.add_to_checkpoint, statistics from `train` and threshold from `val`,
    and the validation photos' scores (in `val`'s order)."""
    train_features = pooled_features(model, train, mean, std, device)
    stats = fit_layers(train_features, train.labels, num_classes)
    val_scores = layered_scores(pooled_features(model, val, mean, std, device), stats)
    threshold = calibrate(val_scores, flag_share)
    shrinkage = {layer: shrinkage_for(values.shape[1], len(values)) for layer, values in train_features.items()}
    info = {"method": "mahalanobis", "features": FEATURES, "layers": list(stats), "shrinkage": shrinkage,
            "threshold": threshold, "flag_share": flag_share, "val_flag_rate": float(np.mean(val_scores > threshold)),
            "train_images": len(train.paths), "val_images": len(val.paths)}
    return stats, {"unfamiliar": info}, np.asarray(val_scores)


def flag_predictions(predictions_csv: Path, val_paths: list[str], scores: np.ndarray, threshold: float) -> None:
    """Add each validation photo's unfamiliar score, and whether it is flagged, to the run's val_predictions.csv:
    the Review page's operating point sends flagged photos to a person, as Inspect will."""
    table = pd.read_csv(predictions_csv, keep_default_na=False)
    by_path = dict(zip(val_paths, np.asarray(scores, dtype=np.float64)))
    table["unfamiliar_score"] = table["path"].map(by_path)
    table["unfamiliar"] = table["unfamiliar_score"] > threshold
    write_text_atomic(predictions_csv, table.to_csv(index=False))


def store_familiarity(checkpoint: str | Path, tensors: dict, meta: dict) -> None:
    ckpt.add_to_checkpoint(checkpoint, "unfamiliar", tensors, meta)


def describe(meta: dict) -> str:
    info = meta["unfamiliar"]
    return (f"unfamiliar-photo check: statistics of {info['train_images']} training photos; its threshold flags "
            f"{info['val_flag_rate']:.1%} of the {info['val_images']} validation photos (asked: "
            f"{info['flag_share']:.1%})")


def add_to_run(run_path: str | Path, flag_share: float | None = None) -> dict:
    """Give a finished run's checkpoint its statistics (a run trained before the check existed); returns the
    stored metadata. Decodes the run's own split as training did."""
    run = RunDir(Path(run_path))
    cfg = TrainConfig.from_yaml(run.config, strict=False)
    payload = ckpt.load_checkpoint(run.checkpoint)
    model = build_model(cfg.backbone, len(payload["meta"]["classes"]), cfg.dropout)
    model.load_state_dict(payload["model"])
    data = decode_split(cfg, plan_split(cfg, run, reuse_split=True, write=False))
    share = cfg.unfamiliar_share if flag_share is None else flag_share
    tensors, meta, scores = fit_familiarity(model, data.train, data.val, len(data.classes), cfg.mean, cfg.std, share)
    meta["unfamiliar"]["added_after_training"] = True
    store_familiarity(run.checkpoint, tensors, meta)
    flag_predictions(run.val_predictions, data.val.paths, scores, meta["unfamiliar"]["threshold"])
    return meta
