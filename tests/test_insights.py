"""Dataset insights, the training-time estimate, and reading progress and curves from events."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from defect_model.train import timing
from defect_model.common.backbones import REGISTRY
from defect_model.train.data import DatasetError
from defect_model.workflows.insights import inspect_dataset
from defect_model.train.timing import estimate_training_time, format_duration
from defect_model.runs.folders import RunDir
from defect_model.runs.events import curves, progress as read_progress


def _photo(path, size=(40, 30), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, 128).save(path)


@pytest.fixture()
def mixed(tmp_path):
    """ok: 8 RGB 40x30 photos; scratch: 2 grayscale 64x64 photos, one damaged PNG and a text file."""
    root = tmp_path / "mixed"
    for i in range(8):
        _photo(root / "ok" / f"ok_{i}.png")
    for i in range(2):
        _photo(root / "scratch" / f"s_{i}.png", size=(64, 64), mode="L")
    good = (root / "ok" / "ok_0.png").read_bytes()
    (root / "scratch" / "damaged.png").write_bytes(good[: len(good) // 2])
    (root / "scratch" / "notes.txt").write_text("not a photo")
    return root


def test_insights_count_classes_sizes_modes_and_find_unusable_files(mixed):
    found = inspect_dataset(mixed, samples_per_class=3)
    assert found.classes == ["ok", "scratch"]
    assert found.counts == {"ok": 8, "scratch": 3}  # the damaged PNG has a photo's name: counted, then reported
    assert found.sizes == {"40x30": 8, "64x64": 2}
    assert found.modes == {"RGB": 8, "L": 2}
    assert [path for path, _ in found.unreadable] == ["scratch/damaged.png"]
    assert "damaged or truncated" in found.unreadable[0][1] or "not an image" in found.unreadable[0][1]
    assert found.skipped == [("scratch/notes.txt", found.skipped[0][1])] and "not a photo" in found.skipped[0][1]
    assert [p.name for p in found.samples["ok"]] == ["ok_0.png", "ok_2.png", "ok_5.png"]  # spread over the class
    assert [p.name for p in found.samples["scratch"]] == ["s_0.png", "s_1.png"]  # not the damaged one
    assert found.decoded == 11 and found.opened == 11
    assert found.imbalance_ratio == pytest.approx(8 / 3)
    warning = found.imbalance_warning()
    assert "ok has 8 photos, scratch only 3" in warning and "recall on scratch (3);" in warning
    assert found.minority_classes() == ["scratch"]


def test_balanced_classes_raise_no_warning_and_a_flat_folder_is_refused(tmp_path):
    for label in ("a", "b"):
        for i in range(3):
            _photo(tmp_path / "ok" / label / f"{i}.png")
    assert inspect_dataset(tmp_path / "ok").imbalance_warning() is None
    for i in range(3):
        _photo(tmp_path / "flat" / f"{i}.png")
    with pytest.raises(DatasetError, match="flat: found 0 class folder"):
        inspect_dataset(tmp_path / "flat")


def _run_with_steps(root, name: str, backbone: str, size: int, rates: list[float]) -> RunDir:
    run = RunDir(root / name)
    run.path.mkdir(parents=True)
    run.config.write_text(f"backbone: {backbone}\nimage_size: {size}\nsome_old_field: true\n")
    events = [{"type": "start"}] + [{"type": "step", "images_per_s": r} for r in rates]
    run.events.write_text("".join(json.dumps(e) + "\n" for e in events))
    return run


def test_time_estimate_uses_past_runs_on_this_machine_else_the_builtin_table(tmp_path):
    root = tmp_path / "runs"
    root.mkdir()
    builtin = estimate_training_time("resnet18", 64, epochs=2, train_images=300, val_images=60, root=root)
    from defect_model.train.hardware import cpu_native_bf16

    rate = REGISTRY["resnet18"].images_per_s[64] * (timing.BF16_SPEEDUP if cpu_native_bf16() else 1.0)
    assert builtin.images_per_s == pytest.approx(rate) and "built-in" in builtin.source
    assert builtin.seconds == pytest.approx(timing.STARTUP_S + 2 * (300 / rate + 60 / (rate * 3)))
    # Between and beyond the measured sizes, the rate follows the power law through the table's two points.
    k = timing.size_exponent("resnet18")
    assert rate * (64 / 224) ** k == pytest.approx(REGISTRY["resnet18"].images_per_s[224]
                                                   * (timing.BF16_SPEEDUP if cpu_native_bf16() else 1.0))
    assert 0.5 < k < 2.5
    scaled = estimate_training_time("resnet18", 32, 1, 300, 60, root=root)
    assert scaled.images_per_s == pytest.approx(rate * 2 ** k)

    # The first steps of a process are warm-up and left out; the median of the rest counts.
    _run_with_steps(root, "20260101-000000-a", "resnet18", 128, [1, 1, 20, 25, 30])
    measured = estimate_training_time("resnet18", 64, epochs=2, train_images=300, val_images=60, root=root)
    assert measured.images_per_s == pytest.approx(25 * 2 ** k)  # measured at 128 px, scaled to 64 px
    assert measured.source == "measured by 1 past run of resnet18 on this machine"
    fast = 25 * 2 ** k
    assert measured.seconds == pytest.approx(timing.STARTUP_S + 2 * (300 / fast + 60 / (fast * 3)))

    _run_with_steps(root, "20260101-000001-b", "resnet18", 64, [1, 1, 1, 50, 50])
    assert estimate_training_time("resnet18", 64, 1, 300, 60, root=root).images_per_s == 50  # same size preferred
    other = estimate_training_time("resnet50", 64, 1, 300, 60, root=root)
    assert "built-in figure for resnet50" in other.source
    assert "about " in measured.text() and "images/s" in measured.text()


def test_format_duration():
    assert [format_duration(s) for s in (None, 4.4, 75, 3725)] == ["unknown", "4 s", "1 min 15 s", "1 h 02 min"]


def _step(epoch, step, g, t, loss=1.0, per_epoch=4, total=8):
    return {"type": "step", "time": t, "epoch": epoch, "step": step, "steps_per_epoch": per_epoch,
            "global_step": g, "total_steps": total, "loss": loss, "lr": 0.1, "images_per_s": 10.0}


def _start(t, start_epoch=1, skip=0, resumed=False):
    return {"type": "start", "time": t, "epochs": 2, "steps_per_epoch": 4, "total_steps": 8, "train_images": 16,
            "val_images": 4, "start_epoch": start_epoch, "skip_steps": skip, "resumed": resumed}


def test_progress_and_curves_follow_a_resumed_run():
    first = [_start(0)] + [_step(1, s, s, float(s)) for s in range(1, 5)]
    first += [{"type": "epoch", "time": 6.0, "epoch": 1, "complete": True, "train_loss": 1.0, "val_loss": 2.0,
               "val_accuracy": 0.5, "val_micro_f1": 0.5, "val_macro_f1": 0.4},
              _step(2, 1, 5, 7.0, loss=0.9)]  # killed here: no checkpoint for this step
    assert read_progress(first).global_step == 5 and read_progress(first).end_state is None

    resumed = first + [_start(20, start_epoch=2, resumed=True)]
    progress = read_progress(resumed)
    assert (progress.epoch, progress.step, progress.global_step, progress.fraction) == (2, 0, 4, 0.5)
    assert progress.eta_s is None and progress.text().startswith("Epoch 2/2 · step 0/4 · 4/8 steps (50%)")

    resumed += [_step(2, s, 4 + s, 20.0 + 2 * s, loss=0.5) for s in range(1, 5)]
    steps, epochs = curves(resumed)
    assert steps["global_step"].tolist() == list(range(1, 9))
    assert steps.loc[steps["global_step"] == 5, "loss"].item() == 0.5  # the repeated step: the last one wins
    assert epochs["epoch"].tolist() == [1]

    # ETA at step 4 of 8, before any validation: 1 s per step after warm-up, and validation estimated at a
    # third of the training time per photo: 4 val photos x (1 s x 4 steps / 16 photos) / 3, for 2 epochs.
    assert read_progress(first[:5]).eta_s == pytest.approx(4 * 1.0 + 2 * (4 * 0.25 / 3))
    # After the resume: no steps left, one validation pass, which took 2 s last time (step 4 at 4.0, epoch at 6.0).
    assert read_progress(resumed).eta_s == pytest.approx(2.0)
    assert read_progress(resumed, now=resumed[-1]["time"] + 0.5).eta_s == pytest.approx(1.5)

    ended = resumed + [{"type": "end", "time": 40.0, "state": "done"}]
    assert read_progress(ended).end_state == "done" and read_progress(ended).fraction == 1.0
    assert read_progress([]).text().startswith("Starting")


def test_time_left_and_the_epochs_shown_follow_the_budget_before_the_run_replans():
    """Issue #26 item 2: a 2-minute run planned for 10 epochs from a built-in guess, measured at 1 s a step (30 s
    an epoch), shows the 3 epochs its budget buys and at most the budget's end as time left, not 10 epochs."""
    start = {"type": "start", "time": 0.0, "epochs": 10, "steps_per_epoch": 30, "total_steps": 300,
             "train_images": 960, "val_images": 60, "start_epoch": 1, "skip_steps": 0,
             "config": {"time_budget_min": 2.0}}
    events = [start] + [_step(1, s, s, float(s), per_epoch=30, total=300) for s in range(1, 11)]
    progress = read_progress(events)
    assert progress.epochs == 3 and progress.total_steps == 90  # 120 s // (30 s + a validation of ~0.6 s)
    assert progress.text().startswith("Epoch 1/3 · step 10/30")
    assert progress.eta_s <= 120 * 1.05 - 10 and progress.eta_s == pytest.approx(80 + 3 * 60 / 32 / 3 * 1, rel=0.05)

    slow = [start] + [_step(1, s, s, 10.0 * s, per_epoch=30, total=300) for s in range(1, 11)]  # 10 s a step
    progress = read_progress(slow)
    assert progress.epochs == 1  # one epoch already takes longer than the budget: it stops after it
    assert progress.eta_s == pytest.approx(20 * 10 + 60 * 10 / 32 / 3)  # the rest of the epoch it is in

    unbudgeted = dict(start, config={"time_budget_min": 0})
    assert read_progress([unbudgeted] + events[1:]).epochs == 10
    replanned = events + [{"type": "plan", "time": 31.0, "epochs": 4, "total_steps": 120, "text": "4 epochs"}]
    assert read_progress(replanned).epochs == 4
