import csv
import shutil

import pytest

from defect_model.data import (DatasetError, read_split_csv, scan_image_folder, stratified_split,
                               write_split_csv)
from defect_model.engine import fit
from defect_model.runs import RunDir
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
