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
from scalelab.utils.io import atomic_write_json, read_json

# Seconds before a Slurm job's time limit at which it is warned (sbatch --signal=USR2@S):
# time for the rung to write a checkpoint and stop before the job is requeued.
SIGNAL_DELAY_S = 120


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
    ready: Callable[[], bool] | None = None
    """Whether the job may start now (a WSD branch: once its trunk completed); None: always.
    The pool starts the first ready job in order; one never ready is left undone."""


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


def gpu_ids() -> list[str]:
    """The GPUs a job may be given: ``CUDA_VISIBLE_DEVICES``' entries when it is set, else
    ``0 .. device_count - 1`` (none without CUDA)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d.strip() for d in visible.split(",") if d.strip() and d.strip() != "-1"]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except ImportError:  # pragma: no cover
        return []


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


def pretrain_args(run_dir: Path, threads: int) -> list[str]:
    """What follows the interpreter in a study rung's command: ``-m scalelab pretrain RUN
    --config RUN/rung.yaml`` with ``threads`` torch threads and no progress bar."""
    run_dir = Path(run_dir).resolve()
    return [
        "-m", "scalelab", "pretrain", str(run_dir), "--config", str(run_dir / "rung.yaml"),
        "--runtime.threads", str(threads), "--no-runtime.progress",
    ]  # fmt: skip


def torchrun_command(nproc: int, launcher_args: list[str], args: list[str]) -> list[str]:
    """``python -m torch.distributed.run --nproc_per_node NPROC LAUNCHER_ARGS ARGS``: one
    process per device; ``--standalone`` (a local rendezvous) unless ``launcher_args`` set
    up a multi-node one (``--nnodes``, ``--rdzv-*``)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc)]
    if not any(a.startswith(("--rdzv", "--nnodes")) for a in launcher_args):
        cmd.append("--standalone")
    return cmd + list(launcher_args) + list(args)


def mark_failed(run_dir: Path, code: int, reason: str | None = None) -> None:
    """A rung process that died without saying so (an exception, OOM, a job error) is
    recorded as failed in its ``summary.json``, with ``reason`` or its log's last line."""
    path = Path(run_dir) / "summary.json"
    summary = read_json(path) if path.is_file() else {}
    if summary.get("status") in ("failed", "interrupted", "completed"):
        return
    if reason is None:
        log = Path(run_dir) / "train.log"
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.is_file() else []
        reason = tail[0] if tail else "no output"
    summary.update(status="failed", message=f"exit code {code}: {reason}")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, summary)


@dataclass
class RungTask:
    """A study rung as a Slurm (submitit) job: pickled on submission, called on the node.

    The call trains the rung with the ordinary ``scalelab pretrain`` subprocess (its
    ``train.log``, its exit codes): plain for one GPU or the CPU, under ``torchrun
    --nproc_per_node G`` for ``gpus_per_node`` G > 1, and for ``nodes`` > 1 one launcher per
    node with a c10d rendezvous at the job's first node. Near the time limit submitit calls
    :meth:`checkpoint`: the rung checkpoints and stops, and the job is requeued.
    """

    rung: str
    run_dir: str
    threads: int = 1
    gpus_per_node: int = 0
    nodes: int = 1

    def command(self) -> tuple[list[str], int]:
        """The command this node runs, and its torch threads per process."""
        tail = pretrain_args(Path(self.run_dir), self.threads)
        if self.nodes > 1:
            return torchrun_command(
                max(1, self.gpus_per_node), self._rendezvous(), tail
            ), self.threads
        if self.gpus_per_node > 1:
            return torchrun_command(self.gpus_per_node, [], tail), self.threads
        return [sys.executable, *tail], self.threads

    def _rendezvous(self) -> list[str]:
        """torchrun's multi-node flags from submitit's job environment: the first node's
        host and ``MASTER_PORT`` (or one derived from the job id), the job id as the id."""
        import submitit

        env = submitit.JobEnvironment()
        job_id = str(env.job_id)
        port = os.environ.get("MASTER_PORT") or str(29500 + sum(map(ord, job_id)) % 1000)
        return [
            "--nnodes", str(self.nodes), "--rdzv-backend", "c10d",
            "--rdzv-endpoint", f"{env.hostnames[0]}:{port}", "--rdzv-id", job_id,
        ]  # fmt: skip

    def __call__(self) -> int:
        cmd, threads = self.command()
        log = Path(self.run_dir) / "train.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as fh:
            self._proc = subprocess.Popen(
                cmd,
                stdout=fh,
                stderr=subprocess.STDOUT,
                env=child_env(threads),
                # Slurm's time-limit warning (USR2) goes to every process of the job; the
                # rung ignores it (its default action kills): submitit's checkpoint() stops it.
                preexec_fn=lambda: signal.signal(signal.SIGUSR2, signal.SIG_IGN),
            )
            code = self._proc.wait()
        if code not in (0, 130):
            mark_failed(Path(self.run_dir), code)
        return code

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """submitit's time-limit hook: ask the rung to checkpoint and stop (SIGTERM; it exits
        130 after writing a checkpoint), then requeue the same task (it resumes)."""
        import submitit

        proc = getattr(self, "_proc", None)
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=SIGNAL_DELAY_S - 20)
        fresh = RungTask(self.rung, self.run_dir, self.threads, self.gpus_per_node, self.nodes)
        return submitit.helpers.DelayedSubmission(fresh)

    def __getstate__(self) -> dict[str, Any]:  # the running process does not travel
        return {k: v for k, v in self.__dict__.items() if k != "_proc"}


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
    pending = list(jobs)
    while pending:  # in order, each job once it is ready; one never ready is left undone
        job = next((j for j in pending if j.ready is None or j.ready()), None)
        if job is None:
            return
        pending.remove(job)
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
    devices: list[str] | None = None,
) -> None:
    """Run ``jobs`` in order, ``workers`` at a time, each a subprocess with ``threads`` threads.

    ``devices`` (GPU ids): worker k's jobs see only GPU ``devices[k % len(devices)]``
    (``CUDA_VISIBLE_DEVICES``), so workers beyond the GPUs share them evenly.

    Ctrl-C (or SIGTERM turned into KeyboardInterrupt) asks every running job to checkpoint
    and stop (SIGTERM), waits for them, and re-raises. ``in_process`` runs them one after
    another in this process instead (no start-up cost; for tests and notebooks).
    """
    if in_process:
        _run_in_process(jobs)
        return
    pool = _Pool(jobs, threads)
    slots = worker_devices(workers, devices)
    threads_ = [threading.Thread(target=pool.work, args=(d,), daemon=True) for d in slots]
    for t in threads_:
        t.start()
    try:
        while any(t.is_alive() for t in threads_):
            on_tick()
            time.sleep(1.0)
    except KeyboardInterrupt:
        pool.stop()
        raise


def worker_devices(workers: int, devices: list[str] | None) -> list[str | None]:
    """The GPU each of ``workers`` workers gives its jobs: worker k gets ``devices[k %
    len(devices)]``, so K workers per GPU share them evenly (None: no GPU pinning)."""
    n = max(1, workers)
    return [devices[k % len(devices)] if devices else None for k in range(n)]


class _Pool:
    """A queue of jobs shared by worker threads, each running one subprocess at a time."""

    def __init__(self, jobs: list[Job], threads: int) -> None:
        self.queue = list(jobs)
        self.threads = threads
        self.lock = threading.Lock()
        self.procs: dict[str, subprocess.Popen] = {}
        self.stopping = threading.Event()
        self.active = 0  # jobs taken from the queue and not finished (under the lock)

    def _next(self) -> Job | None | bool:
        """The first ready job (taken from the queue), False to wait for one, None: done
        (the queue is empty, or nothing runs that could make the rest ready)."""
        with self.lock:
            job = next((j for j in self.queue if j.ready is None or j.ready()), None)
            if job is None:
                return False if self.queue and self.active else None
            self.queue.remove(job)
            self.active += 1
            return job

    def work(self, device: str | None = None) -> None:
        env = child_env(self.threads)
        if device is not None:
            env["CUDA_VISIBLE_DEVICES"] = device
        while not self.stopping.is_set():
            job = self._next()
            if job is None:
                return
            if job is False:
                time.sleep(0.5)
                continue
            assert isinstance(job, Job)
            try:
                self._run(job, env)
            finally:
                with self.lock:
                    self.active -= 1

    def _run(self, job: Job, env: dict[str, str]) -> None:
        """Run ``job`` as a subprocess with ``env``; its exit code to ``on_exit``."""
        job.log.parent.mkdir(parents=True, exist_ok=True)
        with open(job.log, "ab") as log:
            proc = subprocess.Popen(
                job.cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
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
