"""Jobs of a study: each one ``scalelab`` stage run (a rung's pretraining, a fine-tuning,
an evaluation), executed as a subprocess, or directly in this process.

A :class:`Job` carries both forms of the same work: ``cmd``, the ``scalelab`` command line
a subprocess (or a Ray task) runs, and ``call``, the stage function with its config, which
the in-process mode calls directly (no config serialised and re-parsed to cross a function
call). :func:`run_jobs` runs a list of them ``workers`` at a time.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scalelab.errors import exit_code_for


@dataclass
class Job:
    """One unit of work: a ``scalelab`` command line and the same work as a call."""

    name: str
    cmd: list[str]
    """The subprocess form: ``[python, -m, scalelab, ...]``."""
    log: Path
    """Where its output goes (appended)."""
    on_exit: Callable[[int], None]
    """Called with the exit code (0 done, 1 failed, 2 bad input, 130 interrupted)."""
    call: Callable[[], Any] | None = None
    """The in-process form: the stage function applied to its config."""


def resolve_parallelism(
    workers: int, threads: int, *, cpu: bool, single: bool = False
) -> tuple[int, int]:
    """``(workers, threads)``: 0 means automatic.

    Two 1-thread jobs gave ~1.27x the throughput of one 2-thread job on 2 CPU cores
    (measured here), so a CPU machine with >= 2 cores runs 2 at once by default; GPUs and
    ``single`` (torchrun rungs, which use every device) one at a time.
    """
    cores = os.cpu_count() or 1
    workers = workers or (2 if cpu and not single and cores >= 2 else 1)
    return workers, threads or max(1, cores // workers)


def cpu_only(device: str) -> bool:
    """Whether runs on ``device`` (cpu, cuda, auto) will use the CPU."""
    if device == "cpu":
        return True
    try:
        import torch

        return not torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        return True


def child_env(threads: int) -> dict[str, str]:
    """Environment of a job's subprocess: its thread count, passive OpenMP waiting (torch's
    spinning threads ran 25x slower on a loaded 2-core machine), stop with the parent."""
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS=str(threads),
        OMP_WAIT_POLICY=env.get("OMP_WAIT_POLICY", "PASSIVE"),
        SCALELAB_STOP_WITH_PARENT="1",
        PYTHONUNBUFFERED="1",
    )
    return env


def scalelab_command(*args: str) -> list[str]:
    """``python -m scalelab ARGS`` with this interpreter."""
    return [sys.executable, "-m", "scalelab", *args]


def finetune_job(
    name: str, run_dir: Path, cfg: Any, *, threads: int, on_exit: Callable[[int], None]
) -> Job:
    """A fine-tuning run as a job: ``cfg`` (a FinetuneConfig) is written to
    ``RUN/finetune.yaml`` for the subprocess form unless the run has started already."""
    from scalelab.finetune.finetune import finetune

    run_dir.mkdir(parents=True, exist_ok=True)
    spec = run_dir / "finetune.yaml"
    if not (run_dir / "config.yaml").is_file():
        cfg.to_yaml(spec)
    cmd = scalelab_command(
        "finetune", str(run_dir.resolve()), "--config", str(spec.resolve()),
        "--runtime.threads", str(threads),
    )  # fmt: skip
    threaded = cfg.replace(runtime=cfg.runtime.replace(threads=threads))
    return Job(name, cmd, run_dir / "train.log", on_exit, lambda: finetune(threaded, run_dir))


def finetune_done(run_dir: Path) -> bool:
    """Whether a fine-tuning run completed and evaluated its test split."""
    from scalelab.utils.io import read_json

    path = run_dir / "summary.json"
    if not path.is_file():
        return False
    summary = read_json(path)
    return summary.get("status") == "completed" and "test" in summary


def _run_in_process(jobs: list[Job]) -> None:
    """Run the jobs one after another in this process, each one's output to its log."""
    for job in jobs:
        if job.call is None:
            raise ValueError(f"job {job.name} has no in-process form")
        job.log.parent.mkdir(parents=True, exist_ok=True)
        with (
            open(job.log, "a") as log,
            contextlib.redirect_stdout(log),
            contextlib.redirect_stderr(log),
        ):
            try:
                job.call()
                code = 0
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # noqa: BLE001 - our errors become exit codes, as in the CLI
                code, message = exit_code_for(exc)
                if code is None:
                    raise
                print(message, file=sys.stderr)
        job.on_exit(code)


def run_jobs(
    jobs: list[Job],
    *,
    workers: int,
    threads: int,
    on_tick: Callable[[], None] = lambda: None,
    in_process: bool = False,
) -> None:
    """Run ``jobs`` in order, ``workers`` at a time, each a subprocess with ``threads`` threads.

    Ctrl-C (or SIGTERM turned into KeyboardInterrupt) asks every running job to checkpoint
    and stop (SIGTERM), waits for them, and re-raises. ``in_process`` runs them one after
    another in this process instead (no start-up cost; for tests and notebooks).
    """
    if in_process:
        _run_in_process(jobs)
        return
    pool = _Pool(jobs, threads)
    threads_ = [threading.Thread(target=pool.work, daemon=True) for _ in range(max(1, workers))]
    for t in threads_:
        t.start()
    try:
        while any(t.is_alive() for t in threads_):
            on_tick()
            time.sleep(1.0)
    except KeyboardInterrupt:
        pool.stop()
        raise


class _Pool:
    """A queue of jobs shared by worker threads, each running one subprocess at a time."""

    def __init__(self, jobs: list[Job], threads: int) -> None:
        self.queue = list(jobs)
        self.threads = threads
        self.lock = threading.Lock()
        self.procs: dict[str, subprocess.Popen] = {}
        self.stopping = threading.Event()

    def work(self) -> None:
        while not self.stopping.is_set():
            with self.lock:
                if not self.queue:
                    return
                job = self.queue.pop(0)
            job.log.parent.mkdir(parents=True, exist_ok=True)
            with open(job.log, "ab") as log:
                proc = subprocess.Popen(
                    job.cmd,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=child_env(self.threads),
                    start_new_session=True,  # our Ctrl-C is forwarded explicitly, once
                )
                with self.lock:
                    self.procs[job.name] = proc
                code = proc.wait()
            with self.lock:
                self.procs.pop(job.name, None)
            if not self.stopping.is_set():
                job.on_exit(code)

    def stop(self) -> None:
        """Ask every running job to checkpoint and stop (SIGTERM), and wait for them."""
        self.stopping.set()
        with self.lock:
            running = list(self.procs.values())
        print(
            f"\nscalelab: asking {len(running)} running job(s) to checkpoint and stop ...",
            file=sys.stderr,
        )
        for proc in running:
            proc.send_signal(signal.SIGTERM)
        for proc in running:
            proc.wait()
