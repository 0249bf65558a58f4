"""Train page, dataset side: where the photos come from, what is in them, and the label corrections."""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import plotly.express as px
import streamlit as st

from defect_model.photos.archives import ArchiveError, extract_zip
from defect_model.train.data import DatasetError, allowed_data_folder, data_roots, scan_image_folder
from defect_model.workflows.insights import DatasetInsights, inspect_dataset
from defect_model.common.places import data_root
from defect_model.runs.store import InspectionStore
from defect_model.photos.synthetic import ensure_demo_dataset
from ui.address import keep, restore
from ui.text import md, plot_text

DEMO, UPLOADED, FOLDER, ZIP = "Demo dataset", "Uploaded dataset", "Folder on the server", "Upload a .zip"
SOURCES = (DEMO, UPLOADED, FOLDER, ZIP)
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
SAMPLES_SHOWN = 6


@dataclass(frozen=True)
class Dataset:
    label: str  # how the page names it
    path: Path  # absolute

    @property
    def key(self) -> str:
        """The dataset's name in the corrections table and in config.yaml: its absolute path."""
        return str(self.path)


def demo_path() -> Path:
    return data_root() / "demo"


def uploads_dir() -> Path:
    return data_root() / "datasets"


def uploaded_names() -> list[str]:
    folder = uploads_dir()
    if not folder.is_dir():
        return []
    # Hidden folders are uploads still being extracted; ".partial" ones are left over from older versions.
    return sorted(p.name for p in folder.iterdir()
                  if p.is_dir() and not p.name.startswith(".") and not p.name.endswith(".partial"))


def save_uploaded_zip(data: bytes, file_name: str, name: str) -> Path:
    """Extract an uploaded zip into the uploads folder under `name`; raises ArchiveError / DatasetError."""
    if not NAME_PATTERN.match(name):
        raise ArchiveError(f"{name!r}: a dataset name uses letters, digits, '.', '_' and '-' only "
                           "(at most 64, starting with a letter or digit). Choose another name.")
    target = uploads_dir() / name
    target.parent.mkdir(parents=True, exist_ok=True)
    extract_zip(data, target, name=file_name)
    try:
        scan_image_folder(target)
    except DatasetError as exc:
        shutil.rmtree(target, ignore_errors=True)
        raise DatasetError(f"{file_name}: {str(exc).split(': ', 1)[-1]} "
                           "The zip should hold one folder per class, e.g. ok/001.png, scratch/002.png.") from None
    return target


def _add_zip() -> None:
    """Callback of 'Add dataset': runs before the page, so it may switch the source to the new dataset."""
    upload = st.session_state.get("train_zip")
    name = (st.session_state.get("train_zip_name") or "").strip()
    st.session_state.pop("train_zip_error", None)
    if upload is None:
        st.session_state["train_zip_error"] = "Choose a .zip file first."
        return
    name = name or Path(upload.name).stem
    try:
        save_uploaded_zip(upload.getvalue(), upload.name, name)
    except (ArchiveError, DatasetError) as exc:
        st.session_state["train_zip_error"] = str(exc)
        return
    except OSError as exc:
        st.session_state["train_zip_error"] = (f"{upload.name}: could not be saved under {uploads_dir()} ({exc}). "
                                               "Check the disk space and the folder's permissions.")
        return
    st.session_state["train_source"] = UPLOADED
    st.session_state["train_uploaded"] = name
    st.session_state["train_zip_added"] = f"Saved {upload.name} as dataset '{name}'. It stays available under {UPLOADED}."


def dataset_source_ui() -> Dataset | None:
    """Choose the photos; returns the dataset or None (with the reason shown) when there is none yet."""
    restore("train_source", SOURCES)  # a reload keeps the chosen dataset
    source = st.radio("Dataset source", SOURCES, key="train_source", horizontal=True,
                      help="Every dataset is a folder with one sub-folder of photos per class.")
    keep("train_source")
    if added := st.session_state.pop("train_zip_added", None):
        st.success(md(added), icon=":material/check_circle:")
    if source == DEMO:
        path = demo_path()
        if path.is_dir():
            ensure_demo_dataset(path)  # completes a partly written one
        else:
            with st.spinner("Generating the demo dataset (first use only)…"):
                ensure_demo_dataset(path)
        st.caption("Synthetic metal surfaces: ok and four defect classes, in this folder:")
        st.text(str(path))
        return Dataset(DEMO, path.resolve())
    if source == UPLOADED:
        names = uploaded_names()
        if not names:
            st.info(f"No uploaded datasets yet. Choose '{ZIP}' to add one.")
            return None
        restore("train_uploaded", names)
        name = st.selectbox("Uploaded dataset", names, key="train_uploaded")
        keep("train_uploaded")
        return Dataset(f"uploaded '{name}'", (uploads_dir() / name).resolve())
    if source == FOLDER:
        return server_folder_ui()
    st.file_uploader("Dataset .zip (one folder per class inside)", type=["zip"], key="train_zip",
                     on_change=lambda: st.session_state.pop("train_zip_error", None))
    st.text_input("Name to keep it under", key="train_zip_name", placeholder="default: the zip's file name",
                  help="Letters, digits, '.', '_' and '-'. The dataset is kept under this name in the data folder.")
    st.button("Add dataset", key="train_zip_add", on_click=_add_zip, icon=":material/upload:")
    if error := st.session_state.get("train_zip_error"):
        st.error(md(error), icon=":material/error:")
    return None


def server_folder_ui() -> Dataset | None:
    """A folder typed by path, inside the configured data roots only (another user's folder is not listed)."""
    roots = data_roots(data_root())
    restore("train_folder")  # checked below like a typed path
    typed = st.text_input("Folder on the server", key="train_folder",
                          placeholder=f"{roots[0] / 'photos'} (one sub-folder per class)",
                          help=f"A folder inside {md(', '.join(map(str, roots)))}. A relative path starts in "
                               f"{md(roots[0])}.").strip()
    keep("train_folder")
    if not typed:
        st.info("Type the path of a folder that holds one sub-folder per class.")
        return None
    try:
        path = allowed_data_folder(typed, roots)
    except DatasetError as exc:
        st.error(md(exc), icon=":material/folder_off:")
        return None
    return Dataset(typed, path)


def _signature(path: Path) -> tuple:
    """Changes when photos are added to or removed from the class folders."""
    try:
        return tuple(sorted((d.name, d.stat().st_mtime_ns) for d in path.iterdir() if d.is_dir()))
    except OSError:
        return ()


@st.cache_data(show_spinner="Looking through the photos…", max_entries=16, ttl=3600)
def _insights(path: str, signature: tuple) -> DatasetInsights:
    return inspect_dataset(path, samples_per_class=SAMPLES_SHOWN)


def insights_for(dataset: Dataset) -> DatasetInsights | None:
    """The dataset's insights, or None after showing why it cannot be trained on."""
    try:
        return _insights(str(dataset.path), _signature(dataset.path))
    except DatasetError as exc:
        st.error(md(exc), icon=":material/folder_off:")
    except OSError as exc:
        st.error(md(f"{dataset.path}: cannot be read ({exc.strerror or exc}). Check that the dashboard's user may "
                    "read the folder and its sub-folders."), icon=":material/folder_off:")
    return None


def insights_ui(insights: DatasetInsights) -> None:
    """Photos per class (imbalance called out), samples, sizes and modes, unusable files."""
    few = set(insights.minority_classes())
    counts = pd.DataFrame({"class": [plot_text(c) for c in insights.counts],
                           "photos": list(insights.counts.values()),
                           "share": ["few photos" if c in few else "enough" for c in insights.counts]})
    left, right = st.columns([3, 2])
    with left:
        figure = px.bar(counts, x="class", y="photos", text="photos", title="Photos per class", height=300,
                        color="share", color_discrete_map={"enough": "#1f77b4", "few photos": "#ff7f0e"})
        figure.update_layout(showlegend=bool(few), legend_title_text="")
        figure.update_layout(margin=dict(l=10, r=10, t=40, b=10), title=dict(x=0, font=dict(size=15)))
        st.plotly_chart(figure, key="train_counts_chart")
    with right:
        a, b = st.columns(2)
        a.metric("Photos", insights.total)
        b.metric("Classes", len(insights.classes))
        a.metric("Largest / smallest class", f"{insights.imbalance_ratio:.1f}x")
        b.metric("Unusable files", len(insights.unreadable) + len(insights.skipped))
        st.caption("Sizes: " + _top(insights.sizes) + "  \nModes: " + _top(insights.modes))
    if warning := insights.imbalance_warning():
        st.warning(md(warning), icon=":material/balance:")
    if empty := insights.empty_classes:  # said where the classes are, not only in the list of left-out files
        st.warning(md(f"{len(empty)} class folder(s) without photos, left out of the classes: {', '.join(empty)}. "
                      "Put their photos in, or remove the folders, if they should not be classes."),
                   icon=":material/folder_off:")
    with st.expander("Sample photos per class", expanded=True):
        for name in insights.classes:
            label, photos = st.columns([1, 6], vertical_alignment="center")
            label.markdown(f"**{md(name)}**  \n{insights.counts[name]} photos")
            if insights.samples[name]:
                photos.image([str(p) for p in insights.samples[name]], width=80)
            else:
                photos.caption("No readable photo in this class.")
    unusable = [(path, reason) for path, reason in insights.unreadable] + list(insights.skipped)
    if unusable:
        with st.expander(f"{len(unusable)} file(s) will be left out of training", expanded=False):
            st.dataframe(pd.DataFrame(unusable, columns=["file", "reason"]), hide_index=True)
    checked = ("Every photo was decoded" if insights.decoded == insights.total
               else f"{insights.decoded} of {insights.total} photos were decoded in full, the rest checked by header")
    st.caption(f"{checked}; unreadable photos are skipped by training and listed in the run's data_report.json.")


def _top(counter: dict[str, int], n: int = 4) -> str:
    items = list(counter.items())
    text = ", ".join(f"{key} ({count})" for key, count in items[:n])
    return text + (f", and {len(items) - n} more" if len(items) > n else "") if items else "none readable"


def corrections_ui(dataset: Dataset, classes: list[str]) -> bool:
    """Label corrections from inspections and reviews; returns whether the confirmed ones are to be included."""
    try:
        table = InspectionStore().corrections(dataset=dataset.key)
    except Exception as exc:  # noqa: BLE001 - a broken database must not break the Train page
        st.warning(f"The corrections database could not be read ({md(exc)}); training goes on without corrections.")
        return False
    if table.empty:
        st.caption("No label corrections recorded for this dataset yet (they come from Inspect and Review).")
        return False
    confirmed = table[table["status"] == "confirmed"]
    pending = int((table["status"] == "pending").sum())
    shown = table[["photo_path", "original_label", "new_label", "action", "source", "who", "status"]].copy()
    shown["new_label"] = shown["new_label"].fillna("(unusable: dropped)")
    with st.expander(f"Label corrections: {len(confirmed)} confirmed, {pending} pending", expanded=False):
        st.dataframe(shown, hide_index=True)
        if pending:
            st.caption("Pending corrections are decided on the Review page; only confirmed ones can be included.")
    bad = sorted({str(label) for label in confirmed["new_label"].dropna() if str(label) not in classes})
    if bad:
        st.error(f"Corrections for {md(dataset.path)} use labels that are not classes of it: {md(', '.join(bad))}. "
                 "Reject those corrections on the Review page to include the others.")
        return False
    if confirmed.empty:
        return False
    include = st.checkbox(f"Include the {len(confirmed)} confirmed label correction(s) in this training",
                          value=True, key="train_include_corrections",
                          help="Relabelled photos train with their new label; photos marked unusable are left out.")
    return include
