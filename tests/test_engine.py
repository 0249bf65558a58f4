import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch

from defect_model.train.checkpoint import load_checkpoint
from defect_model.common.config import TrainConfig
from defect_model.train.hardware import resolve_precision
from defect_model.train.engine import fit
from defect_model.serve.inference import Predictor
from defect_model.runs.folders import RunDir
from conftest import tiny_config

RUN_FILES = ["config.yaml", "events.jsonl", "checkpoint.pt", "metrics.json", "val_predictions.csv", "status",
             "split.csv", "data_report.json"]


def _new_run(tmp_path, name="run") -> RunDir:
    run = RunDir(tmp_path / name)
    run.path.mkdir()
    return run


def test_one_epoch_fit_emits_events_and_writes_every_run_file(tiny_dataset, tmp_path):
    run = _new_run(tmp_path)
    seen = []
    metrics = fit(tiny_config(tiny_dataset), run, callbacks=[seen.append])
    for name in RUN_FILES:
        assert (run.path / name).is_file(), name

    kinds = [e["type"] for e in seen]
    # Before the start, one decision: how `precision: auto` resolved on this machine (more come on the way).
    assert kinds[:2] == ["decision", "start"] and kinds[-1] == "end" and kinds.count("epoch") == 1
    start = seen[1]
    steps = [e for e in seen if e["type"] == "step"]
    assert len(steps) == start["steps_per_epoch"] == 2  # 40 train photos, batch 16, last partial dropped
    assert all(e["loss"] > 0 and e["lr"] > 0 and e["images_per_s"] > 0 for e in steps)
    epoch = next(e for e in seen if e["type"] == "epoch")
    for key in ("train_loss", "val_loss", "val_accuracy", "val_micro_f1", "val_macro_f1", "elapsed_s", "eta_s"):
        assert key in epoch
    assert run.read_events() == seen  # the same events went to events.jsonl

    saved = TrainConfig.from_yaml(run.config)
    precision, reason = resolve_precision("auto", torch.device("cpu"))
    assert (saved.precision, saved.decisions) == (precision, [reason])  # auto, resolved for this machine
    assert saved == dataclasses.replace(tiny_config(tiny_dataset), precision=precision, decisions=[reason],
                                        resolved=True)
    table = pd.read_csv(run.val_predictions)
    assert list(table.columns) == ["path", "true_label", "pred_label", "prob_crack", "prob_ok", "prob_pit",
                                   "prob_scratch", "prob_stain", "loss", "unfamiliar_score", "unfamiliar"]
    assert len(table) == 10 and table["unfamiliar_score"].notna().all()  # the end of training scored each
    np.testing.assert_allclose(table.filter(like="prob_").sum(axis=1), 1.0, atol=1e-5)
    assert json.loads(run.metrics.read_text())["accuracy"] == metrics["accuracy"]
    assert run.status()["state"] == "done"


def test_cosine_schedule_is_stepped_per_epoch(tiny_dataset, tmp_path):
    seen = []
    fit(tiny_config(tiny_dataset, epochs=3, lr=0.01), _new_run(tmp_path), callbacks=[seen.append])
    by_epoch = {}
    for e in seen:
        if e["type"] == "step":
            by_epoch.setdefault(e["epoch"], set()).add(round(e["lr"], 12))
    assert by_epoch == {1: {0.01}, 2: {0.0075}, 3: {0.0025}}  # 0.01 * (1 + cos(pi * k / 3)) / 2


def test_warmup_cosine_ramps_up_over_the_first_epoch_then_decays_every_step(tiny_dataset, tmp_path):
    seen = []
    cfg = tiny_config(tiny_dataset, epochs=4, batch_size=8, lr=0.01, schedule="warmup-cosine")  # 5 steps an epoch
    fit(cfg, _new_run(tmp_path), callbacks=[seen.append])
    rates = [e["lr"] for e in seen if e["type"] == "step"]
    assert len(rates) == 20
    np.testing.assert_allclose(rates[:5], [0.002, 0.004, 0.006, 0.008, 0.01])  # the rate each step trained at
    assert all(a > b for a, b in zip(rates[5:], rates[6:]))  # then strictly down, step by step
    np.testing.assert_allclose(rates[-1], 0.01 * (1 + np.cos(np.pi * 14 / 15)) / 2)  # near 0 at the last step


def test_warmup_cosine_resumed_mid_epoch_continues_the_same_rates(tiny_dataset, tmp_path):
    cfg = tiny_config(tiny_dataset, epochs=2, batch_size=8, schedule="warmup-cosine")
    straight = []
    fit(cfg, _new_run(tmp_path, "straight"), callbacks=[straight.append])
    run, first = _new_run(tmp_path, "interrupted"), []
    fit(cfg, run, callbacks=[first.append], should_stop=lambda: sum(e["type"] == "step" for e in first) >= 7)
    rest = []
    fit(cfg, run, callbacks=[rest.append], resume=True)
    rates = [e["lr"] for e in first + rest if e["type"] == "step"]
    np.testing.assert_allclose(rates, [e["lr"] for e in straight if e["type"] == "step"])


def test_label_smoothing_and_zero_init_change_training_not_the_checkpoint_format(tiny_dataset, tmp_path):
    plain, smoothed = _new_run(tmp_path, "plain"), _new_run(tmp_path, "smoothed")
    plain_steps, smoothed_steps = [], []
    fit(tiny_config(tiny_dataset), plain, callbacks=[plain_steps.append])
    fit(tiny_config(tiny_dataset, label_smoothing=0.2, zero_init_residual=True), smoothed,
        callbacks=[smoothed_steps.append])
    first_loss = [next(e["loss"] for e in steps if e["type"] == "step") for steps in (plain_steps, smoothed_steps)]
    assert first_loss[0] != pytest.approx(first_loss[1], rel=1e-3)
    a, b = load_checkpoint(plain.checkpoint)["model"], load_checkpoint(smoothed.checkpoint)["model"]
    assert a.keys() == b.keys() and all(a[k].shape == b[k].shape for k in a)
    assert Predictor.from_checkpoint(smoothed.checkpoint, backend="torch").predict(
        np.zeros((64, 64, 3), np.uint8)).shape == (5,)


def test_cancel_mid_epoch_then_resume_finishes_the_run(tiny_dataset, tmp_path):
    cfg = tiny_config(tiny_dataset, epochs=2, batch_size=8)  # 5 steps per epoch
    run = _new_run(tmp_path)
    steps_done = []

    def stop_after_seven_steps() -> bool:
        return len(steps_done) >= 7

    fit(cfg, run, callbacks=[lambda e: steps_done.append(e) if e["type"] == "step" else None],
        should_stop=stop_after_seven_steps)
    assert run.status()["state"] == "cancelled"
    state = load_checkpoint(run.checkpoint)["training"]
    assert (state["epoch"], state["step_in_epoch"]) == (2, 2)
    # A cancelled run is usable: its checkpoint predicts.
    assert Predictor.from_checkpoint(run.checkpoint).predict(np.zeros((64, 64, 3), np.uint8)).shape == (5,)

    resumed = []
    fit(cfg, run, callbacks=[resumed.append], resume=True)
    steps = [(e["epoch"], e["step"]) for e in resumed if e["type"] == "step"]
    assert steps == [(2, 3), (2, 4), (2, 5)]  # exactly the steps that were left
    assert run.status()["state"] == "done"
    assert load_checkpoint(run.checkpoint)["meta"]["epoch"] == 2


def test_resume_matches_an_uninterrupted_run(tiny_dataset, tmp_path):
    cfg = tiny_config(tiny_dataset, epochs=2, batch_size=8)
    straight = _new_run(tmp_path, "straight")
    fit(cfg, straight)
    interrupted = _new_run(tmp_path, "interrupted")
    count = []
    fit(cfg, interrupted, callbacks=[lambda e: count.append(1) if e["type"] == "step" else None],
        should_stop=lambda: len(count) >= 5)  # stops at the end of epoch 1
    fit(cfg, interrupted, resume=True)
    a = load_checkpoint(straight.checkpoint)["model"]
    b = load_checkpoint(interrupted.checkpoint)["model"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5, msg=key)


def test_a_crashing_run_is_marked_failed_with_the_error(tiny_dataset, tmp_path):
    run = _new_run(tmp_path)
    with pytest.raises(FloatingPointError):
        fit(tiny_config(tiny_dataset, lr=1e12), run)
    status = run.status()
    assert status["state"] == "failed" and "loss became" in status["error"]


def test_a_run_told_to_train_until_usable_goes_on_while_flagged_up_to_four_times_its_plan(tiny_dataset, tmp_path):
    """Issue #26 item 1: a learning rate too small to learn anything keeps the model flagged; the run adds one
    epoch at a time, each announced, and stops at four times its plan (it does not run forever)."""
    run = _new_run(tmp_path)
    seen = []
    fit(tiny_config(tiny_dataset, epochs=1, lr=1e-9, until_usable=True, patience=1), run, callbacks=[seen.append])
    epochs = [e for e in seen if e["type"] == "epoch"]
    plans = [e for e in seen if e["type"] == "plan"]
    assert [e["epoch"] for e in epochs] == [1, 2, 3, 4] and all(e["collapsed"] for e in epochs)
    assert [p["epochs"] for p in plans] == [2, 3, 4]
    assert plans[0]["text"].startswith("one more epoch (2): after epoch 1 the model still")
    assert run.status()["collapsed"]  # still flagged at the limit: said, not hidden


def test_until_usable_holds_off_early_and_budget_stops_only_while_the_model_is_flagged():
    from defect_model.train.course import Course

    cfg = TrainConfig(until_usable=True, patience=1, time_budget_min=1.0)
    course = Course(epochs=10, best=0.5, best_epoch=1, since_best=5)
    assert course.stop_reason(cfg, elapsed=600, epoch_seconds=60, epoch=9, usable=False) is None
    assert "stopped early" in course.stop_reason(cfg, elapsed=600, epoch_seconds=60, epoch=9, usable=True)
    plain = dataclasses.replace(cfg, until_usable=False)
    assert course.stop_reason(plain, elapsed=600, epoch_seconds=60, epoch=9, usable=False) is not None
