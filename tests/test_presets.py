import json
import shutil

import pytest
from PIL import Image

from defect_model.config import TrainConfig
from defect_model.engine import fit
from defect_model.presets import MIN_STEPS, PRODUCT_IMAGE_SIZE, SMALL_NETWORK, apply_product_preset
from defect_model.runs import ActivationRefused, RunDir, activation_log, get_active, set_active
from conftest import tiny_config


def _new_run(tmp_path, name="run") -> RunDir:
    run = RunDir(tmp_path / name)
    run.path.mkdir()
    return run


def test_preset_on_imbalanced_small_data_balances_and_applies_the_step_floor():
    counts = {"ok": 200, "pit": 40, "scratch": 12}
    cfg = apply_product_preset(TrainConfig(preset="product"), counts, [(200, 200)] * 5)
    assert cfg.sampling == "balanced"
    assert cfg.augmentation == "strong"
    assert cfg.epochs * cfg.epoch_images // cfg.batch_size >= MIN_STEPS
    assert any("16.7x" in d and "balanced" in d for d in cfg.decisions)
    assert any(f"floor of {MIN_STEPS}" in d for d in cfg.decisions)
    assert cfg.resize_mode == "pad"


def test_preset_leaves_balanced_data_shuffled_and_pads_non_square_photos():
    cfg = apply_product_preset(TrainConfig(preset="product"), {"a": 500, "b": 400}, [(600, 200), (200, 200)])
    assert cfg.sampling == "shuffle"
    assert any("not square" in d for d in cfg.decisions)


def test_preset_spends_the_reference_time_on_a_smaller_faster_setup_for_small_data():
    cfg = apply_product_preset(TrainConfig(preset="product"), {"a": 720, "b": 720}, [(200, 200)] * 5)
    assert (cfg.backbone, cfg.image_size) == (SMALL_NETWORK, PRODUCT_IMAGE_SIZE)
    assert cfg.epochs > 5 * 4  # resnet18 at 128 px runs over 4x as fast as resnet50 at 224 px
    assert (cfg.schedule, cfg.lr, cfg.label_smoothing, cfg.zero_init_residual) == ("warmup-cosine", 2e-3, 0.1, True)
    assert any(d.startswith(f"network {SMALL_NETWORK}") for d in cfg.decisions)
    assert any("warm-up" in d and "label smoothing" in d for d in cfg.decisions)

    large = apply_product_preset(TrainConfig(preset="product"), {"a": 4000, "b": 4000}, [(200, 200)] * 5)
    assert large.backbone == "resnet50" and 5 < large.epochs < cfg.epochs


def test_preset_keeps_a_users_own_settings():
    cfg = apply_product_preset(TrainConfig(preset="product", backbone="resnet34", lr=0.01, schedule="constant"),
                               {"a": 720, "b": 720})
    assert (cfg.backbone, cfg.lr, cfg.schedule) == ("resnet34", 0.01, "constant")
    assert cfg.label_smoothing == 0.1  # what the user left at the reference value is still the preset's
    assert not any("peak learning rate" in d or d.startswith("network") for d in cfg.decisions)


def test_product_run_writes_its_decisions_into_the_config(tiny_dataset, tmp_path):
    data = tmp_path / "imbalanced"
    shutil.copytree(tiny_dataset, data)
    for path in sorted((data / "pit").iterdir())[3:]:  # pit keeps 3 photos (2 train), the others 10 (8 train)
        path.unlink()
    run = _new_run(tmp_path)
    cfg = tiny_config(data, preset="product", image_size=32, batch_size=16)
    events = []
    steps = lambda: sum(e["type"] == "step" for e in events)  # noqa: E731
    fit(cfg, run, callbacks=[events.append], should_stop=lambda: steps() >= 1)  # the floor is long: stop early
    saved = TrainConfig.from_yaml(run.config)
    assert saved.sampling == "balanced" and saved.decisions
    assert [e["text"] for e in events if e["type"] == "decision"] == saved.decisions
    start = next(e for e in events if e["type"] == "start")
    assert start["total_steps"] >= MIN_STEPS


def test_a_collapsed_run_is_flagged_and_refused_as_the_active_model(tiny_dataset, tmp_path):
    run = _new_run(tmp_path)
    events = []
    fit(tiny_config(tiny_dataset, lr=10.0, epochs=2), run, callbacks=[events.append])
    status = run.status()
    assert status["state"] == "done" and status["collapsed"] and status["problems"]
    assert any(e["type"] == "warning" and "useless" in e["text"] for e in events)
    assert all(e["collapsed"] for e in events if e["type"] == "epoch")

    root = tmp_path / "runs-root"
    with pytest.raises(ActivationRefused, match="flagged.*override reason"):
        set_active(run, by="eng", root=root)
    assert get_active(root) is None
    record = set_active(run, by="eng", override_reason="demo only, not for the line", root=root)
    assert record["override"] == "demo only, not for the line" and record["problems"]
    assert activation_log(root)[-1]["by"] == "eng"


def test_a_wide_photo_is_padded_not_stretched_in_training(tmp_path):
    # One class is wide bright bars: stretched to a square they would fill the frame.
    for label, colour in (("wide", 255), ("dark", 40)):
        (tmp_path / "d" / label).mkdir(parents=True)
        for i in range(6):
            Image.new("RGB", (600, 200), (colour,) * 3).save(tmp_path / "d" / label / f"{i}.png")
    from defect_model.data import decode_images
    decoded = decode_images(tmp_path / "d", [("wide/0.png", "wide")], ["dark", "wide"], 60, TrainConfig().resize_mode)
    image = decoded.pixels[0, 0]
    assert image[0].max() == 0 and image[30].min() == 255  # letterboxed rows above, photo in the middle
    assert (image[:, 0] == 255).sum() == 20  # 600x200 -> 60x20: aspect kept
