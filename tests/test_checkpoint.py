import pickle

import numpy as np
import pytest
import torch

from defect_model.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from defect_model.serve.inference import Predictor
from defect_model.photos.synthetic import make_sample


class Sneaky:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_round_trip_gives_identical_probabilities(trained_run, tmp_path):
    payload = load_checkpoint(trained_run.checkpoint)
    save_checkpoint(tmp_path / "copy.pt", payload["model"], payload["meta"])
    photos = [np.asarray(make_sample(label, np.random.default_rng(i), 96)[0])
              for i, label in enumerate(["ok", "pit", "crack"])]
    original = Predictor.from_checkpoint(trained_run.checkpoint).predict(photos)
    copied = Predictor.from_checkpoint(tmp_path / "copy.pt").predict(photos)
    np.testing.assert_array_equal(original, copied)


def test_foreign_pickles_are_refused_not_executed(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "meta": Sneaky()}, path)
    with pytest.raises(CheckpointError, match="evil.pt: not a readable defect_model checkpoint"):
        load_checkpoint(path)
    assert "must never run" not in capsys.readouterr().out


def test_wrong_files_are_named(tmp_path):
    (tmp_path / "junk.pt").write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(CheckpointError, match="junk.pt"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="other.pt: this file is not a defect_model checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="missing.pt: no checkpoint there"):
        load_checkpoint(tmp_path / "missing.pt")


def test_metadata_must_be_plain_data(tmp_path):
    with pytest.raises(TypeError):
        save_checkpoint(tmp_path / "x.pt", {}, {"classes": object()})
    assert not (tmp_path / "x.pt").exists()


def _full_disk_for(monkeypatch, prefix: str) -> None:
    """Writes of files named `prefix`... go to /dev/full, which answers every write with ENOSPC (a full disk)."""
    import os
    import tempfile

    from defect_model.common import durable

    real = tempfile.mkstemp

    def mkstemp(*args, **kwargs):
        fd, path = real(*args, **kwargs)
        if os.path.basename(path).startswith(prefix):
            os.close(fd)
            fd = os.open("/dev/full", os.O_WRONLY)
        return fd, path

    monkeypatch.setattr(durable.tempfile, "mkstemp", mkstemp)


def test_a_full_disk_while_saving_a_checkpoint_is_named_with_its_free_space(tmp_path, monkeypatch):
    from defect_model.common.durable import DiskFull

    _full_disk_for(monkeypatch, "checkpoint.pt")
    with pytest.raises(DiskFull, match=f"no space left on device in {tmp_path}: free \\d+ MB. Free space there"):
        save_checkpoint(tmp_path / "checkpoint.pt", {"w": torch.zeros(100_000)}, {"classes": ["a"]})
    assert not list(tmp_path.iterdir()), "nothing half-written is left"


def test_a_run_that_fills_the_disk_fails_saying_so_not_with_torchs_words(tiny_dataset, tmp_path, monkeypatch):
    from conftest import tiny_config
    from defect_model.common.durable import DiskFull
    from defect_model.runs.folders import RunDir
    from defect_model.train.engine import fit

    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    _full_disk_for(monkeypatch, "checkpoint.pt")
    with pytest.raises(DiskFull):
        fit(tiny_config(tiny_dataset, image_size=32, batch_size=8), run)
    error = run.status()["error"]
    assert error.startswith(f"no space left on device in {run.path}: free ") and "unexpected pos" not in error
    assert "resume the run" in error


def test_the_model_download_leaves_out_the_training_state_and_predicts_the_same(trained_run, tmp_path):
    """Issue #26 item 9: the Models page offers the weights without the optimizer state (135.7 MB for a resnet18
    checkpoint beside a 44.7 MB ONNX file)."""
    import io

    from defect_model.train.checkpoint import inference_bytes

    full = load_checkpoint(trained_run.checkpoint)
    assert "training" in full  # AdamW moments, scheduler and random state
    data = inference_bytes(trained_run.checkpoint)
    assert len(data) < 0.6 * trained_run.checkpoint.stat().st_size
    slim = torch.load(io.BytesIO(data), weights_only=True)
    assert "training" not in slim and slim["meta"] == full["meta"]
    (tmp_path / "model.pt").write_bytes(data)
    photo = np.asarray(make_sample("pit", np.random.default_rng(3), 96)[0])
    expected = Predictor.from_checkpoint(trained_run.checkpoint).predict([photo])
    np.testing.assert_allclose(Predictor.from_checkpoint(tmp_path / "model.pt").predict([photo]), expected, atol=1e-6)
