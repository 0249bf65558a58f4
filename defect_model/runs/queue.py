"""The training queue of a plant: a job started on any dashboard trains on a worker machine.

procrastinate (its own tables, on the plant's PostgreSQL at $DEFECT_DATABASE_URL) carries one thing: "train run
folder RUN_ID". Everything else travels as today, through the run folder under $DEFECT_RUNS_DIR, which every
dashboard and every worker mounts at the same path (its request.yaml names the dataset by its absolute path too):
the worker writes the status, events, log and checkpoints there, and every dashboard reads them; a cancel is the
run folder's cancel file, which the training loop reads after every step.

The queue is used when $DEFECT_TRAINING=worker (with a PostgreSQL URL). It is a switch of its own, not implied by
the database: a plant may move its records to PostgreSQL while still training on the dashboard's machine, and a job
deferred to a queue no worker serves would wait forever. Without the switch jobs run as the dashboard's own
subprocess, as on the embedded default.

Each worker runs one job at a time (concurrency 1); with several workers, as many jobs train at once as there are
workers, each on its worker's machine, and the others wait in the order they were started. Jobs of one run never
overlap (the run id is the job's lock), and a run waits in the queue at most once (its queueing lock).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

from defect_model.common.places import runs_root
from defect_model.database import URL_ENV as DATABASE_ENV, shown_url

TRAINING_QUEUE = "training"
TASK_NAME = "defect_model.train_run_folder"
TRAINING_ENV = "DEFECT_TRAINING"  # "worker": deferred to the queue; unset or "local": the dashboard's subprocess
URL_SCHEMES = ("postgresql://", "postgresql+psycopg://", "postgres://")
REACH_TIMEOUT_S = 5


class QueueError(RuntimeError):
    """The queue cannot be used as configured; the message says what to set or start."""


def database_url() -> str | None:
    return os.environ.get(DATABASE_ENV) or None


def is_postgresql(url: str | None) -> bool:
    return bool(url) and url.startswith(URL_SCHEMES)


def conninfo(url: str) -> str:
    """The libpq form of a plant URL: SQLAlchemy's `postgresql+psycopg://` spelling accepted."""
    scheme, rest = url.split("://", 1)
    return "postgresql://" + rest if scheme in ("postgresql+psycopg", "postgres") else url


def queue_in_use() -> bool:
    """Whether training jobs go to the queue: $DEFECT_TRAINING=worker, which needs a PostgreSQL URL."""
    mode = (os.environ.get(TRAINING_ENV) or "local").strip().lower()
    if mode == "local":
        return False
    if mode != "worker":
        raise QueueError(f"{TRAINING_ENV}={os.environ.get(TRAINING_ENV)!r} is not a training mode: set it to 'worker' "
                         "(jobs train on a machine running `python -m defect_model worker`) or 'local' (this "
                         "machine trains them), or leave it unset.")
    if not is_postgresql(database_url()):
        raise QueueError(f"{TRAINING_ENV}=worker sends training jobs to workers through the plant's PostgreSQL "
                         f"database, but {DATABASE_ENV} is {'unset' if not database_url() else 'not a postgresql:// URL'}"
                         f". Set {DATABASE_ENV}=postgresql://user@host:port/db, or unset {TRAINING_ENV} to train "
                         "on this machine.")
    return True


def require_reachable(url: str) -> None:
    """A refusal within seconds when nothing answers at the URL's host and port (the connection pool would keep
    trying for half a minute)."""
    parts = urlsplit(conninfo(url))
    host, port = parts.hostname or "localhost", parts.port or 5432
    if host.startswith("/"):
        return  # a Unix socket folder: the pool's own error says it
    try:
        socket.create_connection((host, port), timeout=REACH_TIMEOUT_S).close()
    except OSError as exc:
        raise QueueError(f"{shown_url(url)}: the database cannot be reached ({exc}). Check that PostgreSQL runs on "
                         f"{host}:{port} and that this machine may connect, or correct {DATABASE_ENV}.") from None


def make_app(url: str, connections: int = 1):
    """The procrastinate App on the plant's database (dashboards defer and cancel through it by the task's name)."""
    import procrastinate

    return procrastinate.App(connector=procrastinate.PsycopgConnector(
        conninfo=conninfo(url), min_size=connections, max_size=max(connections, 1)))


def register_trainer(app, trainer: Callable[..., str]) -> None:
    """The queue's one task on a worker's App: train the run folder `run_id` of this machine's runs folder with
    `trainer(run_id, worker=, job_id=, should_abort=)` (jobs.train_taken_job: the command a dashboard's subprocess
    runs, torchrun across processes where the run asks for several). Passed in: jobs imports this module."""

    def train_run_folder(context, run_id: str) -> str:
        return trainer(run_id, worker=context.worker_name or "worker", job_id=context.job.id,
                       should_abort=context.should_abort)

    app.task(name=TASK_NAME, queue=TRAINING_QUEUE, pass_context=True)(train_run_folder)


def _opened(url: str, connections: int = 1):
    from procrastinate.exceptions import ConnectorException

    require_reachable(url)
    app = make_app(url, connections)
    try:
        app.open()
    except ConnectorException as exc:
        raise QueueError(f"{shown_url(url)}: cannot open the database ({exc.__cause__ or exc}). Check the user, "
                         f"password and database name in {DATABASE_ENV}.") from None
    return app


def schema_present(app) -> bool:
    return app.check_connection()


def apply_queue_schema(url: str) -> bool:
    """Create procrastinate's tables on the database at `url` unless they are there (idempotent; `db upgrade` calls
    it). Returns True when it created them."""
    from procrastinate.exceptions import ConnectorException

    app = _opened(url)
    try:
        if schema_present(app):
            return False
        try:
            app.schema_manager.apply_schema()
        except ConnectorException:
            if schema_present(app):  # another worker or `db upgrade` made them at the same moment
                return False
            raise
        return True
    finally:
        app.close()


def _ready_app(url: str):
    app = _opened(url)
    if not schema_present(app):
        app.close()
        raise QueueError(f"{shown_url(url)}: the training queue's tables are missing. Run `python -m defect_model db "
                         "upgrade` with this DEFECT_DATABASE_URL (or start a worker once, which creates them).")
    return app


def defer_training(run_id: str, url: str | None = None) -> int:
    """Put run `run_id` in the queue for a worker; JobError-worthy QueueError when the database is not ready or
    the run already waits."""
    from procrastinate.exceptions import AlreadyEnqueued

    app = _ready_app(url or database_url())
    try:
        return app.configure_task(TASK_NAME, queue=TRAINING_QUEUE, lock=run_id, queueing_lock=run_id).defer(
            run_id=run_id)
    except AlreadyEnqueued:
        raise QueueError(f"{run_id} already waits in the training queue for a worker.") from None
    finally:
        app.close()


def cancel_waiting(run_id: str, url: str | None = None) -> bool:
    """Take run `run_id`'s job out of the queue if no worker has taken it yet; True when it did."""
    app = _ready_app(url or database_url())
    try:
        waiting = app.job_manager.list_jobs(queue=TRAINING_QUEUE, queueing_lock=run_id, status="todo")
        return any([app.job_manager.cancel_job_by_id(job.id) for job in waiting if job.id is not None])
    finally:
        app.close()


def run_worker(trainer: Callable[..., str], name: str | None = None, wait: bool = True) -> int:
    """Take training jobs from the queue, one at a time, until stopped (SIGINT/SIGTERM: a running job stops after
    its current step, keeping its checkpoint, and is resumable from any dashboard)."""
    from defect_model.runs.folders import this_host

    url = database_url()
    if not url:
        raise QueueError(f"{DATABASE_ENV} is not set: a worker takes training jobs from the plant's PostgreSQL "
                         f"database. Set {DATABASE_ENV}=postgresql://user@host:port/db (the dashboards' value) and "
                         "start again.")
    if not is_postgresql(url):
        raise QueueError(f"{DATABASE_ENV}={shown_url(url)!r} is not a postgresql:// URL: the training queue lives in "
                         "the plant's PostgreSQL database (SQLite has no workers; there the dashboard trains).")
    root = runs_root()
    if not root.is_dir():
        raise QueueError(f"{root.resolve()}: the runs folder is missing. Mount the runs folder the dashboards share "
                         "at the same path as on them and set DEFECT_RUNS_DIR to it, then start again.")
    name = name or f"{this_host()}-{os.getpid()}"
    if apply_queue_schema(url):
        _say(f"created the training queue's tables (procrastinate) in {shown_url(url)}")
    app = make_app(url, connections=2)
    register_trainer(app, trainer)
    _log_jobs_to_stderr()
    _say(f"worker {name} on {this_host()}: training jobs from queue '{TRAINING_QUEUE}' of {shown_url(url)}; "
         f"runs folder {Path(root).resolve()} (shared with the dashboards); one job at a time. Ctrl-C stops it: a "
         "running job stops after its current step with its checkpoint and can be resumed from any dashboard.")
    app.run_worker(queues=[TRAINING_QUEUE], name=name, concurrency=1, wait=wait, shutdown_graceful_timeout=0,
                   delete_jobs="successful")
    _say(f"worker {name} stopped")
    return 0


def _log_jobs_to_stderr() -> None:
    """procrastinate's own lines (a job taken, finished, the worker stopping) on the worker's terminal."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    logger = logging.getLogger("procrastinate")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
