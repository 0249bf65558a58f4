"""Mixed precision: chosen from the processor, recorded in the run, and training still learns."""

import torch

from defect_model.train import hardware
from defect_model.common.config import TrainConfig
from defect_model.train.engine import fit
from defect_model.runs.folders import RunDir

from conftest import tiny_config


def test_auto_picks_bf16_only_where_the_processor_has_it(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx2", "avx512f", "avx512_bf16"}))
    precision, reason = hardware.resolve_precision("auto", cpu)
    assert precision == "bf16" and "natively" in reason
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx2", "avx512f"}))
    precision, reason = hardware.resolve_precision("auto", cpu)
    assert precision == "fp32" and "no native bf16" in reason
    assert hardware.resolve_precision("bf16", cpu) == ("bf16", None)  # an explicit choice is kept as is


def test_an_unknown_precision_is_refused():
    try:
        TrainConfig(precision="fp8")
    except ValueError as exc:
        assert "precision 'fp8' is not one of auto, fp32, bf16" in str(exc)
    else:
        raise AssertionError("fp8 was accepted")


def test_a_bf16_run_learns_and_records_its_precision(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx512_bf16"}))
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    fit(tiny_config(tiny_dataset, epochs=3, lr=3e-3), run)
    saved = TrainConfig.from_yaml(run.config)
    assert saved.precision == "bf16"
    assert any("bf16" in d for d in saved.decisions)
    losses = [e["loss"] for e in run.read_events() if e["type"] == "step"]
    assert all(map(lambda v: v == v, losses)) and min(losses[-3:]) < losses[0]
