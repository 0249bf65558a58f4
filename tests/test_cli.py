import csv
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def cli(*args, check=True) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "defect_model", *map(str, args)], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(result.stderr)
    return result


def test_help_explains_every_command():
    out = cli("--help").stdout
    for command in ("train", "resume", "evaluate", "predict", "demo-data"):
        assert command in out
    train_help = cli("train", "--help").stdout
    assert "--backbone" in train_help and "default: resnet50" in train_help and "--split" in train_help


def test_cli_end_to_end(tmp_path):
    data = tmp_path / "demo"
    cli("demo-data", data, "--per-class", 8, "--size", 64)
    assert sorted(p.name for p in data.iterdir()) == ["crack", "ok", "pit", "scratch", "stain"]

    run = tmp_path / "run"
    train = cli("train", "--data", data, "--run-dir", run, "--backbone", "resnet18", "--image-size", 64,
                "--epochs", 2, "--batch-size", 8, "--lr", "0.002", "--no-channels-last")
    assert "epoch 2/2" in train.stderr and "finished: done" in train.stderr
    config = (run / "config.yaml").read_text()
    assert "backbone: resnet18" in config and "lr: 0.002" in config and "channels_last: false" in config
    assert "resolved: true" in config  # what the run trained with; what was asked is kept apart
    request = (run / "request.yaml").read_text()
    assert "resolved: false" in request and "lr: 0.002" in request and "precision: auto" in request

    evaluation = cli("evaluate", run).stdout
    assert "10 validation photos" in evaluation and "macro-F1" in evaluation

    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg at all")
    photos = [data / "pit" / "pit_0000.png", data / "ok" / "ok_0001.png", bad]
    result = cli("predict", "--run", run, *photos, "--cam-dir", tmp_path / "cams", "--csv", tmp_path / "out.csv")
    assert "broken.jpg: this is not an image" in result.stderr
    rows = list(csv.DictReader((tmp_path / "out.csv").open()))
    assert [Path(r["file"]).name for r in rows] == ["pit_0000.png", "ok_0001.png", "broken.jpg"]
    assert rows[0]["predicted"] in {"crack", "ok", "pit", "scratch", "stain"} and rows[2]["error"]
    assert abs(sum(float(rows[0][f"prob_{c}"]) for c in ["crack", "ok", "pit", "scratch", "stain"]) - 1) < 1e-4
    assert sorted(p.name for p in (tmp_path / "cams").iterdir()) == ["ok_0001_cam.png", "pit_0000_cam.png"]

    assert "nothing to resume" in cli("resume", run).stderr


def test_user_errors_are_messages_not_tracebacks(tmp_path):
    result = cli("train", "--data", tmp_path / "missing", "--run-dir", tmp_path / "run", check=False)
    assert result.returncode == 2
    assert "missing: the folder does not exist" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()  # a mistyped path leaves no failed run behind
    result = cli("train", "--data", tmp_path, "--backbone", "vgg", check=False)
    assert result.returncode == 2 and "backbone 'vgg'" in result.stderr


def test_a_flag_given_on_the_command_line_is_kept_by_the_product_preset(tmp_path):
    from defect_model.cli import build_parser, config_from_args

    args = build_parser().parse_args(["train", "--data", str(tmp_path), "--preset", "product", "--backbone",
                                      "resnet50"])
    assert config_from_args(args).pinned == ["backbone"]  # resnet50 asked for, not the reference default
