"""Training on a worker machine (issue 29): jobs started through jobs.start go to procrastinate's queue on a real
PostgreSQL and are trained by a real `python -m defect_model worker` process; cancel and resume from the dashboard
side; the worker's refusals; a run on another host judged by its heartbeat, never by its pid."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import ENGINEER, ROOT, tiny_config
from defect_model.runs import jobs, queue
from defect_model.runs.folders import REMOTE_STALE_S, RunDir, list_runs, process_alive
from defect_model.train.checkpoint import load_checkpoint
from polling import wait_for
from test_jobs import finished, log_of

def steps_seen(run: RunDir, at_least: int) -> bool:
    return any(e["type"] == "step" and e["step"] >= at_least for e in run.read_events())


@pytest.fixture()
def plant(plant_database_url, tmp_path, monkeypatch):
    """A dashboard's environment with the queue switched on, and a way to start worker processes (each stopped,
    and any training process left behind killed, at the end)."""
    root = tmp_path / "runs"
    root.mkdir()
    monkeypatch.setenv("DEFECT_RUNS_DIR", str(root))
    monkeypatch.setenv("DEFECT_DATABASE_URL", plant_database_url)
    monkeypatch.setenv("DEFECT_TRAINING", "worker")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    workers: list[tuple[subprocess.Popen, Path]] = []

    def start_worker(name: str = "w1") -> SimpleNamespace:
        log = tmp_path / f"worker-{name}.log"
        with open(log, "w") as out:
            process = subprocess.Popen([sys.executable, "-m", "defect_model", "worker", "--name", name], cwd=ROOT,
                                       env=dict(os.environ), stdout=out, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        workers.append((process, log))
        wait_for(lambda: "one job at a time" in log.read_text() or process.poll() is not None, 60,
                 "the worker's start-up line")
        assert process.poll() is None, log.read_text()
        return SimpleNamespace(process=process, log=log, text=lambda: log.read_text())

    yield SimpleNamespace(root=root, url=plant_database_url, start_worker=start_worker)
    for process, _ in workers:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process, _ in workers:
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    for run in list_runs(root):
        pid = run.status().get("pid")
        if pid and process_alive(pid):
            os.kill(int(pid), signal.SIGKILL)


def test_a_job_started_on_a_dashboard_waits_queued_and_a_worker_trains_it_to_done(tiny_dataset, plant):
    run = jobs.start(tiny_config(tiny_dataset, epochs=1, batch_size=8, image_size=32), plant.root, actor=ENGINEER)
    status = run.status()
    assert status["state"] == "queued" and not status.get("pid") and "waits for a training worker" in status["waiting"]
    assert "waits for a training worker" in log_of(run)
    assert jobs.running_job(plant.root) == run  # waiting is not dead: no pid to check yet

    worker = plant.start_worker("w1")
    assert str(plant.root.resolve()) in worker.text() and "postgresql://" in worker.text()
    assert wait_for(lambda: finished(run), 180, "the worker to train the run") == "done", log_of(run) + worker.text()
    status = run.status()
    assert status["host"] == os.uname().nodename and status["worker"] == "w1" and status["queue_job"]
    assert "worker w1 on" in log_of(run) and "took the job" in log_of(run)
    payload = load_checkpoint(run.checkpoint)
    assert payload["meta"]["classes"] == sorted(p.name for p in tiny_dataset.iterdir() if p.is_dir())
    assert run.heartbeat_file.is_file()


def test_a_worker_runs_a_job_of_several_processes_through_torchrun(tiny_dataset, plant):
    run = jobs.start(tiny_config(tiny_dataset, epochs=1, batch_size=8, image_size=32, processes=2), plant.root,
                     actor=ENGINEER)
    worker = plant.start_worker("w1")
    assert wait_for(lambda: finished(run), 240, "the 2-process run to finish") == "done", log_of(run) + worker.text()
    status = run.status()
    assert len(status["ranks"]) == 2 and {rank["host"] for rank in status["ranks"]} == {os.uname().nodename}
    assert run.settings().processes == 2 and run.checkpoint.is_file()


def test_a_cancel_from_the_dashboard_stops_the_worker_job_and_a_resume_queues_it_again(tiny_dataset, plant):
    # 40 training photos in batches of 2: 20 steps, so the cancel lands inside the epoch.
    run = jobs.start(tiny_config(tiny_dataset, epochs=1, batch_size=2, image_size=32), plant.root, actor=ENGINEER)
    worker = plant.start_worker("w1")
    wait_for(lambda: steps_seen(run, at_least=3) or finished(run), 180, "a few training steps on the worker")
    assert run.status()["state"] == "running" and run.status()["worker"] == "w1"
    jobs.cancel(run, actor=ENGINEER)
    assert wait_for(lambda: finished(run), 60, "the cancelled run to stop") == "cancelled", log_of(run)
    stopped_at = [e for e in run.read_events() if e["type"] == "step"][-1]
    assert stopped_at["step"] < stopped_at["steps_per_epoch"]
    assert load_checkpoint(run.checkpoint)["model"]  # a usable checkpoint to resume from

    jobs.resume(run, plant.root, actor=ENGINEER)
    assert run.status()["state"] in ("queued", "running")  # deferred again (the worker may take it at once)
    assert log_of(run).count("queued: waits for a training worker") == 2
    assert wait_for(lambda: finished(run), 180, "the resumed run to finish") == "done", log_of(run) + worker.text()
    starts = [e for e in run.read_events() if e["type"] == "start"]
    assert starts[1]["skip_steps"] == stopped_at["step"]
    assert [e["state"] for e in run.read_events() if e["type"] == "end"] == ["cancelled", "done"]
    with pytest.raises(jobs.JobError, match="already finished"):
        jobs.resume(run, plant.root, actor=ENGINEER)


def test_a_queued_job_cancelled_before_any_worker_starts_never_trains(tiny_dataset, plant):
    cfg = tiny_config(tiny_dataset, epochs=1, batch_size=8, image_size=32)
    first = jobs.start(cfg, plant.root, actor=ENGINEER)
    jobs.cancel(first, actor=ENGINEER)  # taken out of the queue
    assert first.status()["state"] == "cancelled" and "waited for a worker" in first.status()["note"]
    # A cancel that meets a job a worker is taking: only the cancel file is there when the worker looks.
    second = jobs.start(cfg, plant.root, actor=ENGINEER)
    second.request_cancel()

    worker = plant.start_worker("w1")
    wait_for(lambda: second.status()["state"] == "cancelled", 60, "the worker to refuse the cancelled job")
    assert "before worker w1" in second.status()["note"] and "not trained" in log_of(second)
    for run in (first, second):
        assert not run.config.is_file() and not run.events.exists() and not run.checkpoint.exists(), log_of(run)
    assert "took the job" not in log_of(first) + log_of(second), worker.text()


def test_stopping_a_worker_stops_its_job_after_a_step_resumable(tiny_dataset, plant):
    run = jobs.start(tiny_config(tiny_dataset, epochs=1, batch_size=2, image_size=32), plant.root, actor=ENGINEER)
    worker = plant.start_worker("w1")
    wait_for(lambda: steps_seen(run, at_least=2) or finished(run), 180, "a few training steps on the worker")
    worker.process.send_signal(signal.SIGTERM)
    assert worker.process.wait(timeout=60) == 0, worker.text()
    assert finished(run) == "cancelled", log_of(run)
    assert "is stopping" in log_of(run) and run.checkpoint.is_file()
    assert "worker w1 on" in run.status()["note"] and "resume" in run.status()["note"]


def test_a_worker_refuses_to_start_without_a_database_or_runs_folder(tmp_path):
    def worker(**env) -> subprocess.CompletedProcess:
        base = {k: v for k, v in os.environ.items() if k not in ("DEFECT_DATABASE_URL", "DEFECT_RUNS_DIR")}
        return subprocess.run([sys.executable, "-m", "defect_model", "worker"], cwd=ROOT, env={**base, **env},
                              capture_output=True, text=True, timeout=60)

    unset = worker(DEFECT_RUNS_DIR=str(tmp_path))
    assert unset.returncode == 2 and "DEFECT_DATABASE_URL is not set" in unset.stderr
    sqlite = worker(DEFECT_DATABASE_URL="sqlite:///x.db", DEFECT_RUNS_DIR=str(tmp_path))
    assert sqlite.returncode == 2 and "not a postgresql:// URL" in sqlite.stderr
    missing = worker(DEFECT_DATABASE_URL="postgresql://u@127.0.0.1:1/db", DEFECT_RUNS_DIR=str(tmp_path / "none"))
    assert missing.returncode == 2 and f"{tmp_path / 'none'}: the runs folder is missing" in missing.stderr
    unreachable = worker(DEFECT_DATABASE_URL="postgresql+psycopg://u:secret@127.0.0.1:1/db",
                         DEFECT_RUNS_DIR=str(tmp_path))
    assert unreachable.returncode == 2 and "cannot be reached" in unreachable.stderr
    assert "secret" not in unreachable.stderr and "u:***@127.0.0.1:1" in unreachable.stderr


def test_the_worker_switch_needs_postgresql_and_leaves_no_run_behind(tiny_dataset, tmp_path, monkeypatch):
    root = tmp_path / "runs"
    monkeypatch.delenv("DEFECT_DATABASE_URL", raising=False)
    monkeypatch.setenv("DEFECT_TRAINING", "worker")
    with pytest.raises(jobs.JobError, match="DEFECT_DATABASE_URL is unset"):
        jobs.start(tiny_config(tiny_dataset), root, actor=ENGINEER)
    monkeypatch.setenv("DEFECT_TRAINING", "gpu-box")
    with pytest.raises(jobs.JobError, match="not a training mode"):
        jobs.start(tiny_config(tiny_dataset), root, actor=ENGINEER)
    assert list_runs(root) == []


def test_a_queue_without_its_tables_is_refused_with_what_to_run(tiny_dataset, postgres_url, tmp_path, monkeypatch):
    monkeypatch.setenv("DEFECT_DATABASE_URL", postgres_url)
    monkeypatch.setenv("DEFECT_TRAINING", "worker")
    with pytest.raises(jobs.JobError, match="db upgrade") as refused:
        jobs.start(tiny_config(tiny_dataset), tmp_path / "runs", actor=ENGINEER)
    run = list_runs(tmp_path / "runs")[0]
    assert run.run_id in str(refused.value) and run.status()["state"] == "failed"
    assert queue.apply_queue_schema(postgres_url) is True and queue.apply_queue_schema(postgres_url) is False


def test_db_upgrade_makes_the_queue_tables_on_postgresql(postgres_url, monkeypatch, capsys):
    """`python -m defect_model db upgrade` is the one set-up step of a plant's database: the schema and the
    training queue's tables."""
    from defect_model.cli import main

    monkeypatch.setenv("DEFECT_DATABASE_URL", postgres_url)
    assert main(["db", "upgrade"]) == 0
    assert "the training queue's tables created" in capsys.readouterr().out
    assert queue.apply_queue_schema(postgres_url) is False  # already there
    assert main(["db", "upgrade"]) == 0 and "already there" in capsys.readouterr().out


def remote_run(tmp_path: Path, **status) -> RunDir:
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    run.request.write_text("data_dir: /nowhere\n")
    run.status_file.write_text(json.dumps({"state": "running", "pid": 2 ** 22 + 7, "pid_started": "1",
                                           "host": "line-2-trainer", "updated": "2026-01-01T00:00:00+00:00", **status}))
    return run


def test_a_run_on_another_host_lives_by_its_heartbeat_not_by_a_pid_here(tmp_path):
    run = remote_run(tmp_path)  # its pid is dead on this machine: meaningless here
    run.beat()
    assert run.status()["state"] == "running" and not run.mark_dead_run_failed()

    stale = time.time() - REMOTE_STALE_S - 5
    run.heartbeat_file.write_text(f"{stale} line-2-trainer\n")
    for path in (run.status_file, run.request):
        os.utime(path, (stale, stale))
    status = run.status()
    assert status["state"] == "failed" and status["interrupted"]
    assert "line-2-trainer" in status["error"] and f"{REMOTE_STALE_S} s" in status["error"]
    assert json.loads(run.status_file.read_text())["state"] == "failed"  # persisted for every reader


def test_a_training_process_beats_its_heartbeat_while_it_trains(tmp_path):
    run = remote_run(tmp_path)
    with run.beating(every=0.05):
        first = run.heartbeat_file.read_text()
        wait_for(lambda: run.heartbeat_file.read_text() != first, 10, "a second beat")
    last = run.heartbeat_file.read_text()
    assert last.split()[1] == os.uname().nodename and run.seconds_since_heartbeat() < REMOTE_STALE_S


def test_a_cancel_never_signals_a_pid_of_another_host(tmp_path, monkeypatch):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        run = remote_run(tmp_path, pid=sleeper.pid, pid_started=None)
        run.beat()
        jobs.cancel(run, actor=ENGINEER)
        assert run.cancel_requested()  # the worker's training loop reads it after its step
        with pytest.raises(subprocess.TimeoutExpired):  # the same pid here is some other process: untouched
            sleeper.wait(timeout=1)
    finally:
        sleeper.kill()
        sleeper.wait()
