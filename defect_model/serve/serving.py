"""The fast inference path: an ONNX Runtime graph of a checkpoint, exported once and cached beside it.

The graph's outputs are the logits, the last stage's activation maps and the earlier stages' spatial means, so a
prediction, its Grad-CAM heatmap (see explain.fast_gradcam) and its unfamiliar score (serve.unfamiliar) come from
one run of the graph. Before a cached graph
is used it must belong to the checkpoint (same size and modification time) and must have matched
torch when it was exported: the logits within onnx_graph.TOLERANCE, the maps and means within
TOLERANCE of their largest value.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from defect_model.train.model import early_stages, forward_parts
from defect_model.serve.onnx_graph import LOGITS, OPSET, TOLERANCE, OnnxMismatch, export_graph, max_output_diff, open_session

MAPS = "features"


def outputs_of(net: nn.Module) -> tuple[str, ...]:
    """The graph's outputs for this network: logits, the maps, its earlier stages' means (a ResNet's: layer1-3)."""
    return (LOGITS, MAPS, *(f"{stage}_mean" for stage in early_stages(net)))


class ServingUnavailable(RuntimeError):
    """The ONNX Runtime path cannot be used for this checkpoint; the message says why."""


class LogitsAndFeatures(nn.Module):
    """The graph that is exported: (logits, the last stage's maps, the earlier stages' means) from one pass."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor):
        logits, activations = forward_parts(self.net, x)
        return (logits, activations.maps, *(activations.stage_means[stage] for stage in early_stages(self.net)))


def serving_paths(checkpoint: Path) -> tuple[Path, Path]:
    return checkpoint.with_name(checkpoint.name + ".onnx"), checkpoint.with_name(checkpoint.name + ".onnx.json")


def fingerprint(checkpoint: str | Path) -> dict:
    """What identifies a checkpoint file's contents for the cache: take it before reading the weights. (The
    outputs, which depend on the network, are checked when the graph is exported and recorded beside it.)"""
    stat = Path(checkpoint).stat()
    return {"checkpoint_size": stat.st_size, "checkpoint_mtime_ns": stat.st_mtime_ns, "opset": OPSET}


def cached_graph(checkpoint: Path, stamp: dict | None = None, outputs: tuple[str, ...] | None = None) -> Path | None:
    """The graph exported from the checkpoint identified by `stamp` (default: the file as it is now) with these
    `outputs` (default: whichever it has), or None."""
    graph, info = serving_paths(checkpoint)
    try:
        recorded = json.loads(info.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    fresh = all(recorded.get(k) == v for k, v in (stamp or fingerprint(checkpoint)).items()) and (
        outputs is None or recorded.get("outputs") == list(outputs))
    return graph if fresh and graph.is_file() and recorded.get("max_abs_diff", 1.0) <= TOLERANCE else None


def serving_graph(checkpoint: str | Path, net: nn.Module, size: int, stamp: dict) -> Path:
    """Export (or reuse) the serving graph of `checkpoint`, whose weights `net` holds, as read when the
    file's fingerprint was `stamp` (so a checkpoint rewritten meanwhile never gets these weights' graph)."""
    checkpoint = Path(checkpoint)
    outputs = outputs_of(net)
    cached = cached_graph(checkpoint, stamp, outputs)
    if cached is not None:
        return cached
    graph, info = serving_paths(checkpoint)
    tmp = graph.with_name(f"{graph.name}.{os.getpid()}.tmp")
    wrapped = LogitsAndFeatures(net).eval()  # net serves inference only: eval mode is its state from now on
    try:
        export_graph(wrapped, size, tmp, outputs)
        diff = max_output_diff(tmp, wrapped, size, relative=list(outputs[1:]))
        tmp.replace(graph)
        info.write_text(json.dumps({**stamp, "outputs": list(outputs), "max_abs_diff": diff, "tolerance": TOLERANCE}))
    except OnnxMismatch as exc:
        raise ServingUnavailable(str(exc)) from None
    except Exception as exc:  # a read-only folder, or the exporter or onnxruntime failing in their many ways
        raise ServingUnavailable(f"{checkpoint}: no ONNX Runtime graph ({type(exc).__name__}: {exc})") from None
    finally:
        tmp.unlink(missing_ok=True)
    return graph


def serving_session(checkpoint: str | Path, net: nn.Module, size: int, stamp: dict, threads: int | None = None):
    """An onnxruntime session whose outputs are outputs_of(net); raises ServingUnavailable."""
    graph = serving_graph(checkpoint, net, size, stamp)
    try:
        return open_session(graph, threads)
    except Exception as exc:
        raise ServingUnavailable(f"{graph}: onnxruntime cannot open it ({type(exc).__name__}: {exc})") from None
