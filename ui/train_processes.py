"""Train page, processes: how many training processes (torchrun) a run uses, offered only where this machine
has more than one GPU, more than one socket or many cores; elsewhere a caption says why it is one."""

from __future__ import annotations

import dataclasses

import streamlit as st

from defect_model.common.config import TrainConfig, setting_help
from defect_model.runs import jobs
from defect_model.train.engine import training_device
from defect_model.train.hardware import process_choice
from ui.text import md

WORKER_PROCESSES_MOST = 8


def processes_ui(cfg: TrainConfig | None) -> TrainConfig | None:
    """The request with the chosen number of processes (the form's request itself where only one makes sense)."""
    if jobs.trains_on_workers():  # this machine's hardware says nothing about the worker's
        processes = st.number_input("Training processes", min_value=1, max_value=WORKER_PROCESSES_MOST, value=1,
                                    step=1, key="train_processes",
                                    help=f"{setting_help('processes')}. The job trains on a worker machine: "
                                         "choose what it has (its GPUs, or its CPU sockets); torchrun starts this "
                                         "many processes there.")
        return None if cfg is None else dataclasses.replace(cfg, processes=int(processes))
    choice = process_choice(training_device().type)
    if choice.most <= 1:
        st.caption(f":material/memory: One training process: {md(choice.reason)}.")
        return cfg
    processes = st.number_input("Training processes", min_value=1, max_value=choice.most, value=1, step=1,
                                key="train_processes",
                                help=f"{setting_help('processes')}. Here: {choice.reason}. Each process takes an "
                                     "equal share of every step's batch.")
    return None if cfg is None else dataclasses.replace(cfg, processes=int(processes))
