"""ONNX graphs of a model: export, check against torch, open with onnxruntime.

Shared by the user-facing export (`workflows/onnx_export.py`: one `logits` output) and the serving path
(`serving.py`: logits plus the last stage's maps the fast Grad-CAM needs).
"""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

OPSET = 17
TOLERANCE = 1e-4
INPUT_NAME = "input"
LOGITS = "logits"  # every graph's first output (the serving graph adds the maps)


class OnnxMismatch(RuntimeError):
    """onnxruntime's outputs differ from torch's by more than TOLERANCE."""


def export_graph(module: nn.Module, size: int, path: Path, output_names: Sequence[str]) -> None:
    """Write `module` (eval mode, float32 NCHW input of shape (batch, 3, size, size)) as ONNX."""
    module = copy.deepcopy(module).to(memory_format=torch.contiguous_format).eval()  # the caller's stays as it is
    dynamic = {name: {0: "batch"} for name in (INPUT_NAME, *output_names)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter announces its deprecation
        torch.onnx.export(module, (torch.zeros(1, 3, size, size),), str(path), dynamo=False, opset_version=OPSET,
                          input_names=[INPUT_NAME], output_names=list(output_names), dynamic_axes=dynamic,
                          do_constant_folding=True)


def open_session(path: str | Path | bytes, threads: int | None = None):
    """An onnxruntime CPU session of a graph file or a graph's bytes; `threads` None = onnxruntime's default (all
    cores)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    # Idle worker threads sleep instead of spinning: the dashboard shares its cores with the browser and trainer.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    model = path if isinstance(path, bytes) else str(path)
    return onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])


@torch.inference_mode()
def max_output_diff(path: str | Path, module: nn.Module, size: int, batch: int = 2, seed: int = 0,
                    relative: Sequence[str] = ()) -> float:
    """Largest |onnxruntime - torch| over every output on a seeded random batch; raises OnnxMismatch
    when the shapes differ or the difference is above TOLERANCE. Outputs named in `relative` are
    compared relative to their largest magnitude (activation maps reach the hundreds, where float32
    rounding alone exceeds an absolute 1e-4; the heatmap made from them is scale-free)."""
    inputs = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))
    expected = module(inputs)
    expected = [expected] if isinstance(expected, torch.Tensor) else list(expected)
    session = open_session(path, threads=os.cpu_count())
    names = [output.name for output in session.get_outputs()]
    got = session.run(None, {INPUT_NAME: inputs.numpy()})
    diff = 0.0
    for name, want, have in zip(names, expected, got):
        if have.shape != tuple(want.shape):
            raise OnnxMismatch(f"{path}: ONNX output shape {have.shape} differs from torch's {tuple(want.shape)}.")
        scale = max(1.0, float(want.abs().max())) if name in relative else 1.0
        diff = max(diff, float(np.abs(have - want.numpy()).max()) / scale)
    if not diff <= TOLERANCE:
        raise OnnxMismatch(f"{path}: ONNX outputs differ from torch by {diff:.2e} (limit {TOLERANCE:.0e}).")
    return diff
