"""Issue 16: a corpus of broken and hostile photos, zips and folders, each with the outcome a user must get.

Every case runs through the functions the pages use: Inspect hands uploads to inspection.expand_uploads
and inspect_batch; Train's zip upload is ui.train_data.save_uploaded_zip (archives.extract_zip, then the
dataset scan); Train's "Folder on the server" is data.allowed_data_folder, then insights.inspect_dataset.
Outcomes: INSPECTED (a verdict, logged), MESSAGE (an error result for that file, naming it and saying
what to do, the rest of the batch unharmed) or REFUSED (the whole upload or folder, with a clear message).
The corpus is built in memory by tests/hostile_corpus.py; nothing binary is kept in git.
"""

from __future__ import annotations

import re
import time

import pytest
import torch

import hostile_corpus as corpus
from defect_model.photos.archives import ArchiveError
from defect_model.train.data import DatasetError, allowed_data_folder
from defect_model.serve.inference import Predictor, Preprocessing
from defect_model.workflows.insights import inspect_dataset
from defect_model.workflows.inspection import InspectionSettings, inspect_batch
from defect_model.photos.uploads import expand_uploads
from defect_model.train.model import build_model
from defect_model.runs.store import InspectionStore

INSPECTED, MESSAGE, REFUSED = "inspected", "message", "refused"
ADVICE = r"(Upload|upload|Export|Resize|rename|Create|Save|Zip|zip|Split|Photos)"  # every message says what to do

# -- photos and zips on the Inspect page: (upload name, bytes, outcome, words in the result) -----------------------
PHOTOS = [
    ("good.png", lambda: corpus.photo(), INSPECTED, ""),
    ("truncated.jpg", lambda: corpus.truncated(corpus.photo(fmt="JPEG")), MESSAGE, "damaged or truncated"),
    ("notes-renamed.jpg", lambda: b"meeting notes, not a photo\n" * 20, MESSAGE, "not an image file"),
    ("zero-bytes.jpg", lambda: b"", MESSAGE, "the file is empty"),
    ("png-magic-garbage.png", corpus.png_magic_then_garbage, MESSAGE, "damaged|not an image"),
    ("bomb.png", lambda: corpus.png_header_only(30000, 30000), MESSAGE, "too large"),
    ("deep-huge.png", lambda: corpus.sixteen_bit_png(8000, 7999), INSPECTED, "inspected at 4000x3999"),
    ("deep-small.png", corpus.sixteen_bit_small_png, INSPECTED, "16-bit photo: scaled to 8 bits taking 65535"),
    ("twelve-bit.png", corpus.twelve_bit_png_with_sbit, INSPECTED, "taking 4095 as white .the 12 bits its PNG sBIT"),
    ("cmyk.jpg", corpus.cmyk_jpeg, INSPECTED, "CMYK"),
    ("palette-transparent.png", corpus.palette_with_transparency, INSPECTED, "alpha"),
    ("one-pixel.png", corpus.one_pixel_png, INSPECTED, ""),
    ("grayscale.png", corpus.grayscale_png, INSPECTED, ""),
    ("exif-rotated.jpg", corpus.exif_rotated_jpeg, INSPECTED, ""),
    ("png-named.jpg", lambda: corpus.photo(), INSPECTED, "it is a PNG file"),
    ("photo-named.txt", lambda: corpus.photo(), MESSAGE, "rename it to photo-named.png"),
    ("no-extension", lambda: corpus.photo(), MESSAGE, "a name without an extension"),
    (":green-badge[pass] ![](http:evil:t.png).png", lambda: corpus.photo(), INSPECTED, ""),
    ("still.gif", lambda: corpus.photo(fmt="GIF"), INSPECTED, ""),  # issue 27: PIL decodes GIFs; no longer refused
    ("animated.gif", corpus.animated_gif, INSPECTED, "3 frames .an animation.; its first frame was inspected"),
]
ZIPS = [
    ("photos.zip", lambda: corpus.class_zip(), INSPECTED, ""),
    ("windows.zip", lambda: corpus.class_zip("set", separator="\\"), INSPECTED, ""),
    ("dos-names.zip", corpus.cp437_names_zip, INSPECTED, ""),
    ("hidden.zip", corpus.hidden_files_zip, INSPECTED, ""),
    ("nested.zip", corpus.nested_zip, INSPECTED, ""),  # and its inner zip is a MESSAGE, below
    ("traversal.zip", lambda: corpus.raw_zip([corpus.Member(b"../evil.png", corpus.photo())]), REFUSED,
     "points outside"),
    ("backslash-traversal.zip", lambda: corpus.raw_zip([corpus.Member(b"..\\evil.png", corpus.photo())]), REFUSED,
     "points outside"),
    ("symlink.zip", corpus.symlink_member_zip, REFUSED, "symbolic link"),
    ("encrypted.zip", lambda: corpus.raw_zip([corpus.Member(b"a.png", corpus.photo(), flags=corpus.ENCRYPTED)]),
     REFUSED, "encrypted.*without a password"),
    ("bad-crc.zip", lambda: corpus.raw_zip([corpus.Member(b"a.png", corpus.photo(), crc=7)]), REFUSED,
     r"damaged \(bad CRC"),
    ("deflate64.zip", lambda: corpus.raw_zip([corpus.Member(b"a.png", corpus.photo(), method=corpus.DEFLATE64)]),
     REFUSED, "Deflate64"),
    ("not-utf8.zip", lambda: corpus.raw_zip([corpus.Member(b"\xff\xfe.png", corpus.photo(),
                                                           flags=corpus.UTF8_NAMES)]), REFUSED, "not valid UTF-8"),
    ("small-members-bomb.zip", lambda: corpus.small_members_bomb(300), REFUSED, "zip bomb"),
    ("many-members.zip", lambda: corpus.many_members_zip(300_000), REFUSED, "300000 files and folders"),
    ("empty.zip", lambda: corpus.raw_zip([]), REFUSED, "holds no files"),
    ("not-a-zip.zip", lambda: b"PK\x03\x04 but nothing else", REFUSED, "not a valid .zip"),
]
CLASSES = ["ok", "pit", "crack"]


@pytest.fixture(scope="module")
def batch(tmp_path_factory) -> dict:
    """Every photo and zip uploaded at once, as one Inspect batch with a tiny model: name -> results."""
    torch.manual_seed(0)
    predictor = Predictor(build_model("resnet18", len(CLASSES), 0.0), CLASSES,
                          Preprocessing(64, (0.5,) * 3, (0.25,) * 3), {"run_id": "untrained"})
    store = InspectionStore(tmp_path_factory.mktemp("hostile") / "inspections.sqlite")
    files = [(name, make()) for name, make, _, _ in PHOTOS + ZIPS]
    started = time.perf_counter()
    uploads = expand_uploads(files)
    expand_s = time.perf_counter() - started
    settings = InspectionSettings(run_id="untrained", good_classes=["ok"], threshold=0.0, inspector="ana")
    results = inspect_batch(predictor, uploads, settings, store)
    logged = set(store.inspections()["file_name"])
    return {"results": results, "logged": logged, "expand_s": expand_s}


def _of(batch: dict, name: str) -> list:
    """The results of one upload: itself, or the members of a zip (named zip/member)."""
    return [r for r in batch["results"] if r.name == name or r.name.startswith(name + "/")]


@pytest.mark.parametrize("name, make, outcome, words", PHOTOS + ZIPS, ids=[c[0] for c in PHOTOS + ZIPS])
def test_inspect_outcome(batch, name, make, outcome, words):
    results = _of(batch, name)
    assert results, f"{name}: no result at all"
    assert all(r.name in batch["logged"] for r in results), "every upload is logged, failed ones too"
    if outcome == INSPECTED:
        inspected = [r for r in results if r.ok]
        assert inspected and all(r.verdict in ("pass", "reject", "needs_person") for r in inspected)
        assert all(r.ok for r in results if not r.name.endswith(".zip")), [r.error for r in results]
        if words:
            assert any(re.search(words, r.message) for r in inspected), [r.message for r in inspected]
        return
    (result,) = results  # a message or a refusal is one result for the upload, never a lost file
    assert result.verdict == "error" and result.error.startswith(f"{name}: "), result.error
    assert re.search(words, result.error) and re.search(ADVICE, result.error), result.error


def test_the_batch_around_the_bad_files_is_inspected(batch):
    good = [r for r in batch["results"] if r.ok]
    assert len(good) >= 20  # photos, and the members of the good zips, between all the bad ones


def test_zip_members_are_named_by_their_folders(batch):
    names = {r.name for r in batch["results"]}
    assert "windows.zip/set/ok/0.png" in names  # backslashes read as folders
    assert "dos-names.zip/übersicht-ä.png" in names
    assert not any("__MACOSX" in n or "DS_Store" in n for n in names)
    (inner,) = [r for r in batch["results"] if r.name == "nested.zip/inner.zip"]
    assert "a zip inside a zip is not opened" in inner.error and "Upload the inner zip" in inner.error


def test_refusals_come_before_the_members_are_read(batch):
    assert batch["expand_s"] < 5  # 300,000 members and a 300 MB bomb among them


def test_an_exif_rotated_photo_is_inspected_upright(batch):
    (rotated,) = _of(batch, "exif-rotated.jpg")
    assert rotated.photo_size == (20, 40)


# -- zips on the Train page: (file name, bytes, outcome, words) ------------------------------------------------
TRAIN_ZIPS = [
    ("dataset.zip", lambda: corpus.class_zip("set"), INSPECTED, ""),
    ("windows.zip", lambda: corpus.class_zip("set", separator="\\"), INSPECTED, ""),
    ("one-class.zip", lambda: corpus.raw_zip([corpus.Member(b"ok/%d.png" % i, corpus.photo("ok", i))
                                              for i in range(3)]), REFUSED, r"found 1 class folder\(s\)"),
    ("empty-class.zip", lambda: corpus.raw_zip([corpus.Member(b"ok/a.png", corpus.photo()),
                                                corpus.Member(b"ok/b.png", corpus.photo("ok", 1)),
                                                corpus.Member(b"pit/")]), REFUSED, "without photos: pit"),
    ("traversal.zip", lambda: corpus.raw_zip([corpus.Member(b"ok/../../evil.png", corpus.photo())]), REFUSED,
     "points outside"),
    ("bad-crc.zip", lambda: corpus.raw_zip([corpus.Member(b"ok/a.png", corpus.photo()),
                                            corpus.Member(b"pit/b.png", corpus.photo(), crc=7)]), REFUSED,
     "damaged"),
    ("bomb.zip", lambda: corpus.small_members_bomb(300), REFUSED, "zip bomb"),
    ("many.zip", lambda: corpus.many_members_zip(300_000), REFUSED, "more than the limit"),
]


@pytest.fixture()
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("DEFECT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("DEFECT_DATA_ROOTS", raising=False)
    return tmp_path / "data"


@pytest.mark.parametrize("file_name, make, outcome, words", TRAIN_ZIPS, ids=[c[0] for c in TRAIN_ZIPS])
def test_train_zip_outcome(data_dir, file_name, make, outcome, words):
    from ui.train_data import save_uploaded_zip

    if outcome == INSPECTED:
        target = save_uploaded_zip(make(), file_name, "upload")
        assert sorted(p.name for p in target.iterdir()) == ["ok", "pit"]
        assert inspect_dataset(target).counts == {"ok": 3, "pit": 3}
    else:
        with pytest.raises((ArchiveError, DatasetError)) as refused:
            save_uploaded_zip(make(), file_name, "upload")
        assert str(refused.value).startswith(f"{file_name}: ") and re.search(words, str(refused.value))
    left = sorted(p.name for p in (data_dir / "datasets").iterdir())
    assert left == (["upload"] if outcome == INSPECTED else []), "a refused upload leaves nothing behind"


# -- folders on the server: (case, builder(root, outside) -> folder typed, outcome, words) ---------------------------
def _with_fifo(root, outside):
    folder = corpus.class_folder(root / "set")
    corpus.fifo(folder / "ok" / "x.jpg")
    return folder


def _with_link_out(root, outside):
    folder = corpus.class_folder(root / "set")
    corpus.class_folder(outside / "private", classes=("crack",))
    (folder / "crack").symlink_to(outside / "private" / "crack")
    (folder / "ok" / "peek.png").symlink_to(outside / "private" / "crack" / "0.png")
    return folder


def _linked_folder(root, outside):
    corpus.class_folder(outside / "private")
    (root / "shortcut").symlink_to(outside / "private")
    return root / "shortcut"


def _hidden(root, outside):
    folder = corpus.class_folder(root / "set")
    (folder / ".cache").mkdir()
    (folder / ".cache" / "a.png").write_bytes(corpus.photo())
    (folder / "ok" / ".thumbs").mkdir()
    (folder / "ok" / ".thumbs" / "b.png").write_bytes(corpus.photo())
    (folder / "ok" / ".hidden.png").write_bytes(corpus.photo())
    return folder


def _empty_class(root, outside):
    folder = corpus.class_folder(root / "set")
    (folder / "rust").mkdir()
    return folder


def _mixed(root, outside):
    folder = corpus.class_folder(root / "set")
    (folder / "ok" / "notes.txt").write_text("not a photo")
    (folder / "pit" / "cut.png").write_bytes(corpus.truncated(corpus.photo()))
    return folder


def _one_class(root, outside):
    return corpus.class_folder(root / "set", classes=("ok",))


FOLDERS = [
    ("fifo named like a photo", _with_fifo, INSPECTED, ("ok/x.jpg", "not a regular file (a FIFO); not read")),
    ("links out of the dataset", _with_link_out, INSPECTED, ("crack/", "symbolic link, not followed")),
    ("hidden files and folders", _hidden, INSPECTED, None),
    ("empty class folder", _empty_class, INSPECTED, ("rust/", "class folder without photos; left out of the classes")),
    ("non-photo and damaged photo", _mixed, INSPECTED, ("ok/notes.txt", "not a photo")),
    ("outside the data roots", lambda root, outside: corpus.class_folder(outside / "private"), REFUSED,
     "datasets are read only from inside"),
    ("a link in a root that leads out", _linked_folder, REFUSED, "links that lead out are not followed"),
    ("dot-dot out of the root", lambda root, outside: (corpus.class_folder(outside / "private"),
                                                       root / ".." / "outside" / "private")[1], REFUSED,
     "datasets are read only from inside"),
    ("one class", _one_class, REFUSED, r"found 1 class folder\(s\)"),
    ("missing folder", lambda root, outside: root / "nowhere", REFUSED, "does not exist"),
]


@pytest.mark.parametrize("case, build, outcome, expected", FOLDERS, ids=[c[0] for c in FOLDERS])
def test_server_folder_outcome(tmp_path, case, build, outcome, expected):
    root, outside = tmp_path / "data", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    typed = build(root, outside)
    if outcome == REFUSED:
        with pytest.raises(DatasetError) as refused:
            inspect_dataset(allowed_data_folder(typed, [root]))
        assert re.search(expected, str(refused.value)) and re.search(r"Copy|Check|Put|Add", str(refused.value))
        return
    insights = inspect_dataset(allowed_data_folder(typed, [root]))
    assert insights.counts == {"ok": 3, "pit": 3} or case == "non-photo and damaged photo"
    if expected:
        path, reason = expected
        assert any(p == path and r.startswith(reason) for p, r in insights.skipped), insights.skipped
    reported = {path for path, _ in insights.skipped + insights.unreadable}
    assert not any(part.startswith(".") for path in reported for part in path.split("/"))
    if case == "non-photo and damaged photo":
        assert dict(insights.unreadable)["pit/cut.png"].startswith("the image data is damaged")


def test_the_corpus_is_big_enough():
    assert len(PHOTOS) + len(ZIPS) + len(TRAIN_ZIPS) + len(FOLDERS) >= 30


# -- issue 27: tampering with the audit trail and the inspection log (an operator with access to the database) ---------
def _chained_db(folder):
    """A database with 8 inspections and 6 audit events, written the way the tool writes them."""
    from defect_model.access.accounts import Actor
    from defect_model.access.audit import AuditLog

    path = folder / "inspections.sqlite"
    store = InspectionStore(path)
    for i in range(8):
        store.log_inspection(file_name=f"p{i}.png", sha256=f"{i:064x}", photo_path="", verdict="pass", inspector="ana",
                             run_id="run-1", predicted="ok", confidence=0.9, model_sha256="ab" * 32)
    log = AuditLog(path)
    for i in range(6):
        log.record(Actor("adm", "admin"), "activate", f"run-{i}", sha256=f"{i}" * 64)
    return path


def _sql(path, *statements):
    import sqlite3

    with sqlite3.connect(path) as db:
        for statement in statements:
            db.execute(statement)


def _recompute_chain(path, table):
    """What a forger without the key does after editing rows: give every row a fresh, valid hash and link."""
    import sqlite3

    from defect_model.access.audit import GENESIS, _digest

    with sqlite3.connect(path) as db:
        db.row_factory = sqlite3.Row
        prev = GENESIS
        for row in [dict(r) for r in db.execute(f"SELECT * FROM {table} ORDER BY id")]:
            row["prev_hash"] = prev
            row["row_hash"] = _digest(row)
            db.execute(f"UPDATE {table} SET prev_hash = ?, row_hash = ? WHERE id = ?",
                       (row["prev_hash"], row["row_hash"], row["id"]))
            prev = row["row_hash"]


def _rewrite_head_log(path):
    """...and writes a fresh head log for the edited database (without the key, which the forger lacks)."""
    from defect_model.access import headlog
    from defect_model.database import open_as_is

    headlog.head_log_path(path).unlink()
    with headlog.locked(path) as heads, open_as_is(path).read() as conn:
        heads.append(headlog.start_entries(conn))


TAMPER = [  # (case, statements, table named, words)
    ("newest 3 audit rows deleted", ["DELETE FROM audit WHERE id > 3"], "audit", "rows removed from the end"),
    ("newest 5 inspections deleted", ["DELETE FROM inspections WHERE id > 3"], "inspections",
     "rows removed from the end"),
    ("audit emptied", ["DELETE FROM audit"], "audit", "the table is empty"),
    ("audit dropped", ["DROP TABLE audit"], "audit", "missing .dropped."),
    ("inspections dropped", ["DROP TABLE inspections"], "inspections", "missing .dropped."),
    ("hashes blanked, then rows edited", ["UPDATE inspections SET row_hash = '' WHERE id >= 6",
                                          "UPDATE inspections SET verdict = 'reject' WHERE id = 7"],
     "inspections", "hash is blank"),
    ("every hash blanked", ["UPDATE audit SET row_hash = '', prev_hash = ''"], "audit", "hash is blank"),
    ("a row appended with a valid hash", [], "audit", "not in the head log"),
]


@pytest.mark.parametrize("case, statements, table, words", TAMPER, ids=[c[0] for c in TAMPER])
def test_audit_verify_names_each_tampering(tmp_path, monkeypatch, capsys, case, statements, table, words):
    from defect_model.access.audit import insert_chained, verify
    from defect_model.cli import main as cli

    path = _chained_db(tmp_path)
    monkeypatch.setenv("DEFECT_DB", str(path))
    assert verify(path) == []
    _sql(path, *statements)
    if case == "a row appended with a valid hash":
        from defect_model.database import open_as_is

        with open_as_is(path).write() as conn:  # straight into the database: no head-log line
            insert_chained(conn, "audit", {"time": "2026-01-01T00:00:00+00:00", "actor": "adm", "role": "admin",
                                         "action": "activate", "target": "forged", "detail": "{}"})
    findings = verify(path)
    assert [f.table for f in findings] == [table] and re.search(words, findings[0].problem), findings
    assert cli(["audit", "verify"]) == 1
    assert f": {table}" in capsys.readouterr().err


def test_a_recomputed_chain_fails_against_the_head_log(tmp_path):
    from defect_model.access.audit import verify

    path = _chained_db(tmp_path)
    _sql(path, "UPDATE inspections SET verdict = 'reject' WHERE id = 2")
    _recompute_chain(path, "inspections")
    (finding,) = verify(path)
    assert (finding.table, finding.row_id) == ("inspections", 8) and "rewritten" in finding.problem


def test_a_recomputed_chain_and_head_log_fail_only_with_the_key(tmp_path, monkeypatch):
    """With DEFECT_AUDIT_KEY the heads are signed: a forger who rewrites both files cannot sign them. Without a key
    such a rewrite verifies (the README says so)."""
    from defect_model.access.audit import verify

    monkeypatch.setenv("DEFECT_AUDIT_KEY", "plant secret kept off the database server")
    path = _chained_db(tmp_path)
    assert verify(path) == []
    monkeypatch.delenv("DEFECT_AUDIT_KEY")  # the forger's shell
    _sql(path, "DELETE FROM audit WHERE id > 4", "UPDATE inspections SET verdict = 'reject' WHERE id = 2")
    _recompute_chain(path, "inspections")
    _rewrite_head_log(path)
    assert verify(path) == []  # unkeyed: indistinguishable from an honest database
    monkeypatch.setenv("DEFECT_AUDIT_KEY", "plant secret kept off the database server")
    (finding,) = verify(path)
    assert finding.table == "head log" and "MAC" in finding.problem
    monkeypatch.setenv("DEFECT_AUDIT_KEY", "a guessed key")
    assert [f.table for f in verify(path)] == ["head log"]


@pytest.mark.parametrize("damage", ["deleted", "middle line removed", "newest line removed", "line edited"])
def test_damage_to_the_head_log_itself_is_named(tmp_path, damage):
    from defect_model.access import headlog
    from defect_model.access.audit import verify

    path = _chained_db(tmp_path)
    log = headlog.head_log_path(path)
    lines = log.read_bytes().splitlines(keepends=True)
    if damage == "deleted":
        log.unlink()
    elif damage == "middle line removed":
        log.write_bytes(b"".join(lines[:5] + lines[6:]))
    elif damage == "newest line removed":  # the log now anchors an older head than the table has
        log.write_bytes(b"".join(lines[:-1]))
    else:
        log.write_bytes(b"".join(lines[:4] + [lines[4].replace(b'"time": "', b'"time": "1')] + lines[5:]))
    findings = verify(path)
    expected = {"deleted": "head log", "middle line removed": "head log", "newest line removed": "audit",
                "line edited": "head log"}[damage]
    assert [f.table for f in findings] == [expected], findings


def test_an_older_database_is_anchored_once_by_audit_anchor(tmp_path, monkeypatch, capsys):
    """A database from before the head log is named as unanchored until `audit anchor`, which is recorded; anchoring
    over a removed row is refused."""
    from defect_model.access import headlog
    from defect_model.access.audit import verify
    from defect_model.cli import main as cli

    path = _chained_db(tmp_path)
    monkeypatch.setenv("DEFECT_DB", str(path))
    headlog.head_log_path(path).unlink()  # as a database written before the head log existed
    InspectionStore(path).log_inspection(file_name="later.png", sha256="0" * 64, photo_path="", verdict="pass")
    assert not headlog.head_log_path(path).is_file() or not headlog.head_log_path(path).read_bytes()
    assert [f.table for f in verify(path)] == ["head log"]
    assert cli(["audit", "anchor"]) == 0 and verify(path) == []
    events = __import__("defect_model.access.audit", fromlist=["AuditLog"]).AuditLog(path).events("head_log_anchored")
    assert len(events) == 1 and events[0]["detail"]["kind"] == "start"
    _sql(path, "DELETE FROM inspections WHERE id = 3")
    assert cli(["audit", "anchor"]) == 2
    assert "Not anchored" in capsys.readouterr().err


# -- issue 27: the served ONNX graph swapped beside its read-only checkpoint -----------------------------------------
def _served_checkpoint(folder):
    """A small model made active's way: pinned as served/<sha256>.pt, read-only."""
    from defect_model.runs.folders import pin_checkpoint
    from defect_model.train.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = build_model("resnet18", len(CLASSES), 0.0)
    meta = {"classes": CLASSES, "config": {"backbone": "resnet18", "dropout": 0.0},
            "preprocessing": {"image_size": 64, "mean": [0.5] * 3, "std": [0.25] * 3}}
    save_checkpoint(folder / "checkpoint.pt", model.state_dict(), meta)
    return pin_checkpoint(folder / "checkpoint.pt", folder / "served")


def _bias_to(graph, class_index: int) -> None:
    """What the tester did: one bias in the graph's last layer, so that every photo comes out that class at 100 %."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(graph))
    (bias,) = [t for t in model.graph.initializer if t.dims == [len(CLASSES)]]
    values = numpy_helper.to_array(bias).copy()
    values[class_index] += 1000.0
    bias.CopyFrom(numpy_helper.from_array(values.astype(np.float32), bias.name))
    onnx.save(model, str(graph))


@pytest.mark.parametrize("also_rewrites_the_record_beside_it", [False, True])
def test_a_swapped_serving_graph_is_rebuilt_audited_and_logged_by_its_hash(tmp_path, also_rewrites_the_record_beside_it):
    import json

    from defect_model.access.audit import AuditLog, verify
    from defect_model.serve.serving import GraphLedger, serving_paths

    served, checkpoint_sha = _served_checkpoint(tmp_path)
    db = tmp_path / "inspections.sqlite"
    ledger = GraphLedger(AuditLog(db))
    first = Predictor.from_checkpoint(served, ledger=ledger)
    built_sha = first.graph_sha256
    assert first.backend == "onnxruntime" and len(built_sha) == 64 and first.checkpoint_sha256 == checkpoint_sha
    graph, info = serving_paths(served)
    _bias_to(graph, CLASSES.index("ok"))
    if also_rewrites_the_record_beside_it:
        import hashlib

        record = json.loads(info.read_text())
        info.write_text(json.dumps(dict(record, graph_sha256=hashlib.sha256(graph.read_bytes()).hexdigest())))
    photo = corpus.photo("crack", 1)
    again = Predictor.from_checkpoint(served, ledger=ledger)
    plain = Predictor.from_checkpoint(served, backend="torch")
    assert again.backend == "onnxruntime"
    np_probs, torch_probs = again.predict([photo_image(photo)]), plain.predict([photo_image(photo)])
    assert abs(np_probs - torch_probs).max() < 1e-4, "the swapped graph must not judge"
    assert again.graph_sha256 == built_sha  # the rebuilt graph is the one that was built from the checkpoint
    (replaced,) = AuditLog(db).events("serving_graph_replaced")
    assert replaced["target"] == checkpoint_sha and "changed" in replaced["detail"]["problem"]
    store = InspectionStore(db)
    (result,) = inspect_batch(again, expand_uploads([("crack.png", photo)]),
                              InspectionSettings(run_id="r", good_classes=["ok"], model_sha256="from the record"),
                              store)
    row = store.inspections().iloc[0]
    assert (row["model_sha256"], row["graph_sha256"]) == (checkpoint_sha, built_sha)
    assert verify(db) == []


def photo_image(data: bytes):
    import io

    from PIL import Image

    return Image.open(io.BytesIO(data)).convert("RGB")


def test_a_served_checkpoint_changed_after_activation_is_refused(tmp_path):
    from defect_model.train.checkpoint import CheckpointError

    served, _ = _served_checkpoint(tmp_path)
    served.chmod(0o644)
    data = bytearray(served.read_bytes())
    data[-100] ^= 1
    served.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="no longer hash to the sha256 it was made active with"):
        Predictor.from_checkpoint(served)


def test_emptying_the_tables_and_deleting_the_head_log_does_not_pass_for_a_new_database(tmp_path):
    """The head log starts by itself only on a database that never held a chained row; SQLite's AUTOINCREMENT
    counter remembers the emptied tables."""
    from defect_model.access import headlog
    from defect_model.access.audit import verify

    path = _chained_db(tmp_path)
    _sql(path, "DELETE FROM audit", "DELETE FROM inspections")
    headlog.head_log_path(path).unlink()
    InspectionStore(path).log_inspection(file_name="fresh.png", sha256="0" * 64, photo_path="", verdict="pass")
    assert [f.table for f in verify(path)] == ["head log"]
    assert "missing or empty" in verify(path)[0].problem


def test_a_graph_built_before_the_ledger_is_rebuilt_once_and_recorded_without_blame(tmp_path):
    from defect_model.access.audit import AuditLog
    from defect_model.serve.serving import GraphLedger

    served, checkpoint_sha = _served_checkpoint(tmp_path)
    before = Predictor.from_checkpoint(served)  # an Inspect from before: its graph's hash is only beside it
    log = AuditLog(tmp_path / "inspections.sqlite")
    after = Predictor.from_checkpoint(served, ledger=GraphLedger(log))
    again = Predictor.from_checkpoint(served, ledger=GraphLedger(log))
    assert log.events("serving_graph_replaced") == []
    (built,) = log.events("serving_graph")
    assert built["target"] == checkpoint_sha and built["detail"]["graph_sha256"] == after.graph_sha256
    assert again.graph_sha256 == after.graph_sha256 and before.graph_sha256
