"""Running a study: every rung is an ordinary ``scalelab pretrain`` run in its own process.

Executors (no home-made scheduler: a thread pool of subprocesses locally, torchrun for
multi-GPU rungs, Ray's own scheduling on a cluster):

- ``local``: rungs one after another, or ``workers`` at once with the cores split between
  them (two 1-thread jobs gave ~1.27x the throughput of one 2-thread job on 2 cores);
- ``torchrun``: each rung under ``python -m torch.distributed.run`` (DDP over
  ``nproc_per_node`` processes; pass ``--torchrun-args`` for multi-node rendezvous);
- ``ray``: rungs dispatched as Ray tasks (``num_cpus`` = threads) to the cluster at
  ``ray_address`` (or a local Ray runtime); run directories must be on a shared disk;
- ``slurm``: the rungs as one Slurm job array through submitit (``--slurm.*`` options,
  :mod:`scalelab.study.slurm`); the jobs outlive this process, and a later ``study run``
  tracks them instead of submitting them again.

Robustness: finished rungs are skipped, interrupted ones resume from their checkpoints
(the pretraining stage does that), a failed rung is recorded and the rest go on. Ctrl-C or
SIGTERM asks every running rung to checkpoint and stop; a SIGKILLed study leaves its rungs
to notice (they poll their parent) and stop after a checkpoint. ``results.csv`` is
rebuilt after every rung.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from scalelab.config import Config
from scalelab.errors import UserError
from scalelab.study import jobs
from scalelab.study.jobs import (
    Job,
    child_env,
    mark_failed,
    pretrain_args,
    run_jobs,
    torchrun_command,
)
from scalelab.study.plan import Rung
from scalelab.study.slurm import SlurmConfig
from scalelab.study.study import Study


@dataclass(kw_only=True)
class RunConfig(Config):
    """How to execute a study's rungs."""

    executor: Literal["local", "torchrun", "ray", "slurm"] = "local"
    """local (subprocesses here), torchrun (each rung data-parallel), ray (a Ray cluster) or slurm (a Slurm job array)."""
    workers: int = 0
    """Rungs trained at the same time (0: 2 on a CPU machine with >= 2 cores; on GPUs, the GPUs times workers_per_gpu)."""
    workers_per_gpu: int = 1
    """local on GPUs: rungs sharing each GPU at once (small rungs leave a GPU mostly idle); worker k uses GPU k mod the GPUs."""
    threads: int = 0
    """torch threads per rung (0: the cores divided by workers; slurm: the job's CPUs per process)."""
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
    slurm: SlurmConfig = field(default_factory=SlurmConfig)
    """slurm: the jobs' resources and sbatch options."""

    def validate(self) -> None:
        if self.workers < 0 or self.threads < 0 or self.nproc_per_node < 1:
            raise UserError("workers and threads must be >= 0, nproc_per_node >= 1")
        if self.workers_per_gpu < 1:
            raise UserError("workers_per_gpu must be >= 1")


def resolve_parallelism(cfg: RunConfig, study: Study) -> tuple[int, int]:
    """``(workers, threads)`` for the study's rungs (see :func:`jobs.resolve_parallelism`);
    the local executor on GPUs runs ``workers_per_gpu`` rungs on each GPU by default."""
    cpu = jobs.cpu_only(study.plan.base.runtime.device)
    workers = cfg.workers
    if not workers and not cpu and cfg.executor == "local":
        workers = len(jobs.gpu_ids()) * cfg.workers_per_gpu
    return jobs.resolve_parallelism(
        workers, cfg.threads, cpu=cpu, single=cfg.executor == "torchrun"
    )


def rung_command(study: Study, rung: Rung, cfg: RunConfig, threads: int) -> list[str]:
    """The command line that trains ``rung`` (its config is ``RUN/rung.yaml``)."""
    tail = pretrain_args(study.rung_dir(rung), threads)
    if cfg.executor == "torchrun":
        return torchrun_command(cfg.nproc_per_node, shlex.split(cfg.torchrun_args), tail)
    return [sys.executable, *tail]


def _mark_failed(study: Study, rung: Rung, code: int) -> None:
    """A rung process that died without saying so (an exception, OOM) is recorded as failed."""
    mark_failed(study.rung_dir(rung), code)


class _Progress:
    """Study-level progress: one bar over the FLOPs (chinchilla count) of the rungs to
    train (a WSD branch's cool-down only), the rungs finished, and one ETA: the FLOPs left over the FLOP rate of this
    session, both live (a running rung's newest logged step, not its last checkpoint)."""

    def __init__(self, study: Study, todo: list[Rung], enabled: bool) -> None:
        self.study, self.todo = study, todo
        self.total = sum(r.cost("chinchilla") for r in todo) or 1.0
        self.bar = None
        self.t0 = time.monotonic()
        self.trained0 = 0.0
        if enabled:
            from tqdm.auto import tqdm

            # No tqdm rate or remaining time: those would count rungs, unequal in cost.
            self.bar = tqdm(
                total=self.total,
                desc="study",
                dynamic_ncols=True,
                file=sys.stderr,
                bar_format="{desc} {percentage:3.0f}%|{bar}| [{elapsed}{postfix}]",
            )
            self.trained0 = self._tally()[1]  # resumed rungs' earlier work is not this rate

    def _tally(self) -> tuple[int, float, float]:
        """``(rungs finished, FLOPs trained, FLOPs left)`` over the rungs to train, now."""
        finished, trained, left = 0, 0.0, 0.0
        for r in self.todo:
            status, frac = self.study.rung_progress(r)
            flops = r.cost("chinchilla")
            inherited = 1.0 - r.cost_fraction  # a WSD branch's steps done by its trunk
            frac = max(0.0, (frac - inherited) / r.cost_fraction)
            trained += frac * flops
            if status in ("completed", "failed"):
                finished += 1
            else:
                left += (1.0 - frac) * flops
        return finished, trained, left

    def update(self) -> None:
        if self.bar is None:
            return
        finished, trained, left = self._tally()
        rate = (trained - self.trained0) / max(time.monotonic() - self.t0, 1e-9)
        eta = left / rate if rate > 0 else float("nan")
        self.bar.n = self.total - left
        self.bar.set_postfix_str(
            f"{finished}/{len(self.todo)} rungs, {self.total:.2e} FLOPs, ETA {_hms(eta)}",
            refresh=False,
        )
        self.bar.refresh()

    def note(self, message: str) -> None:
        """One line on stderr, above the bar when there is one."""
        if self.bar is not None:
            self.bar.write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr)

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
    """Train every pending rung of ``study``; return {rung id: final status}.

    Holds the study's runner lock: a second runner on the same study is refused (UserError)
    instead of starting the same rungs again. With the slurm executor, ``failed`` also
    stands for a rung whose job ended before it did (the next run submits it again).
    """
    with study.runner_lock():
        return _run_pending(study, cfg)


def _run_pending(study: Study, cfg: RunConfig) -> dict[str, str]:
    from scalelab.data.prepare import prepare

    base = study.plan.base
    dataset = Path(base.dataset) if base.dataset else prepare(base.data, root=base.data_root)
    if Path(dataset).is_dir():  # a plan made before the data was prepared is checked here
        study.check_repetition(dataset)
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
        rung_cfg = _rung_config(study, rung, base.replace(dataset=dataset.resolve()))
        if rung_cfg.runtime.wandb and not rung_cfg.runtime.wandb_group:  # W&B: grouped by study
            rung_cfg = rung_cfg.replace(
                runtime=rung_cfg.runtime.replace(wandb_group=study.root.resolve().name)
            )
        rung_cfg.to_yaml(run_dir / "rung.yaml")
        todo.append(rung)
    results = {r.id: study.rung_status(r) for r in study.rungs}
    if not todo:
        study.write_results()
        return results
    if cfg.executor != "slurm":
        _refuse_slurm_rungs(study, todo)
    progress = _Progress(study, todo, cfg.progress)
    job_failures: dict[str, str] = {}
    try:
        # WSD branches start from their trunk's checkpoints. The local executor starts each
        # branch once its trunk completed, longest jobs first; the others train trunks (and
        # every rung trained from scratch) first, then the branches whose trunk completed.
        if cfg.executor == "local" and any(r.trunk for r in todo):
            job_failures = _execute(study, _longest_first(todo), cfg, progress)
        else:
            job_failures = _execute(study, [r for r in todo if not r.trunk], cfg, progress)
            ready = [r for r in todo if r.trunk and _trunk_done(study, r)]
            if ready:
                job_failures.update(_execute(study, ready, cfg, progress))
        waiting = [r for r in todo if r.trunk and not _trunk_done(study, r)]
        if waiting:
            progress.note(
                f"{len(waiting)} branch rung(s) wait for their trunk to complete "
                f"({', '.join(sorted({r.trunk or '' for r in waiting}))})"
            )
    finally:
        progress.close()
        study.write_results()
    results = {r.id: study.rung_status(r) for r in study.rungs}
    return {**results, **dict.fromkeys(job_failures, "failed")}


def _rung_config(study: Study, rung: Rung, base: Any) -> Any:
    """The pretraining config of ``rung`` (a WSD branch: starting from its trunk's
    checkpoint at its branch step)."""
    cfg = rung.pretrain_config(base)
    if rung.trunk:
        trunk = study.rung_dir(study.rung(rung.trunk))
        point = trunk / "checkpoints" / f"step-{rung.branch_step:08d}"
        cfg = cfg.replace(init_from=point.resolve())
    return cfg


def _trunk_done(study: Study, rung: Rung) -> bool:
    return study.rung_status(study.rung(rung.trunk or "")) == "completed"


def _longest_first(todo: list[Rung]) -> list[Rung]:
    """``todo`` by decreasing cost (the plan's time estimate, else its FLOPs): the longest
    jobs start first, so that two workers finish together (LPT scheduling, Graham 1969)."""
    return sorted(todo, key=lambda r: -(r.est_seconds or r.cost("chinchilla")))


def _ready(study: Study, rung: Rung) -> Callable[[], bool] | None:
    """A WSD branch may start once its trunk completed; other rungs at once (None)."""
    return (lambda: _trunk_done(study, rung)) if rung.trunk else None


def _execute(study: Study, todo: list[Rung], cfg: RunConfig, progress: _Progress) -> dict[str, str]:
    """Train ``todo`` with the configured executor: {rung id: message} of the Slurm jobs
    that ended before their rung did."""
    if not todo:
        return {}
    if cfg.executor == "slurm":
        return _run_slurm(study, todo, cfg, progress)
    workers, threads = resolve_parallelism(cfg, study)
    print(
        f"training {len(todo)} rung(s) with the {cfg.executor} executor: {workers} at a "
        f"time, {threads} thread(s) each; logs in {study.root / 'rungs'}/<rung>/train.log",
        file=sys.stderr,
    )
    run = _run_ray if cfg.executor == "ray" else _run_local
    run(study, todo, cfg, threads, workers, progress)
    return {}


def _run_slurm(
    study: Study, todo: list[Rung], cfg: RunConfig, progress: _Progress
) -> dict[str, str]:
    """The slurm executor: {rung id: message} for the rungs whose job ended before them."""
    from scalelab.study import slurm

    print(
        f"training {len(todo)} rung(s) with the slurm executor ({cfg.slurm.cluster} jobs); "
        f"logs in {study.root / 'rungs'}/<rung>/train.log and {slurm.log_folder(study, cfg.slurm)}",
        file=sys.stderr,
    )
    return slurm.run_rungs(
        study, todo, cfg.slurm, threads=cfg.threads, on_tick=progress.update, note=progress.note
    )


def _refuse_slurm_rungs(study: Study, todo: list[Rung]) -> None:
    """Another executor must not train rungs that Slurm jobs of this study still hold."""
    from scalelab.study import slurm

    busy = slurm.active_jobs(study)
    held = [f"{r.id} (job {busy[r.id][0]}, {busy[r.id][1]})" for r in todo if r.id in busy]
    if held:
        raise UserError(
            f"Slurm jobs of this study are still queued or running for {', '.join(held)}; "
            f"track them with `scalelab study run {study.root} --executor slurm` or cancel them"
        )


def _run_local(
    study: Study, todo: list[Rung], cfg: RunConfig, threads: int, workers: int, progress: _Progress
) -> None:
    def on_exit(rung: Rung) -> Callable[[int], None]:
        def done(code: int) -> None:
            if code not in (0, 130):
                _mark_failed(study, rung, code)
            study.write_results()

        return done

    from scalelab.train.pretrain import PretrainConfig, pretrain

    def call(rung: Rung) -> Callable[[], Any]:
        run_dir = study.rung_dir(rung)
        rung_cfg = PretrainConfig.load(run_dir / "rung.yaml")
        runtime = rung_cfg.runtime.replace(threads=threads, progress=False)
        return lambda: pretrain(rung_cfg.replace(runtime=runtime), run_dir)

    todo_jobs = [
        Job(
            r.id,
            rung_command(study, r, cfg, threads),
            study.rung_dir(r) / "train.log",
            on_exit(r),
            call(r) if cfg.in_process else None,
            _ready(study, r),
        )
        for r in todo
    ]
    gpus = [] if jobs.cpu_only(study.plan.base.runtime.device) else jobs.gpu_ids()
    run_jobs(
        todo_jobs,
        workers=workers,
        threads=threads,
        on_tick=progress.update,
        in_process=cfg.in_process,
        devices=gpus if cfg.executor == "local" and len(gpus) > 0 else None,
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
            child_env(threads),
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


def status_text(study: Study) -> str:
    """Where a study stands, as a table (``scalelab study status``)."""
    rows = study.result_rows()
    conv = study.plan.flops_convention
    head = f"{'rung':<10}{'role':<8}{'status':<12}{'progress':>9}{'N':>11}{'D':>12}{'loss':>8}{'time':>8}"
    lines = [head, "-" * len(head)]
    total = done = 0.0
    for rung, r in zip(study.rungs, rows, strict=True):
        c = r[f"C_{conv}"] or 0.0
        frac = study.rung_progress(rung)[1]  # live for a running rung
        total += c
        done += c * frac
        loss = f"{r['final_val_loss']:.4f}" if isinstance(r["final_val_loss"], float) else "–"
        t = f"{r['wall_time_s']:.0f}s" if r["wall_time_s"] else "–"
        lines.append(
            f"{r['rung']:<10}{r['role']:<8}{r['status']:<12}{frac:>9.0%}{r['N']:>11,}{r['D']:>12,}{loss:>8}{t:>8}"
        )
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    lines.append(
        f"{done / total if total else 0:.1%} of {total:.3e} FLOPs done; "
        + ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
    )
    from scalelab.study.slurm import jobs_line

    slurm_line = jobs_line(study)
    if slurm_line:
        lines.append(slurm_line)
    return "\n".join(lines)


def run_and_fit(study: Study, run_cfg: RunConfig, fit_cfg: Any) -> int:
    """``scalelab study run``: train the pending rungs, fit, report; 1 if a rung failed."""
    from scalelab.study.fit import describe_fit, fit_and_report

    with study.runner_lock():  # the fit too: one runner writes the study's fits and report
        statuses = _run_pending(study, run_cfg)
        summary = fit_and_report(study, fit_cfg)
    failed = [k for k, v in statuses.items() if v == "failed"]
    if summary is not None:
        print(describe_fit(summary, study))
    if failed:
        logs = "their train.log" + (
            ", and the job logs above" if run_cfg.executor == "slurm" else ""
        )
        print(
            f"scalelab: {len(failed)} rung(s) failed: {', '.join(failed)} (see {logs})",
            file=sys.stderr,
        )
        return 1
    return 0
