"""Several small rungs per GPU in the local executor (``--workers-per-gpu K``): worker k
sees only GPU k mod the GPUs. No GPU is needed: the assignment is what is tested."""

from __future__ import annotations

import sys
from collections import Counter

import pytest

from scalelab.cli import main
from scalelab.errors import UserError
from scalelab.study import jobs
from scalelab.study.jobs import Job, run_jobs
from scalelab.study.run import RunConfig, resolve_parallelism
from scalelab.study.study import Study


def test_workers_share_the_gpus_evenly():
    assert jobs.worker_devices(6, ["0", "1"]) == ["0", "1"] * 3  # three rungs per GPU
    assert jobs.worker_devices(2, ["3", "5", "7"]) == ["3", "5"]
    assert jobs.worker_devices(3, None) == [None] * 3


def test_each_job_sees_only_its_workers_gpu(tmp_path):
    script = "import os, time; print(os.environ['CUDA_VISIBLE_DEVICES']); time.sleep(0.5)"
    done: list[int] = []
    todo = [
        Job(f"j{i}", [sys.executable, "-c", script], tmp_path / f"j{i}.log", done.append)
        for i in range(6)
    ]
    run_jobs(todo, workers=6, threads=1, devices=["0", "1"])
    assert done == [0] * 6
    seen = Counter((tmp_path / f"j{i}.log").read_text().strip() for i in range(6))
    assert set(seen) == {"0", "1"} and sum(seen.values()) == 6  # one GPU each, both used


def test_workers_default_to_gpus_times_workers_per_gpu(tmp_path, monkeypatch):
    assert main(["plan", "--budget-flops", "1e15", "--out", str(tmp_path / "s")]) == 0
    study = Study.load(tmp_path / "s")
    monkeypatch.setattr(jobs, "cpu_only", lambda device: False)
    monkeypatch.setattr(jobs, "gpu_ids", lambda: ["0", "1"])
    assert resolve_parallelism(RunConfig(workers_per_gpu=3), study)[0] == 6
    assert resolve_parallelism(RunConfig(), study)[0] == 2
    assert resolve_parallelism(RunConfig(workers=5, workers_per_gpu=3), study)[0] == 5
    assert resolve_parallelism(RunConfig(executor="torchrun"), study)[0] == 1
    with pytest.raises(UserError, match="workers_per_gpu"):
        RunConfig(workers_per_gpu=0)


def test_visible_devices_are_respected(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3, 5")
    assert jobs.gpu_ids() == ["3", "5"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert jobs.gpu_ids() == []
