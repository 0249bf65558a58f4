"""Command line: `python -m defect_model {train,run,resume,worker,evaluate,predict,demo-data,accounts,audit,db,
photos,watch,golden}`."""

from __future__ import annotations

import argparse
import csv
import hashlib
import os
import sys
import typing
from pathlib import Path

from defect_model.common.config import TrainConfig, settings_of

def _add_config_arguments(parser: argparse.ArgumentParser, config_class=TrainConfig) -> None:
    """One option per setting the command line offers; defaults come from the dataclass (the reference recipe)."""
    group = parser.add_argument_group("training settings (defaults: the reference recipe)")
    for setting in settings_of(config_class):
        if not setting.cli:
            continue
        flag = "--" + setting.name.replace("_", "-")
        help_text = f"{setting.help} (default: {setting.default})"
        if setting.type is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif typing.get_origin(setting.type) is tuple:
            group.add_argument(flag, type=float, nargs=3, default=None, metavar=("R", "G", "B"), help=help_text)
        elif typing.get_origin(setting.type) is list:
            group.add_argument(flag, nargs="*", default=None, metavar="CLASS", help=help_text)
        else:
            group.add_argument(flag, type=setting.type, default=None, help=help_text)


def config_from_args(args: argparse.Namespace, config_class=TrainConfig) -> TrainConfig:
    base = config_class.from_yaml(args.config).to_dict() if args.config else {}
    given = []
    for setting in settings_of(config_class):
        value = getattr(args, setting.name, None)
        if value is not None and setting.cli:
            base[setting.name] = value
            given.append(setting.name)
    base["pinned"] = sorted(set(base.get("pinned", [])) | set(given) - {"preset"})
    base["data_dir"] = str(Path(args.data).resolve())
    base["split_csv"] = str(Path(args.split).resolve()) if args.split else base.get("split_csv", "")
    if args.corrections:
        base["corrections_csv"] = str(Path(args.corrections).resolve())
    return config_class.from_dict(base)


def build_parser(config_class=TrainConfig) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m defect_model",
        description="Train, evaluate and run defect classifiers (ResNets; EfficientNet-Lites from ImageNet "
                    "weights) on folders of photos.")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a model on a class-per-folder photo dataset",
                           description="Train on DIR (one sub-folder per class). Writes a run directory with "
                                       "config.yaml, events.jsonl, checkpoint.pt, metrics.json, val_predictions.csv.")
    train.add_argument("--data", required=True, metavar="DIR", help="dataset folder, one sub-folder per class")
    train.add_argument("--split", metavar="CSV", help="optional path,label,split CSV (train/val); "
                                                      "default: a seeded stratified 80/20 split")
    train.add_argument("--corrections", metavar="CSV", help="optional path,label CSV of confirmed label fixes "
                                                            "(an empty label drops the photo)")
    train.add_argument("--run-dir", metavar="DIR", help="write the run here (default: a new folder under --runs-root)")
    train.add_argument("--runs-root", metavar="DIR", help="where new runs are created (default: $DEFECT_RUNS_DIR or ./runs)")
    train.add_argument("--config", metavar="YAML", help="start from these settings instead of the reference recipe")
    _add_config_arguments(train, config_class)

    run = sub.add_parser("run", help="train a run folder: from its request.yaml, or on from its last checkpoint "
                                     "(what the dashboard starts)")
    run.add_argument("run", metavar="RUN", help="run directory or run id")

    resume = sub.add_parser("resume", help="continue an interrupted, cancelled or crashed run from its last checkpoint")
    resume.add_argument("run", metavar="RUN", help="run directory or run id")

    worker = sub.add_parser(
        "worker", help="train the jobs dashboards start, on this machine (a plant's training machine)",
        description="Take training jobs from the plant's queue (in the PostgreSQL database at $DEFECT_DATABASE_URL) "
                    "one at a time and train each in the runs folder at $DEFECT_RUNS_DIR, which the dashboards share "
                    "(mounted at the same path here as there, as are the datasets). Dashboards send jobs here when "
                    "they run with DEFECT_TRAINING=worker. Ctrl-C or SIGTERM stops the worker; a running job stops "
                    "after its current step with its checkpoint and can be resumed from any dashboard.")
    worker.add_argument("--name", help="the worker's name in logs and run statuses (default: HOST-PID)")

    evaluate = sub.add_parser("evaluate", help="evaluate a run's checkpoint on its validation photos")
    evaluate.add_argument("run", metavar="RUN", help="run directory or run id")

    predict = sub.add_parser("predict", help="classify photos with a trained run")
    predict.add_argument("--run", required=True, metavar="RUN", help="run directory or run id")
    predict.add_argument("images", nargs="+", metavar="IMAGE", help="photo files")
    predict.add_argument("--cam-dir", metavar="DIR", help="also write a Grad-CAM overlay PNG per photo here")
    predict.add_argument("--csv", metavar="OUT", help="write the results table to this CSV")

    accounts = sub.add_parser("accounts", help="sign-in accounts of the dashboard (as the server's own user)")
    accounts_sub = accounts.add_subparsers(dest="accounts_command", required=True)
    link = accounts_sub.add_parser("first-link", help="on a database without accounts: create admin and print a "
                                                      "one-time sign-in link (make run does this)")
    link.add_argument("--url", default="http://127.0.0.1:8501", help="the dashboard's address")
    add = accounts_sub.add_parser("add", help="create an account or change its role and password")
    add.add_argument("name")
    add.add_argument("--role", choices=("inspector", "engineer", "admin"), required=True)
    add.add_argument("--password-stdin", action="store_true", help="read the password from standard input "
                                                                   "instead of asking for it")
    accounts_sub.add_parser("list", help="every account with its role")

    audit = sub.add_parser("audit", help="the tamper-evident audit trail and inspection log")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    audit_sub.add_parser("verify", help="check the hash chains and their heads against the head log (and its MACs "
                                        "when DEFECT_AUDIT_KEY is set); names the first problem per table")
    audit_sub.add_parser("anchor", help="start the head log of a database from before it, or accept rows written "
                                        "after the anchored heads (refused while anything else is wrong; recorded)")
    show = audit_sub.add_parser("show", help="the newest audit events")
    show.add_argument("--limit", type=int, default=30)

    db = sub.add_parser("db", help="the database's schema: upgrade it, or check where it stands",
                        description="The database is $DEFECT_DATABASE_URL (PostgreSQL) when set, else the SQLite file "
                                    "($DEFECT_DB, else data/inspections.sqlite), which upgrades itself on opening. A "
                                    "PostgreSQL database is upgraded only by `db upgrade`: take a backup first.")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    db_sub.add_parser("upgrade", help="bring the schema to the newest revision (on PostgreSQL also the training "
                                      "queue's schema)")
    db_sub.add_parser("check", help="the current and the newest revision; exits 1 when behind or unreachable")

    photos = sub.add_parser("photos", help="the inspection store's kept photo copies")
    photos_sub = photos.add_subparsers(dest="photos_command", required=True)
    cleanup = photos_sub.add_parser(
        "cleanup", help="delete photo copies past retention that no correction needs",
        description="Delete the kept copies of inspected photos whose newest inspection is older than --older-than "
                    "days (default: $DEFECT_PHOTO_RETENTION_DAYS, else 365), except those a pending or confirmed "
                    "correction needs. The inspection log keeps every row with the photo's sha256, marked as "
                    "having no copy any more; the clean-up is recorded in the audit trail.")
    cleanup.add_argument("--older-than", type=float, metavar="DAYS", help="retention in days (default: "
                                                                          "$DEFECT_PHOTO_RETENTION_DAYS or 365)")
    cleanup.add_argument("--dry-run", action="store_true", help="list what would be deleted; change nothing")

    watch = sub.add_parser("watch", help="hot folder: inspect photos with the active model as a camera writes them",
                           description="Inspect each photo written into IN_DIR once it is complete (size and mtime "
                                       "unchanged for --settle seconds, or a NAME.ready marker), log it with source "
                                       "'hot folder', append a line to the results CSV and move it on. Safe to stop "
                                       "(Ctrl-C, SIGTERM) and restart: no photo is inspected twice or lost.")
    watch.add_argument("in_dir", metavar="IN_DIR", help="the folder the camera writes into")
    watch.add_argument("--done", required=True, metavar="DIR", help="where inspected photos go")
    watch.add_argument("--rejects", metavar="DIR", help="where photos with a reject verdict go (default: --done)")
    watch.add_argument("--errors", metavar="DIR", help="where unreadable files go, each beside NAME.error.txt "
                                                      "(default: DONE/errors)")
    watch.add_argument("--results", metavar="CSV", help="one line per photo: time,file,verdict,class,confidence,"
                                                        "model,inspection_id,error (default: DONE/results.csv)")
    watch.add_argument("--threshold", type=float, help="confidence below which a person decides, for every class "
                                                       "(default: the operating point saved with the model on the "
                                                       "Review page, else the Inspect page's 0.7)")
    watch.add_argument("--settle", type=float, help="seconds a file's size must stay unchanged (default: 1)")
    watch.add_argument("--poll", type=float, help="seconds between looks at the folder (default: 0.2)")
    watch.add_argument("--batch-size", type=int, help="photos per forward pass in a burst (default: 32)")
    watch.add_argument("--threads", type=int, help="inference threads (default: half the cores, as the dashboard)")

    golden = sub.add_parser("golden", help="run a model on the golden set beside the active model; exits 1 when a "
                                           "verdict would change (for a plant's release scripts)")
    golden.add_argument("run", metavar="RUN", help="the candidate run: a run folder or a run id")
    golden.add_argument("--runs-dir", help="where the active model's record is (default: the run's parent folder)")

    demo = sub.add_parser("demo-data", help="write the synthetic demo dataset (ok + 4 defect classes)")
    demo.add_argument("out", metavar="OUT", help="folder to create")
    demo.add_argument("--per-class", type=int, default=60, help="photos per class (default: 60)")
    demo.add_argument("--size", type=int, default=128, help="photo size in pixels (default: 128)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    return parser


class TerminalProgress:
    """Draws training events: a progress bar on a terminal, one line per epoch in a log file."""

    def __init__(self, stream=sys.stderr):
        self.stream = stream
        self.bar = None
        self.interactive = stream.isatty()

    def __call__(self, event: dict) -> None:
        kind = event["type"]
        if kind == "start":
            self._line(f"run {event['run_id']}: {event['train_images']} train / {event['val_images']} val photos, "
                       f"{len(event['classes'])} classes, {event['epochs']} epochs x {event['steps_per_epoch']} steps"
                       + (f", {event['unreadable']} unreadable photo(s) skipped" if event["unreadable"] else ""))
            if self.interactive:
                from tqdm import tqdm
                done = (event["start_epoch"] - 1) * event["steps_per_epoch"] + event["skip_steps"]
                self.bar = tqdm(total=event["total_steps"], initial=done, file=self.stream, unit="step")
        elif kind == "step" and self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(epoch=event["epoch"], loss=f"{event['loss']:.3f}",
                                 img_s=f"{event['images_per_s']:.1f}")
        elif kind == "epoch":
            eta = event["eta_s"]
            self._line(f"epoch {event['epoch']}/{event['epochs']}: train loss {event['train_loss']:.4f}, "
                       f"val loss {event['val_loss']:.4f}, val accuracy {event['val_accuracy']:.4f}, "
                       f"macro-F1 {event['val_macro_f1']:.4f}, {event['epoch_seconds']:.0f} s"
                       + (f", ETA {eta / 60:.1f} min" if eta else ""))
        elif kind == "end":
            if self.bar is not None:
                self.bar.close()
            self._line(f"finished: {event['state']}" + (f" ({event['error']})" if event.get("error") else ""))

    def _line(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)


def cmd_train(args, dist) -> int:
    """A new run folder with the request these flags make, trained in this process (`run` does the rest). Under
    torchrun rank 0 makes the folder and the other processes train into it."""
    import contextlib

    from defect_model.runs.jobs import JobError
    from defect_model.runs.folders import RunDir
    from defect_model.train import distributed
    from defect_model.train.data import require_dataset_folder

    request = config_from_args(args)
    require_dataset_folder(request.data_dir)  # before a run folder exists: a mistyped path leaves no failed run
    run = RunDir(Path(distributed.from_main(dist, lambda: str(_new_run_folder(args, request).path))))
    try:
        return train_run_folder(run, dist)
    except JobError:  # refused (another job is training): a request left behind would wait forever
        if dist.is_main:
            run.request.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                run.path.rmdir()  # only when empty: never a folder with anything else in it
        raise


def _new_run_folder(args, request: TrainConfig):
    from defect_model.runs.folders import RunDir, new_run_dir

    if args.run_dir:
        run = RunDir(Path(args.run_dir))
        run.path.mkdir(parents=True, exist_ok=True)
        if run.exists():
            raise SystemExit(f"{run.path}: this folder already holds a run. "
                             f"Use `python -m defect_model resume {run.path}` or choose a new --run-dir.")
    else:
        run = new_run_dir(args.runs_root, Path(request.data_dir).name)
    request.to_yaml(run.request)
    print(f"run directory: {run.path}", file=sys.stderr, flush=True)
    return run


def cmd_run(args, dist) -> int:
    from defect_model.runs.folders import resolve_run

    return train_run_folder(resolve_run(args.run), dist)


def cmd_resume(args, dist) -> int:
    from defect_model.runs.folders import resolve_run

    # resuming by hand overrides an earlier cancel request
    return train_run_folder(resolve_run(args.run), dist, clear_cancel=True)


def train_run_folder(run, dist, clear_cancel: bool = False) -> int:
    """Train a run folder in this process: from its request, or on from its last checkpoint once it has
    resolved settings. Refused while another job (or another process on this run) is training. Under torchrun
    rank 0 claims the run and tells the other processes whether it resumes."""
    from defect_model.train import distributed
    from defect_model.train.engine import fit
    from defect_model.runs.jobs import claim_for_this_process

    if run.status()["state"] == "done":
        if dist.is_main:
            print(f"{run.path}: the run already finished; nothing to resume.", file=sys.stderr)
        return 0

    def claim() -> bool:
        if clear_cancel:
            run.cancel_file.unlink(missing_ok=True)
        claim_for_this_process(run)
        return run.config.is_file()

    import contextlib

    resume = distributed.from_main(dist, claim)
    with run.beating() if dist.is_main else contextlib.nullcontext():
        metrics = fit(run.settings(), run, callbacks=[TerminalProgress()], resume=resume, dist=dist)
    return 0 if metrics else 1


def cmd_worker(args) -> int:
    from defect_model.runs.jobs import train_taken_job
    from defect_model.runs.queue import QueueError, run_worker

    try:
        return run_worker(train_taken_job, name=args.name)
    except QueueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def cmd_evaluate(args) -> int:
    import pandas as pd

    from defect_model.photos.images import ImageError
    from defect_model.serve.inference import Predictor
    from defect_model.train.metrics import metrics_from_predictions
    from defect_model.runs.folders import resolve_run

    run = resolve_run(args.run)
    cfg = run.settings()
    predictor = Predictor.from_checkpoint(run.checkpoint)
    split = pd.read_csv(run.split)
    val = split[split["split"] == "val"]
    rows = []
    for rel, label in zip(val["path"], val["label"]):
        try:
            probs = predictor.predict(Path(cfg.data_dir) / rel, names=None)
        except ImageError as exc:
            print(f"skipped: {exc}", file=sys.stderr)
            continue
        rows.append({"path": rel, "true_label": label, "pred_label": predictor.classes[int(probs.argmax())]})
    metrics = metrics_from_predictions(pd.DataFrame(rows), predictor.classes)
    print(f"run {run.run_id}: {len(rows)} validation photos")
    print(f"accuracy {metrics['accuracy']:.4f}  micro-F1 {metrics['micro_f1']:.4f}  macro-F1 {metrics['macro_f1']:.4f}")
    print(f"{'class':<20}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>9}")
    for name, m in metrics["per_class"].items():
        print(f"{name:<20}{m['precision']:>10.4f}{m['recall']:>10.4f}{m['f1']:>10.4f}{m['support']:>9d}")
    return 0


def cmd_predict(args) -> int:
    from defect_model.serve.explain import explain, overlay
    from defect_model.photos.images import ImageError
    from defect_model.serve.inference import Predictor
    from defect_model.runs.folders import resolve_run

    run = resolve_run(args.run)
    predictor = Predictor.from_checkpoint(run.checkpoint)
    cam_dir = Path(args.cam_dir) if args.cam_dir else None
    if cam_dir:
        cam_dir.mkdir(parents=True, exist_ok=True)
    rows, failures = [], 0
    for image in args.images:
        path = Path(image)
        row = {"file": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""}
        try:
            result = explain(predictor, path) if cam_dir else None
            probs = result.probabilities if result else predictor.predict(path)
        except ImageError as exc:
            failures += 1
            row.update(predicted="", error=str(exc))
            print(f"error  {exc}", file=sys.stderr)
            rows.append(row)
            continue
        label = predictor.classes[int(probs.argmax())]
        row.update(predicted=label, confidence=float(probs.max()), error="")
        row.update({f"prob_{c}": float(p) for c, p in zip(predictor.classes, probs)})
        if result:
            overlay(result.photo, result.heatmap).save(cam_dir / f"{path.stem}_cam.png")
        print(f"{label:<20} {probs.max():.3f}  {path}")
        rows.append(row)
    if args.csv:
        columns = ["file", "sha256", "predicted", "confidence"] + [f"prob_{c}" for c in predictor.classes] + ["error"]
        with open(args.csv, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
    return 1 if failures == len(rows) else 0


def cmd_demo_data(args) -> int:
    from defect_model.photos.synthetic import generate

    out = generate(args.out, per_class=args.per_class, size=args.size, seed=args.seed)
    print(f"wrote the demo dataset to {out}")
    return 0


def cmd_watch(args) -> int:
    import signal
    import threading

    from defect_model.workflows.hotfolder import HOT_FOLDER, WatchOptions, load_active_model, watch
    from defect_model.workflows.hotfolder_intake import WatchError, make_folders
    from defect_model.workflows.inspection import inference_threads
    from defect_model.runs.store import InspectionStore

    stop = threading.Event()

    def request_stop(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt  # asked twice: leave now; the next start finishes the batch
        print("stopping after the current batch (Ctrl-C again to leave at once)", file=sys.stderr, flush=True)
        stop.set()

    given = {"settle_s": args.settle, "poll_s": args.poll, "batch_size": args.batch_size, "threshold": args.threshold}
    options = WatchOptions(threads=args.threads or inference_threads(),
                           **{name: value for name, value in given.items() if value is not None})
    try:
        folders = make_folders(args.in_dir, args.done, args.rejects, args.errors, args.results)
        model = load_active_model(threads=options.threads)
        rule = (f"threshold {options.threshold:g}" if options.threshold is not None else
                f"operating point: pass from {model.point.describe_pass(3)}, reject from "
                f"{model.point.defect_threshold:.2f}" if model.point else "threshold 0.7")
        print(f"watching {folders.incoming} with model {model.run_id} ({rule}); results in "
              f"{folders.results}", file=sys.stderr, flush=True)
        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGTERM, request_stop)
        state = watch(folders, InspectionStore(source=HOT_FOLDER), options, stop, model=model,
                      on_photo=lambda row: print(f"{row['verdict']:<12} {row.get('predicted') or '':<12} "
                                                 f"{row['file_name']}", flush=True))
    except WatchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("left at once; photos in the folder's .hotfolder/processing are finished at the next start",
              file=sys.stderr)
        return 130
    print(f"stopped: {state.count} photo(s) inspected", file=sys.stderr)
    return 0


def cmd_accounts(args) -> int:
    import getpass

    from defect_model.access.accounts import open_accounts, terminal_actor

    accounts = open_accounts()
    if args.accounts_command == "first-link":
        token = accounts.first_admin_link()
        if token:
            print(f"\n  First start: sign in as admin with this one-time link (valid 24 hours):\n\n"
                  f"    {args.url.rstrip('/')}/?token={token}\n\n"
                  "  Then set a password and create accounts on the Models page (Accounts).\n", flush=True)
        return 0
    if args.accounts_command == "list":
        for row in accounts.list():
            print(f"{row['name']:<30} {row['role']:<10} {'disabled' if row['disabled'] else ''}")
        return 0
    password = sys.stdin.readline().rstrip("\n") if args.password_stdin else getpass.getpass(f"Password for {args.name}: ")
    accounts.save(terminal_actor(), args.name, args.role, password)
    print(f"account {args.name}: {args.role}")
    return 0


def cmd_db(args) -> int:
    from defect_model.database import location, migrate, shown_url

    if args.db_command == "upgrade":
        for line in migrate.upgrade():
            print(line)
        where = location()
        if isinstance(where, str):  # PostgreSQL: the training queue's tables (procrastinate's own schema) too
            from defect_model.runs.queue import apply_queue_schema

            made = apply_queue_schema(where)
            print(f"{shown_url(where)}: the training queue's tables {'created' if made else 'already there'}")
        return 0
    state = migrate.check()
    print(f"{state.where}: current revision {state.current or 'none'}, newest {state.head}",
          file=sys.stdout if state.ok else sys.stderr)
    if not state.ok:
        print(f"error: {state.message}", file=sys.stderr)
    return 0 if state.ok else 1


def cmd_audit(args) -> int:
    from defect_model.access.accounts import audit_log, terminal_actor
    from defect_model.access.audit import anchor, verify_all
    from defect_model.database import location, shown_url

    where = location()
    path = shown_url(where)
    if args.audit_command == "show":
        for event in audit_log(where).events(limit=args.limit):
            print(f"{event['id']:>6} {event['time']} {event['actor']:<24} {event['action']:<16} {event['target']} "
                  f"{event['detail'] or ''}")
        return 0
    if args.audit_command == "anchor":
        for line in anchor(where, terminal_actor()):
            print(f"{path}: anchored {line}")
        return 0
    # Read as it is: opening it through the store first would quietly recreate a dropped table.
    result = verify_all(where)
    if not result.findings:
        print(f"{path}: the audit trail and the inspection log verify (no row altered or removed; checked "
              f"{result.mode}).")
        return 0
    for finding in result.findings:
        print(f"{path}: {finding.text()}", file=sys.stderr)
    print(f"{path}: checked {result.mode}.", file=sys.stderr)
    return 1


def cmd_photos(args) -> int:
    from defect_model.access.accounts import terminal_actor
    from defect_model.runs.retention import clean_up_photos, retention_days
    from defect_model.runs.store import InspectionStore

    store = InspectionStore()
    days = args.older_than if args.older_than is not None else retention_days()
    result = clean_up_photos(store, days, terminal_actor(), dry_run=args.dry_run)
    if args.dry_run:
        for copy in result.removed:
            print(copy)
    print(f"{store.photos_dir}: {result.summary()}.", file=sys.stderr)
    return 1 if result.failed else 0


# Commands that train: under torchrun each of its processes runs them inside the process group.
def cmd_golden(args) -> int:
    """Print each golden photo's verdict under the active model and under RUN; 1 when any verdict changes."""
    from defect_model.runs.folders import resolve_run
    from defect_model.workflows.golden_check import compare_golden

    run = resolve_run(args.run)
    table = compare_golden(run, args.runs_dir)
    if table.empty:
        print("the golden set is empty: nothing to check (mark golden photos on the Review page)")
        return 0
    for row in table.itertuples():
        mark = "CHANGED" if row.changed else "same"
        print(f"{mark:8} {row.photo} (label {row.label}): active {row.active_verdict or '-'} "
              f"({row.active_class or '-'}) -> {run.run_id} {row.candidate_verdict} ({row.candidate_class})")
    changed = int(table["changed"].sum())
    print(f"{changed} of {len(table)} golden verdict(s) change", file=sys.stderr)
    return 1 if changed else 0


TRAINING = {"train": cmd_train, "run": cmd_run, "resume": cmd_resume}
COMMANDS = {"evaluate": cmd_evaluate, "worker": cmd_worker,
            "predict": cmd_predict, "demo-data": cmd_demo_data, "accounts": cmd_accounts, "audit": cmd_audit,
            "db": cmd_db, "watch": cmd_watch, "photos": cmd_photos, "golden": cmd_golden}


def main(argv: list[str] | None = None) -> int:
    from defect_model.train.checkpoint import CheckpointError
    from defect_model.train.data import DatasetError
    from defect_model.common.durable import DiskFull
    from defect_model.runs.jobs import JobError

    from defect_model.train.distributed import RankFailed
    from defect_model.database import DatabaseError

    args = build_parser().parse_args(argv)
    try:
        if args.command in TRAINING:
            return in_process_group(TRAINING[args.command], args)
        return COMMANDS[args.command](args)
    except BrokenPipeError:  # the reader went away (`audit show | head`): what it wanted was written
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # Python's flush at exit must not raise again
        return 0
    except RankFailed:
        return 2  # rank 0 failed at what this process waited for, and reports it
    except DatabaseError as exc:  # unreachable, behind the code's schema (the message says what to run), or refused
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (DatasetError, CheckpointError, FileNotFoundError, ValueError, PermissionError, JobError, DiskFull) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def in_process_group(command, args) -> int:
    """Run a training command in this process's place among torchrun's processes (alone without torchrun)."""
    from defect_model.train import distributed
    from defect_model.train.engine import training_device

    dist = distributed.from_environment()
    distributed.start(dist, training_device(dist))
    try:
        return command(args, dist)
    finally:
        distributed.stop()
