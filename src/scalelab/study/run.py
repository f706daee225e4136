"""Running a study: every rung is an ordinary ``scalelab pretrain`` run in its own process.

Executors (no home-made scheduler: a thread pool of subprocesses locally, torchrun for
multi-GPU rungs, Ray's own scheduling on a cluster):

- ``local``: rungs one after another, or ``workers`` at once with the cores split between
  them (two 1-thread jobs gave ~1.27x the throughput of one 2-thread job on 2 cores);
- ``torchrun``: each rung under ``python -m torch.distributed.run`` (DDP over
  ``nproc_per_node`` processes; pass ``--torchrun-args`` for multi-node rendezvous);
- ``ray``: rungs dispatched as Ray tasks (``num_cpus`` = threads) to the cluster at
  ``ray_address`` (or a local Ray runtime); run directories must be on a shared disk.

Robustness: finished rungs are skipped, interrupted ones resume from their checkpoints
(the pretraining stage does that), a failed rung is recorded and the rest go on. Ctrl-C or
SIGTERM asks every running rung to checkpoint and stop; a SIGKILLed study leaves its rungs
to notice (they poll their parent) and stop after a checkpoint. ``results.csv`` is
rebuilt after every rung.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from scalelab.config import Config
from scalelab.errors import UserError
from scalelab.study.plan import Rung
from scalelab.study.study import Study
from scalelab.utils.io import atomic_write_json, read_json


@dataclass(kw_only=True)
class RunConfig(Config):
    """How to execute a study's rungs."""

    executor: Literal["local", "torchrun", "ray"] = "local"
    """local (subprocesses here), torchrun (each rung data-parallel) or ray (a Ray cluster)."""
    workers: int = 0
    """Rungs trained at the same time (0: 2 on a CPU machine with >= 2 cores, else 1)."""
    threads: int = 0
    """torch threads per rung (0: the cores divided by workers)."""
    nproc_per_node: int = 1
    """torchrun: processes (GPUs) per rung."""
    torchrun_args: str = ""
    """torchrun: extra launcher arguments, e.g. '--nnodes 2 --rdzv-endpoint host:29400'."""
    ray_address: str | None = None
    """ray: address of an existing cluster (none: start a local Ray runtime)."""
    retry_failed: bool = False
    """Run rungs that failed before again (by default they are reported and skipped)."""
    only: tuple[str, ...] = ()
    """Run only these rung ids."""
    in_process: bool = False
    """local: train the rungs one after another inside this process (no start-up cost)."""
    progress: bool = True
    """Show the study progress bar."""

    def validate(self) -> None:
        if self.workers < 0 or self.threads < 0 or self.nproc_per_node < 1:
            raise UserError("workers and threads must be >= 0, nproc_per_node >= 1")


def _device_is_cpu(study: Study) -> bool:
    device = study.plan.base.runtime.device
    if device == "cpu":
        return True
    try:
        import torch

        return not torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        return True


def resolve_parallelism(cfg: RunConfig, study: Study) -> tuple[int, int]:
    cores = os.cpu_count() or 1
    workers = cfg.workers or (
        2 if cfg.executor != "torchrun" and _device_is_cpu(study) and cores >= 2 else 1
    )
    threads = cfg.threads or max(1, cores // workers)
    return workers, threads


def rung_command(study: Study, rung: Rung, cfg: RunConfig, threads: int) -> list[str]:
    run_dir = study.rung_dir(rung).resolve()
    tail = [
        "-m", "scalelab", "pretrain", str(run_dir), "--config", str(run_dir / "rung.yaml"),
        "--runtime.threads", str(threads), "--no-runtime.progress",
    ]  # fmt: skip
    if cfg.executor == "torchrun":
        launcher = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            str(cfg.nproc_per_node),
        ]
        extra = shlex.split(cfg.torchrun_args)
        if not any(a.startswith("--rdzv") or a.startswith("--nnodes") for a in extra):
            launcher.append("--standalone")
        return launcher + extra + tail
    return [sys.executable, *tail]


def _child_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS=str(threads),
        OMP_WAIT_POLICY=env.get("OMP_WAIT_POLICY", "PASSIVE"),
        SCALELAB_STOP_WITH_PARENT="1",
        PYTHONUNBUFFERED="1",
    )
    return env


def _mark_failed(study: Study, rung: Rung, code: int) -> None:
    """A rung process that died without saying so (an exception, OOM) is recorded as failed."""
    path = study.rung_dir(rung) / "summary.json"
    summary = read_json(path) if path.is_file() else {}
    if summary.get("status") in ("failed", "interrupted", "completed"):
        return
    log = study.rung_dir(rung) / "train.log"
    tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.is_file() else []
    summary.update(status="failed", message=f"exit code {code}: {tail[0] if tail else 'no output'}")
    atomic_write_json(path, summary)


class _Progress:
    """Study-level progress: rungs done, FLOPs done (chinchilla count), ETA."""

    def __init__(self, study: Study, todo: list[Rung], enabled: bool) -> None:
        self.study, self.todo = study, todo
        self.total = sum(r.flops["chinchilla"] for r in todo) or 1.0
        self.bar = None
        self.t0 = time.monotonic()
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=len(todo), desc="study", unit="rung", dynamic_ncols=True, file=sys.stderr
            )

    def update(self) -> None:
        if self.bar is None:
            return
        done_rungs, done = 0, 0.0
        for r in self.todo:
            s = self.study.rung_summary(r) or {}
            frac = s.get("step", 0) / max(1, s.get("total_steps", 1))
            if s.get("status") in ("completed", "failed"):
                done_rungs += 1
                frac = 1.0
            done += frac * r.flops["chinchilla"]
        elapsed = time.monotonic() - self.t0
        eta = elapsed * (self.total - done) / done if done > 0 else float("nan")
        self.bar.n = done_rungs
        self.bar.set_postfix_str(
            f"{done / self.total:5.1%} of {self.total:.2e} FLOPs, ETA {_hms(eta)}", refresh=False
        )
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.update()
            self.bar.close()


def _hms(seconds: float) -> str:
    if seconds != seconds or seconds == float("inf"):
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def run_study(study: Study, cfg: RunConfig) -> dict[str, str]:
    """Train every pending rung of ``study``; return {rung id: final status}."""
    from scalelab.data.prepare import prepare

    base = study.plan.base
    dataset = Path(base.dataset) if base.dataset else prepare(base.data, root=base.data_root)
    workers, threads = resolve_parallelism(cfg, study)
    todo: list[Rung] = []
    for rung in study.rungs:
        if cfg.only and rung.id not in cfg.only:
            continue
        status = study.rung_status(rung)
        if status == "completed" or (status == "failed" and not cfg.retry_failed):
            continue
        run_dir = study.rung_dir(rung)
        run_dir.mkdir(parents=True, exist_ok=True)
        if status == "failed":  # retry: clear the failure so the run resumes from its checkpoint
            (run_dir / "summary.json").unlink(missing_ok=True)
        rung.pretrain_config(base.replace(dataset=dataset.resolve())).to_yaml(run_dir / "rung.yaml")
        todo.append(rung)
    results = {r.id: study.rung_status(r) for r in study.rungs}
    if not todo:
        study.write_results()
        return results
    progress = _Progress(study, todo, cfg.progress)
    print(
        f"training {len(todo)} rung(s) with the {cfg.executor} executor: {workers} at a time, "
        f"{threads} thread(s) each; logs in {study.root / 'rungs'}/<rung>/train.log",
        file=sys.stderr,
    )
    try:
        if cfg.executor == "ray":
            _run_ray(study, todo, cfg, threads, workers, progress)
        else:
            _run_local(study, todo, cfg, threads, workers, progress)
    finally:
        progress.close()
        study.write_results()
    return {r.id: study.rung_status(r) for r in study.rungs}


@dataclass
class Job:
    """One subprocess to run: a rung's pretraining, or a fine-tuning of a rung."""

    name: str
    cmd: list[str]
    log: Path
    on_exit: Callable[[int], None]


def _run_in_process(jobs: list[Job]) -> None:
    """Run ``scalelab`` jobs one after another inside this process (output to their logs)."""
    import contextlib

    from scalelab.cli import main

    for job in jobs:
        assert job.cmd[1:3] == ["-m", "scalelab"], job.cmd
        job.log.parent.mkdir(parents=True, exist_ok=True)
        with (
            open(job.log, "a") as log,
            contextlib.redirect_stdout(log),
            contextlib.redirect_stderr(log),
        ):
            code = main(job.cmd[3:])
        if code == 130:
            raise KeyboardInterrupt
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
    queue = list(jobs)
    lock = threading.Lock()
    procs: dict[str, subprocess.Popen] = {}
    stopping = threading.Event()

    def worker() -> None:
        while not stopping.is_set():
            with lock:
                if not queue:
                    return
                job = queue.pop(0)
            job.log.parent.mkdir(parents=True, exist_ok=True)
            with open(job.log, "ab") as log:
                proc = subprocess.Popen(
                    job.cmd,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=_child_env(threads),
                    start_new_session=True,  # our Ctrl-C is forwarded explicitly, once
                )
                with lock:
                    procs[job.name] = proc
                code = proc.wait()
            with lock:
                procs.pop(job.name, None)
            if not stopping.is_set():
                job.on_exit(code)

    pool = [threading.Thread(target=worker, daemon=True) for _ in range(max(1, workers))]
    for t in pool:
        t.start()
    try:
        while any(t.is_alive() for t in pool):
            on_tick()
            time.sleep(1.0)
    except KeyboardInterrupt:
        stopping.set()
        with lock:
            running = list(procs.values())
        print(
            f"\nscalelab: asking {len(running)} running job(s) to checkpoint and stop ...",
            file=sys.stderr,
        )
        for proc in running:
            proc.send_signal(signal.SIGTERM)
        for proc in running:
            proc.wait()
        raise


def _run_local(
    study: Study, todo: list[Rung], cfg: RunConfig, threads: int, workers: int, progress: _Progress
) -> None:
    def on_exit(rung: Rung) -> Callable[[int], None]:
        def done(code: int) -> None:
            if code not in (0, 130):
                _mark_failed(study, rung, code)
            study.write_results()

        return done

    jobs = [
        Job(r.id, rung_command(study, r, cfg, threads), study.rung_dir(r) / "train.log", on_exit(r))
        for r in todo
    ]
    run_jobs(
        jobs, workers=workers, threads=threads, on_tick=progress.update, in_process=cfg.in_process
    )


def _run_ray(
    study: Study, todo: list[Rung], cfg: RunConfig, threads: int, workers: int, progress: _Progress
) -> None:
    try:
        import ray
    except ImportError:
        raise UserError("the ray executor needs Ray: pip install 'scalelab[ray]'") from None
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        if cfg.ray_address:
            kwargs["address"] = cfg.ray_address
        else:
            kwargs["num_cpus"] = workers * threads
        ray.init(**kwargs)

    @ray.remote(num_cpus=threads)
    def train_rung(cmd: list[str], log_path: str, env: dict[str, str]) -> int:
        with open(log_path, "ab") as log:
            return subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)

    refs = {
        train_rung.remote(
            rung_command(study, r, cfg, threads),
            str((study.rung_dir(r) / "train.log").resolve()),
            _child_env(threads),
        ): r
        for r in todo
    }
    try:
        while refs:
            ready, _ = ray.wait(list(refs), num_returns=1, timeout=1.0)
            for ref in ready:
                rung = refs.pop(ref)
                code = ray.get(ref)
                if code not in (0, 130):
                    _mark_failed(study, rung, code)
                study.write_results()
            progress.update()
    except KeyboardInterrupt:
        for ref in refs:
            ray.cancel(ref)
        raise
