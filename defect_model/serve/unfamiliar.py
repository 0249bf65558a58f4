"""How unlike the training photos a photo is: a score from the prediction's own forward pass.

The score is the Mahalanobis distance of the photo's pooled layer4 features (the input of the linear head,
square-rooted: post-ReLU averages are skewed, and the root makes them closer to Gaussian) to the nearest class
mean of the training photos, under one covariance shared by all classes and shrunk towards a scaled identity
(a few hundred photos cannot fill a 512x512 or 2048x2048 covariance). It was chosen over the
k-nearest-neighbour cosine distance and the energy score, and the root and the shrinkage over plain means and
other shrinkages, by measurement: bench/results/trust.md. The statistics are plain tensors stored in the checkpoint (`unfamiliar` key) and
its metadata (`meta["unfamiliar"]`: method, threshold, the share of validation photos it flags), so they
load with weights_only=True. A checkpoint without them has no score; nothing else changes.

Imports no training code; train.familiarity computes the statistics at the end of training.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

DEFAULT_FLAG_SHARE = 0.02
SHRINKAGE = 0.3  # weight of the scaled identity in the shared covariance
FEATURES = "sqrt-mean"  # what statistics fitted now describe; checkpoints record theirs (older ones: "mean")


def pooled(maps: torch.Tensor | np.ndarray, features: str = FEATURES) -> torch.Tensor:
    """Layer4 maps (N, K, h, w) -> (N, K): what the ResNet's average pool hands its head ("mean"), or its square
    root ("sqrt-mean"; the maps are post-ReLU, never negative)."""
    means = torch.as_tensor(maps).float().mean(dim=(2, 3))
    if features not in ("mean", "sqrt-mean"):
        raise ValueError(f"unknown unfamiliar-score features {features!r}")
    return means.sqrt() if features == "sqrt-mean" else means


def fit_mahalanobis(features: torch.Tensor, labels: torch.Tensor, num_classes: int,
                    shrinkage: float = SHRINKAGE) -> dict[str, torch.Tensor]:
    """Class means and a whitening matrix W (W W^T = inverse of the shared, shrunk covariance).

    Classes without training photos get no mean (NaN rows are skipped when scoring)."""
    features = features.double()
    dims = features.shape[1]
    means = torch.full((num_classes, dims), float("nan"), dtype=torch.float64)
    centred = []
    for c in range(num_classes):
        members = features[labels == c]
        if len(members):
            means[c] = members.mean(0)
            centred.append(members - means[c])
    centred = torch.cat(centred)
    covariance = centred.T @ centred / max(1, len(centred) - 1)
    scale = torch.trace(covariance) / dims
    covariance = (1 - shrinkage) * covariance + shrinkage * scale * torch.eye(dims, dtype=torch.float64)
    whiten = torch.linalg.cholesky(torch.linalg.inv(covariance))
    return {"means": means.float(), "whiten": whiten.float()}


def mahalanobis_scores(features: torch.Tensor, stats: dict[str, torch.Tensor]) -> np.ndarray:
    """Squared Mahalanobis distance to the nearest class mean, one per photo."""
    whiten = stats["whiten"]
    means = stats["means"][~torch.isnan(stats["means"]).any(1)]
    projected = features.float() @ whiten  # (N, K)
    centres = means @ whiten  # (C, K)
    return torch.cdist(projected, centres).pow(2).min(dim=1).values.numpy()


def knn_scores(features: torch.Tensor, train_features: torch.Tensor, k: int = 10) -> np.ndarray:
    """1 - cosine similarity to the k-th nearest training photo (for comparison in the benchmark)."""
    a = torch.nn.functional.normalize(features.float(), dim=1)
    b = torch.nn.functional.normalize(train_features.float(), dim=1)
    similarity = a @ b.T
    k = min(k, similarity.shape[1])
    return (1 - similarity.topk(k, dim=1).values[:, -1]).numpy()


def energy_scores(logits: torch.Tensor) -> np.ndarray:
    """Negative free energy, -logsumexp(logits): higher for less familiar photos (for comparison)."""
    return (-torch.logsumexp(torch.as_tensor(logits).float(), dim=1)).numpy()


def calibrate(scores: np.ndarray, flag_share: float) -> float:
    """The threshold above which `flag_share` of these (ordinary, validation) photos lie."""
    if not 0 < flag_share < 1:
        raise ValueError(f"the share of ordinary photos to flag must be between 0 and 1, not {flag_share:g}")
    return float(np.quantile(np.asarray(scores, dtype=np.float64), 1 - flag_share, method="higher"))


@dataclass(frozen=True)
class Familiarity:
    """A checkpoint's unfamiliar-photo statistics and calibrated threshold."""

    stats: dict
    threshold: float
    info: dict

    @classmethod
    def from_checkpoint(cls, payload: dict) -> "Familiarity | None":
        """From a loaded checkpoint; None for one trained before the score existed."""
        stats, info = payload.get("unfamiliar"), payload["meta"].get("unfamiliar")
        if not isinstance(stats, dict) or not isinstance(info, dict) or "threshold" not in info:
            return None
        if not all(isinstance(stats.get(k), torch.Tensor) for k in ("means", "whiten")):
            return None
        return cls(stats, float(info["threshold"]), info)

    def scores(self, maps: torch.Tensor) -> np.ndarray:
        return mahalanobis_scores(pooled(maps, self.info.get("features", "mean")), self.stats)
