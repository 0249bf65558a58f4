"""Checkpoints: a state_dict plus JSON-able metadata, written atomically, read with weights_only=True."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import torch

from defect_model.common.durable import write_atomic

FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and what to do."""


def save_checkpoint(path: str | Path, model_state: dict, meta: dict, training_state: dict | None = None) -> None:
    """Write {model, meta, training} to `path`, whole or not at all, also across a crash or a power cut."""
    path = Path(path)
    json.dumps(meta)  # metadata must stay plain data, never pickled objects
    payload = {"format_version": FORMAT_VERSION, "model": model_state, "meta": meta}
    if training_state is not None:
        payload["training"] = training_state
    write_atomic(path, lambda handle: torch.save(payload, handle), mode="wb")


def add_to_checkpoint(path: str | Path, key: str, tensors: dict, meta: dict) -> None:
    """Store `tensors` (plain tensors, or dicts of them) under `key` and merge `meta` (JSON-able) into the metadata
    of the checkpoint at `path`, rewriting it whole (the weights and any training state stay as they are)."""
    payload = load_checkpoint(path)
    json.dumps(meta)
    if not all(_plain_tensors(v) for v in tensors.values()):
        raise TypeError("a checkpoint holds plain tensors only")
    payload[key] = dict(tensors)
    payload["meta"] = {**payload["meta"], **meta}
    write_atomic(Path(path), lambda handle: torch.save(payload, handle), mode="wb")


def torch_reason(exc: Exception) -> str:
    """torch's reason for refusing a file, without its advice to load it with weights_only=False: that would
    unpickle whatever the file holds, which this tool never does with a file from elsewhere."""
    text = str(exc)
    if "weights_only" in text or "Weights only load failed" in text:
        found = re.search(r"Unsupported (global: GLOBAL [\w.]+|operand \d+|[^\n.]+)", text)
        what = f" ({found.group(0).replace('GLOBAL ', '')})" if found else ""
        return (f"it holds something other than tensors and plain data{what}: it was not written by this tool, "
                "or it was altered")
    return (text.strip().splitlines() or ["unreadable"])[0][:300]


def _plain_tensors(value) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain_tensors(v) for k, v in value.items())
    return isinstance(value, torch.Tensor)


def load_checkpoint(path: str | Path, data: bytes | None = None) -> dict:
    """Read a checkpoint without unpickling anything but tensors and plain data; `data`: the file's bytes, read
    already (by a caller that hashed them: what is loaded is then what was hashed)."""
    path = Path(path)
    if data is None and not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint there. Train a model first or pick another run.")
    try:
        payload = torch.load(io.BytesIO(data) if data is not None else path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for damaged or foreign files
        raise CheckpointError(f"{path}: not a readable defect_model checkpoint ({type(exc).__name__}: "
                              f"{torch_reason(exc)}). Use a checkpoint.pt written by this tool.") from None
    if not isinstance(payload, dict) or "model" not in payload or "meta" not in payload:
        raise CheckpointError(f"{path}: this file is not a defect_model checkpoint (no model/meta). "
                              "Use a checkpoint.pt written by this tool.")
    meta = payload["meta"]
    for key in ("classes", "config", "preprocessing"):
        if key not in meta:
            raise CheckpointError(f"{path}: the checkpoint metadata lacks {key!r}. Retrain the model with this tool.")
    return payload


def read_weights(source: str | Path) -> tuple[dict, list[str] | None, Path]:
    """Weights to start a run from: (state_dict, the classes its head was trained for or None, the file).

    `source` is a run folder (its checkpoint.pt), a checkpoint of this tool, or a plain state_dict file
    (for example torchvision's ImageNet ResNet weights, fetched elsewhere). Read with weights_only=True.
    """
    path = Path(source)
    if path.is_dir():
        path = path / "checkpoint.pt"
    if not path.is_file():
        raise CheckpointError(f"{path}: no weights file there. Give a run folder that has a checkpoint.pt, "
                              "or a .pt file of weights.")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for damaged or foreign files
        raise CheckpointError(f"{path}: not a readable weights file ({type(exc).__name__}: {torch_reason(exc)}). "
                              "Give a "
                              "checkpoint.pt of this tool or a PyTorch state_dict saved with torch.save.") from None
    classes = None
    if isinstance(payload, dict) and isinstance(payload.get("meta"), dict):
        classes = list(payload["meta"].get("classes") or []) or None
    if isinstance(payload, dict):
        for key in ("model", "state_dict"):
            if isinstance(payload.get(key), dict):
                payload = payload[key]
                break
    if not isinstance(payload, dict) or not payload or not all(isinstance(v, torch.Tensor) for v in payload.values()):
        raise CheckpointError(f"{path}: holds no network weights (a state_dict of tensors). Give a checkpoint.pt "
                              "of this tool or a PyTorch state_dict.")
    return payload, classes, path


def inference_bytes(path: str | Path) -> bytes:
    """The checkpoint at `path` without its training state (optimizer moments, scheduler, random state): what
    inspecting with it needs, about a third of the file for an AdamW run. Loads like any checkpoint."""
    import io

    payload = load_checkpoint(path)
    payload.pop("training", None)
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()
