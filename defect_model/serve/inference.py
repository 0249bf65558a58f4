"""Predictor: a checkpoint turned into per-class probabilities. Imports no training code."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from defect_model.common.places import pinned_sha256
from defect_model.train.checkpoint import CheckpointError, load_checkpoint
from defect_model.photos.images import ImageSource, prepare_array
from defect_model.train.model import Activations, build_model, early_stages, forward_parts
from defect_model.serve.onnx_graph import INPUT_NAME, LOGITS
from defect_model.serve.unfamiliar import Familiarity
from defect_model.photos.preprocess import normalize_batch


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


BACKENDS = ("auto", "onnxruntime", "torch")


class Predictor:
    """Eval-mode model plus its preprocessing. Never changes the model after construction,
    so one instance can serve several threads (browser tabs) at once.

    Predictions run through an onnxruntime session when one is given (the fast path, checked
    equal to torch within 1e-4 when it was exported), else through the torch model, which is
    kept either way for the heatmap methods that need gradients."""

    def __init__(self, model: nn.Module, classes: Sequence[str], preprocessing: Preprocessing,
                 meta: dict | None = None, channels_last: bool = True, session=None, backend_note: str = "",
                 familiarity: Familiarity | None = None, checkpoint_sha256: str = "", graph_sha256: str = ""):
        self.session = session
        # What judges: the sha256 of the checkpoint's bytes as loaded and of the ONNX graph's as opened ('' where
        # torch judges, or for a model not loaded from a file); logged with every inspection.
        self.checkpoint_sha256, self.graph_sha256 = checkpoint_sha256, graph_sha256 if session is not None else ""
        self.familiarity = familiarity  # None: a checkpoint from before the unfamiliar-photo check
        self.backend = "onnxruntime" if session is not None else "torch"
        self.backend_note = backend_note
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
    def from_checkpoint(cls, path: str | Path, backend: str = "auto", threads: int | None = None,
                        ledger=None) -> "Predictor":
        """`backend`: auto (onnxruntime when its graph can be exported and checked, else torch),
        onnxruntime (raise ServingUnavailable if it cannot be used) or torch. A pinned copy of a checkpoint (named
        by its sha256, runs.folders.pin_checkpoint) must still hash to its name. `ledger` (serving.GraphLedger):
        where the serving graph's hash is checked and recorded (the served model: the audit trail)."""
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        from defect_model.serve.serving import ServingUnavailable, fingerprint, serving_session

        # Taken before reading: which version of the file the weights came from (a missing file is left to
        # load_checkpoint, whose message names it).
        path = Path(path)
        stamp = fingerprint(path) if backend != "torch" and path.is_file() else {}
        data = path.read_bytes() if path.is_file() else None
        digest = hashlib.sha256(data).hexdigest() if data is not None else ""
        pinned = pinned_sha256(path)
        if pinned and digest != pinned:
            raise CheckpointError(f"{path}: its contents no longer hash to the sha256 it was made active with (now "
                                  f"{digest[:12]}...): the served model was changed after activation. Nothing was "
                                  "inspected with it. An admin makes the run active again on the Models page.")
        payload = load_checkpoint(path, data)
        meta = payload["meta"]
        config = meta["config"]
        model = build_model(config["backbone"], len(meta["classes"]), config.get("dropout", 0.0))
        model.load_state_dict(payload["model"])
        meta = dict(meta, checkpoint=str(path))
        preprocessing = Preprocessing.from_dict(meta["preprocessing"])
        session, graph_sha256, note = None, "", "as asked"
        if backend != "torch":
            try:
                session, graph_sha256 = serving_session(path, model, preprocessing.image_size, stamp, threads,
                                                        ledger, digest)
                note = ""
            except ServingUnavailable as exc:
                if backend == "onnxruntime":
                    raise
                note = f"because {exc}"
        return cls(model, meta["classes"], preprocessing, meta, session=session, backend_note=note,
                   familiarity=Familiarity.from_checkpoint(payload), checkpoint_sha256=digest,
                   graph_sha256=graph_sha256)

    # -- input ----------------------------------------------------------
    def prepare(self, source: ImageSource, name: str | None = None) -> np.ndarray:
        """One photo -> uint8 (size, size, 3), as the model sees it."""
        p = self.preprocessing
        return prepare_array(source, p.image_size, p.resize_mode, name=name)

    def to_tensor(self, arrays: Sequence[np.ndarray]) -> torch.Tensor:
        p = self.preprocessing
        return normalize_batch(np.stack(arrays), p.mean, p.std, self.channels_last and self.session is None)

    # -- output ---------------------------------------------------------
    @torch.inference_mode()
    def logits_and_activations(self, batch: torch.Tensor) -> tuple[torch.Tensor, Activations]:
        """Logits (N, C) and the activations (the last stage's maps, earlier stages' means) from one forward pass
        (no hooks)."""
        if self.session is not None:
            logits, maps, *means = self.session.run(None, {INPUT_NAME: batch.contiguous().numpy()})
            stage_means = {stage: torch.from_numpy(m) for stage, m in zip(early_stages(self.model), means)}
            return torch.from_numpy(logits), Activations(torch.from_numpy(maps), stage_means)
        return forward_parts(self.model, batch)

    @torch.inference_mode()
    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        if self.session is not None:
            return torch.from_numpy(self.session.run([LOGITS], {INPUT_NAME: batch.contiguous().numpy()})[0])
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

    @property
    def unfamiliar_threshold(self) -> float | None:
        return None if self.familiarity is None else self.familiarity.threshold

    def unfamiliar_scores(self, activations: Activations) -> np.ndarray | None:
        """Unfamiliar scores of the photos whose activations these are; None without the statistics."""
        return None if self.familiarity is None else self.familiarity.scores(activations)

    def predict_with_activations(self, arrays: Sequence[np.ndarray]) -> tuple[np.ndarray, Activations]:
        """Probabilities and activations (the last stage's maps for the heatmap, means for the unfamiliar score)
        from one forward pass."""
        logits, activations = self.logits_and_activations(self.to_tensor(arrays))
        return torch.softmax(logits, dim=1).numpy(), activations
