"""Widgets of the Models page: every run in one table (defect miss rate first), two runs compared, and
what can be done with one run (make it active, download it, export it to ONNX, delete it)."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from defect_model.train.checkpoint import CheckpointError
from defect_model.workflows.compare import Switch, compare_runs, epoch_curves, switch_summary
from defect_model.access.accounts import Actor
from defect_model.workflows.lifecycle import (ActivationError, DeleteError, activate, activation_history, activation_problems,
                                    delete_run, run_summary)
from defect_model.runs.folders import RunDir, list_runs  # noqa: F401  (list_runs: the page's run list)
from ui.flash import flash, flash_ui
from ui.golden_ui import golden_acknowledged, golden_changes_ui
from ui.review_widgets import confusion_figure, quality_header
from ui.run_picker import run_select, run_state
from ui.text import code, md
from ui.resources import active_record

COLORS = {"a": "#1f77b4", "b": "#ff7f0e"}
LIVE_STATES = ("queued", "running")
POLL_SECONDS = 3  # while a run trains, the table follows its state; nothing polls otherwise
STATE_TEXT = {"done": "done", "running": "running", "queued": "queued (starting)",
              "cancelled": "cancelled (stopped early)", "failed": "failed", "unreadable": "unreadable"}
STOPPED = ("cancelled", "failed", "unreadable")


def _flash(where: str, kind: str, text: str) -> None:
    flash("models", where, kind, text)


def active_id() -> str | None:
    record = active_record()
    return record.get("run_id") if record else None


# -- the table ---------------------------------------------------------------------------------
def summaries(runs: list[RunDir], active: str | None) -> pd.DataFrame:
    rows = []
    for run in runs:
        try:
            rows.append(run_summary(run, active))
        except (OSError, ValueError) as exc:
            rows.append({"run": run.run_id, "status": "unreadable", "problems": f"{run.config}: {exc}",
                         "collapsed": False, "active": run.run_id == active})
    return pd.DataFrame(rows)


def runs_table_ui(runs: list[RunDir], active: str | None) -> None:
    """Every run as a row, its state and start first, then the defect miss rate (with good classes marked).
    While a run trains, the table is redrawn every few seconds, so its state follows the run's."""
    live = live_runs(runs)
    st.fragment(_runs_table, run_every=POLL_SECONDS if live else None)(runs, active, live)


def live_runs(runs: list[RunDir]) -> tuple[str, ...]:
    return tuple(run.run_id for run in runs if run_state(run) in LIVE_STATES)


def _runs_table(runs: list[RunDir], active: str | None, live_before: tuple[str, ...]) -> None:
    view, collapsed, stopped = runs_view(summaries(runs, active))

    def paint(row):
        if collapsed[row.name]:
            return ["color: #c62828; font-weight: 600"] * len(row)
        return ["color: #6b7280; font-style: italic"] * len(row) if stopped[row.name] else [""] * len(row)

    formats = {"val accuracy": "{:.1%}", "macro-F1": "{:.3f}"}
    formats.update({name: "{:.1%}" for name in ("defect miss rate", "false-reject rate") if name in view})
    st.dataframe(view.style.apply(paint, axis=1).format(formats, na_rep="–"), hide_index=True, key="runs_table")
    notes = []
    if any(collapsed):
        notes.append(":red[Rows in red are collapsed models: they would pass defective parts and cannot be made "
                     "active without an override reason.]")
    if any(stopped):
        notes.append("Grey rows did not finish (cancelled or failed): their numbers are from the last epoch they "
                     "completed. Resume them on the Train page.")
    if notes:
        st.caption(" ".join(notes))
    if live_runs(runs) != live_before:
        st.rerun(scope="app")  # a run started or ended: the choices below follow too


def runs_view(table: pd.DataFrame) -> tuple[pd.DataFrame, list[bool], list[bool]]:
    """The table as shown, and per row whether it is collapsed and whether the run stopped before the end."""
    has_good = "defect_miss_rate" in table and table["defect_miss_rate"].notna().any()
    states = table.get("status", pd.Series([""] * len(table))).fillna("")
    view = pd.DataFrame({
        "active": table["active"].map(lambda a: "★ active" if a else ""),
        "run": table["run"],
        "status": [STATE_TEXT.get(state, state) for state in states],
        "started (UTC)": table.get("date", ""),
    })
    if has_good:
        view["defect miss rate"] = table["defect_miss_rate"]
        view["false-reject rate"] = table["false_reject_rate"]
    view["worst recall"] = [None if pd.isna(r) else f"{r:.0%} ({c})"
                            for r, c in zip(table.get("worst_recall", []), table.get("worst_class", []))]
    view["recall per class"] = table.get("recall", "")
    view["val accuracy"] = table.get("accuracy")
    view["macro-F1"] = table.get("macro_f1")
    view["flag"] = [("COLLAPSED: " + p) if c else "" for c, p in zip(table["collapsed"], table.get("problems", ""))]
    view["dataset"] = table.get("dataset", "")
    view["classes"] = table.get("classes", "")
    view["settings"] = table.get("settings", "")
    view["training time"] = [None if pd.isna(s) else f"{s / 60:.1f} min" if s >= 60 else f"{s:.0f} s"
                             for s in table.get("training_s", [])]
    view["retrained from"] = table.get("parent", "")
    return view, table["collapsed"].fillna(False).tolist(), [state in STOPPED for state in states]


def active_summary_ui(runs: list[RunDir], active: str | None) -> None:
    run = next((r for r in runs if r.run_id == active), None)
    if run is None:
        st.info("No active model. Pick a finished run below and make it active.")
        return
    metrics = run.read_metrics()
    record = active_record() or {}
    st.markdown(f"**Active model** {code(run.run_id)} — chosen by {md(record.get('by') or '?')} at "
                f"{str(record.get('at', ''))[:16].replace('T', ' ')} UTC"
                + (f"; override: {md(record['override'])}" if record.get("override") else ""))
    if metrics:
        quality_header(metrics, run.settings().good_classes)


# -- compare -----------------------------------------------------------------------------------
def compare_pick_ui(runs: list[RunDir], active: str | None) -> tuple[RunDir | None, RunDir | None]:
    done = [r for r in runs if r.metrics.is_file() and r.val_predictions.is_file()]
    if len(done) < 2:
        st.info("Comparing needs two runs with validation results.")
        return None, None
    ids = [r.run_id for r in done]
    finished = [r.run_id for r in done if run_state(r) == "done"] or ids
    if st.session_state.get("compare_a") not in ids:  # the active model against the newest finished candidate
        st.session_state["compare_a"] = active if active in ids else (finished[1:] or ids[1:])[0]
    if st.session_state.get("compare_b") not in ids:
        a = st.session_state["compare_a"]
        st.session_state["compare_b"] = next((i for i in finished if i != a), next(i for i in ids if i != a))
    left, right = st.columns(2)
    with left:
        a = run_select("Run A (baseline)", done, "compare_a", active)
    with right:
        b = run_select("Run B (candidate)", done, "compare_b", active)
    if a.run_id == b.run_id:
        st.warning("Pick two different runs.")
        return None, None
    return a, b


def curves_figure(a: RunDir, b: RunDir) -> go.Figure:
    figure = make_subplots(rows=1, cols=2, subplot_titles=("loss", "validation accuracy and macro-F1"))
    for tag, run in (("a", a), ("b", b)):
        curves = epoch_curves(run)
        name = f"{tag.upper()} {run.run_id}"
        color = COLORS[tag]
        # A one-epoch run draws each curve as a single dot: the marker's shape and fill tell the curves apart.
        for column, dash, symbol, col in (("train_loss", "dot", "diamond-open", 1), ("val_loss", "solid", "circle", 1),
                                          ("val_accuracy", "solid", "circle", 2),
                                          ("val_macro_f1", "dot", "diamond-open", 2)):
            figure.add_trace(go.Scatter(x=curves["epoch"], y=curves[column], mode="lines+markers",
                                        name=f"{tag.upper()} {column.replace('_', ' ')}", legendgroup=name,
                                        line={"color": color, "dash": dash},
                                        marker={"symbol": symbol, "size": 10, "line": {"width": 2, "color": color}}),
                             row=1, col=col)
    figure.update_xaxes(title_text="epoch", dtick=1)
    # The top margin leaves the toolbar (shown on hover) a row of its own above the subplot titles.
    figure.update_layout(height=420, margin={"l": 10, "r": 10, "t": 70, "b": 10},
                         legend={"orientation": "h", "y": -0.22, "yanchor": "top"})
    return figure


CURVES_CONFIG = {"displayModeBar": "hover", "displaylogo": False,
                 "modeBarButtonsToRemove": ["select2d", "lasso2d", "toImage"]}


def comparison_ui(a: RunDir, b: RunDir) -> None:
    try:
        result = compare_runs(a, b)
    except (FileNotFoundError, ValueError) as exc:
        st.error(md(exc))
        return
    left, right = st.columns(2)
    for column, tag, run in ((left, "A", a), (right, "B", b)):
        with column:
            st.markdown(f"**{tag}** {md(run.run_id)}")
            quality_header(run.read_metrics(), run.settings().good_classes, compact=True)
    st.plotly_chart(curves_figure(a, b), key="compare_curves", config=CURVES_CONFIG)
    metrics_table_ui(result.metrics)
    left, right = st.columns(2)
    for column, tag, run in ((left, "A", a), (right, "B", b)):
        metrics = run.read_metrics()
        column.plotly_chart(confusion_figure(metrics["confusion_matrix"], metrics["classes"],
                                             title=f"{tag}: {run.run_id}", height=320 + 30 * len(metrics["classes"])),
                            key=f"compare_cm_{tag}", config={"displayModeBar": False})
    if result.photo_by_photo:
        changed_photos_ui(result)
    else:
        st.info(md(result.why_not_photo_by_photo()), icon=":material/compare_arrows:")


def metrics_table_ui(metrics: pd.DataFrame) -> None:
    """A, B and B − A per metric; "–" where a run has no such number (e.g. a class only the other one knows)."""
    table = metrics.assign(better=metrics["better"].map({"a": "A", "b": "B", "": ""}))
    table = table.rename(columns={"a": "A", "b": "B", "delta": "B − A"})
    for column in ("A", "B", "B − A"):  # as text: a table shows a missing number as "None"
        table[column] = [_number(value, signed=column == "B − A") for value in table[column]]
    st.dataframe(table, hide_index=True, key="compare_metrics")


def _number(value, signed: bool = False) -> str:
    if value is None or pd.isna(value):
        return "–"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def changed_photos_ui(result) -> None:
    changed = result.changed
    st.markdown(f"**{len(changed)} validation photo(s) changed prediction** out of {result.common_photos} in both: "
                f"{result.fixed} fixed, {result.broken} broken, {len(changed) - result.fixed - result.broken} "
                "still wrong (judged against B's labels, which include corrections).")
    if result.broken:
        st.warning(f"B gets {result.broken} photo(s) wrong that A got right. Look at them before making B active.",
                   icon=":material/warning:")
    if result.only_a or result.only_b:
        st.caption(f"Only in A: {len(result.only_a)} photo(s) (e.g. dropped as unusable); only in B: "
                   f"{len(result.only_b)}.")
    if not changed.empty:
        st.dataframe(changed, hide_index=True, key="changed_table",
                     column_config={"conf_a": st.column_config.NumberColumn("A confidence", format="%.2f"),
                                    "conf_b": st.column_config.NumberColumn("B confidence", format="%.2f"),
                                    "pred_a": "A predicted", "pred_b": "B predicted",
                                    "true_label_a": "A's label"})


# -- one run: activate, download, export, delete ----------------------------------------------
def manage_pick_ui(runs: list[RunDir], active: str | None) -> RunDir:
    ids = [r.run_id for r in runs]
    if st.session_state.get("manage_run") not in ids:
        newest_done = next((r.run_id for r in runs if r.status().get("state") == "done"), ids[0])
        st.session_state["manage_run"] = newest_done
    return run_select("Run", runs, "manage_run", active)


def _activate(run: RunDir, actor: Actor, reason_key: str | None) -> None:
    reason = st.session_state.get(reason_key, "") if reason_key else ""
    try:
        record = activate(run, actor, reason, golden_ack=golden_acknowledged(run))
    except (ActivationError, PermissionError) as exc:
        _flash("activate", "error", str(exc))
        return
    _flash("activate", "success", f"{run.run_id} is now the active model (by {record['by']}, {record['at']})"
           + (f", override: {record['override']}" if record.get("override") else "") + ".")


def activate_ui(run: RunDir, actor: Actor, active: str | None) -> None:
    flash_ui("models", "activate", keep=True)
    if run.run_id == active:
        st.success(f"{code(run.run_id)} is the active model.", icon=":material/star:")
        return
    state = run.status().get("state")
    try:
        quality = run.quality()
    except (OSError, ValueError) as exc:
        st.error(md(f"{run.config}: cannot read this run's settings ({exc}). It cannot become active; delete it "
                    "or fix the file."))
        return
    if quality is None or not run.checkpoint.is_file():
        st.info(f"{code(run.run_id)} has no checkpoint with validation results yet ({md(state)}); it cannot become "
                "active.")
        return
    if state in LIVE_STATES:
        st.info(f"{code(run.run_id)} is still training: its checkpoint changes every epoch. It can become active "
                "once it has finished.", icon=":material/model_training:")
        return
    if state != "done":
        st.info(f"{code(run.run_id)} did not finish ({md(state)}); only a finished run can become active. Resume it "
                "on the Train page.", icon=":material/stop_circle:")
        return
    golden_changes_ui(run)
    problems = activation_problems(run)
    needs_override = bool(problems)
    if needs_override:
        st.error(f"{code(run.run_id)} is flagged: {'; '.join(map(md, problems))}. It would pass defective parts, so "
                 "it can only be made active with an override reason, which is recorded.", icon=":material/warning:")
    if not actor.may("activate"):  # an admin's controls are not shown greyed out to others
        st.caption(":material/lock: Only an admin can make a model active.")
        return
    reason_key = None
    if needs_override:
        reason_key = f"override_{run.run_id}"
        st.text_input("Override reason", key=reason_key, placeholder="why this model must go live anyway")
    if st.button("Make active anyway…" if needs_override else "Make active…", key=f"activate_{run.run_id}",
                 type="secondary" if needs_override else "primary",
                 help="Shows what changes for the inspectors (classes, defect miss rate, recall per class) and asks "
                      "you to confirm."):
        confirm_activation_dialog(run, actor, reason_key, active)


def active_run_beside(run: RunDir, active: str | None) -> RunDir | None:
    """The active model's run folder (in the same runs folder as `run`), when it is there with metrics."""
    if not active:
        return None
    current = RunDir(run.path.parent / active)
    return current if current.exists() and current.read_metrics() else None


@st.dialog("Make this model active?", width="large")
def confirm_activation_dialog(run: RunDir, actor: Actor, reason_key: str | None, active: str | None) -> None:
    """What changes for the inspectors, and who it is recorded for; nothing changes until confirmed."""
    current = active_run_beside(run, active)
    try:
        switch = switch_summary(current, run)
    except (OSError, ValueError) as exc:
        st.error(md(f"{run.path}: the summary cannot be read ({exc}). Nothing was changed."))
        return
    for line in switch_lines(switch, actor, active, st.session_state.get(reason_key, "") if reason_key else ""):
        st.markdown(line)
    switch_tables_ui(switch)
    yes, no = st.columns(2)
    if yes.button("Yes, make it active", key=f"activate_confirm_{run.run_id}", type="primary", width="stretch",
                  icon=":material/check:", on_click=_activate, args=(run, actor, reason_key)):
        st.rerun()
    if no.button("Cancel", key=f"activate_cancel_{run.run_id}", width="stretch"):
        st.rerun()


def switch_lines(switch: Switch, actor: Actor, active: str | None, reason: str) -> list[str]:
    """The summary in sentences (Markdown, names escaped)."""
    run = switch.candidate
    lines = [f"Inspections will use **{md(run.run_id)}**"
             + (f" instead of {md(active)}." if active else "; no model is active now.")]
    if switch.current is None or switch.classes_now == switch.classes_after:
        lines.append(f"Classes{' (unchanged)' if switch.current else ''}: {md(', '.join(switch.classes_after))}.")
    else:
        change = []
        if switch.classes_added:
            change.append(f"adds {md(', '.join(switch.classes_added))}")
        if switch.classes_dropped:
            change.append(f"drops {md(', '.join(switch.classes_dropped))} (no photo will be called that any more)")
        lines.append("**Classes change**: it " + " and ".join(change or ["orders them differently"]) + ".")
    if switch.good_now != switch.good_after and switch.current is not None:
        lines.append(f"**Good (pass) classes change**: {md(', '.join(switch.good_now) or 'none')} → "
                     f"{md(', '.join(switch.good_after) or 'none')}.")
    elif not switch.good_after:
        lines.append("No class is marked good: no photo will pass; confident ones are rejected.")
    lines += worse_lines(switch)
    if reason.strip():
        lines.append(f"Override reason (recorded): {md(reason.strip())}")
    lines.append(f"Recorded as made active by **{md(actor.name)}** ({actor.role}), now, with the checkpoint's "
                 "fingerprint (sha256), in the audit trail.")
    return lines


def worse_lines(switch: Switch) -> list[str]:
    """What gets worse for the inspectors, in red: more defects missed, classes recognised less often."""
    lines = []
    miss = switch.overall.set_index("metric")
    if "defect miss rate" in miss.index and (miss.loc["defect miss rate", "change"] or 0) > 0:
        lines.append(f":red[**It misses more defects**: {_share(miss.loc['defect miss rate', 'now'])} of defect photos "
                     f"pass now, {_share(miss.loc['defect miss rate', 'after'])} after.]")
    known = switch.per_class.dropna(subset=["recall now", "recall after"])
    dropped = known[known["recall after"] < known["recall now"]]
    if len(dropped):
        lines.append(":red[**Recognised less often**: " + ", ".join(
            f"{md(row['class'])} {_share(row['recall now'])} → {_share(row['recall after'])}"
            for _, row in dropped.iterrows()) + ".]")
    return lines


def _share(value, metric: str = "") -> str:
    if value is None or pd.isna(value):
        return "–"
    return f"{value:.3f}" if metric == "macro-F1" else f"{value:.1%}"


def switch_tables_ui(switch: Switch) -> None:
    """Overall numbers, then recall and miss rate per class, each now and after."""
    overall = switch.overall
    st.dataframe(pd.DataFrame({
        "": overall["metric"],
        "now": [_share(v, m) for m, v in zip(overall["metric"], overall["now"])],
        "after": [_share(v, m) for m, v in zip(overall["metric"], overall["after"])],
        "change": ["–" if pd.isna(v) else (f"{v:+.3f}" if m == "macro-F1" else f"{v * 100:+.1f} points")
                   for m, v in zip(overall["metric"], overall["change"])],
    }), hide_index=True, key="activation_overall")
    st.caption("Per class: recall is the share of that class's validation photos the model recognises; missed is "
               "the rest (1 − recall).")
    st.dataframe(switch.per_class.assign(**{column: switch.per_class[column].map(_share)
                                            for column in switch.per_class.columns if column != "class"}),
                 hide_index=True, key="activation_per_class")


def review_link_ui(run: RunDir) -> None:
    if run.metrics.is_file() and run.val_predictions.is_file() and st.button(
            "Review this run", key=f"review-link:{run.run_id}", icon=":material/fact_check:",
            help="Its confusion matrix, wrong predictions and label fixes on the Review page."):
        st.session_state["review_run"] = run.run_id
        st.switch_page("pages/review.py")


@st.cache_data(max_entries=2, show_spinner="Preparing the model for download…")
def _inference_checkpoint(path: str, mtime: float) -> bytes:
    from defect_model.train.checkpoint import inference_bytes

    return inference_bytes(path)


def downloads_ui(run: RunDir) -> None:
    from defect_model.workflows.onnx_export import ExportError, cached_export, export_onnx

    if not run.checkpoint.is_file():
        st.info(md(f"{run.checkpoint}: no checkpoint yet."))
        return
    size_mb = run.checkpoint.stat().st_size / 1e6
    left, right = st.columns(2)
    try:
        weights = _inference_checkpoint(str(run.checkpoint), run.checkpoint.stat().st_mtime)
    except (CheckpointError, OSError) as exc:
        left.error(md(exc))
    else:
        left.download_button(f"Download the model ({len(weights) / 1e6:.1f} MB)", data=weights,
                             file_name=f"{run.run_id}-model.pt", mime="application/octet-stream",
                             key=f"download_model_{run.run_id}", icon=":material/download:", on_click="ignore")
        left.caption("The weights and their metadata, without the training state: load with "
                     "`defect_model.serve.inference.Predictor.from_checkpoint` (weights_only).")
    left.download_button(f"Full checkpoint, to resume training ({size_mb:.1f} MB)", data=run.checkpoint.read_bytes,
                         file_name=f"{run.run_id}-checkpoint.pt", mime="application/octet-stream",
                         key=f"download_ckpt_{run.run_id}", icon=":material/download:", type="tertiary",
                         on_click="ignore")
    export = cached_export(run)
    with right:
        slot = st.empty()
        if export is None and slot.button("Export to ONNX", key=f"export_{run.run_id}",
                                          help="Exports model.onnx and checks its outputs against torch."):
            try:
                with st.spinner("Exporting and checking against torch…"):
                    export = export_onnx(run)
                slot.empty()
            except ExportError as exc:
                st.error(md(exc))
        if export is not None:
            from pathlib import Path

            path = Path(export.path)
            st.download_button(f"Download model.onnx ({path.stat().st_size / 1e6:.1f} MB)", data=path.read_bytes,
                               file_name=f"{run.run_id}.onnx", mime="application/octet-stream",
                               key=f"download_onnx_{run.run_id}", icon=":material/download:")
            st.caption(md(export.describe()).replace(md(f"`{export.input_name}`"), code(export.input_name))
                       .replace(md(f"`{export.output_name}`"), code(export.output_name)))


def _delete(run: RunDir, actor: Actor, confirm_key: str) -> None:
    if not st.session_state.get(confirm_key):
        _flash("delete", "error", "Tick the confirmation box first.")
        return
    try:
        delete_run(run, actor)
    except (DeleteError, PermissionError) as exc:
        _flash("delete", "error", str(exc))
        return
    for key in ("manage_run", "compare_a", "compare_b", "review_run", confirm_key):
        st.session_state.pop(key, None)
    _flash("delete", "success", f"Deleted run {run.run_id} ({run.path}).")


def delete_ui(run: RunDir, active: str | None, actor: Actor) -> None:
    flash_ui("models", "delete", keep=True)
    if run.run_id == active:
        st.caption("The active model cannot be deleted; make another run active first.")
        return
    if not actor.may("delete"):
        st.caption(":material/lock: Only an admin can delete a run.")
        return
    confirm_key = f"confirm_delete_{run.run_id}"
    st.checkbox(f"Yes, delete {run.run_id} and all its files (checkpoint, metrics, logs). This cannot be undone.",
                key=confirm_key)
    st.button("Delete run", key=f"delete_{run.run_id}", on_click=_delete, args=(run, actor, confirm_key),
              disabled=not st.session_state.get(confirm_key), icon=":material/delete:")


def history_ui() -> None:
    history = activation_history()
    if not history:
        st.caption("No model has been made active from here yet.")
        return
    table = pd.DataFrame(history)
    columns = [c for c in ("at", "run_id", "by", "sha256", "accuracy", "defect_miss_rate", "override", "problems")
               if c in table.columns]
    st.dataframe(table[columns], hide_index=True, key="history_table")
