"""Predictor: a checkpoint turned into per-class probabilities. Imports no training code."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .checkpoint import load_checkpoint
from .images import ImageSource, prepare_array
from .model import build_model, features_and_logits
from .preprocess import normalize_batch


@dataclass(frozen=True)
class Preprocessing:
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize_mode: str = "stretch"

    @classmethod
    def from_dict(cls, data: dict) -> "Preprocessing":
        return cls(int(data["image_size"]), tuple(data["mean"]), tuple(data["std"]), data.get("resize_mode", "stretch"))


def _is_single(inputs) -> bool:
    if isinstance(inputs, np.ndarray):
        return inputs.ndim in (2, 3)
    return not isinstance(inputs, (list, tuple))


class Predictor:
    """Eval-mode model plus its preprocessing. Never changes the model after construction,
    so one instance can serve several threads (browser tabs) at once."""

    def __init__(self, model: nn.Module, classes: Sequence[str], preprocessing: Preprocessing,
                 meta: dict | None = None, channels_last: bool = True):
        self.model = model.eval()
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)
        self.channels_last = channels_last
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.classes = list(classes)
        self.preprocessing = preprocessing
        self.meta = dict(meta or {})

    @classmethod
    def from_checkpoint(cls, path: str | Path) -> "Predictor":
        payload = load_checkpoint(path)
        meta = payload["meta"]
        config = meta["config"]
        model = build_model(config["backbone"], len(meta["classes"]), config.get("dropout", 0.0))
        model.load_state_dict(payload["model"])
        meta = dict(meta, checkpoint=str(path))
        return cls(model, meta["classes"], Preprocessing.from_dict(meta["preprocessing"]), meta)

    # -- input ----------------------------------------------------------
    def prepare(self, source: ImageSource, name: str | None = None) -> np.ndarray:
        """One photo -> uint8 (size, size, 3), as the model sees it."""
        p = self.preprocessing
        return prepare_array(source, p.image_size, p.resize_mode, name=name)

    def to_tensor(self, arrays: Sequence[np.ndarray]) -> torch.Tensor:
        p = self.preprocessing
        return normalize_batch(np.stack(arrays), p.mean, p.std, self.channels_last)

    # -- output ---------------------------------------------------------
    @torch.inference_mode()
    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        return self.model(batch)

    def predict(self, inputs, names: Sequence[str] | None = None, batch_size: int = 32) -> np.ndarray:
        """Per-class probabilities: shape (C,) for one photo, (N, C) for a list of photos."""
        single = _is_single(inputs)
        sources = [inputs] if single else list(inputs)
        names = list(names) if names is not None else [None] * len(sources)
        arrays = [self.prepare(s, n) for s, n in zip(sources, names)]
        probs = self.predict_arrays(arrays, batch_size)
        return probs[0] if single else probs

    def predict_arrays(self, arrays: Sequence[np.ndarray], batch_size: int = 32) -> np.ndarray:
        out = []
        for start in range(0, len(arrays), batch_size):
            logits = self.logits(self.to_tensor(arrays[start:start + batch_size]))
            out.append(torch.softmax(logits, dim=1).numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.classes)), dtype=np.float32)

    @torch.inference_mode()
    def predict_with_features(self, arrays: Sequence[np.ndarray]) -> tuple[np.ndarray, torch.Tensor]:
        """Probabilities and layer4 activation maps from one forward pass (no hooks)."""
        features, logits = features_and_logits(self.model, self.to_tensor(arrays))
        return torch.softmax(logits, dim=1).numpy(), features
