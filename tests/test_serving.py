"""The ONNX Runtime inference path: equal to torch, cached beside the checkpoint, and never a dead end."""

import os

import numpy as np
import pytest
import torch

from defect_model.serve import serving
from defect_model.train.checkpoint import save_checkpoint
from defect_model.serve.explain import fast_gradcam, library_cam
from defect_model.serve.inference import Predictor
from defect_model.train.model import build_model
from defect_model.serve.onnx_graph import TOLERANCE, OnnxMismatch
from defect_model.photos.synthetic import make_sample


def _checkpoint(folder, seed: int, size: int, classes=tuple("abcd")):
    """A resnet18 checkpoint with non-trivial BatchNorm statistics, as after training."""
    torch.manual_seed(seed)
    model = build_model("resnet18", len(classes), dropout=0.2)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
    path = folder / "checkpoint.pt"
    meta = {"classes": list(classes), "config": {"backbone": "resnet18", "dropout": 0.2},
            "preprocessing": {"image_size": size, "mean": [0.5] * 3, "std": [0.25] * 3, "resize_mode": "pad"}}
    save_checkpoint(path, model.state_dict(), meta)
    return path


def _photos(count: int, size: int = 120, seed: int = 3):
    rng = np.random.default_rng(seed)
    return [make_sample(label, rng, size)[0] for label in ["pit", "scratch", "ok", "stain", "crack"][:count]]


def test_default_predictor_runs_onnxruntime_and_equals_torch(trained_run):
    fast = Predictor.from_checkpoint(trained_run.checkpoint)
    plain = Predictor.from_checkpoint(trained_run.checkpoint, backend="torch")
    assert (fast.backend, plain.backend) == ("onnxruntime", "torch")
    photos = _photos(5)
    np.testing.assert_allclose(fast.predict(photos), plain.predict(photos), atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(fast.predict(photos[0]), plain.predict(photos[0]), atol=TOLERANCE, rtol=0)
    arrays = [fast.prepare(p) for p in photos]
    fast_probs, fast_parts = fast.predict_with_activations(arrays)
    plain_probs, plain_parts = plain.predict_with_activations(arrays)
    assert fast_parts.maps.shape == plain_parts.maps.shape and fast_parts.maps.shape[1] == 512  # resnet18's layer4
    widths = {"layer1": 64, "layer2": 128, "layer3": 256}
    assert {stage: m.shape for stage, m in fast_parts.stage_means.items()} == {s: (5, w) for s, w in widths.items()}
    for stage in ("layer1", "layer2", "layer3", "layer4"):  # checked relative to their size, as at export
        fast_values, plain_values = fast_parts.means(stage), plain_parts.means(stage)
        scale = max(1.0, float(plain_values.abs().max()))
        np.testing.assert_allclose(fast_values.numpy() / scale, plain_values.numpy() / scale, atol=TOLERANCE, rtol=0)
    scale = max(1.0, float(plain_parts.maps.abs().max()))
    np.testing.assert_allclose(fast_parts.maps.numpy() / scale, plain_parts.maps.numpy() / scale, atol=TOLERANCE,
                               rtol=0)


@pytest.mark.parametrize("seed", [0, 1])
def test_heatmap_from_the_onnx_pass_equals_pytorch_grad_cam(tmp_path, seed):
    size = 64 + 32 * seed
    predictor = Predictor.from_checkpoint(_checkpoint(tmp_path, seed, size))
    assert predictor.backend == "onnxruntime"
    rng = np.random.default_rng(seed)
    arrays = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(3)]
    for targets in ([None, None, None], [0, 1, 2], [3, 3, 0]):
        fast_probs, fast = fast_gradcam(predictor, arrays, targets)
        lib_probs, lib = library_cam(predictor, arrays, targets)  # hooks on the torch model
        assert np.abs(fast - lib).max() < 1e-4, targets


def test_the_graph_is_exported_once_per_checkpoint(tmp_path):
    checkpoint = _checkpoint(tmp_path, 0, 64)
    Predictor.from_checkpoint(checkpoint)
    graph, info = serving.serving_paths(checkpoint)
    assert graph.is_file() and info.is_file()
    written = graph.stat().st_mtime_ns
    Predictor.from_checkpoint(checkpoint)
    assert graph.stat().st_mtime_ns == written, "a graph of the same checkpoint is reused"

    _checkpoint(tmp_path, 1, 64)  # new weights in the same file: the old graph must not serve them
    assert serving.cached_graph(checkpoint)[0] is None
    renewed = Predictor.from_checkpoint(checkpoint)
    reference = Predictor.from_checkpoint(checkpoint, backend="torch")
    photo = _photos(1)[0]
    np.testing.assert_allclose(renewed.predict(photo), reference.predict(photo), atol=TOLERANCE, rtol=0)


def test_without_a_usable_graph_the_predictor_falls_back_to_torch_and_says_why(tmp_path, monkeypatch):
    checkpoint = _checkpoint(tmp_path, 0, 64)

    def disagrees(*args, **kwargs):
        raise OnnxMismatch(f"{checkpoint}.onnx: ONNX outputs differ from torch by 3.0e-02 (limit 1e-04).")

    monkeypatch.setattr(serving, "max_output_diff", disagrees)
    predictor = Predictor.from_checkpoint(checkpoint)
    assert predictor.backend == "torch"
    assert predictor.backend_note.startswith("because") and "differ from torch" in predictor.backend_note and str(checkpoint) in predictor.backend_note
    assert not serving.serving_paths(checkpoint)[0].exists(), "a graph that disagrees is not kept"
    assert predictor.predict(_photos(1)[0]).shape == (4,)
    with pytest.raises(serving.ServingUnavailable, match="differ from torch"):
        Predictor.from_checkpoint(checkpoint, backend="onnxruntime")


def test_a_graph_recorded_as_disagreeing_is_never_reused(tmp_path):
    checkpoint = _checkpoint(tmp_path, 0, 64)
    Predictor.from_checkpoint(checkpoint)
    graph, info = serving.serving_paths(checkpoint)
    info.write_text(info.read_text().replace('"max_abs_diff": ', '"max_abs_diff": 1.0, "was": '))
    assert serving.cached_graph(checkpoint)[0] is None
    os.utime(graph)  # even a newer graph file does not make it trustworthy
    assert serving.cached_graph(checkpoint)[0] is None


def test_the_numpy_normalisation_of_photos_equals_the_torch_one_used_in_training():
    from defect_model.photos.preprocess import normalize_array, normalize_batch

    photos = np.random.default_rng(0).integers(0, 256, (3, 40, 56, 3), dtype=np.uint8)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    channels_first = torch.from_numpy(photos).permute(0, 3, 1, 2).contiguous()  # as the training cache holds them
    trained_on = normalize_batch(channels_first, mean, std, channels_last=False).numpy()
    served = normalize_array(photos, mean, std)
    assert served.shape == (3, 3, 40, 56) and served.dtype == np.float32 and served.flags.c_contiguous
    np.testing.assert_allclose(served, trained_on, atol=1e-6, rtol=0)
    np.testing.assert_allclose(normalize_batch(photos, mean, std).numpy(), trained_on, atol=1e-6, rtol=0)


def test_a_checkpoint_rewritten_while_loading_never_gets_the_old_weights_graph(tmp_path):
    checkpoint = _checkpoint(tmp_path, 0, 64)
    stamp = serving.fingerprint(checkpoint)
    old = Predictor.from_checkpoint(checkpoint, backend="torch")
    _checkpoint(tmp_path, 1, 64)  # a training job writes the next epoch meanwhile
    serving.serving_graph(checkpoint, old.model, 64, stamp)  # the old weights' graph, recorded as such
    assert serving.cached_graph(checkpoint)[0] is None
    photo = _photos(1)[0]
    np.testing.assert_allclose(Predictor.from_checkpoint(checkpoint).predict(photo),
                               Predictor.from_checkpoint(checkpoint, backend="torch").predict(photo),
                               atol=TOLERANCE, rtol=0)
