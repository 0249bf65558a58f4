"""A checkpoint's unfamiliar-photo statistics applied to a prediction's own forward pass: the score and the
threshold that flags a photo (the arithmetic, and why it is this one: train.unfamiliar_score)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from defect_model.common.backbones import backbone as registered
from defect_model.train.model import Activations
from defect_model.train.unfamiliar_score import LAYER4_ONLY, layer_features, layered_scores, mahalanobis_scores, pooled

DEFAULT_FLAG_SHARE = 0.02


@dataclass(frozen=True)
class Familiarity:
    """A checkpoint's unfamiliar-photo statistics and calibrated threshold."""

    stats: dict
    threshold: float
    info: dict

    @classmethod
    def from_checkpoint(cls, payload: dict) -> "Familiarity | None":
        """From a loaded checkpoint; None for one trained before the score existed (or with unreadable statistics)."""
        stats, info = payload.get("unfamiliar"), payload["meta"].get("unfamiliar")
        if not isinstance(stats, dict) or not isinstance(info, dict) or "threshold" not in info:
            return None
        if info.get("features", "mean") in LAYER4_ONLY:
            parts, keys = [stats], ("means", "whiten")
        elif set(info.get("layers", ())) <= set(_stages_of(payload["meta"])):
            parts, keys = [stats.get(layer) for layer in info["layers"]], ("means", "whiten", "centre", "scale")
        else:
            return None
        usable = parts and all(isinstance(part, dict) and all(isinstance(part.get(k), torch.Tensor) for k in keys)
                               for part in parts)
        return cls(stats, float(info["threshold"]), info) if usable else None

    def scores(self, activations: Activations) -> np.ndarray:
        features = self.info.get("features", "mean")
        if features in LAYER4_ONLY:
            return mahalanobis_scores(pooled(activations.maps, features), self.stats)
        layers = self.info["layers"]
        return layered_scores(layer_features(activations, layers), {layer: self.stats[layer] for layer in layers})


def _stages_of(meta: dict) -> tuple[str, ...]:
    """The stages the checkpoint's network reports (none for a backbone this version does not know)."""
    try:
        return registered(meta.get("config", {}).get("backbone", "resnet50")).stages
    except ValueError:
        return ()
