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
