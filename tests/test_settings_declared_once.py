"""A training option or a backbone is one edit: the declaration reaches the CLI, the Train form, the
validation, the model builder, the time estimate and the preset without being listed anywhere else."""

from __future__ import annotations

import dataclasses

import pytest
from streamlit.testing.v1 import AppTest

from defect_model.common import backbones
from defect_model.cli import build_parser, config_from_args
from defect_model.common.config import TrainConfig, _setting, settings_of

Extended = dataclasses.make_dataclass(
    "Extended", [("mixup", float, _setting(0.0, "share of photos blended with another one", group="Data",
                                           label="Mixup share", bounds=(0.0, 1.0)))],
    bases=(TrainConfig,))


def test_a_new_setting_reaches_the_cli_and_the_validation(capsys):
    declared = next(s for s in settings_of(Extended) if s.name == "mixup")
    assert (declared.group, declared.label, declared.bounds, declared.cli) == ("Data", "Mixup share", (0.0, 1.0), True)
    args = build_parser(Extended).parse_args(["train", "--data", "/tmp", "--mixup", "0.25"])
    assert config_from_args(args, Extended).mixup == 0.25
    with pytest.raises(SystemExit):
        build_parser(Extended).parse_args(["train", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--mixup MIXUP share of photos blended with another one (default: 0.0)" in help_text
    with pytest.raises(ValueError, match=r"mixup must be between 0 and 1 \(it is 2\)"):
        Extended(mixup=2.0)


def _form(tmp):
    from ui.train_settings import settings_ui

    from tests.test_settings_declared_once import Extended

    cfg, problems = settings_ui(tmp, ["bad", "ok"], config_class=Extended)
    import streamlit as st

    st.session_state["made"] = None if cfg is None else cfg.mixup


def test_a_new_setting_appears_in_the_train_form_in_its_group(tmp_path):
    at = AppTest.from_function(_form, args=(tmp_path,), default_timeout=60).run()
    assert not at.exception
    mixup = next(w for w in at.number_input if w.label == "Mixup share")
    assert mixup.value == 0.0 and mixup.max == 1.0
    mixup.set_value(0.5).run()
    assert at.session_state["made"] == 0.5


@pytest.fixture
def tiny_backbone(monkeypatch):
    entry = backbones.Backbone("tiny18", "resnet", "resnet18", 160, {64: 400.0, 224: 40.0}, "a test entry",
                                backbones.RESNET_STAGES)
    monkeypatch.setitem(backbones.REGISTRY, "tiny18", entry)
    return entry


def test_a_new_backbone_is_one_registry_entry(tiny_backbone, tmp_path):
    from defect_model.train.model import build_model
    from defect_model.train.presets import apply_product_preset
    from defect_model.train.timing import builtin_images_per_s, estimate_training_time

    assert "tiny18" in next(s for s in settings_of() if s.name == "backbone").choices
    args = build_parser().parse_args(["train", "--data", str(tmp_path), "--backbone", "tiny18"])
    assert config_from_args(args).backbone == "tiny18"
    assert build_model("tiny18", 3).fc[-1].out_features == 3
    assert builtin_images_per_s("tiny18", 64) in (pytest.approx(400.0), pytest.approx(400.0 * 1.8))
    assert "built-in figure for tiny18" in estimate_training_time("tiny18", 64, 1, 100, 10, root=tmp_path).source
    # The preset picks at most the network's native size, whatever the photos' size.
    cfg = apply_product_preset(TrainConfig(preset="product", backbone="tiny18", pinned=["backbone"]),
                               {"a": 400, "b": 400}, [(600, 600)] * 5, 200)
    assert cfg.backbone == "tiny18" and cfg.image_size <= 160
    with pytest.raises(ValueError, match="backbone 'vgg' is not one of resnet50, resnet34, resnet18, efficientnet_lite0, .*, tiny18"):
        TrainConfig(backbone="vgg")
