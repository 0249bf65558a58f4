import pytest

from defect_model.common.config import IMAGENET_MEAN, IMAGENET_STD, TrainConfig


def test_defaults_are_the_reference_recipe():
    cfg = TrainConfig()
    assert (cfg.backbone, cfg.pretrained, cfg.dropout, cfg.image_size) == ("resnet50", False, 0.2, 224)
    assert (cfg.batch_size, cfg.epochs, cfg.optimizer, cfg.lr) == (32, 5, "adamw", 1e-3)
    assert (cfg.weight_decay, cfg.schedule, cfg.grad_clip) == (0.0, "cosine", 0.0)
    assert cfg.mean == IMAGENET_MEAN and cfg.std == IMAGENET_STD
    assert cfg.augmentation == "none" and cfg.sampling == "shuffle" and cfg.preset == "reference"


def test_yaml_round_trip(tmp_path):
    cfg = TrainConfig(backbone="resnet18", epochs=3, lr=0.01, good_classes=["ok"], mean=(0.5, 0.5, 0.5))
    cfg.to_yaml(tmp_path / "config.yaml")
    assert TrainConfig.from_yaml(tmp_path / "config.yaml") == cfg


@pytest.mark.parametrize("bad, words", [
    ({"backbone": "vgg16"}, "backbone"),
    ({"pretrained": True}, "pretrained"),
    ({"lr": 0}, "lr"),
    ({"dropout": 1.5}, "dropout"),
    ({"resize_mode": "squash"}, "resize_mode"),
    ({"schedule": "step"}, "schedule"),
    ({"label_smoothing": 1.0}, "label_smoothing"),
])
def test_invalid_settings_are_refused_in_words(bad, words):
    with pytest.raises(ValueError, match=words):
        TrainConfig(**bad)


def test_unknown_yaml_keys_are_named(tmp_path):
    (tmp_path / "c.yaml").write_text("epochs: 2\nlearning_rate: 0.1\n")
    with pytest.raises(ValueError, match="learning_rate"):
        TrainConfig.from_yaml(tmp_path / "c.yaml")
