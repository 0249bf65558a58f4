import csv
import shutil

import pytest

from defect_model.train.data import (DatasetError, read_split_csv, scan_image_folder, stratified_split,
                               write_split_csv)
from defect_model.train.engine import fit
from defect_model.runs.folders import RunDir
from conftest import tiny_config


def test_scan_lists_classes_and_reports_non_photos(dataset_copy):
    (dataset_copy / "ok" / "notes.txt").write_text("not a photo")
    scan = scan_image_folder(dataset_copy)
    assert scan.classes == ["crack", "ok", "pit", "scratch", "stain"]
    assert scan.counts() == {name: 10 for name in scan.classes}
    assert [path for path, _ in scan.skipped] == ["ok/notes.txt"]


def test_one_class_is_refused_with_its_name(dataset_copy):
    for name in ["crack", "pit", "scratch", "stain"]:
        shutil.rmtree(dataset_copy / name)
    with pytest.raises(DatasetError, match=r"1 class folder\(s\) with photos \(ok\).*at least 2"):
        scan_image_folder(dataset_copy)


def test_a_class_with_one_photo_is_refused_by_name(dataset_copy):
    for path in sorted((dataset_copy / "pit").iterdir())[1:]:
        path.unlink()
    with pytest.raises(DatasetError, match=r"pit \(1\)"):
        scan_image_folder(dataset_copy)


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(DatasetError, match="nowhere: the folder does not exist"):
        scan_image_folder(tmp_path / "nowhere")


def test_stratified_split_is_seeded_and_keeps_every_class(tiny_dataset):
    scan = scan_image_folder(tiny_dataset)
    first = stratified_split(scan.items, 0.2, seed=3)
    assert first == stratified_split(scan.items, 0.2, seed=3)
    assert first != stratified_split(scan.items, 0.2, seed=4)
    for name in scan.classes:
        assert sum(1 for _, label, split in first if label == name and split == "val") == 2
        assert sum(1 for _, label, split in first if label == name and split == "train") == 8


def test_split_csv_round_trip_and_errors(tiny_dataset, tmp_path):
    scan = scan_image_folder(tiny_dataset)
    rows = stratified_split(scan.items, 0.2, seed=0)
    write_split_csv(tmp_path / "split.csv", rows)
    assert read_split_csv(tmp_path / "split.csv", scan) == rows
    with (tmp_path / "bad.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([["path", "label", "split"], [rows[0][0], "rust", "train"]])
    with pytest.raises(DatasetError, match="bad.csv, line 2: label 'rust'"):
        read_split_csv(tmp_path / "bad.csv", scan)


def test_unreadable_photos_are_reported_and_training_goes_on(dataset_copy, tmp_path):
    (dataset_copy / "ok" / "ok_0000.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (dataset_copy / "pit" / "pit_0001.png").write_bytes((dataset_copy / "pit" / "pit_0002.png").read_bytes()[:200])
    (dataset_copy / "crack" / "readme.md").write_text("no")
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    metrics = fit(tiny_config(dataset_copy), run)
    assert metrics["accuracy"] >= 0.0
    report = __import__("json").loads(run.data_report.read_text())
    assert sorted(item["path"] for item in report["unreadable"]) == ["ok/ok_0000.png", "pit/pit_0001.png"]
    assert [item["path"] for item in report["skipped"]] == ["crack/readme.md"]
    assert run.status()["state"] == "done"


# -- issue 16 items 1 and 11: folders on the server, what a scan reads, empty class folders ---------------------
import os  # noqa: E402
import threading  # noqa: E402

from defect_model.train.data import allowed_data_folder, data_roots  # noqa: E402
from hostile_corpus import class_folder, fifo  # noqa: E402


@pytest.fixture()
def roots(tmp_path):
    """Two allowed data roots, each with a dataset, and a private folder beside them."""
    first, second = tmp_path / "data", tmp_path / "line-2"
    class_folder(first / "set")
    class_folder(second / "set")
    class_folder(tmp_path / "private")
    return [first, second]


def test_data_roots_come_from_the_environment_else_the_data_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("DEFECT_DATA_ROOTS", raising=False)
    assert data_roots(tmp_path / "data") == [(tmp_path / "data").resolve()]
    monkeypatch.setenv("DEFECT_DATA_ROOTS", os.pathsep.join([str(tmp_path / "a"), "", str(tmp_path / "b")]))
    assert data_roots(tmp_path / "data") == [(tmp_path / "a").resolve(), (tmp_path / "b").resolve()]


def test_a_folder_inside_a_root_is_allowed_by_its_real_path(roots):
    assert allowed_data_folder(roots[1] / "set", roots) == (roots[1] / "set").resolve()
    assert allowed_data_folder("set", roots) == (roots[0] / "set").resolve()  # relative: from the first root
    assert allowed_data_folder(roots[0] / "set" / ".." / "set", roots) == (roots[0] / "set").resolve()


@pytest.mark.parametrize("where", ["outside", "dot-dot", "link"])
def test_a_folder_outside_the_roots_is_refused_with_the_roots_and_what_to_do(roots, tmp_path, where):
    typed = {"outside": tmp_path / "private", "dot-dot": roots[0] / ".." / "private",
             "link": roots[0] / "shortcut"}[where]
    (roots[0] / "shortcut").symlink_to(tmp_path / "private")
    with pytest.raises(DatasetError) as refused:
        allowed_data_folder(typed, roots)
    message = str(refused.value)
    assert message.startswith(f"{typed}: ") and str(roots[0]) in message and str(roots[1]) in message
    assert "DEFECT_DATA_ROOTS" in message and "Copy it into one of them" in message


def test_a_missing_folder_inside_a_root_is_named(roots):
    with pytest.raises(DatasetError, match="nowhere: the folder does not exist"):
        allowed_data_folder(roots[0] / "nowhere", roots)
    (roots[0] / "file.txt").write_text("x")
    with pytest.raises(DatasetError, match="file.txt: this is a file, not a folder"):
        allowed_data_folder(roots[0] / "file.txt", roots)


def test_a_fifo_named_like_a_photo_is_skipped_not_read(tmp_path):
    """A FIFO named x.jpg hung the Train page's look through the photos."""
    from defect_model.workflows.insights import inspect_dataset

    root = class_folder(tmp_path / "set")
    fifo(root / "ok" / "x.jpg")
    found = {}
    worker = threading.Thread(target=lambda: found.update(insights=inspect_dataset(root)), daemon=True)
    worker.start()
    worker.join(20)
    assert not worker.is_alive(), "reading the dataset hung on a FIFO"
    assert ("ok/x.jpg", "not a regular file (a FIFO); not read") in found["insights"].skipped
    assert found["insights"].counts == {"ok": 3, "pit": 3}


def test_links_are_not_followed_out_of_the_dataset(tmp_path):
    root = class_folder(tmp_path / "set")
    class_folder(tmp_path / "private", classes=("crack",))
    (root / "leak").symlink_to(tmp_path / "private" / "crack")
    (root / "ok" / "peek").symlink_to(tmp_path / "private" / "crack")
    scan = scan_image_folder(root)
    assert scan.classes == ["ok", "pit"] and len(scan.items) == 6  # nothing from the private folder
    assert ("leak/", "symbolic link, not followed") in scan.skipped
    assert ("ok/peek", "symbolic link, not followed") in scan.skipped


def test_an_empty_class_folder_is_named_not_dropped_silently(tmp_path):
    root = class_folder(tmp_path / "set")
    (root / "rust").mkdir()
    scan = scan_image_folder(root)
    assert scan.classes == ["ok", "pit"]
    assert ("rust/", "class folder without photos; left out of the classes") in scan.skipped
    shutil.rmtree(root / "pit")
    with pytest.raises(DatasetError, match=r"1 class folder\(s\) with photos \(ok\).*without photos: rust"):
        scan_image_folder(root)
