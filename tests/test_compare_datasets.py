"""Runs on different datasets (or without a shared validation photo) are not compared photo by photo."""

from __future__ import annotations

from defect_model.workflows.compare import compare_runs
from review_support import VAL, make_dataset, write_run


def test_runs_on_different_datasets_say_so_instead_of_zero_out_of_zero(tmp_path):
    first = make_dataset(tmp_path / "line-1")
    second = make_dataset(tmp_path / "line-2")  # the same relative paths, other photos
    a = write_run(tmp_path / "runs", first, "a", checkpoint=False)
    b = write_run(tmp_path / "runs", second, "b", checkpoint=False,
                  rows=[(p, t, "ok", c) for p, t, _, c in VAL])  # would look like many changes by path
    result = compare_runs(a, b)
    assert not result.same_dataset and not result.photo_by_photo
    assert result.changed.empty and result.common_photos == 0 and not result.only_a and not result.only_b
    reason = result.why_not_photo_by_photo()
    assert str(first) in reason and str(second) in reason and "cannot be compared photo by photo" in reason
    assert result.metrics["a"].notna().all() and result.metrics["b"].notna().any()  # the numbers still compare


def test_the_same_dataset_is_compared_photo_by_photo(tmp_path):
    data = make_dataset(tmp_path / "line-1")
    a = write_run(tmp_path / "runs", data, "a", checkpoint=False)
    b = write_run(tmp_path / "runs", tmp_path / "line-1" / ".." / "line-1", "b", checkpoint=False)
    result = compare_runs(a, b)
    assert result.same_dataset and result.photo_by_photo and result.why_not_photo_by_photo() == ""
    assert result.common_photos == len(VAL)


def test_no_shared_validation_photo_is_said_too(tmp_path):
    data = make_dataset(tmp_path / "line-1")
    a = write_run(tmp_path / "runs", data, "a", checkpoint=False, rows=VAL[:5])
    b = write_run(tmp_path / "runs", data, "b", checkpoint=False, rows=VAL[5:])
    result = compare_runs(a, b)
    assert result.same_dataset and not result.photo_by_photo
    assert "share no validation photo" in result.why_not_photo_by_photo()
