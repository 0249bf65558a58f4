"""ONNX export of a run's checkpoint, checked against torch before it is handed out.

The file is `model.onnx` beside `checkpoint.pt`: opset 17, one input `input` of shape (batch, 3, S, S)
(float32, normalised as the checkpoint's preprocessing says; batch is dynamic), one output `logits`
of shape (batch, classes) (apply softmax for probabilities). Classes and preprocessing travel in the
model's metadata. A fresh export is reused; a newer checkpoint triggers a new one.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from defect_model.serve.inference import Predictor
from defect_model.serve.onnx_graph import (INPUT_NAME, LOGITS, OPSET, TOLERANCE, OnnxMismatch, export_graph, max_output_diff,
                         open_session)
from defect_model.runs.folders import RunDir, now_iso, write_json_atomic


class ExportError(RuntimeError):
    """An export that failed or whose outputs disagree with torch; the message says what to do."""


@dataclass
class ExportResult:
    path: str
    opset: int
    input_name: str
    input_shape: list  # ["batch", 3, S, S]
    output_name: str
    output_shape: list  # ["batch", C]
    classes: list[str]
    preprocessing: dict
    max_abs_diff: float  # largest |onnxruntime - torch| logit over the check batch
    tolerance: float
    checked_batch: int
    checkpoint_mtime: float
    exported_at: str

    def describe(self) -> str:
        size = self.input_shape[2]
        mean = ", ".join(f"{v:.3f}" for v in self.preprocessing["mean"])
        std = ", ".join(f"{v:.3f}" for v in self.preprocessing["std"])
        return (f"ONNX opset {self.opset}; input `{self.input_name}` float32 of shape (batch, 3, {size}, {size}) "
                f"(photo resized by {self.preprocessing.get('resize_mode', 'stretch')} to {size}x{size}, RGB scaled "
                f"to [0, 1], normalised with mean ({mean}) and std ({std})); "
                f"output `{self.output_name}` of shape (batch, {len(self.classes)}) = logits for "
                f"{', '.join(self.classes)}. Checked against torch on {self.checked_batch} inputs: "
                f"max difference {self.max_abs_diff:.1e} (limit {self.tolerance:.0e}).")


def onnx_paths(run: RunDir) -> tuple[Path, Path]:
    return run.path / "model.onnx", run.path / "model.onnx.json"


def cached_export(run: RunDir) -> ExportResult | None:
    """The existing export when it belongs to the current checkpoint, else None."""
    model_path, info_path = onnx_paths(run)
    try:
        info = json.loads(info_path.read_text())
        result = ExportResult(**info)
    except (FileNotFoundError, json.JSONDecodeError, TypeError):
        return None
    if not model_path.is_file() or not run.checkpoint.is_file():
        return None
    if result.checkpoint_mtime != run.checkpoint.stat().st_mtime or result.opset != OPSET:
        return None
    return result


def export_onnx(run: RunDir, check_batch: int = 2, seed: int = 0) -> ExportResult:
    """Export (or reuse) `model.onnx` for the run; raises ExportError if onnxruntime disagrees with torch."""
    cached = cached_export(run)
    if cached is not None:
        return cached
    predictor = Predictor.from_checkpoint(run.checkpoint, backend="torch")  # weights_only=True inside
    checkpoint_mtime = run.checkpoint.stat().st_mtime
    size = predictor.preprocessing.image_size
    model_path, info_path = onnx_paths(run)
    tmp = model_path.with_name(model_path.name + ".tmp")
    try:
        export_graph(predictor.model, size, tmp, [LOGITS])
        _add_metadata(tmp, predictor)
        max_diff = max_output_diff(tmp, predictor.model, size, check_batch, seed)
    except OnnxMismatch as exc:
        tmp.unlink(missing_ok=True)
        raise ExportError(f"{exc} The export is not safe to use. Download the checkpoint instead.") from None
    except Exception as exc:  # the exporter and onnxruntime raise many types
        tmp.unlink(missing_ok=True)
        raise ExportError(f"{run.checkpoint}: the ONNX export failed ({type(exc).__name__}: {exc}). "
                          "Download the checkpoint instead, or report this run id.") from None
    tmp.replace(model_path)
    result = ExportResult(path=str(model_path), opset=OPSET, input_name=INPUT_NAME,
                          input_shape=["batch", 3, size, size],
                          output_name=LOGITS, output_shape=["batch", len(predictor.classes)],
                          classes=list(predictor.classes), preprocessing=asdict(predictor.preprocessing),
                          max_abs_diff=max_diff, tolerance=TOLERANCE, checked_batch=check_batch,
                          checkpoint_mtime=checkpoint_mtime, exported_at=now_iso())
    write_json_atomic(info_path, asdict(result))
    return result


def _add_metadata(path: Path, predictor: Predictor) -> None:
    import onnx

    model = onnx.load(str(path))
    for key, value in (("classes", json.dumps(predictor.classes)),
                       ("preprocessing", json.dumps(asdict(predictor.preprocessing))),
                       ("run_id", str(predictor.meta.get("run_id", "")))):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def run_onnx(path: str | Path, batch: np.ndarray) -> np.ndarray:
    """Logits of an exported model for a normalised float32 NCHW batch."""
    return open_session(path).run([LOGITS], {INPUT_NAME: batch.astype(np.float32)})[0]
