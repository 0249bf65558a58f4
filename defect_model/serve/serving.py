"""The fast inference path: an ONNX Runtime graph of a checkpoint, exported once and cached beside it.

The graph's outputs are the logits, the last stage's activation maps and the earlier stages' spatial means, so a
prediction, its Grad-CAM heatmap (see explain.fast_gradcam) and its unfamiliar score (serve.unfamiliar) come from
one run of the graph. Before a cached graph
is used it must belong to the checkpoint (same size and modification time), must have matched
torch when it was exported (the logits within onnx_graph.TOLERANCE, the maps and means within
TOLERANCE of their largest value), and its bytes must hash to the sha256 recorded when it was built: the one in
the graph's ledger (the audit trail, for the served model) where one is given, else the one in the file beside
it. A graph that does not is rebuilt from the checkpoint (and, with a ledger, the replacement is audited). The
session is opened from the very bytes that were hashed, and the Predictor reports that hash with each verdict.
"""

from __future__ import annotations

import hashlib
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


class GraphLedger:
    """Where the served graphs' hashes are recorded when they are built and read back before a cached graph is used:
    the audit trail (hash-chained and anchored), not the file beside the graph, which whoever can replace the graph
    can rewrite too. Keyed by the checkpoint's sha256."""

    def __init__(self, log):
        self.log = log  # access.audit.AuditLog

    @classmethod
    def default(cls) -> "GraphLedger":
        from defect_model.access.accounts import audit_log

        return cls(audit_log())

    def built(self, checkpoint_sha256: str) -> set[str]:
        return {e["detail"].get("graph_sha256") for e in self.log.events("serving_graph", limit=100_000)
                if e["target"] == checkpoint_sha256}

    def record(self, checkpoint_sha256: str, graph: Path, graph_sha256: str, replaced: str = "") -> None:
        from defect_model.access.accounts import Actor

        actor = Actor("serving", "system")
        if replaced:
            self.log.record(actor, "serving_graph_replaced", checkpoint_sha256, graph=str(graph), problem=replaced)
        self.log.record(actor, "serving_graph", checkpoint_sha256, graph=str(graph), graph_sha256=graph_sha256)


def cached_graph(checkpoint: Path, stamp: dict | None = None, outputs: tuple[str, ...] | None = None,
                 trusted: set[str] | None = None) -> tuple[bytes, str] | tuple[None, str]:
    """The bytes of the graph exported from the checkpoint identified by `stamp` (default: the file as it is now)
    with these `outputs` (default: whichever it has), with their sha256; else (None, why not: '' when there simply
    is none yet). `trusted`: the graph hashes the ledger recorded for this checkpoint (None: no ledger, the hash
    recorded beside the graph is the reference)."""
    graph, info = serving_paths(checkpoint)
    try:
        recorded = json.loads(info.read_text())
    except (OSError, json.JSONDecodeError):
        return None, ""
    fresh = all(recorded.get(k) == v for k, v in (stamp or fingerprint(checkpoint)).items()) and (
        outputs is None or recorded.get("outputs") == list(outputs))
    if not (fresh and graph.is_file() and recorded.get("max_abs_diff", 1.0) <= TOLERANCE):
        return None, ""
    if trusted is not None and not trusted:
        return None, ""  # built before the ledger recorded graphs: rebuilt and recorded, no one to blame
    data = graph.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    expected = trusted if trusted is not None else {recorded.get("graph_sha256")}
    if digest not in expected:
        where = "the audit trail" if trusted is not None else f"{info.name}"
        return None, (f"{graph}: its sha256 {digest[:12]}... is not the one recorded in {where} when it was built "
                      "(the file was changed); rebuilt from the checkpoint")
    return data, digest


def serving_graph(checkpoint: str | Path, net: nn.Module, size: int, stamp: dict,
                  ledger: GraphLedger | None = None, checkpoint_sha256: str = "") -> tuple[bytes, str]:
    """Export (or reuse) the serving graph of `checkpoint`, whose weights `net` holds, as read when the
    file's fingerprint was `stamp` (so a checkpoint rewritten meanwhile never gets these weights' graph); returns
    the graph's bytes and their sha256. With a `ledger`, the graph's hash is checked against (and a new graph's
    recorded in) it under `checkpoint_sha256`."""
    checkpoint = Path(checkpoint)
    outputs = outputs_of(net)
    trusted = ledger.built(checkpoint_sha256) if ledger is not None else None
    data, digest = cached_graph(checkpoint, stamp, outputs, trusted)
    if data is not None:
        return data, digest
    replaced = digest  # why the cached one was not used, when there was one
    graph, info = serving_paths(checkpoint)
    tmp = graph.with_name(f"{graph.name}.{os.getpid()}.tmp")
    wrapped = LogitsAndFeatures(net).eval()  # net serves inference only: eval mode is its state from now on
    try:
        export_graph(wrapped, size, tmp, outputs)
        diff = max_output_diff(tmp, wrapped, size, relative=list(outputs[1:]))
        data = tmp.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        tmp.replace(graph)
        info.write_text(json.dumps({**stamp, "outputs": list(outputs), "max_abs_diff": diff, "tolerance": TOLERANCE,
                                    "graph_sha256": digest}))
    except OnnxMismatch as exc:
        raise ServingUnavailable(str(exc)) from None
    except Exception as exc:  # a read-only folder, or the exporter or onnxruntime failing in their many ways
        raise ServingUnavailable(f"{checkpoint}: no ONNX Runtime graph ({type(exc).__name__}: {exc})") from None
    finally:
        tmp.unlink(missing_ok=True)
    if ledger is not None:
        ledger.record(checkpoint_sha256, graph, digest, replaced)
    return data, digest


def serving_session(checkpoint: str | Path, net: nn.Module, size: int, stamp: dict, threads: int | None = None,
                    ledger: GraphLedger | None = None, checkpoint_sha256: str = ""):
    """(an onnxruntime session whose outputs are outputs_of(net), the sha256 of the graph it runs, opened from the
    bytes that were hashed); raises ServingUnavailable."""
    data, digest = serving_graph(checkpoint, net, size, stamp, ledger, checkpoint_sha256)
    try:
        return open_session(data, threads), digest
    except Exception as exc:
        raise ServingUnavailable(f"{serving_paths(Path(checkpoint))[0]}: onnxruntime cannot open it "
                                 f"({type(exc).__name__}: {exc})") from None
