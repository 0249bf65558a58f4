"""Training jobs as real background processes: killed, cancelled, resumed, and started twice at once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time

import pytest

from conftest import ENGINEER, tiny_config
from defect_model.runs import jobs
from defect_model.runs.folders import RunDir, list_runs
from polling import wait_for

FINAL = ("done", "failed", "cancelled")


def steps_seen(run: RunDir, epoch: int, at_least: int) -> bool:
    return any(e["type"] == "step" and e["epoch"] == epoch and e["step"] >= at_least for e in run.read_events())


def finished(run: RunDir) -> str | None:
    """The final state once the process has also written its `end` event (it writes the status first)."""
    state = run.status()["state"]
    events = run.read_events()
    return state if state in FINAL and events and events[-1]["type"] == "end" else None


def log_of(run: RunDir) -> str:
    return run.log.read_text() if run.log.is_file() else "(no train.log)"


@pytest.fixture()
def root(tmp_path, monkeypatch):
    path = tmp_path / "runs"
    monkeypatch.setenv("DEFECT_RUNS_DIR", str(path))
    # One thread per training process: on a shared 2-core machine this is faster than two that wait on each other.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return path


@pytest.fixture()
def stop_leftovers(root):
    """Kill any training process a failing test leaves behind."""
    yield
    for run in list_runs(root):
        pid = run.status().get("pid")
        if run.status()["state"] in ("queued", "running") and pid:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_sigkill_mid_epoch_is_detected_as_failed_and_resume_finishes(tiny_dataset, root, stop_leftovers):
    # 40 training photos in batches of 2: 20 steps per epoch, so the kill lands inside epoch 2.
    run = jobs.start(tiny_config(tiny_dataset, epochs=2, batch_size=2, image_size=32), root, actor=ENGINEER)
    pid = run.status()["pid"]
    wait_for(lambda: steps_seen(run, epoch=2, at_least=1) or finished(run), 180, "a step of epoch 2")
    os.kill(pid, signal.SIGSTOP)  # freeze it to check that it is mid-epoch, then kill it without warning
    last = run.read_events()[-1]
    assert last["type"] == "step" and last["epoch"] == 2 and last["step"] < last["steps_per_epoch"], log_of(run)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: run.status()["state"] == "failed", 10, "the killed process to be seen as dead")

    assert jobs.running_job(root) is None  # detected, not stuck as running
    recorded = json.loads(run.status_file.read_text())
    assert recorded["state"] == "failed" and "killed or crashed" in recorded["error"]
    assert run.checkpoint.is_file()  # from the end of epoch 1

    jobs.resume(run, root, actor=ENGINEER)
    assert wait_for(lambda: finished(run), 180, "the resumed run to finish") == "done", log_of(run)
    events = run.read_events()
    starts = [e for e in events if e["type"] == "start"]
    assert len(starts) == 2 and starts[1]["resumed"] and starts[1]["start_epoch"] == 2
    assert starts[1]["skip_steps"] == 0  # the epoch-1 checkpoint resumes at the start of epoch 2
    after_resume = events[events.index(starts[1]):]
    assert [e["step"] for e in after_resume if e["type"] == "step"] == list(range(1, 21))
    assert [e["state"] for e in events if e["type"] == "end"] == ["done"]
    metrics = run.read_metrics()
    assert metrics["epoch"] == 2 and metrics["complete_epoch"]


def test_two_concurrent_starts_make_exactly_one_job_which_cancels_and_resumes(tiny_dataset, root, stop_leftovers):
    cfg = tiny_config(tiny_dataset, epochs=1, batch_size=4, image_size=32)
    barrier = threading.Barrier(2)
    results: list = []

    def start() -> None:
        barrier.wait()
        try:
            results.append(jobs.start(cfg, root, actor=ENGINEER))
        except jobs.JobError as exc:
            results.append(exc)

    threads = [threading.Thread(target=start) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    started = [r for r in results if isinstance(r, RunDir)]
    refused = [r for r in results if isinstance(r, jobs.JobError)]
    assert len(started) == 1 and len(refused) == 1, results
    run = started[0]
    assert run.run_id in str(refused[0]) and "only one job runs at a time" in str(refused[0])
    assert [r.run_id for r in list_runs(root)] == [run.run_id]
    assert jobs.running_job(root) == run

    # Cancel mid-epoch: the process stops after its step, is marked cancelled and keeps a checkpoint.
    wait_for(lambda: steps_seen(run, epoch=1, at_least=3) or finished(run), 180, "a few training steps")
    jobs.cancel(run, actor=ENGINEER)
    assert wait_for(lambda: finished(run), 60, "the cancelled run to stop") == "cancelled", log_of(run)
    assert run.checkpoint.is_file()
    events = run.read_events()
    stopped_at = [e for e in events if e["type"] == "step"][-1]
    assert stopped_at["epoch"] == 1 and stopped_at["step"] < stopped_at["steps_per_epoch"]
    assert jobs.running_job(root) is None

    jobs.resume(run, root, actor=ENGINEER)
    assert wait_for(lambda: finished(run), 180, "the resumed run to finish") == "done", log_of(run)
    starts = [e for e in run.read_events() if e["type"] == "start"]
    assert starts[1]["start_epoch"] == 1 and starts[1]["skip_steps"] == stopped_at["step"]
    assert [e["state"] for e in run.read_events() if e["type"] == "end"] == ["cancelled", "done"]


def test_a_finished_run_is_not_resumed(tiny_dataset, root, tmp_path):
    run = RunDir(root / "finished")
    run.path.mkdir(parents=True)
    tiny_config(tiny_dataset).to_yaml(run.config)
    run.write_status("done")
    with pytest.raises(jobs.JobError, match="already finished"):
        jobs.resume(run, root, actor=ENGINEER)


def test_an_inspector_may_not_start_resume_or_cancel_training(tiny_dataset, root):
    from conftest import INSPECTOR

    with pytest.raises(PermissionError, match="ana \\(inspector\\) may not train.*engineer"):
        jobs.start(tiny_config(tiny_dataset), root, actor=INSPECTOR)
    assert list_runs(root) == []
    run = RunDir(root / "stopped")
    run.path.mkdir(parents=True)
    tiny_config(tiny_dataset).to_yaml(run.config)
    run.write_status("cancelled")
    with pytest.raises(PermissionError, match="may not train"):
        jobs.resume(run, root, actor=INSPECTOR)
    with pytest.raises(PermissionError, match="may not train"):
        jobs.cancel(run, actor=INSPECTOR)
    assert not run.cancel_requested()


def test_a_reused_pid_is_not_taken_for_the_job_and_never_signalled(tiny_dataset, root):
    """The status names a pid that now belongs to an unrelated live process (started at another time)."""
    stranger = subprocess.Popen(["sleep", "30"])
    try:
        run = RunDir(root / "old-job")
        run.path.mkdir(parents=True)
        tiny_config(tiny_dataset).to_yaml(run.config)
        run.write_status("running", pid=stranger.pid, pid_started="1")  # the job's process started long ago
        assert run.status()["state"] == "failed"
        assert jobs.running_job(root) is None  # a start would not be refused because of it
        jobs.cancel(run, actor=ENGINEER)
        time.sleep(0.5)
        assert stranger.poll() is None  # not signalled
    finally:
        stranger.kill()
        stranger.wait()


def test_a_run_folder_that_no_process_ever_started_is_failed_and_can_be_deleted(tiny_dataset, root):
    from conftest import ADMIN
    from defect_model.workflows.lifecycle import delete_run

    run = RunDir(root / "never-started")
    run.path.mkdir(parents=True)
    tiny_config(tiny_dataset).to_yaml(run.config)
    assert run.status()["state"] == "queued"  # just created: a process is about to write its status
    old = time.time() - 3600
    os.utime(run.config, (old, old))
    status = run.status()
    assert status["state"] == "failed" and "No training process ever started" in status["error"]
    assert jobs.running_job(root) is None
    delete_run(run, ADMIN)
    assert not run.path.exists()


def test_the_one_job_rule_holds_for_a_terminals_train_and_resume(tiny_dataset, root, capsys):
    from defect_model.cli import main as cli
    from defect_model.runs.folders import process_start_time

    other = subprocess.Popen(["sleep", "30"])
    try:
        busy = RunDir(root / "dashboard-job")
        busy.path.mkdir(parents=True)
        tiny_config(tiny_dataset).to_yaml(busy.config)
        busy.write_status("running", pid=other.pid, pid_started=process_start_time(other.pid))
        assert cli(["train", "--data", str(tiny_dataset), "--run-dir", str(root / "second"), "--backbone",
                    "resnet18", "--image-size", "32"]) == 2
        assert "dashboard-job is still running" in capsys.readouterr().err
        assert not (root / "second" / "events.jsonl").exists()
        assert cli(["resume", str(busy.path)]) == 2
        assert "dashboard-job is still running" in capsys.readouterr().err
    finally:
        other.kill()
        other.wait()


def test_the_first_reader_to_see_a_dead_process_writes_interrupted_into_the_status_file(tmp_path):
    """Issue 27: a SIGKILLed run's file said `running` until it was resumed; now whoever reads it first fixes it."""
    import sys

    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    (run.path / "request.yaml").write_text("data_dir: x\n")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    run.write_status("running", pid=gone.pid)
    assert run.status()["state"] == "failed" and run.status()["interrupted"]
    recorded = json.loads(run.status_file.read_text())
    assert recorded["state"] == "failed" and recorded["interrupted"] is True
    assert "killed or crashed" in recorded["error"]
    run.write_status("running", pid=os.getpid())  # a resume: the mark goes with the new process
    assert "interrupted" not in json.loads(run.status_file.read_text())
