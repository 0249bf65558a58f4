"""The model store (DEFECT_MODEL_STORE): the runs root by default, a shared folder, or an S3-compatible bucket (a real
one: moto's server, started here). Real processes: a hot-folder watcher follows an activation made by another
process, and a served copy changed in the store is refused by a fresh loader."""

from __future__ import annotations

import os
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from defect_model.common.model_store import FolderStore, ModelStoreError, S3Store, file_sha256, model_store
from defect_model.runs.folders import RunDir, get_active, served_checkpoint
from defect_model.workflows.lifecycle import activate

from conftest import ADMIN
from inspect_support import photo_bytes, untrained_run
from polling import drop, wait_for

ROOT = Path(__file__).resolve().parents[1]
PROCESS_DEADLINE_S = 180  # a watcher process imports torch and loads the model first: slow on a busy 2-core box
SWITCH_LIMIT_S = 10.0  # the promise: an activation is served by every watcher within this


def make_run(root: Path, name: str, seed: int) -> RunDir:
    return untrained_run(root, name, seed)


REASON = "model store test; an untrained model"
ACTIVATE = ("import sys, pathlib; from defect_model.access.accounts import Actor;"
            " from defect_model.runs.folders import RunDir; from defect_model.workflows.lifecycle import activate;"
            f" activate(RunDir(pathlib.Path(sys.argv[1])), Actor('adm', 'admin'), override_reason={REASON!r})")


@pytest.fixture()
def s3(monkeypatch):
    """A real S3-compatible server (moto's, in a thread of this process) with an empty bucket."""
    server_module = pytest.importorskip("moto.server",
                                        reason="moto[server] is not installed (requirements.txt pins it)")
    import boto3

    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1", "DEFECT_S3_ENDPOINT_URL": endpoint}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="plant-models")
    yield server
    server.stop()


@pytest.fixture(params=["folder", "s3"])
def plant(request, tmp_path, monkeypatch):
    """A plant's environment: runs, database and data folder of this machine, the store where the test says."""
    server = None
    if request.param == "s3":
        server = request.getfixturevalue("s3")
        where = "s3://plant-models/line-models"
    else:
        where = str(tmp_path / "shared-store")
    env = {"DEFECT_MODEL_STORE": where, "DEFECT_RUNS_DIR": str(tmp_path / "runs"),
           "DEFECT_DB": str(tmp_path / "db" / "inspections.sqlite"), "DEFECT_DATA_DIR": str(tmp_path / "data"),
           "DEFECT_INFERENCE_THREADS": "1"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return {"kind": request.param, "where": where, "runs": tmp_path / "runs", "db": Path(env["DEFECT_DB"]),
            "incoming": tmp_path / "in", "done": tmp_path / "done", "tmp": tmp_path, "s3_server": server}


def logged(db: Path) -> list[dict]:
    if not db.exists():
        return []
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        try:
            return [dict(row) for row in conn.execute("SELECT * FROM inspections ORDER BY id")]
        except sqlite3.OperationalError:  # the table is being created by the watcher
            return []


def watcher(plant, env: dict | None = None) -> subprocess.Popen:
    plant["incoming"].mkdir(exist_ok=True)
    return subprocess.Popen([sys.executable, "-m", "defect_model", "watch", str(plant["incoming"]), "--done",
                             str(plant["done"]), "--settle", "0.1", "--poll", "0.1"],
                            cwd=ROOT, env=dict(os.environ, **(env or {})), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def flipped(data: bytes) -> bytes:
    """The same bytes with one bit of the last one changed (as a bad disk or a hand would)."""
    return data[:-1] + bytes([data[-1] ^ 1])


# -- where the store is ---------------------------------------------------------------------------------------------
def test_without_a_store_the_record_and_the_served_copies_stay_in_the_runs_root(tmp_path, monkeypatch):
    monkeypatch.delenv("DEFECT_MODEL_STORE", raising=False)
    monkeypatch.setenv("DEFECT_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("DEFECT_DB", str(tmp_path / "inspections.sqlite"))
    run = make_run(tmp_path / "runs", "20260101-000000-a", seed=0)
    record = activate(run, ADMIN, override_reason=REASON)
    digest = file_sha256(run.checkpoint)
    served = tmp_path / "runs" / "served" / f"{digest}.pt"
    assert isinstance(model_store(), FolderStore) and model_store().root == tmp_path / "runs"
    assert record["served"] == str(served) and record["sha256"] == digest
    assert get_active() == record and (tmp_path / "runs" / "active.json").is_file()
    assert stat.S_IMODE(served.stat().st_mode) == 0o444 and served_checkpoint(record) == served
    assert stat.S_IMODE((tmp_path / "runs" / "active.json").stat().st_mode) == 0o644  # readable by other users
    served.unlink()  # gone from the store: the run's own checkpoint is not served in its place under this sha256
    assert run.checkpoint.is_file() and served_checkpoint(record) is None


def test_a_store_that_is_neither_a_folder_nor_s3_is_refused_with_what_to_give(monkeypatch):
    monkeypatch.setenv("DEFECT_MODEL_STORE", "ftp://files/models")
    with pytest.raises(ModelStoreError, match="DEFECT_MODEL_STORE=ftp://files/models: not a folder"):
        model_store()


def test_activation_writes_to_the_store_not_the_runs_root(plant):
    run = make_run(plant["runs"], "20260101-000000-a", seed=0)
    record = activate(run, ADMIN, override_reason=REASON)
    digest = file_sha256(run.checkpoint)
    assert not (plant["runs"] / "active.json").exists() and not (plant["runs"] / "served").exists()
    assert record["served"] == f"{plant['where']}/served/{digest}.pt"
    store = model_store()
    assert store.read_active() == record and get_active() == record
    local = served_checkpoint(record)
    assert local.name == f"{digest}.pt" and file_sha256(local) == digest
    if plant["kind"] == "s3":  # fetched into this machine's cache under the data folder
        assert local.is_relative_to(plant["tmp"] / "data" / "model-store-cache")
        fresh = S3Store(plant["where"], plant["tmp"] / "other-cache", os.environ["DEFECT_S3_ENDPOINT_URL"])
        assert fresh.read_active() == record and fresh.version() == store.version() != ""


# -- activation seen everywhere -------------------------------------------------------------------------------------
def test_a_watcher_process_switches_to_a_model_another_process_activates(plant):
    first = make_run(plant["runs"], "20260101-000000-first", seed=0)
    second = make_run(plant["runs"], "20260102-000000-second", seed=1)
    activate(first, ADMIN, override_reason=REASON)
    first_sha, second_sha = file_sha256(first.checkpoint), file_sha256(second.checkpoint)
    process = watcher(plant)
    try:
        drop(plant["incoming"], "before.png", photo_bytes("pit", seed=1, size=64))
        wait_for(lambda: len(logged(plant["db"])) == 1, PROCESS_DEADLINE_S, "the first photo", process)
        # Another process (another server) activates; the watcher is told nothing.
        subprocess.run([sys.executable, "-c", ACTIVATE, str(second.path)], cwd=ROOT, check=True, timeout=300)
        activated = time.time()
        assert model_store().read_active()["sha256"] == second_sha
        dropped, switched = 0, None
        while switched is None and time.time() - activated < SWITCH_LIMIT_S:
            drop(plant["incoming"], f"after_{dropped:03d}.png", photo_bytes("ok", seed=dropped, size=64))
            dropped += 1
            time.sleep(0.25)
            if any(row["model_sha256"] == second_sha for row in logged(plant["db"])):
                switched = time.time() - activated
        assert switched is not None, f"no photo was judged by the newly active model within {SWITCH_LIMIT_S} s"
        wait_for(lambda: len(logged(plant["db"])) == dropped + 1, PROCESS_DEADLINE_S, "every photo logged", process)
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=PROCESS_DEADLINE_S)
    assert process.returncode == 0, stderr
    rows = logged(plant["db"])
    assert rows[0]["file_name"] == "before.png" and rows[0]["model_sha256"] == first_sha
    after = [row["model_sha256"] for row in rows[1:]]
    switch = after.index(second_sha)
    assert set(after[:switch]) <= {first_sha} and set(after[switch:]) == {second_sha}  # switched once, for good
    assert {row["run_id"] for row in rows[1 + switch:]} == {second.run_id}
    print(f"{plant['kind']} store: the new model judged a photo {switched:.1f} s after the activation")


# -- a served copy changed in the store -----------------------------------------------------------------------------
def test_a_served_copy_changed_in_the_store_is_refused_by_a_fresh_loader(plant):
    run = make_run(plant["runs"], "20260101-000000-a", seed=0)
    record = activate(run, ADMIN, override_reason=REASON)
    digest = record["sha256"]
    damaged = flipped(run.checkpoint.read_bytes())
    if plant["kind"] == "s3":
        import boto3

        boto3.client("s3", endpoint_url=os.environ["DEFECT_S3_ENDPOINT_URL"]).put_object(
            Bucket="plant-models", Key=f"line-models/served/{digest}.pt", Body=damaged)
        fresh_env = {"DEFECT_DATA_DIR": str(plant["tmp"] / "another-machine")}  # nothing cached there yet
    else:
        served = Path(plant["where"]) / "served" / f"{digest}.pt"
        served.chmod(0o644)
        served.write_bytes(damaged)
        fresh_env = {}
    process = watcher(plant, fresh_env)
    _, stderr = process.communicate(timeout=PROCESS_DEADLINE_S)
    assert process.returncode == 2, stderr
    assert f"served/{digest}.pt" in stderr and "sha256 it was made active with" in stderr
    assert "make" in stderr.lower() and "active again" in stderr
    assert logged(plant["db"]) == []  # nothing was judged with it
    activate(run, ADMIN, override_reason=REASON)  # what the message says to do: it stores a good copy again
    env = dict(os.environ, **fresh_env)
    check = subprocess.run([sys.executable, "-c", "from defect_model.runs.folders import get_active, served_checkpoint;"
                            " from defect_model.common.model_store import file_sha256;"
                            " print(file_sha256(served_checkpoint(get_active())))"],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert check.stdout.strip() == digest, check.stderr


@pytest.mark.parametrize("plant", ["s3"], indirect=True)  # the local cache belongs to an S3 store
def test_a_damaged_copy_in_the_s3_cache_is_fetched_again_and_a_swapped_one_never_loads(plant):
    from defect_model.serve.inference import Predictor
    from defect_model.train.checkpoint import CheckpointError

    run = make_run(plant["runs"], "20260101-000000-a", seed=0)
    digest = activate(run, ADMIN, override_reason=REASON)["sha256"]
    cached = served_checkpoint(get_active())
    cached.chmod(0o644)
    cached.write_bytes(flipped(cached.read_bytes()))
    fresh = S3Store(plant["where"], cached.parent.parent.parent, os.environ["DEFECT_S3_ENDPOINT_URL"])
    assert fresh.served_path(digest) == cached and file_sha256(cached) == digest  # the store is the truth
    cached.chmod(0o644)
    cached.write_bytes(flipped(cached.read_bytes()))  # changed after it was fetched, before a load
    with pytest.raises(CheckpointError, match="no longer hash to the sha256 it was made active with"):
        Predictor.from_checkpoint(cached, backend="torch")


@pytest.mark.parametrize("plant", ["s3"], indirect=True)
def test_an_unreachable_bucket_is_a_message_once_then_the_last_record_stands(plant, monkeypatch):
    from defect_model.common import model_store as stores

    run = make_run(plant["runs"], "20260101-000000-a", seed=0)
    record = activate(run, ADMIN, override_reason=REASON)
    monkeypatch.setattr(stores, "S3_CHECK_S", 0.0)  # every read asks the bucket
    store = S3Store(plant["where"], plant["tmp"] / "cache", os.environ["DEFECT_S3_ENDPOINT_URL"])
    assert store.read_active() == record
    plant_server = plant["s3_server"]
    plant_server.stop()
    with pytest.raises(ModelStoreError, match="s3://plant-models/line-models/active.json: the model store could not "
                                              "read the active-model record") as refused:
        store.read_active()
    assert "DEFECT_S3_ENDPOINT_URL" in str(refused.value) and "AWS_ACCESS_KEY_ID" in str(refused.value)
    assert store.read_active() == record  # the last record stands for S3_RETRY_S: no page or poll waits on it
    with pytest.raises(ModelStoreError):  # a process that never read it has nothing to stand on
        S3Store(plant["where"], plant["tmp"] / "cache", os.environ["DEFECT_S3_ENDPOINT_URL"]).read_active()
