"""Training on several processes (torchrun, DistributedDataParallel, gloo on the CPU): the batch shared and
recorded, each process's share of every sampler, the Train page's choice, the job's command, and real
2-process runs against a 1-process run, with a rank killed, resumed and cancelled."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import ENGINEER, ROOT, shown, tiny_config
from test_jobs import wait_for
from defect_model.runs import jobs
from defect_model.runs.folders import RunDir, list_runs, process_alive
from defect_model.train import distributed, hardware
from defect_model.train.checkpoint import load_checkpoint
from defect_model.common.config import TrainConfig
from defect_model.train.data import DecodedDataset, DecodedImages, make_loader
from defect_model.train.distributed import Dist
from defect_model.train.prepare import plan_split, resolve_settings
from defect_model.train.presets import resolve, split_batch

# Each subprocess is bounded: a hang fails the test instead of stalling CI.
RUN_LIMIT_S = 420


# --- the batch shared by the processes, recorded as a decision ------------------------------------------------

def test_processes_share_the_batch_and_a_batch_that_does_not_divide_scales_the_learning_rate():
    assert split_batch(TrainConfig(batch_size=32)) == TrainConfig(batch_size=32)
    even = split_batch(TrainConfig(batch_size=32, lr=1e-3, processes=2))
    assert (even.batch_size, even.lr) == (32, 1e-3)
    assert even.decisions == ["2 training processes: each takes 16 of the 32 photos of an optimizer step; learning "
                              "rate 0.001 kept, since a step still learns from 32 photos"]
    odd = split_batch(TrainConfig(batch_size=32, lr=1e-3, processes=3))
    assert odd.batch_size == 33 and odd.lr == pytest.approx(1e-3 * 33 / 32)
    assert "scaled by 33/32 to 0.001031" in odd.decisions[0]
    # The product preset decides first (its learning rate is the one scaled), its decisions are kept.
    product = resolve(TrainConfig(preset="product", batch_size=30, processes=4), {"a": 300, "b": 300},
                      [(128, 128)] * 10, 100)
    assert product.batch_size == 32 and product.lr == pytest.approx(1e-3 * 32 / 30)  # the fine-tuning peak, scaled
    assert product.decisions[-1].startswith("4 training processes: each takes 8 photos")
    assert any(d.startswith("network efficientnet_lite0 from ImageNet weights") for d in product.decisions)


def test_resolving_records_the_processes_turns_off_syncbatchnorm_on_cpu_and_refuses_another_count(tiny_dataset,
                                                                                                  tmp_path):
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    cfg = tiny_config(tiny_dataset, sync_batchnorm=True, processes=4)
    plan = plan_split(cfg, run, reuse_split=False, write=False)
    resolved = resolve_settings(cfg, plan, torch.device("cpu"), processes=2)
    assert resolved.processes == 2 and resolved.resolved and not resolved.sync_batchnorm
    assert "2 training process(es), not the 4 asked for: that is how many were started" in resolved.decisions
    assert any(d.startswith("SyncBatchNorm off: torch synchronises BatchNorm only between GPUs") and
               "each process normalises its own 8 photos" in d for d in resolved.decisions)
    alone = resolve_settings(tiny_config(tiny_dataset, sync_batchnorm=True), plan, torch.device("cpu"), processes=1)
    assert alone.sync_batchnorm and alone.processes == 1  # one process: nothing to synchronise, nothing to say
    with pytest.raises(ValueError, match=r"trains on 2 process\(es\) and was started on 1: resume it with "
                                         r"`torchrun --nproc_per_node=2 -m defect_model resume RUN`"):
        resolve_settings(resolved, plan, torch.device("cpu"), processes=1)


# --- every sampler's share per process ----------------------------------------------------------------------------

def _dataset(labels: list[int]) -> DecodedDataset:
    n = len(labels)
    return DecodedDataset(DecodedImages([f"{i}.png" for i in range(n)], torch.tensor(labels),
                                        torch.zeros((n, 3, 4, 4), dtype=torch.uint8), []))


def _drawn(dataset, world: int, rank: int, **options) -> list[int]:
    loader = make_loader(dataset, batch_size=4 // world, train=True, seed=3, epoch=2, world_size=world, rank=rank,
                         **options)
    return [int(i) for _, _, indices in loader for i in indices]


@pytest.mark.parametrize("options", [{"sampling": "balanced"}, {"epoch_images": 48},
                                     {"sampling": "balanced", "epoch_images": 20}])
def test_balanced_sampling_and_epoch_images_split_one_shared_draw_between_the_processes(options):
    dataset = _dataset([0] * 30 + [1] * 3)  # 10x imbalance
    alone = _drawn(dataset, 1, 0, **options)
    shares = [_drawn(dataset, 2, rank, **options) for rank in (0, 1)]
    assert len(shares[0]) == len(shares[1]) == len(alone) // 2
    # Each step the two processes together take the photos one process would have taken.
    assert [i for pair in zip(*shares) for i in pair] == alone
    if options.get("sampling") == "balanced":
        rare = sum(dataset.decoded.labels[i] == 1 for i in shares[0] + shares[1]) / len(alone)
        assert 0.3 < rare < 0.7


def test_shuffling_gives_each_process_its_own_photos_and_validation_covers_every_photo_once():
    dataset = _dataset([0, 1] * 11)
    shares = [_drawn(dataset, 2, rank) for rank in (0, 1)]
    assert len(shares[0]) == len(shares[1]) == 10 and not set(shares[0]) & set(shares[1])
    val = [make_loader(dataset, batch_size=3, train=False, seed=0, world_size=2, rank=rank) for rank in (0, 1)]
    seen = sorted(int(i) for loader in val for _, _, indices in loader for i in indices)
    assert sorted(set(seen)) == list(range(22)) and len(seen) == 22


def test_rows_of_one_process_come_back_in_the_sets_order():
    indices, values = distributed.gather_rows(Dist(), np.array([2, 0, 1]), np.array([20, 0, 10]))
    assert indices.tolist() == [0, 1, 2] and values.tolist() == [0, 10, 20]


def test_a_bad_timeout_is_refused_by_name():
    assert distributed.timeout_s({}) == distributed.DEFAULT_TIMEOUT_S
    assert distributed.timeout_s({"DEFECT_DIST_TIMEOUT_S": "45"}) == 45
    with pytest.raises(ValueError, match="DEFECT_DIST_TIMEOUT_S='soon': give the seconds"):
        distributed.timeout_s({"DEFECT_DIST_TIMEOUT_S": "soon"})


# --- where several processes are offered, and how a job starts them --------------------------------------------

@pytest.fixture()
def machine(monkeypatch):
    def set_machine(cores: int = 2, sockets: int = 1, gpus: int = 0) -> None:
        monkeypatch.setattr(hardware, "cpu_cores", lambda: cores)
        monkeypatch.setattr(hardware, "cpu_sockets", lambda: sockets)
        monkeypatch.setattr(hardware, "gpu_count", lambda: gpus)
    return set_machine


def test_processes_are_offered_for_several_gpus_sockets_or_many_cores(machine):
    machine(cores=2)
    choice = hardware.process_choice("cpu")
    assert choice.most == 1 and "2 core(s) on 1 socket" in choice.reason and "one process already uses" in choice.reason
    machine(cores=8, sockets=2)
    assert hardware.process_choice("cpu").most == 2
    machine(cores=64)
    assert hardware.process_choice("cpu").most == 8
    machine(cores=2, gpus=4)
    assert hardware.process_choice("cuda").most == 4
    assert hardware.process_choice("cpu").most == 1  # GPUs count only where training runs on them
    machine(gpus=1)
    assert hardware.process_choice("cuda").most == 1


def _processes_form():
    import streamlit as st

    from defect_model.common.config import TrainConfig
    from ui.train_processes import processes_ui

    cfg = processes_ui(TrainConfig())
    st.session_state["made"] = cfg.processes


def test_the_train_page_offers_processes_only_where_they_pay_off(machine):
    from streamlit.testing.v1 import AppTest

    machine(cores=2)
    app = AppTest.from_function(_processes_form, default_timeout=60).run()
    assert not app.exception and not app.number_input
    assert "One training process: training runs on this machine's CPU, 2 core(s)" in shown(app.caption[0].value)
    assert app.session_state["made"] == 1
    machine(cores=32, sockets=2)
    app = AppTest.from_function(_processes_form, default_timeout=60).run()
    field = app.number_input(key="train_processes")
    assert field.max == 4
    field.set_value(3).run()
    assert app.session_state["made"] == 3


def test_a_job_of_several_processes_is_started_through_torchrun(tiny_dataset, tmp_path):
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    tiny_config(tiny_dataset, processes=2).to_yaml(run.request)
    assert jobs.run_command(run) == [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                     "--nproc_per_node=2", "-m", "defect_model", "run", str(run.path)]
    tiny_config(tiny_dataset).to_yaml(run.request)
    assert jobs.run_command(run) == [sys.executable, "-m", "defect_model", "run", str(run.path)]


# --- real runs: 2 processes with gloo against 1 -----------------------------------------------------------------

def launch(processes: int, *args: str) -> subprocess.CompletedProcess:
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"] if processes > 1 else []
    env = dict(os.environ, DEFECT_DIST_TIMEOUT_S="30", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, *launcher, "-m", "defect_model", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=RUN_LIMIT_S)


def step_losses(run: RunDir) -> list[float]:
    return [e["loss"] for e in run.read_events() if e["type"] == "step"]


# Reference recipe, 10 steps of 16 photos (8 per process), no dropout or augmentation: the two runs see the same
# photos at every step and start from the same weights; only BatchNorm's statistics (over 8 photos, not 16) differ.
SETTINGS = ["--backbone", "resnet18", "--image-size", "32", "--batch-size", "16", "--epochs", "1",
            "--epoch-images", "160", "--dropout", "0", "--checkpoint-every-min", "0"]


def test_two_processes_write_the_run_files_of_one_and_learn_alike(tiny_dataset, tmp_path):
    one, two = RunDir(tmp_path / "one"), RunDir(tmp_path / "two")
    for processes, run in ((1, one), (2, two)):
        done = launch(processes, "train", "--data", str(tiny_dataset), "--run-dir", str(run.path), *SETTINGS)
        assert done.returncode == 0, done.stderr[-4000:]
        assert done.stderr.count("run directory:") == 1  # only rank 0 speaks

    assert sorted(p.name for p in two.path.iterdir()) == sorted(p.name for p in one.path.iterdir())
    assert one.status()["state"] == two.status()["state"] == "done"
    assert set(two.status()) - set(one.status()) == {"ranks"} and len(two.status()["ranks"]) == 2
    settings = [yaml.safe_load(run.config.read_text()) for run in (one, two)]
    assert {k for k in settings[0] if settings[0][k] != settings[1][k]} == {"processes", "decisions"}
    assert settings[1]["processes"] == 2 and settings[1]["batch_size"] == 16
    assert ("2 training processes: each takes 8 of the 16 photos of an optimizer step; learning rate 0.001 kept, "
            "since a step still learns from 16 photos") in settings[1]["decisions"]

    # Rank 0 alone wrote the events: one start, each step once.
    assert [[e["type"] for e in run.read_events()].count("start") for run in (one, two)] == [1, 1]
    losses = [step_losses(run) for run in (one, two)]
    assert len(losses[0]) == len(losses[1]) == 10
    # Same photos and weights at step 1: the losses differ only by BatchNorm over half the batch. Later steps of
    # a network memorising 40 photos jump around (0.1 to 0.9 from one step to the next); their mean stays close.
    assert losses[1][0] == pytest.approx(losses[0][0], rel=0.15)
    assert sum(losses[1]) / 10 == pytest.approx(sum(losses[0]) / 10, rel=0.5)

    # Validation covers the whole set, in the same order, and scores within noise of one process's.
    tables = [run.val_predictions.read_text().splitlines() for run in (one, two)]
    assert [line.split(",")[0] for line in tables[0]] == [line.split(",")[0] for line in tables[1]]
    metrics = [run.read_metrics() for run in (one, two)]
    assert len(tables[1]) - 1 == sum(c["support"] for c in metrics[1]["per_class"].values()) == 10
    assert abs(metrics[1]["accuracy"] - metrics[0]["accuracy"]) <= 0.3  # 10 photos: 0.3 is about 2 standard errors
    assert metrics[1]["val_loss"] == pytest.approx(metrics[0]["val_loss"], rel=0.25)

    # Both processes held the same weights after the epoch's last step: those of the checkpoint.
    epoch = [e for e in two.read_events() if e["type"] == "epoch"][-1]
    assert epoch["processes"] == 2 and len(set(epoch["rank_weights"])) == 1
    assert epoch["rank_weights"][0] == distributed.weights_fingerprint(load_checkpoint(two.checkpoint)["model"])


# --- a rank killed: the run fails with a message, resumes, and a cancel stops every rank ---------------------------

@pytest.fixture()
def root(tmp_path, monkeypatch):
    path = tmp_path / "runs"
    monkeypatch.setenv("DEFECT_RUNS_DIR", str(path))
    monkeypatch.setenv("DEFECT_DIST_TIMEOUT_S", "30")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    yield path
    for run in list_runs(path):  # a failing test leaves no training process behind
        for rank in run.status().get("ranks", []):
            if process_alive(rank["pid"], rank["pid_started"]):
                os.kill(rank["pid"], signal.SIGKILL)


def events_of(run: RunDir, kind: str) -> list[dict]:
    return [e for e in run.read_events() if e["type"] == kind]


def ended(run: RunDir) -> str | None:
    ends = events_of(run, "end")
    return ends[-1]["state"] if ends and run.status()["state"] == ends[-1]["state"] else None


def all_gone(ranks: list[dict]) -> bool:
    return not any(process_alive(rank["pid"], rank["pid_started"]) for rank in ranks)


def test_a_killed_rank_fails_the_run_with_a_message_and_the_run_resumes_and_cancels_on_every_rank(tiny_dataset,
                                                                                                  root):
    # Product preset: 30 steps of 4 photos an epoch (2 per process, a shared draw of 120), strong augmentation.
    request = tiny_config(tiny_dataset, preset="product", image_size=32, batch_size=4, processes=2)
    run = jobs.start(request, root, actor=ENGINEER)
    log = lambda: run.log.read_text()[-4000:] if run.log.is_file() else ""  # noqa: E731
    wait_for(lambda: events_of(run, "epoch") or ended(run), RUN_LIMIT_S, "the first epoch's checkpoint")
    assert run.status()["state"] == "running", log()
    ranks = run.status()["ranks"]
    assert len(ranks) == 2 and ranks[0]["pid"] == run.status()["pid"]

    os.kill(ranks[1]["pid"], signal.SIGKILL)
    # gloo sees the closed connection at once; a rank that hung would take DEFECT_DIST_TIMEOUT_S (30 s).
    assert wait_for(lambda: ended(run), 60, "the run to fail") == "failed", log()
    error = run.status()["error"]
    assert error.startswith("one of the 2 training processes stopped, or did not answer within 30 s "
                            "(DEFECT_DIST_TIMEOUT_S), so the run stopped (") and "Resume the run" in error, error
    wait_for(lambda: all_gone(ranks), 60, "rank 0 to exit")
    assert jobs.running_job(root) is None

    jobs.resume(run, root, actor=ENGINEER)
    wait_for(lambda: len(events_of(run, "start")) == 2 and events_of(run, "step")[-1]["time"]
             > events_of(run, "start")[-1]["time"] or ended(run) == "failed", RUN_LIMIT_S, "the resumed run's steps")
    resumed = events_of(run, "start")[-1]
    assert resumed["resumed"] and resumed["start_epoch"] >= 2, log()
    ranks = run.status()["ranks"]
    jobs.cancel(run, actor=ENGINEER)  # signals rank 0; the processes agree at the next step
    assert wait_for(lambda: ended(run), 120, "the cancel") == "cancelled", log()
    wait_for(lambda: all_gone(ranks), 60, "every rank to exit")
    assert yaml.safe_load(run.config.read_text())["processes"] == 2


def test_sigterm_to_the_torchrun_agent_reaches_every_rank_and_the_run_ends_cancelled(tiny_dataset, root):
    # What a terminal's Ctrl-C / kill of torchrun, or a service manager stopping the job, does.
    run = jobs.start(tiny_config(tiny_dataset, image_size=32, batch_size=4, epochs=50, processes=2), root,
                     actor=ENGINEER)
    wait_for(lambda: events_of(run, "step") or ended(run), RUN_LIMIT_S, "the first step")
    ranks = run.status()["ranks"]
    stat = Path(f"/proc/{ranks[0]['pid']}/stat").read_text()
    agent = int(stat.rsplit(")", 1)[1].split()[1])  # rank 0's parent: the process the job started
    assert agent != ranks[0]["pid"] and "torch.distributed.run" in Path(f"/proc/{agent}/cmdline").read_text()
    os.kill(agent, signal.SIGTERM)  # the agent sends SIGTERM to each rank; they stop at the same step
    assert wait_for(lambda: ended(run), 120, "the run to stop") == "cancelled", run.log.read_text()[-3000:]
    wait_for(lambda: all_gone(ranks), 60, "every rank to exit")
    assert run.checkpoint.is_file()


def test_a_run_cancelled_mid_epoch_on_two_processes_resumes_at_the_next_step(tiny_dataset, tmp_path):
    # Balanced sampling (one shared draw, a share per rank), keep_best: the paths a shuffled run does not take.
    run = RunDir(tmp_path / "run")
    args = ["--data", str(tiny_dataset), "--run-dir", str(run.path), "--backbone", "resnet18", "--image-size", "32",
            "--batch-size", "4", "--epochs", "2", "--epoch-images", "120", "--sampling", "balanced", "--keep-best",
            "--checkpoint-every-min", "0"]
    env = dict(os.environ, DEFECT_DIST_TIMEOUT_S="30")
    first = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                              "-m", "defect_model", "train", *args], cwd=ROOT, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: run.events.is_file() and len(step_losses(run)) >= 5 or first.poll() is not None,
                 RUN_LIMIT_S, "five steps")
        run.request_cancel()
        assert first.wait(timeout=120) == 0, first.stderr.read()[-3000:]
    finally:
        first.kill()
    assert run.status()["state"] == "cancelled"
    stopped = [e for e in run.read_events() if e["type"] == "step"][-1]
    assert stopped["epoch"] == 1 and 5 <= stopped["step"] < stopped["steps_per_epoch"] == 30

    done = launch(2, "resume", str(run.path))
    assert done.returncode == 0, done.stderr[-4000:]
    assert run.status()["state"] == "done"
    events = run.read_events()
    resumed = events_of(run, "start")[-1]
    assert (resumed["start_epoch"], resumed["skip_steps"]) == (1, stopped["step"])
    after = [(e["epoch"], e["step"]) for e in events[events.index(resumed):] if e["type"] == "step"]
    assert after == [(1, s) for s in range(stopped["step"] + 1, 31)] + [(2, s) for s in range(1, 31)]
    assert all(len(set(e["rank_weights"])) == 1 for e in events_of(run, "epoch"))
    assert sum(c["support"] for c in run.read_metrics()["per_class"].values()) == 10
