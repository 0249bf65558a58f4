"""Training jobs as separate processes: start (one at a time), find, cancel, resume.

A job is a run folder. `start` writes what was asked (`request.yaml`, with the corrections and split it
names copied into the folder) and runs `python -m defect_model run RUN_DIR`, the command a terminal user
types too (`python -m torch.distributed.run --nproc_per_node=N -m defect_model run RUN_DIR` for a request of
N processes); `resume` runs the same command again. The engine writes the resolved `config.yaml` once. A job
outlives the page that started it; its state lives in the run directory.

With $DEFECT_TRAINING=worker (runs/queue.py) `start` and `resume` put the run in the plant's training queue instead,
and a worker machine (`python -m defect_model worker`) runs that same command: the run waits `queued`, the worker
marks it `running` with its host, and every dashboard follows it through the shared run folder.
"""

from __future__ import annotations

import dataclasses
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from defect_model.access.accounts import Actor, audit_log, require
from defect_model.common.config import TrainConfig
from defect_model.runs.folders import HEARTBEAT_S, RunDir, list_runs, new_run_dir, now_iso, process_start_time, this_host
from defect_model.common.places import runs_root
from defect_model.runs import queue
from defect_model.runs.store import InspectionStore

# Set by a worker for the training process it starts: the queue admitted the job (one per worker), so the process
# does not refuse because of jobs of other workers in the shared runs folder.
QUEUE_JOB_ENV = "DEFECT_QUEUE_JOB"

TCMALLOC_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4",
    "/usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4",
    "/usr/lib/libtcmalloc_minimal.so.4",
)


class JobError(RuntimeError):
    """A job request that cannot be carried out; the message says why and what to do."""


def find_tcmalloc() -> str | None:
    return next((path for path in TCMALLOC_CANDIDATES if Path(path).is_file()), None)


def training_env(base: dict | None = None) -> dict:
    """Environment for a training process: tcmalloc preloaded when installed (about 1.7x faster here)."""
    env = dict(os.environ if base is None else base)
    library = find_tcmalloc()
    if library and library not in env.get("LD_PRELOAD", ""):
        env["LD_PRELOAD"] = ":".join(filter(None, [library, env.get("LD_PRELOAD", "")]))
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def run_command(run: RunDir) -> list[str]:
    """The training process of a run folder, for a first start and a resume alike: torchrun's agent with one
    process per share when the run's settings ask for several (on this machine, on a free port), else one."""
    processes = run.settings().processes
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"] if processes > 1 else []
    return [sys.executable, *launcher, "-m", "defect_model", "run", str(run.path)]


@contextmanager
def _start_lock(root: Path):
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".start.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# Training processes this process started: polled so that an ended one does not stay a zombie.
_STARTED: dict[int, subprocess.Popen] = {}


def reap_children() -> None:
    """Collect the exit status of training processes this process started that have ended."""
    for pid, process in list(_STARTED.items()):
        if process.poll() is not None:
            _STARTED.pop(pid, None)


def running_job(root: str | Path | None = None, ignore_pids: tuple[int, ...] = (),
                unclaimed: RunDir | None = None) -> RunDir | None:
    """The run whose training process is alive (other than those of `ignore_pids`), if any; dead ones are marked
    failed on the way. `unclaimed`: a run being claimed, which does not count while no process has claimed it."""
    reap_children()
    for run in list_runs(root):
        run.mark_dead_run_failed()
        status = run.status()
        if unclaimed is not None and run.path == unclaimed.path and not status.get("pid"):
            continue
        if status["state"] in ("queued", "running") and status.get("pid") not in ignore_pids:
            return run
    return None


def _launch(run: RunDir) -> RunDir:
    run.cancel_file.unlink(missing_ok=True)  # an old request must not stop the new process
    try:
        with open(run.log, "a") as log:
            process = subprocess.Popen(run_command(run), stdout=log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, env=training_env(), cwd=os.getcwd(),
                                       start_new_session=True)
    except OSError as exc:
        run.write_status("failed", error=f"the training process could not start ({exc})")
        raise JobError(f"{run.run_id}: the training process could not start ({exc}). "
                       "Check that Python and the project are installed, then start again.") from None
    # "queued" until the process itself writes "running": `defect_model resume` refuses a run recorded as
    # running with a live pid, and here that pid would be its own.
    _STARTED[process.pid] = process
    run.write_status("queued", pid=process.pid, pid_started=process_start_time(process.pid))
    return run


def start(request: TrainConfig, root: str | Path | None = None, *, actor: Actor,
          corrections: InspectionStore | None = None, split_from: str | Path | None = None) -> RunDir:
    """Create a run folder for `request` and start its training process (engineers); refused while another job
    runs. The one way a job starts: the Train page, Review's retrain and the demo model all come here.

    `corrections`: apply the confirmed label corrections this store holds for the request's dataset (written
    into the run folder, so that the run can be repeated whatever is corrected later). `split_from`: train with
    this split CSV (copied into the run folder: a retrain keeps its parent's split after the parent is deleted).
    """
    require(actor, "train")
    root = Path(root) if root is not None else runs_root()
    to_queue = _queue_in_use()
    with _start_lock(root):
        if not to_queue:  # a queue has no busy rule of its own here: each worker trains one job at a time
            _refuse_if_busy(root)
        run = new_run_dir(root, Path(request.data_dir).name)
        try:
            request = _with_run_files(request, run, corrections, split_from)
            request.to_yaml(run.request)
        except BaseException:
            shutil.rmtree(run.path, ignore_errors=True)
            raise
        _defer(run) if to_queue else _launch(run)
    audit_log().record(actor, "train_start", run.run_id, data=request.data_dir, preset=request.preset,
                       init_from=request.init_from, corrections=request.corrections_csv)
    return run


def _with_run_files(request: TrainConfig, run: RunDir, corrections: InspectionStore | None,
                    split_from: str | Path | None) -> TrainConfig:
    """`request` pointing at copies, in the run folder, of the split and the corrections it is to use."""
    changes = {}
    if split_from:
        shutil.copyfile(split_from, run.requested_split)
        changes["split_csv"] = str(run.requested_split.resolve())
    if corrections is not None:
        if corrections.write_corrections_csv(request.data_dir, run.corrections) == 0:
            raise JobError(f"No confirmed label corrections for {request.data_dir}. Confirm, relabel or mark photos "
                           "unusable on the Review page first, or start without corrections.")
        changes["corrections_csv"] = str(run.corrections.resolve())
    return dataclasses.replace(request, **changes)


def resume(run: RunDir, root: str | Path | None = None, *, actor: Actor) -> RunDir:
    """Continue a cancelled or failed run from its last checkpoint, in a new process (engineers)."""
    require(actor, "train")
    root = Path(root) if root is not None else run.path.parent
    to_queue = _queue_in_use()
    with _start_lock(root):
        if not to_queue:
            _refuse_if_busy(root)
        state = run.status()["state"]
        if state == "done":
            raise JobError(f"{run.run_id} already finished; there is nothing to resume.")
        if to_queue and state in ("queued", "running"):
            raise JobError(f"{run.run_id} is {state} already; there is nothing to resume until it stops.")
        _defer(run) if to_queue else _launch(run)
    audit_log().record(actor, "train_resume", run.run_id)
    return run


def claim_for_this_process(run: RunDir) -> None:
    """Record this process as `run`'s trainer, refused while another job runs in the same runs folder: the
    one-job rule for a terminal's `train` and `resume` too, through the same lock the dashboard takes. The
    job's process may be this one's parent: torchrun's agent, which `start` recorded. A process a worker started
    ($DEFECT_QUEUE_JOB) was admitted by the queue, one job per worker, and does not look at other workers' jobs."""
    root = run.path.parent
    from_queue = bool(os.environ.get(QUEUE_JOB_ENV))
    with _start_lock(root):
        if not from_queue:
            _refuse_if_busy(root, these=(os.getpid(), os.getppid()), claiming=run)
        # A worker has already marked the run running on its host; a dashboard's subprocess is queued till fit says
        run.write_status("running" if from_queue else "queued", pid=os.getpid(),
                         pid_started=process_start_time(os.getpid()))


def _refuse_if_busy(root: Path, these: tuple[int, ...] = (), claiming: RunDir | None = None) -> None:
    busy = running_job(root, ignore_pids=these, unclaimed=claiming)
    if busy is not None:
        raise JobError(f"Training job {busy.run_id} is still running (pid {busy.status().get('pid')}). "
                       "Wait for it to finish or cancel it first; only one job runs at a time.")


def cancel(run: RunDir, *, actor: Actor) -> None:
    """Ask the job to stop after its current step; it keeps a usable checkpoint.

    The cancel file is read by the training loop after every step, also by a process
    still starting up; SIGTERM goes only to a process that has said it is running,
    because before that its handler is not installed and the signal would kill it. A run of several processes
    records rank 0 as its process: the processes agree after every step whether any of them was asked to stop,
    so all of them stop at the same step.
    """
    require(actor, "train")
    run.request_cancel()
    audit_log().record(actor, "train_cancel", run.run_id)
    status = run.status()
    pid = status.get("pid")
    if status.get("state") == "queued" and status.get("queue") and not pid:
        _cancel_waiting(run)
    elif pid and status.get("state") == "running" and (status.get("host") or this_host()) == this_host():
        try:
            os.kill(int(pid), signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass


def _cancel_waiting(run: RunDir) -> None:
    """A job no worker has taken yet leaves the queue and never trains; one a worker is taking right now meets the
    cancel file (the worker reads it before it starts the training process, the process after every step)."""
    try:
        taken_out = queue.cancel_waiting(run.run_id)
    except queue.QueueError as exc:
        raise JobError(f"{run.run_id}: the cancel is recorded in its folder, but {exc}") from None
    if taken_out:
        run.write_status("cancelled", note="cancelled while it waited for a worker; resume it to queue it again",
                         waiting=None)
        _log(run, "cancelled while waiting for a worker")


def trains_on_workers() -> bool:
    """Whether jobs started here go to the plant's training workers (a misconfigured switch reads as no: Start
    then says what to set)."""
    try:
        return queue.queue_in_use()
    except queue.QueueError:
        return False


def _queue_in_use() -> bool:
    try:
        return queue.queue_in_use()
    except queue.QueueError as exc:
        raise JobError(str(exc)) from None


def _log(run: RunDir, text: str) -> None:
    with open(run.log, "a") as log:
        log.write(f"{now_iso()} {text}\n")


def _defer(run: RunDir) -> RunDir:
    """Queue the run for a worker: `queued` with the line saying so, then the queue's job (a worker may take it
    at once, so the status is written first)."""
    run.cancel_file.unlink(missing_ok=True)  # an old request must not stop the resumed job
    waiting = ("waits for a training worker (`python -m defect_model worker` on the training machine) to take it; "
               "it trains there and its progress shows here")
    run.write_status("queued", queue=queue.TRAINING_QUEUE, waiting=waiting, queued=now_iso(), pid=None,
                     pid_started=None, host=None, worker=None, note=None)
    _log(run, f"queued: {waiting}")
    try:
        queue.defer_training(run.run_id)
    except queue.QueueError as exc:
        run.write_status("failed", error=f"the job could not be queued ({exc})", queue=None)
        raise JobError(f"{run.run_id}: the job could not be queued: {exc}") from None
    return run


def train_taken_job(run_id: str, *, worker: str, job_id: int | None,
                    should_abort: Callable[[], bool] = lambda: False) -> str:
    """What a worker does with a job it took from the queue: refuse a run cancelled (or no longer waiting) before
    it started, else run the run's training command here, marked running on this host, and beat its heartbeat
    until the process ends. A stop of the worker (`should_abort`) asks the run to stop after its current step.
    Returns the run's final state. `run_id`: a run of this machine's runs folder ($DEFECT_RUNS_DIR)."""
    run = RunDir(runs_root() / run_id)
    if not run.exists():
        return "missing"  # deleted while it waited: nothing to train
    status = run.status()
    if run.cancel_requested() or status["state"] == "cancelled":
        run.write_status("cancelled", note=f"cancelled before worker {worker} on {this_host()} started it",
                         waiting=None)
        _log(run, f"worker {worker} on {this_host()}: cancelled before it started; not trained")
        return "cancelled"
    if status["state"] != "queued" or status.get("pid"):
        _log(run, f"worker {worker} on {this_host()}: the run is {status['state']}, not waiting; not trained")
        return status["state"]
    _log(run, f"worker {worker} on {this_host()} took the job")
    try:
        with open(run.log, "a") as log:
            process = subprocess.Popen(run_command(run), stdout=log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, env={**training_env(), QUEUE_JOB_ENV: str(job_id)},
                                       start_new_session=True)
    except OSError as exc:
        run.write_status("failed", error=f"the training process could not start on {this_host()} ({exc})")
        return "failed"
    run.write_status("running", pid=process.pid, pid_started=process_start_time(process.pid), host=this_host(),
                     worker=worker, queue_job=job_id, claimed=now_iso(), waiting=None)
    stopped = _follow(run, process, should_abort)
    run.mark_dead_run_failed()  # ended without writing its end (killed, out of memory): failed, resumable
    state = run.status()["state"]
    if stopped and state == "cancelled":
        run.write_status("cancelled", note=f"stopped because worker {worker} on {this_host()} was stopped; resume "
                                           "it to continue from its checkpoint")
    return state


def _follow(run: RunDir, process: subprocess.Popen, should_abort: Callable[[], bool]) -> bool:
    """Wait for the training process, beating the run's heartbeat; pass a stop of the worker on as a cancel.
    Returns whether the worker was stopped meanwhile."""
    last_beat, asked = 0.0, False
    while True:
        if time.monotonic() - last_beat >= HEARTBEAT_S:
            try:
                run.beat()
            except OSError:
                pass  # a full disk or a lost share: the process's own writes report it; keep following it
            last_beat = time.monotonic()
        try:
            process.wait(timeout=1)
            return asked
        except subprocess.TimeoutExpired:
            pass
        if not asked and should_abort():
            asked = True
            _log(run, f"the worker on {this_host()} is stopping: the run stops after its current step")
            run.request_cancel()
