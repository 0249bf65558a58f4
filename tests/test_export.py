import os

import numpy as np
import onnx
import pytest
import torch

from defect_model.train.checkpoint import CheckpointError
from defect_model.workflows.onnx_export import OPSET, TOLERANCE, cached_export, export_onnx, run_onnx
from defect_model.serve.inference import Predictor
from review_support import make_dataset, write_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    base = tmp_path_factory.mktemp("export")
    return write_run(base / "runs", make_dataset(base / "data"))


def test_export_states_its_contract_and_matches_torch(run):
    result = export_onnx(run)
    model = onnx.load(result.path)
    assert result.path == str(run.path / "model.onnx")
    assert model.opset_import[0].version == OPSET == result.opset
    (graph_input,) = model.graph.input
    dims = [d.dim_param or d.dim_value for d in graph_input.type.tensor_type.shape.dim]
    assert dims == ["batch", 3, 64, 64] and result.input_shape == ["batch", 3, 64, 64]
    metadata = {p.key: p.value for p in model.metadata_props}
    assert metadata["classes"] == '["ok", "pit", "scratch"]'
    assert result.max_abs_diff <= TOLERANCE
    assert "opset 17" in result.describe() and "(batch, 3, 64, 64)" in result.describe()

    # Real photos, batch of three (the batch axis is dynamic): ONNX logits equal torch's within 1e-4.
    predictor = Predictor.from_checkpoint(run.checkpoint)
    photos = [predictor.prepare(path) for path in sorted((run.path.parent.parent / "data" / "pit").glob("*.png"))[:3]]
    batch = predictor.to_tensor(photos)
    with torch.inference_mode():
        expected = predictor.model(batch).numpy()
    got = run_onnx(result.path, batch.contiguous().numpy())
    assert got.shape == (3, 3)
    np.testing.assert_allclose(got, expected, atol=TOLERANCE, rtol=0)


def test_export_is_cached_until_the_checkpoint_changes(run):
    first = export_onnx(run)
    written = os.stat(first.path).st_mtime_ns
    assert export_onnx(run).exported_at == first.exported_at
    assert os.stat(first.path).st_mtime_ns == written, "a fresh export is reused, not rewritten"
    stat = run.checkpoint.stat()
    os.utime(run.checkpoint, (stat.st_atime, stat.st_mtime + 10))  # a newer checkpoint
    assert cached_export(run) is None
    assert export_onnx(run).checkpoint_mtime == run.checkpoint.stat().st_mtime


def test_a_foreign_checkpoint_is_refused_with_its_path(tmp_path):
    from defect_model.runs.folders import RunDir

    bad = RunDir(tmp_path / "bad")
    bad.path.mkdir()
    bad.checkpoint.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=str(bad.checkpoint)):
        export_onnx(bad)
    assert not (bad.path / "model.onnx").exists()
