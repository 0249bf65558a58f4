"""Warm start: a run starts from another run's weights or a plant's weights file; the head is rebuilt
when the classes differ."""

import shutil

import pytest
import torch
from torchvision import models

from defect_model.train.checkpoint import CheckpointError, load_checkpoint, read_weights
from defect_model.common.config import TrainConfig
from defect_model.train.engine import fit
from defect_model.train.model import build_model, warm_start
from defect_model.train.presets import apply_product_preset
from defect_model.runs.folders import RunDir
from conftest import tiny_config


def test_a_run_with_other_classes_starts_from_a_runs_weights_and_rebuilds_its_head(trained_run, tiny_dataset,
                                                                                    tmp_path):
    data = tmp_path / "three"
    for name in ("crack", "ok", "pit"):  # other classes than the trained run's five
        shutil.copytree(tiny_dataset / name, data / name)
    source = load_checkpoint(trained_run.checkpoint)
    run = RunDir(tmp_path / "warm")
    run.path.mkdir()
    events = []
    cfg = tiny_config(data, image_size=96, init_from=str(trained_run.path), epochs=1)
    fit(cfg, run, callbacks=[events.append])
    said = [e["text"] for e in events if e["type"] == "decision" and e["text"].startswith("started from")]
    assert said and "head was rebuilt for crack, ok, pit" in said[0]
    trained = load_checkpoint(run.checkpoint)
    assert trained["meta"]["classes"] == ["crack", "ok", "pit"]
    assert trained["model"]["fc.1.weight"].shape == (3, 512)
    assert run.status()["state"] == "done"

    # Before any step the body is the source's and the head is new.
    net = build_model("resnet18", 3)
    warm_start(net, source["model"], source["meta"]["classes"], ["crack", "ok", "pit"])
    assert torch.equal(net.state_dict()["layer4.1.conv2.weight"], source["model"]["layer4.1.conv2.weight"])
    assert net.state_dict()["fc.1.weight"].shape == (3, 512)


def test_the_same_classes_keep_the_head(trained_run):
    source = load_checkpoint(trained_run.checkpoint)
    classes = source["meta"]["classes"]
    net = build_model("resnet18", len(classes))
    text = warm_start(net, source["model"], classes, classes)
    assert "head included" in text
    assert torch.equal(net.state_dict()["fc.1.weight"], source["model"]["fc.1.weight"])


def test_a_plain_torchvision_state_dict_loads_with_a_new_head(tmp_path):
    torchvision_net = models.resnet18(weights=None)  # stands in for ImageNet weights a plant fetched elsewhere
    path = tmp_path / "resnet18-imagenet.pth"
    torch.save(torchvision_net.state_dict(), path)
    state, classes, source = read_weights(path)
    assert classes is None and source == path
    net = build_model("resnet18", 2)
    text = warm_start(net, state, classes, ["bad", "good"], str(path))
    assert "head was rebuilt" in text
    assert torch.equal(net.state_dict()["conv1.weight"], torchvision_net.state_dict()["conv1.weight"])


def test_weights_of_another_network_are_refused_with_what_to_do(tmp_path):
    path = tmp_path / "r34.pt"
    torch.save(models.resnet34(weights=None).state_dict(), path)
    state, classes, _ = read_weights(path)
    with pytest.raises(ValueError, match="r34.pt: its weights do not fit this network.*Choose the backbone"):
        warm_start(build_model("resnet18", 2), state, classes, ["a", "b"], str(path))


def test_unusable_weight_files_name_the_file(tmp_path):
    with pytest.raises(CheckpointError, match="no weights file there"):
        read_weights(tmp_path / "missing.pt")
    text = tmp_path / "notes.pt"
    text.write_text("not weights")
    with pytest.raises(CheckpointError, match="notes.pt: not a readable weights file"):
        read_weights(text)
    torch.save({"epoch": 3}, tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="plain.pt: holds no network weights"):
        read_weights(tmp_path / "plain.pt")


def test_the_preset_keeps_the_source_runs_network_and_spends_a_third_of_the_time(trained_run):
    cfg = apply_product_preset(TrainConfig(preset="product", init_from=str(trained_run.path)),
                               {"a": 400, "b": 400}, [(300, 300)] * 5, 200)
    scratch = apply_product_preset(TrainConfig(preset="product", pinned=["pretrained"]), {"a": 400, "b": 400},
                                   [(300, 300)] * 5, 200)
    assert (cfg.backbone, cfg.image_size) == ("resnet18", 96)  # the trained run's, not the preset's 224
    assert cfg.time_budget_min < scratch.time_budget_min
    assert cfg.lr < scratch.lr
    assert any(d.startswith("warm start from") for d in cfg.decisions)


def test_a_retrain_with_corrections_takes_a_third_of_the_parents_own_kind_of_length():
    from defect_model.train.presets import warm_retrain

    budgeted = warm_retrain(TrainConfig(time_budget_min=30, epochs=20, lr=0.002), "/runs/a", 1500.0, 4)
    assert budgeted.time_budget_min == pytest.approx(8.3) and budgeted.epochs == 7  # 1500 s / 3, in minutes
    assert budgeted.lr < 0.002 and budgeted.init_from == "/runs/a"
    assert "time budget 8.3 min (a third of its training)" in budgeted.decisions[-1]
    # A run that trained a set number of epochs gets a third of them and no budget: a budget's minimum would
    # otherwise fill itself with a hundred epochs of a small set (the Review page's retrain did: 130 for 16 photos).
    counted = warm_retrain(TrainConfig(time_budget_min=0, epochs=9), "/runs/b", 20.0, 1)
    assert counted.time_budget_min == 0 and counted.epochs == 3
    assert "3 epoch(s) (a third of its 9)" in counted.decisions[-1]
