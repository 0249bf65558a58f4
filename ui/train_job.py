"""Train page, job side: start, the live view of the running job, cancel, resume, and make a finished run active.

The job itself is a separate `python -m defect_model train` process (defect_model.runs.jobs); this module
only reads its run directory, so a reload, another tab or a restarted dashboard finds it again.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import streamlit as st
import yaml

from defect_model.runs import jobs
from defect_model.common.config import TrainConfig
from defect_model.train.data import DatasetError
from defect_model.runs.events import curves, progress as read_progress
from defect_model.train.timing import format_duration
from defect_model.workflows.lifecycle import activate
from defect_model.common.quality import assess
from defect_model.runs.folders import RunDir, list_runs, this_host
from defect_model.common.places import runs_root
from defect_model.runs.store import InspectionStore
from ui.flash import flash, flash_ui
from ui.run_picker import run_select
from ui.session import current_actor
from ui.job_events import followed_events, job_progress_ui
from ui.train_charts import loss_figure, lr_figure, scores_figure
from ui.text import code, md
from ui.resources import active_record

REFRESH_S = 2.0
CHARTS_REFRESH_S = 10.0  # the live view's curves are rebuilt at most this often (they cost the most to draw)
FIGURES_KEY = "train_live_figures"
LOG_LINES = 25
VIEW_KEY = "train_view_run"
FOCUS_KEY = "train_focus_run"  # a run to show on the next page run (set before the run selector is drawn)


# --- actions (button callbacks: they run before the page, so the page draws their result) ------------

def _flash(kind: str, text: str, where: str = "job") -> None:
    """A message for the next page run, shown at `where` (the job panel or the Start button)."""
    flash("train", where, kind, text)


def start_job(cfg: TrainConfig, with_corrections: bool = False) -> None:
    """Start a training process for `cfg` (with the dataset's confirmed label corrections when asked); a second
    start while one runs is refused with its name."""
    try:
        run = jobs.start(cfg, runs_root(), actor=current_actor(),
                         corrections=InspectionStore() if with_corrections else None)
    except (jobs.JobError, PermissionError) as exc:
        _flash("error", f"Not started: {exc}", "start")
        return
    except (DatasetError, OSError, ValueError) as exc:
        _flash("error", f"Not started: {exc}", "start")
        return
    st.session_state[FOCUS_KEY] = run.run_id
    _flash("success", f"Training job {run.run_id} started. It runs on in the background; "
                      "you may reload or close this page.")


def resume_job(run_id: str) -> None:
    run = RunDir(runs_root() / run_id)
    try:
        jobs.resume(run, runs_root(), actor=current_actor())
    except (jobs.JobError, PermissionError) as exc:
        _flash("error", f"Not resumed: {exc}")
        return
    st.session_state[FOCUS_KEY] = run.run_id
    _flash("success", f"Resuming {run.run_id} from its last checkpoint.")


def cancel_job(run_id: str) -> None:
    """Ask the job to stop after its current step (the button then reads 'Cancelling…')."""
    try:
        jobs.cancel(RunDir(runs_root() / run_id), actor=current_actor())
    except PermissionError as exc:
        _flash("error", f"Not cancelled: {exc}")


def make_active(run_id: str, reason_key: str | None = None) -> None:
    reason = (st.session_state.get(reason_key) or "").strip() if reason_key else ""
    try:
        activate(RunDir(runs_root() / run_id), current_actor(), override_reason=reason)
    except (ValueError, PermissionError) as exc:  # refused: role, still training, no checkpoint, flagged w/o reason
        _flash("error", f"Not made active: {exc}")
        return
    _flash("success", f"{run_id} is now the active model" + (f" (override: {reason})" if reason else "") + ".")


# --- reading a run -------------------------------------------------------------------------------

def run_settings(run: RunDir) -> dict:
    """config.yaml as a dict (read plainly: a run from an older version may have other fields)."""
    try:
        return yaml.safe_load(run.config.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {}


def plain_error(text: str) -> str:
    """'DatasetError: /x: ...' -> '/x: ...': the exception's class name means nothing to a user."""
    return re.sub(r"^[A-Za-z_.]*(Error|Exception|Interrupt)\b:\s*", "", text or "").strip()


def where_text(status: dict) -> str:
    """Where the job is: waiting for a training worker, on another machine's worker, or this machine's pid."""
    if status.get("waiting") and status.get("state") == "queued":
        return "waiting for a training worker"
    host = status.get("host")
    if host and host != this_host():
        return f"on {md(host)}" + (f" (worker {md(status['worker'])})" if status.get("worker") else "") + \
            f", pid {md(status.get('pid'))}"
    return f"pid {md(status.get('pid'))}"


def processes_text(status: dict) -> str:
    """' · 2 processes (pids 11, 12)' for a run of several processes (torchrun); '' for one."""
    ranks = status.get("ranks") or []
    return f" · {len(ranks)} processes (pids {', '.join(str(r['pid']) for r in ranks)})" if len(ranks) > 1 else ""


def log_tail(run: RunDir, lines: int = LOG_LINES) -> str:
    try:
        with run.log.open("rb") as handle:
            handle.seek(0, 2)
            size = handle.tell()
            handle.seek(max(0, size - 16_000))
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return ""
    text = text.replace("\r", "\n")
    return "\n".join([line for line in text.splitlines() if line.strip()][-lines:])


# --- the panel -----------------------------------------------------------------------------------

def job_ui() -> None:
    """The running job (live) or a chosen past run: progress, curves, log, and what can be done with it."""
    flash_ui("train", "job")
    root = runs_root()
    running = jobs.running_job(root)  # also marks runs whose process died as failed
    runs = list_runs(root)
    if not runs:
        st.info("No training runs yet. Choose a dataset and settings below, then press Start.")
        return
    ids = [r.run_id for r in runs]
    if st.session_state.get(FOCUS_KEY) in ids:
        st.session_state[VIEW_KEY] = st.session_state.pop(FOCUS_KEY)
    if st.session_state.get(VIEW_KEY) not in ids:
        st.session_state[VIEW_KEY] = running.run_id if running else ids[0]
    run_id = run_select("Run", runs, VIEW_KEY, (active_record() or {}).get("run_id"),
                        help="The running job, or any earlier run: its curves, its log, resume or activate it.").run_id
    if running and running.run_id != run_id:
        st.info(f"Training job {code(running.run_id)} is running.", icon=":material/sync:")
        st.button("Show the running job", key="train_show_running",
                  on_click=lambda: st.session_state.update({VIEW_KEY: running.run_id}))
    run = RunDir(root / run_id)
    if run.status()["state"] in ("queued", "running"):
        live_view(str(run.path), run.status()["state"])
    else:
        finished_view(run)


@st.fragment(run_every=REFRESH_S)
def live_view(run_path: str, drawn_state: str) -> None:
    """Re-drawn every couple of seconds on its own; the whole page reruns once the job ends."""
    run = RunDir(Path(run_path))
    status = run.status()
    if status["state"] not in ("queued", "running"):
        run.mark_dead_run_failed()
        st.rerun(scope="app")
    if status["state"] != drawn_state:  # queued -> running: the run list's label says so
        st.rerun(scope="app")
    events = followed_events(run)
    progress = read_progress(events, now=time.time())
    settings = run_settings(run)
    st.markdown(f":material/model_training: **Training {md(run.run_id)}** · {md(settings.get('backbone', '?'))}"
                + (" from ImageNet weights" if settings.get("pretrained") else "") + " at "
                f"{md(settings.get('image_size', '?'))} px on {code(settings.get('data_dir', '?'))} · "
                + where_text(status) + processes_text(status))
    job_progress_ui(run, progress)
    for text in progress.warnings:  # they name classes (folder names): shown as text, not Markdown
        with st.container(border=True):
            st.markdown(":orange[:material/warning: **Still failing while it trains**]")
            st.text(text)
    if progress.notes:
        st.text(progress.notes[-1])
    charts_ui(live_figures(events, progress.epochs, run.run_id), key=f"live_{run.run_id}")
    left, right = st.columns([1, 4])
    with left:
        # A dashboard's own process is given a few seconds to start; a job waiting for a worker can go at once.
        starting = not progress.started and status["state"] == "queued" and not status.get("waiting")
        cancelling = run.cancel_requested()
        st.button("Cancelling…" if cancelling else "Cancel", key=f"train_cancel_{run.run_id}",
                  icon=":material/stop_circle:", disabled=starting or cancelling,
                  on_click=cancel_job, args=(run.run_id,),
                  help="Stops after the current step; the run keeps its last checkpoint and can be resumed."
                       + (" Available once the process has started (a few seconds)." if starting else ""))
    with right:
        with st.expander("Log (last lines of train.log)", expanded=False):
            st.code(log_tail(run) or "(nothing yet)", language="text")


def run_figures(events: list[dict], total_epochs: int) -> tuple | None:
    """The loss, learning-rate and scores figures of a run's events; None before its first step."""
    steps, epochs = curves(events)
    if steps.empty and epochs.empty:
        return None
    return (loss_figure(steps, epochs, total_epochs), lr_figure(steps, total_epochs),
            scores_figure(epochs, total_epochs))


def live_figures(events: list[dict], total_epochs: int, run_id: str, now: float | None = None) -> tuple | None:
    """run_figures for the live view, rebuilt at most every CHARTS_REFRESH_S and kept in the session in
    between: building three plotly figures on every refresh was the largest part of what a tab watching a job
    cost the server (bench/results/load.md)."""
    kept = st.session_state.setdefault(FIGURES_KEY, {}).get(run_id)
    now = time.monotonic() if now is None else now
    if kept is not None and kept["total_epochs"] == total_epochs and (
            kept["events"] == len(events) or now - kept["built"] < CHARTS_REFRESH_S):
        return kept["figures"]
    figures = run_figures(events, total_epochs)
    st.session_state[FIGURES_KEY] = {run_id: {"figures": figures, "events": len(events), "built": now,
                                              "total_epochs": total_epochs}}
    return figures


def charts_ui(figures: tuple | None, key: str) -> None:
    if figures is None:
        return
    for column, figure, name in zip(st.columns(3), figures, ("loss", "lr", "scores")):
        with column:
            st.plotly_chart(figure, key=f"{key}_{name}", config={"displayModeBar": False})


def finished_view(run: RunDir) -> None:
    """A run that is not running: its outcome, curves and log, and resume / make active."""
    status = run.status()
    state = status["state"]
    events = followed_events(run)
    progress = read_progress(events)
    settings = run_settings(run)
    if state == "done":
        done_ui(run, settings)
    elif state == "failed":
        error = plain_error(status.get("error", "")) or "The training process stopped; see its log below."
        st.error(f"**Training {md(run.run_id)} failed.** {md(error)}", icon=":material/error:")
    elif state == "cancelled":
        st.warning(f"Training {code(run.run_id)} was cancelled at epoch {progress.epoch}, step {progress.step}; "
                   "its last checkpoint is kept.", icon=":material/stop_circle:")
    # A finished run's axis ends where it stopped (an early stop or a spent budget), not at its first plan.
    charts_ui(run_figures(events, progress.epoch if state == "done" else progress.epochs), key=f"final_{run.run_id}")
    if state in ("failed", "cancelled"):
        if run.checkpoint.is_file():
            where = "from its last checkpoint"
        else:
            where = "from the beginning (no checkpoint was saved before it stopped)"
        st.button(f"Resume {where}", key=f"train_resume_{run.run_id}", type="primary",
                  icon=":material/play_arrow:", on_click=resume_job, args=(run.run_id,))
    with st.expander("Log (last lines of train.log)", expanded=state == "failed"):
        st.code(log_tail(run) or "(empty)", language="text")
    with st.expander("Settings of this run (config.yaml)"):
        st.code(yaml.safe_dump(settings, sort_keys=False), language="yaml")


def done_ui(run: RunDir, settings: dict) -> None:
    metrics = run.read_metrics()
    if not metrics:
        st.warning(f"{code(run.run_id)} finished but wrote no metrics.json; it cannot be made active.")
        return
    quality = assess(metrics, settings.get("good_classes", []))
    elapsed = run.training_seconds()
    took = f" in {format_duration(elapsed)}" if elapsed else ""
    active = (active_record() or {}).get("run_id") == run.run_id
    if quality.collapsed:
        st.error(f"**{md(run.run_id)} finished{took}, but this model is flagged as useless:** "
                 + "; ".join(map(md, quality.problems)) + f". ({md(quality.headline())})", icon=":material/warning:")
    else:
        st.success(f"**{md(run.run_id)} finished{took}.** {md(quality.headline())}, macro-F1 {quality.macro_f1:.1%}.",
                   icon=":material/check_circle:")
    if active:
        st.info("This run is the active model.", icon=":material/verified:")
        return
    actor = current_actor()
    named = bool(actor and actor.may("activate"))
    if not named:  # an admin's controls are not shown greyed out to others
        st.caption(":material/lock: Only an admin can make a run active (on this page or on Models).")
        return
    if quality.collapsed:
        reason_key = f"train_override_{run.run_id}"
        reason = st.text_input("Reason for making a flagged model active (logged with it)", key=reason_key)
        st.button("Make active anyway", key=f"train_activate_{run.run_id}", disabled=not reason.strip(),
                  icon=":material/warning:", on_click=make_active, args=(run.run_id, reason_key))
    else:
        st.button("Make this the active model", key=f"train_activate_{run.run_id}", type="primary",
                  icon=":material/verified:", on_click=make_active, args=(run.run_id,))


def start_ui(cfg: TrainConfig | None, with_corrections: bool = False) -> None:
    """The Start button; a job already running is named, and a second start is refused by jobs."""
    if jobs.trains_on_workers():
        st.caption("Jobs train on the plant's training workers (`python -m defect_model worker`), one job per "
                   "worker; a start waits in the queue until a worker is free.")
    elif (running := jobs.running_job(runs_root())) is not None:
        st.caption(f"Training job {code(running.run_id)} is running; only one job runs at a time, "
                   "so a start is refused until it finishes or is cancelled.")
    no_good = False
    if cfg is not None and not cfg.good_classes:
        st.warning("No class is marked as meaning a good part: without one, no photo can pass and the defect miss "
                   "rate cannot be measured. Choose it under Settings, or say that this set has none.",
                   icon=":material/help:")
        no_good = not st.checkbox("This dataset has no good class (every class is a defect)", key="train_no_good")
    # Handled here, not in an on_click callback: a callback's arguments are those of the previous page run,
    # which misses a setting changed in the same interaction as the click.
    if st.button("Start training", key="train_start", type="primary", icon=":material/rocket_launch:",
                 disabled=cfg is None or no_good):
        start_job(cfg, with_corrections)
        st.rerun()
    flash_ui("train", "start")
