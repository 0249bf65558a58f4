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
