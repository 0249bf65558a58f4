"""A run's course: a time budget re-planned after the first epoch, a stop on a plateau, the best epoch kept,
and a warning while a run is still failing."""

import json

import pytest

from defect_model.common.config import TrainConfig
from defect_model.train.course import Course, budget_epochs
from defect_model.train.engine import fit
from defect_model.train.optimization import make_optimizer, make_scheduler, replan_scheduler
from defect_model.train.model import build_model
from defect_model.runs.folders import RunDir
from conftest import tiny_config


def _new_run(tmp_path, name="run") -> RunDir:
    run = RunDir(tmp_path / name)
    run.path.mkdir()
    return run


def test_budget_epochs_fit_the_time_left():
    assert budget_epochs(budget_s=100, elapsed=20, epochs_done=1, epoch_seconds=10) == 9
    assert budget_epochs(budget_s=100, elapsed=120, epochs_done=1, epoch_seconds=10) == 1  # never below done
    assert budget_epochs(budget_s=1e9, elapsed=0, epochs_done=1, epoch_seconds=1) == 1000  # the epochs' bound


def test_a_replanned_schedule_ends_at_the_new_last_step():
    cfg = TrainConfig(backbone="resnet18", schedule="warmup-cosine", epochs=10)
    optimizer = make_optimizer(build_model("resnet18", 2), cfg)
    scheduler = make_scheduler(optimizer, cfg, steps_per_epoch=4)
    replan_scheduler(scheduler, cfg, epochs=3, steps_per_epoch=4)
    rates = []
    for _ in range(12):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates[0] < rates[3] == pytest.approx(cfg.lr)  # warm-up over the first epoch
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)  # cosine reached 0 at step 12
    assert scheduler.state_dict()["lr_lambdas"][0]["total"] == 12  # saved: a resumed run keeps the new plan


def test_a_time_budget_replans_the_epochs_after_measuring_the_first(tiny_dataset, tmp_path):
    run = _new_run(tmp_path)
    events = []
    fit(tiny_config(tiny_dataset, epochs=50, time_budget_min=0.05), run, callbacks=[events.append])  # 3 seconds
    plan = next(e for e in events if e["type"] == "plan")
    epochs = [e for e in events if e["type"] == "epoch"]
    assert plan["epochs"] < 50 and "budget" in plan["text"]
    assert len(epochs) <= plan["epochs"] and epochs[-1]["epochs"] == plan["epochs"]
    assert epochs[-1]["elapsed_s"] < 3 + 2 * max(e["epoch_seconds"] for e in epochs)
    assert run.status()["state"] == "done"


def test_a_plateau_stops_the_run_and_the_best_epoch_becomes_its_model(tiny_dataset, tmp_path):
    run = _new_run(tmp_path)
    events = []
    # A learning rate this small leaves the weights as they started; only BatchNorm statistics move.
    cfg = tiny_config(tiny_dataset, epochs=10, lr=1e-12, patience=2, keep_best=True)
    metrics = fit(cfg, run, callbacks=[events.append])
    scores = [e["val_macro_f1"] for e in events if e["type"] == "epoch"]
    best_epoch = scores.index(max(scores)) + 1
    # Two epochs without a gain stop it, counted in the last fifth of the plan (from epoch 8).
    assert len(scores) == max(8, best_epoch + 2) < 10
    stop = [e["text"] for e in events if e["type"] == "decision" and "stopped early" in e["text"]]
    assert stop and f"not improved for {len(scores) - best_epoch} epochs" in stop[0]
    assert metrics["epoch"] == best_epoch and metrics["macro_f1"] == pytest.approx(max(scores))
    assert metrics["last_epoch"]["epoch"] == len(scores)
    assert json.loads(run.metrics.read_text())["epoch"] == best_epoch
    assert any(e["type"] == "decision" and e["text"].startswith(f"kept epoch {best_epoch}") for e in events)


def test_without_keep_best_the_last_epoch_is_the_model(tiny_dataset, tmp_path):
    run = _new_run(tmp_path)
    metrics = fit(tiny_config(tiny_dataset, epochs=3, lr=1e-12), run)
    assert metrics["epoch"] == 3 and "last_epoch" not in metrics


def test_a_run_still_failing_after_a_fair_part_of_its_epochs_says_so_while_it_runs(tiny_dataset, tmp_path):
    run = _new_run(tmp_path)
    events = []
    fit(tiny_config(tiny_dataset, lr=10.0, epochs=4), run, callbacks=[events.append])
    early = [e for e in events if e["type"] == "warning" and e.get("early")]
    assert len(early) == 1
    kinds = [e["type"] for e in events]
    assert kinds.index("warning") < len(kinds) - kinds[::-1].index("epoch") - 1  # before the last epoch
    assert "After epoch 2 of 4" in early[0]["text"] and "If it does not improve" in early[0]["text"]


def test_a_perfect_score_stops_at_once_but_a_wobble_early_in_the_schedule_does_not():
    cfg = TrainConfig(patience=2)
    early = Course(epochs=20, best=0.8, best_epoch=1, since_best=2)
    assert early.stop_reason(cfg, elapsed=0, epoch_seconds=1, epoch=3) is None
    assert early.stop_reason(cfg, elapsed=0, epoch_seconds=1, epoch=15) is None  # the cosine's end still gains
    assert early.stop_reason(cfg, elapsed=0, epoch_seconds=1, epoch=16) is not None
    perfect = Course(epochs=20, best=1.0, best_epoch=1, since_best=2)
    assert "stopped early after epoch 3" in perfect.stop_reason(cfg, elapsed=0, epoch_seconds=1, epoch=3)


def test_course_survives_a_checkpoint_round_trip():
    course = Course(epochs=7, best=0.5, best_epoch=2, since_best=1, replanned=True)
    restored = Course.from_state({"course": course.state()}, epochs=99)
    assert restored == course
    assert Course.from_state({"best_macro_f1": 0.4}, epochs=5) == Course(epochs=5, best=0.4)  # older checkpoints


def test_out_of_range_settings_are_refused_with_their_bounds():
    with pytest.raises(ValueError, match="image_size must be between 32 and 1024"):
        TrainConfig(image_size=5000)
    with pytest.raises(ValueError, match="epochs must be between 1 and 1000"):
        TrainConfig(epochs=100000)
    with pytest.raises(ValueError, match="batch_size must be between 1 and 512"):
        TrainConfig(batch_size=4096)
    with pytest.raises(ValueError, match="time_budget_min"):
        TrainConfig(time_budget_min=-1)
