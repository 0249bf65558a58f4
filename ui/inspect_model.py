"""The Inspect page's model: the active run, its Predictor and good classes; with none, the demo model offer."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from defect_model.runs.jobs import JobError, running_job, start
from defect_model.runs.folders import RunDir, get_active, list_runs
from defect_model.common.places import data_root
from defect_model.workflows.operating_point import OperatingPoint, load_point
from defect_model.workflows.lifecycle import ActivationError, activate, activation_problems
from defect_model.workflows.inspection import good_classes_of
from defect_model.photos.synthetic import demo_config, ensure_demo_dataset
from ui.job_events import job_progress_ui
from ui.monitor_widgets import drift_alarm_ui
from ui.session import current_actor
from ui.resources import predictor_for, served_model
from ui.text import code, md


@dataclass(frozen=True)
class ActiveModel:
    run: RunDir
    predictor: object  # defect_model.serve.inference.Predictor (imported lazily: torch loads on first use)
    good_classes: list[str]
    checkpoint: Path  # the pinned copy activation made: a resume or retrain of the run never changes it
    sha256: str
    point: OperatingPoint | None = None  # saved with the run on the Review page

    @property
    def classes(self) -> list[str]:
        return list(self.predictor.classes)


def active_model_ui() -> ActiveModel | None:
    """The active model, loaded (cached per checkpoint version); None after saying why there is none."""
    try:
        served = served_model()
    except ValueError as exc:  # ModelStoreError: the store's copy is not the one made active, or out of reach
        st.error(md(exc), icon=":material/error:")
        return None
    if served is None:
        record = get_active()
        if record:
            st.warning(f"The active model {code(record.get('run_id'))} has no checkpoint any more "
                       f"({md(record.get('path', ''))}). Choose another model on the Models page.",
                       icon=":material/warning:")
        no_model_ui()
        return None
    run, checkpoint, sha256 = served
    try:
        predictor = predictor_for(run, checkpoint)
    except ValueError as exc:  # CheckpointError: the message names the file and what to do
        st.error(md(exc), icon=":material/error:")
        return None
    except Exception as exc:  # e.g. weights that do not fit the network the metadata describes
        st.error(md(f"{checkpoint}: the model cannot be loaded ({type(exc).__name__}: {exc}). "
                    "Choose another model on the Models page or retrain this one."), icon=":material/error:")
        return None
    warm_up(str(checkpoint), checkpoint.stat().st_mtime, predictor)
    model = ActiveModel(run, predictor, good_classes_of(run, predictor), checkpoint, sha256, load_point(run))
    model_line_ui(model)
    return model


@st.cache_resource(show_spinner=False, max_entries=4)
def warm_up(checkpoint: str, mtime: float, _predictor) -> bool:
    """Once per checkpoint version: import the heatmap code and run one blank photo through the
    model, so an inspector's first photo does not pay for it."""
    import numpy as np

    from defect_model.serve.explain import heatmaps

    size = _predictor.preprocessing.image_size
    heatmaps(_predictor, [np.full((size, size, 3), 128, dtype=np.uint8)])
    return True


def model_line_ui(model: ActiveModel) -> None:
    good = md(", ".join(model.good_classes))
    predictor = model.predictor
    engine = ("ONNX Runtime (checked equal to torch)" if predictor.backend == "onnxruntime"
              else f"torch ({predictor.backend_note})" if predictor.backend_note else "torch")
    st.caption(f"Model {code(model.run.run_id)} · classes: {md(', '.join(model.classes))} · "
               + (f"good: **{good}**" if good else "no class marked good") + f" · runs on {engine}")
    try:
        problems = activation_problems(model.run)
    except (OSError, ValueError):
        problems = []
    if problems:
        st.error("This model is flagged: " + "; ".join(map(md, problems)) + ". It may pass defective parts: "
                 "send doubtful parts to a person and tell the engineer.", icon=":material/warning:")
    actor = current_actor()
    drift_alarm_ui(model.run, engineer=bool(actor and actor.may("review")))
    if not model.good_classes:
        st.caption("This run marks no class as a good part (as in NEU-CLS, where every class is a defect), so no "
                   "photo passes: a confident prediction is a **reject**, an unsure one goes to a person.")


# -- no model yet: the demo model ---------------------------------------------------
def demo_data_dir() -> Path:
    return data_root() / "demo"


def demo_runs() -> list[RunDir]:
    """Runs trained on the demo set, newest first."""
    target = demo_data_dir().resolve()
    found = []
    for run in list_runs():
        try:
            if Path(run.settings().data_dir).resolve() == target:
                found.append(run)
        except (OSError, ValueError):
            continue
    return found


def no_model_ui() -> None:
    st.info("No model is active yet, so photos cannot be inspected. The engineer trains one on the Train page "
            "and makes it active on the Models page, or you can train the small demo model here "
            "(a network started from ImageNet weights, one pass over built-in synthetic photos: under a minute on "
            "a quiet machine, several on a busy one, and it keeps training until it recognises every class; the "
            "time left shown is measured from its own speed) and use it.",
            icon=":material/info:")
    job = running_job()
    finished = [run for run in demo_runs() if run.status().get("state") == "done" and run.checkpoint.is_file()]
    if job is not None:
        st.fragment(training_progress_ui, run_every=2)(job)
    elif finished:
        use_demo_model_ui(finished[0])
    else:
        train_demo_button_ui("Train the demo model")


def train_demo_button_ui(label: str) -> None:
    actor = current_actor()
    if not (actor and actor.may("train")):
        st.caption(":material/lock: An engineer or admin trains models; ask one to start the demo model.")
    elif st.button(label, type="primary", icon=":material/model_training:", key="demo_train"):
        start_demo_training()


def start_demo_training() -> None:
    try:
        data = ensure_demo_dataset(demo_data_dir())
        run = start(demo_config(data), actor=current_actor())
    except (JobError, OSError, PermissionError) as exc:
        st.error(f"The demo model could not be started: {md(exc)}", icon=":material/error:")
        return
    st.toast(f"Training {code(run.run_id)} started")
    st.rerun()


def training_progress_ui(job: RunDir) -> None:
    """Polled every two seconds: the running job's progress; a full rerun once it has finished."""
    if job.status().get("state") not in ("queued", "running"):
        st.rerun()
    job_progress_ui(job)
    st.caption("Follow it on the Train page; this page offers the model when it is done.")
    st.page_link("pages/train.py", label="Open the Train page", icon=":material/model_training:")


def use_demo_model_ui(run: RunDir) -> None:
    status = run.status()
    accuracy = status.get("val_accuracy")
    st.success(f"The demo model {code(run.run_id)} is trained"
               + (f" (validation accuracy {accuracy:.0%})." if accuracy is not None else "."),
               icon=":material/check_circle:")
    problems = activation_problems(run)
    if problems:
        st.error(f"It cannot be used here: {'; '.join(map(md, problems))}. Train it again, or ask the engineer "
                 "(Train and Models pages).",
                 icon=":material/warning:")
        train_demo_button_ui("Train the demo model again")
        return
    actor = current_actor()
    if not (actor and actor.may("activate")):
        st.caption(":material/lock: An admin makes a model active; ask one to use the demo model.")
        return
    if st.button("Use the demo model", type="primary", icon=":material/check:"):
        try:
            activate(run, actor)
        except (ActivationError, PermissionError) as exc:
            st.error(md(exc), icon=":material/warning:")
            return
        st.rerun()
