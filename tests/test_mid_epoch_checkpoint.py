"""A killed run loses at most `checkpoint_every_min` of training, not a whole epoch; run files are fsynced
(issue 16 item 15)."""

from __future__ import annotations

import os
import signal

import torch

from conftest import ENGINEER, tiny_config
from defect_model.train import checkpoint as ckpt
from defect_model.runs import jobs
from defect_model.train.saving import CheckpointClock
from defect_model.train.engine import fit
from defect_model.runs.folders import RunDir, write_json_atomic
from test_jobs import finished, log_of, root, stop_leftovers, wait_for  # noqa: F401  (fixtures)


def checkpoints_seen(run: RunDir, epoch: int, at_least: int) -> bool:
    return any(e["type"] == "checkpoint" and e["epoch"] == epoch and e["step"] >= at_least for e in run.read_events())


def test_a_run_killed_after_a_mid_epoch_checkpoint_resumes_from_that_step(tiny_dataset, root, stop_leftovers):
    # 40 training photos in batches of 2: 20 steps in the one epoch; a checkpoint after (nearly) every step.
    cfg = tiny_config(tiny_dataset, epochs=1, batch_size=2, image_size=32, checkpoint_every_min=0.001)
    run = jobs.start(cfg, root, actor=ENGINEER)
    pid = run.status()["pid"]
    wait_for(lambda: checkpoints_seen(run, epoch=1, at_least=2) or finished(run), 180, "a mid-epoch checkpoint")
    os.kill(pid, signal.SIGSTOP)  # freeze it to read what it saved, then kill it without warning
    saved = ckpt.load_checkpoint(run.checkpoint)
    at_step = saved["training"]["step_in_epoch"]
    assert saved["training"]["epoch"] == 1 and 2 <= at_step < 20, log_of(run)
    assert saved["meta"]["val_accuracy"] is None  # never validated: no scores claimed for these weights
    assert not run.metrics.exists() and not [e for e in run.read_events() if e["type"] == "epoch"]  # no validation
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: run.status()["state"] == "failed", 10, "the killed process to be seen as dead")

    jobs.resume(run, root, actor=ENGINEER)
    assert wait_for(lambda: finished(run), 180, "the resumed run to finish") == "done", log_of(run)
    events = run.read_events()
    starts = [e for e in events if e["type"] == "start"]
    assert starts[1]["start_epoch"] == 1 and starts[1]["skip_steps"] == at_step
    after_resume = events[events.index(starts[1]):]
    assert [e["step"] for e in after_resume if e["type"] == "step"] == list(range(at_step + 1, 21))
    assert run.read_metrics()["epoch"] == 1 and run.read_metrics()["complete_epoch"]


def test_mid_epoch_checkpoints_run_no_validation_and_leave_the_last_ones_metrics(tiny_dataset, tmp_path):
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    events: list[dict] = []
    cfg = tiny_config(tiny_dataset, epochs=2, batch_size=8, image_size=32, checkpoint_every_min=1e-6)
    fit(cfg, run, callbacks=[events.append])
    checkpoints = [(e["epoch"], e["step"]) for e in events if e["type"] == "checkpoint"]
    assert checkpoints == [(1, 1), (1, 2), (1, 3), (1, 4), (2, 1), (2, 2), (2, 3), (2, 4)]  # 5 steps: not the last
    assert [e["epoch"] for e in events if e["type"] == "epoch"] == [1, 2]  # one validation per epoch, no more
    final = ckpt.load_checkpoint(run.checkpoint)
    assert (final["training"]["epoch"], final["training"]["step_in_epoch"]) == (3, 0)
    assert final["meta"]["val_accuracy"] == run.read_metrics()["accuracy"]


def test_the_checkpoint_clock_waits_its_interval_and_zero_means_epoch_ends_only():
    now = [100.0]
    clock = CheckpointClock(60.0, now=lambda: now[0])
    now[0] += 59.0
    assert not clock.due()
    now[0] += 1.0
    assert clock.due()
    clock.saved()
    assert not clock.due()
    never = CheckpointClock(0.0, now=lambda: now[0])
    now[0] += 10**6
    assert not never.due()


def test_run_files_and_checkpoints_reach_the_disk_before_they_replace_the_old_ones(tmp_path, monkeypatch):
    synced: list[str] = []
    real_fsync = os.fsync

    def spy(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    write_json_atomic(tmp_path / "status", {"state": "running"})
    ckpt.save_checkpoint(tmp_path / "checkpoint.pt", {"w": torch.zeros(2)}, {"classes": ["a"]})
    tiny_config(tmp_path).to_yaml(tmp_path / "config.yaml")
    temporary = [path for path in synced if path.endswith(".tmp")]
    assert [os.path.basename(p).split(".")[0] for p in temporary] == ["status", "checkpoint", "config"]
    assert synced.count(str(tmp_path)) == 3  # each rename made durable
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "config.yaml", "status"]  # no .tmp left


def test_a_write_removes_what_a_killed_write_of_the_same_file_left(tmp_path):
    """SIGKILL skips the clean-up of a write in progress; the next write of that file removes the leftover once it
    is old enough that no live writer can own it, and leaves other files' temporaries and fresh ones alone."""
    import time

    from defect_model.common.durable import STALE_TMP_S

    old = time.time() - STALE_TMP_S - 60
    killed = tmp_path / "checkpoint.pt.k1ll3d.tmp"
    in_progress = tmp_path / "checkpoint.pt.l1v3.tmp"
    other = tmp_path / "status.0ld.tmp"
    for path in (killed, in_progress, other):
        path.write_bytes(b"x" * 1000)
    for path in (killed, other):
        os.utime(path, (old, old))
    ckpt.save_checkpoint(tmp_path / "checkpoint.pt", {"w": torch.zeros(2)}, {"classes": ["a"]})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", in_progress.name, other.name]
