"""How unlike the training photos a photo is: a score from the prediction's own forward pass.

For each of the network's last three stages (a ResNet's layers 2, 3 and 4; an EfficientNet-Lite's blocks 2 and 4
and its head): the Mahalanobis distance of the photo's spatial means of that stage's output (square-rooted, sign
kept: post-ReLU averages are skewed, and the root makes them closer to Gaussian) to the nearest class mean of the
training photos, under one covariance shared by all classes and shrunk towards a scaled identity (a few hundred
photos cannot fill a 512x512 or 2048x2048 covariance; the fewer the photos for the features, the more:
shrinkage_for); each layer's distance is standardised by its mean and spread on the training photos, and the
score is their sum. Layer4 alone (the head's input) is invariant to
much of what a camera changes - lighting, focus, contrast - because training taught it to be; the earlier layers
still see it. Mahalanobis was chosen over the k-nearest-neighbour cosine distance and the energy score, the root
and the shrinkage over plain means and other shrinkages (bench/results/trust.md), and layers 2-4 over layer4 alone,
3-4 and 1-4 on two changes used only for that choice (bench/results/trust-layers.txt).

The statistics are plain tensors stored in the checkpoint (`unfamiliar` key: one dict per layer) and its metadata
(`meta["unfamiliar"]`: method, features, layers, threshold, the share of validation photos it flags), so they load
with weights_only=True. Checkpoints from before the layer sum (`features` "mean" or "sqrt-mean") keep their layer4
score; a checkpoint without statistics has no score, and nothing else changes.

The arithmetic only: train.familiarity fits the statistics at the end of training, serve.unfamiliar applies a
checkpoint's to a prediction; both import it from here (serving may import training's modules, never the reverse).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from defect_model.train.model import Activations

SHRINKAGE = 0.3  # the least weight of the scaled identity in the shared covariance (see shrinkage_for)
FEATURES = "layers-sqrt-mean"  # what statistics fitted now describe; checkpoints record theirs
LAYER4_ONLY = ("mean", "sqrt-mean")  # earlier checkpoints' features: layer4's means or their roots
LAYERS = ("layer2", "layer3", "layer4")  # a ResNet's; every backbone scores its own last three stages


def shrinkage_for(dims: int, photos: int, least: float = SHRINKAGE) -> float:
    """The weight of the scaled identity for a covariance of `dims` features from `photos` photos: at least
    `least`, and dims / (dims + photos) where photos are few for the features. A 1280-feature EfficientNet head
    fitted on 160 photos with 0.3 scored unseen ordinary photos as far as noise (AUROC 0.35 on the demo set; 0.9
    of the identity: 1.0); a ResNet18 on NEU-CLS or ELPV (512 features, 1,440 or more photos) keeps 0.3."""
    return max(least, dims / (dims + max(photos, 1)))


def score_layers(stages: Sequence[str]) -> tuple[str, ...]:
    """The stages a network's score sums over: the last three of those its forward pass reports."""
    return tuple(stages[-3:])


def pooled(maps: torch.Tensor | np.ndarray, features: str = "sqrt-mean") -> torch.Tensor:
    """Layer4 maps (N, K, h, w) -> (N, K): what the ResNet's average pool hands its head ("mean"), or its square
    root ("sqrt-mean"; the maps are post-ReLU, never negative). The features of checkpoints from before the layer
    sum, and of the benchmark's comparison scores."""
    means = torch.as_tensor(maps).float().mean(dim=(2, 3))
    if features not in LAYER4_ONLY:
        raise ValueError(f"unknown unfamiliar-score features {features!r}")
    return means.sqrt() if features == "sqrt-mean" else means


def layer_features(activations: Activations, layers: Sequence[str]) -> dict[str, torch.Tensor]:
    """Each layer's square-rooted spatial means (N, K_layer): the features the layered score is fitted on. The root
    keeps the sign: a ResNet's stages end in a ReLU (never negative), an EfficientNet's blocks in a linear
    projection."""
    return {layer: _signed_root(activations.means(layer)) for layer in layers}


def _signed_root(values: torch.Tensor) -> torch.Tensor:
    return values.sign() * values.abs().sqrt()


def fit_mahalanobis(features: torch.Tensor, labels: torch.Tensor, num_classes: int,
                    shrinkage: float | None = None) -> dict[str, torch.Tensor]:
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
    shrinkage = shrinkage_for(dims, len(features)) if shrinkage is None else shrinkage
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


def fit_layers(features: Mapping[str, torch.Tensor], labels: torch.Tensor, num_classes: int,
               shrinkage: float | None = None) -> dict[str, dict[str, torch.Tensor]]:
    """Per layer: fit_mahalanobis, and the mean and spread of the training photos' own distances ("centre",
    "scale"), which put every layer's distance on one scale before they are summed."""
    stats = {}
    for layer, values in features.items():
        fitted = fit_mahalanobis(values, labels, num_classes, shrinkage)
        own = mahalanobis_scores(values, fitted)
        fitted["centre"] = torch.tensor(float(own.mean()))
        fitted["scale"] = torch.tensor(max(float(own.std()), 1e-6))  # guards a degenerate layer, never divides by 0
        stats[layer] = fitted
    return stats


def layered_scores(features: Mapping[str, torch.Tensor], stats: Mapping[str, dict]) -> np.ndarray:
    """The sum over the fitted layers of each layer's standardised Mahalanobis distance."""
    return sum((mahalanobis_scores(features[layer], fitted) - float(fitted["centre"])) / float(fitted["scale"])
               for layer, fitted in stats.items())


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
