import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from defect_model.serve.explain import explain, fast_gradcam, heatmap_to_photo, library_cam, overlay
from defect_model.serve.inference import Predictor, Preprocessing
from defect_model.train.model import build_model
from defect_model.photos.synthetic import make_sample


@pytest.fixture(scope="module")
def predictor(trained_run):
    return Predictor.from_checkpoint(trained_run.checkpoint)


def _photos(labels, size=96, seed=10):
    rng = np.random.default_rng(seed)
    return [make_sample(label, rng, size) for label in labels]


def test_heatmap_shape_and_range_at_the_photo_size(predictor):
    photo = Image.new("RGB", (150, 90), (120, 120, 120))
    result = explain(predictor, photo)
    assert result.heatmap.shape == (90, 150)
    assert result.heatmap.min() >= 0.0 and result.heatmap.max() <= 1.0
    assert result.probabilities.shape == (5,)
    assert result.target_class == int(result.probabilities.argmax())


def test_heatmap_highlights_a_planted_defect_more_than_the_background(predictor):
    inside, outside = [], []
    for photo, mask in _photos(["pit", "stain", "scratch", "crack"] * 3):
        heat = explain(predictor, photo).heatmap
        near = np.asarray(Image.fromarray(np.uint8(mask > 0.2) * 255).resize(heat.shape[::-1])) > 0
        near = np.asarray(Image.fromarray(near).filter(ImageFilter.MaxFilter(9))) > 0  # the defect's edge too
        inside.append(heat[near].mean())
        outside.append(heat[~near].mean())
    inside, outside = np.array(inside), np.array(outside)
    assert (inside > outside).mean() >= 0.8, (inside, outside)
    assert inside.mean() > 1.25 * outside.mean(), (inside, outside)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fast_gradcam_equals_pytorch_grad_cam(seed):
    torch.manual_seed(seed)
    model = build_model("resnet18", 4, dropout=0.2)
    with torch.no_grad():  # non-trivial BatchNorm statistics, as after training
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
    predictor = Predictor(model, list("abcd"), Preprocessing(64 + 32 * seed, (0.5,) * 3, (0.25,) * 3))
    rng = np.random.default_rng(seed)
    size = predictor.preprocessing.image_size
    arrays = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(3)]
    for targets in ([None, None, None], [0, 1, 2], [3, 3, 0]):
        fast_probs, fast = fast_gradcam(predictor, arrays, targets)
        lib_probs, lib = library_cam(predictor, arrays, targets)
        np.testing.assert_allclose(fast_probs, lib_probs, atol=1e-6)
        assert np.abs(fast - lib).max() < 1e-4


def test_other_methods_and_layers_go_through_the_library(predictor):
    arrays = [np.asarray(photo) for photo, _ in _photos(["pit", "ok"])]
    for method, layer in [("gradcam++", "layer4"), ("eigencam", "layer4"), ("gradcam", "layer3")]:
        _, maps = library_cam(predictor, arrays, None, method, layer)
        assert maps.shape == (2, 96, 96) and maps.min() >= 0 and maps.max() <= 1 + 1e-6


def test_heatmap_is_mapped_back_without_stretching_a_padded_photo():
    square = np.zeros((60, 60), np.float32)
    square[20:40, :] = 1.0  # the letterboxed photo occupies rows 20..39
    back = heatmap_to_photo(square, (600, 200), "pad")
    assert back.shape == (200, 600) and back.min() > 0.9


def test_overlay_opacity():
    photo = Image.new("RGB", (32, 32), (10, 200, 30))
    heat = np.ones((32, 32), np.float32)
    assert np.array_equal(np.asarray(overlay(photo, heat, 0.0)), np.asarray(photo))
    assert not np.array_equal(np.asarray(overlay(photo, heat, 0.7)), np.asarray(photo))
