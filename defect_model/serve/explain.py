"""Grad-CAM heatmaps: numbers first, drawing in a separate function.

Fast path: for every registered backbone (global-average-pool + linear head)
Grad-CAM at the last stage (a ResNet's layer4, an EfficientNet's head
convolution) is the class-weighted sum of that stage's activations, because the
gradient of class k's score with respect to activation map c is W[k, c]/(H*W).
So the heatmap comes from the prediction's own forward pass, with no hooks.
Every other method or layer goes through pytorch_grad_cam, inside a `with`
block, one call at a time, so concurrent callers never share hooks.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from PIL import Image
from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus
from pytorch_grad_cam.utils.image import scale_cam_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from defect_model.photos.images import ImageSource, load_image
from defect_model.serve.inference import Predictor
from defect_model.train.model import head_linear, stage_layer, stages_of

METHODS = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "eigencam": EigenCAM}


def layers_of(predictor: Predictor) -> tuple[str, ...]:
    """The stages a heatmap can be drawn at: the last (the default; the fast path's) and the one before it."""
    stages = stages_of(predictor.model)
    return stages[-1], stages[-2]

# pytorch_grad_cam registers hooks on the (shared) model for the length of a call.
_HOOKS_LOCK = threading.Lock()


@dataclass
class Explanation:
    probabilities: np.ndarray  # (C,)
    target_class: int
    heatmap: np.ndarray  # (H, W) in [0, 1] at the photo's own size
    photo: Image.Image  # the RGB photo the heatmap belongs to


def _normalise_like_library(raw: np.ndarray, size: int) -> np.ndarray:
    """pytorch_grad_cam's post-processing: clip, normalise, resize, then normalise again."""
    scaled = scale_cam_image(np.maximum(raw, 0), (size, size))
    return scale_cam_image(np.maximum(scaled, 0))


def fast_gradcam(predictor: Predictor, arrays: Sequence[np.ndarray],
                 target_classes: Sequence[int | None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities (N, C) and last-stage Grad-CAM maps (N, S, S) from one forward pass."""
    probs, activations = predictor.predict_with_activations(arrays)
    return probs, _gradcam_maps(predictor, probs, activations.maps, target_classes)


def _gradcam_maps(predictor: Predictor, probs: np.ndarray, maps: torch.Tensor, target_classes) -> np.ndarray:
    targets = _resolve_targets(probs, target_classes)
    weights = head_linear(predictor.model).weight.detach()[targets]  # (N, channels)
    height, width = maps.shape[-2:]
    raw = torch.einsum("nc,nchw->nhw", weights / (height * width), maps.float()).numpy()
    return _normalise_like_library(raw, predictor.preprocessing.image_size)


def heatmaps_and_unfamiliar(predictor: Predictor, arrays: Sequence[np.ndarray]
                            ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Probabilities, Grad-CAM maps of the predicted classes and unfamiliar scores (None when the checkpoint
    has no statistics), all from one forward pass."""
    probs, activations = predictor.predict_with_activations(arrays)
    return probs, _gradcam_maps(predictor, probs, activations.maps, None), predictor.unfamiliar_scores(activations)


def library_cam(predictor: Predictor, arrays: Sequence[np.ndarray], target_classes: Sequence[int | None] | None = None,
                method: str = "gradcam", layer: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and maps computed by pytorch_grad_cam (any method it offers, at `layers_of` the network;
    None: the last stage)."""
    if method not in METHODS:
        raise ValueError(f"unknown heatmap method {method!r}; choose one of {', '.join(METHODS)}")
    layer = layer or layers_of(predictor)[0]
    if layer not in layers_of(predictor):
        raise ValueError(f"unknown layer {layer!r}; choose one of {', '.join(layers_of(predictor))}")
    probs = predictor.predict_arrays(arrays)
    targets = _resolve_targets(probs, target_classes)
    batch = predictor.to_tensor(arrays).requires_grad_(True)
    target_layer = stage_layer(predictor.model, layer)
    with _HOOKS_LOCK, METHODS[method](model=predictor.model, target_layers=[target_layer]) as cam:
        maps = cam(input_tensor=batch, targets=[ClassifierOutputTarget(int(t)) for t in targets])
    return probs, maps


def _resolve_targets(probs: np.ndarray, target_classes) -> list[int]:
    predicted = probs.argmax(axis=1)
    if target_classes is None:
        return [int(p) for p in predicted]
    return [int(p) if t is None else int(t) for t, p in zip(target_classes, predicted)]


def heatmaps(predictor: Predictor, arrays: Sequence[np.ndarray], target_classes=None,
             method: str = "gradcam", layer: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The fastest correct way to get (probabilities, model-sized maps) for this method and layer (None: the
    last stage)."""
    if method == "gradcam" and layer in (None, layers_of(predictor)[0]):
        return fast_gradcam(predictor, arrays, target_classes)
    return library_cam(predictor, arrays, target_classes, method, layer)


def heatmap_to_photo(heatmap: np.ndarray, photo_size: tuple[int, int], resize_mode: str) -> np.ndarray:
    """Map a square model-input heatmap back onto the photo (width, height) it came from."""
    width, height = photo_size
    size = heatmap.shape[0]
    if resize_mode == "pad":
        scale = size / max(width, height)
        w, h = max(1, round(width * scale)), max(1, round(height * scale))
        left, top = (size - w) // 2, (size - h) // 2
        heatmap = heatmap[top:top + h, left:left + w]
        return cv2.resize(np.ascontiguousarray(heatmap), (width, height))
    if resize_mode == "crop":
        scale = min(width, height) / size
        side = round(size * scale)
        full = np.zeros((height, width), dtype=np.float32)
        left, top = (width - side) // 2, (height - side) // 2
        full[top:top + side, left:left + side] = cv2.resize(heatmap, (side, side))
        return full
    return cv2.resize(heatmap, (width, height))


def explain(predictor: Predictor, source: ImageSource, target_class: int | None = None, method: str = "gradcam",
            layer: str | None = None, name: str | None = None) -> Explanation:
    """One photo: probabilities and a [0, 1] heatmap at the photo's size for the target (default: predicted) class."""
    photo = load_image(source, name)
    array = predictor.prepare(photo, name)
    probs, maps = heatmaps(predictor, [array], [target_class], method, layer)
    target = int(probs[0].argmax()) if target_class is None else int(target_class)
    full = np.clip(heatmap_to_photo(maps[0], photo.size, predictor.preprocessing.resize_mode), 0.0, 1.0)
    return Explanation(probs[0], target, full, photo)


def overlay(photo: Image.Image, heatmap: np.ndarray, opacity: float = 0.5) -> Image.Image:
    """Blend a jet-coloured heatmap over the photo; opacity 0 shows only the photo."""
    base = np.asarray(photo.convert("RGB"), dtype=np.float32)
    if heatmap.shape != base.shape[:2]:
        heatmap = cv2.resize(heatmap.astype(np.float32), (base.shape[1], base.shape[0]))
    colour = cv2.applyColorMap(np.uint8(255 * np.clip(heatmap, 0, 1)), cv2.COLORMAP_JET)[:, :, ::-1]
    blended = (1.0 - opacity) * base + opacity * colour.astype(np.float32)
    return Image.fromarray(np.clip(blended, 0, 255).astype(np.uint8))
