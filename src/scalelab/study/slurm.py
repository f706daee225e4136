"""The ``slurm`` executor: a study's pending rungs as one Slurm job array, through submitit.

Each array task trains one rung with the ordinary ``scalelab pretrain`` process, its command
built on the node from the same pieces as every other executor's (:mod:`scalelab.study.jobs`):
plain ``python -m scalelab pretrain`` for a one-GPU (or CPU) rung, under ``torchrun
--nproc_per_node G`` for ``gpus_per_node`` G > 1, and on ``nodes`` N > 1 one submitit task per
node, each starting torchrun with a c10d rendezvous at the job's first node (address and
port from submitit's job environment). torchrun rather than submitit's own one task per GPU:
the rung stays the subprocess it is everywhere else (its ``train.log``, SIGTERM ->
checkpoint -> exit 130, its exit codes), and torch's launcher sets up the process group.

The jobs outlive the submitting ``study run``. Their ids are kept in ``STUDY/slurm/jobs.json``;
a later ``study run`` tracks the rungs whose job is still queued or running (sacct, through
submitit's job objects; squeue where there is no accounting) instead of submitting them
again, and submits again the rungs whose job ended before the rung did (cancelled, node
failure, out of time): the rung resumes from its last checkpoint. A rung that failed in
training is reported and left to ``--retry-failed``, as with the other executors. Near the
time limit (submitit asks for USR2 ``SIGNAL_DELAY_S`` before it) the rung checkpoints and its
job is requeued, up to ``max_timeouts`` times.

``slurm.cluster local`` runs the same path with submitit's local executor (the jobs are
processes on this machine): to try a study's settings without a cluster, and for tests.
"""

from __future__ import annotations

import getpass
import shlex
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from scalelab.config import Config
from scalelab.errors import UserError
from scalelab.study.jobs import SIGNAL_DELAY_S, RungTask, mark_failed
from scalelab.study.plan import Rung
from scalelab.study.study import Study
from scalelab.utils.io import atomic_write_json, read_json

# Job states in which a job may still run (submitit's InfoWatcher.is_done list, plus the
# other transient states of sacct/squeue); anything else has ended.
ACTIVE_STATES = frozenset({
    "READY", "PENDING", "RUNNING", "UNKNOWN", "REQUEUED", "COMPLETING", "PREEMPTED", "CONFIGURING",
    "RESIZING", "SUSPENDED", "REQUEUE_HOLD", "REQUEUE_FED", "SIGNALING", "STAGE_OUT",
})  # fmt: skip
# sbatch options that scalelab's job tracking relies on (the array, the log files).
_RESERVED = frozenset({"array", "output", "error", "open-mode"})


@dataclass(kw_only=True)
class SlurmConfig(Config):
    """Slurm jobs of ``study run --executor slurm`` (submitted through submitit)."""

    cluster: Literal["slurm", "local"] = "slurm"
    """slurm (sbatch here), or local: submitit's local executor runs the same jobs as processes on this machine (to try it)."""
    partition: str | None = None
    """Partition (sbatch --partition; none: the cluster's default)."""
    account: str | None = None
    """Account charged (sbatch --account)."""
    qos: str | None = None
    """Quality of service (sbatch --qos)."""
    time_min: int = 240
    """Time limit of each job in minutes; a rung that reaches it checkpoints and is requeued."""
    max_timeouts: int = 3
    """Times a rung's job may reach its time limit and be requeued."""
    nodes: int = 1
    """Nodes per rung (more than 1: torchrun across them, rendezvous at the first)."""
    gpus_per_node: int = 0
    """GPUs per node, one training process each (0: CPU jobs)."""
    cpus_per_task: int = 0
    """CPUs per node for a rung (0: the cluster's default)."""
    mem_gb: float = 0.0
    """Memory per node in GB (0: the cluster's default)."""
    constraint: str | None = None
    """Node features required (sbatch --constraint)."""
    array_parallelism: int = 0
    """Rungs of the array running at once (0: no limit of scalelab's; submitit's is 256)."""
    extra: str = ""
    """More sbatch options, space-separated key=value (a bare key for a switch), e.g. 'mail-type=END exclude=n1,n2'."""
    setup: tuple[str, ...] = ()
    """Shell lines run in each job before training, e.g. 'module load cuda,source .venv/bin/activate'."""
    log_folder: Path | None = None
    """Job scripts and logs (default STUDY/slurm/logs; on a disk the nodes share)."""
    poll_s: float = 30.0
    """Seconds between two looks at the jobs' states while tracking them."""

    def validate(self) -> None:
        if self.nodes < 1 or self.time_min < 1 or self.max_timeouts < 0:
            raise UserError("slurm.nodes and slurm.time_min must be >= 1, max_timeouts >= 0")
        counts = (self.gpus_per_node, self.cpus_per_task, self.mem_gb, self.array_parallelism)
        if min(counts) < 0 or self.poll_s <= 0:
            raise UserError(
                "slurm.gpus_per_node, cpus_per_task, mem_gb, array_parallelism must be >= 0, "
                "poll_s > 0"
            )
        if self.cluster == "local" and self.nodes > 1:
            raise UserError("slurm.cluster local runs on this machine only: slurm.nodes must be 1")
        extra_sbatch_options(self.extra)


def extra_sbatch_options(text: str) -> dict[str, Any]:
    """``slurm.extra`` as sbatch options: ``{'mail-type': 'END', 'exclusive': True}``."""
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise UserError(f"slurm.extra: {exc} in {text!r}") from None
    out: dict[str, Any] = {}
    for word in words:
        key, sep, value = word.partition("=")
        key = key.lstrip("-").replace("_", "-")
        if not key or not key.replace("-", "").isalnum():
            raise UserError(f"slurm.extra: {word!r} is not an sbatch option (key=value or key)")
        if key in _RESERVED:
            raise UserError(f"slurm.extra: scalelab sets --{key} itself")
        out[key] = value if sep else True
    return out


def submitit_parameters(cfg: SlurmConfig, name: str) -> dict[str, Any]:
    """The ``update_parameters`` of submitit's AutoExecutor for ``cfg``: the shared ones
    (time, nodes, GPUs, CPUs, memory), and ``slurm_*`` / ``local_*`` for one cluster each."""
    params: dict[str, Any] = {
        "name": name,
        "timeout_min": cfg.time_min,
        "nodes": cfg.nodes,
        "tasks_per_node": 1,  # one launcher per node; torchrun starts a process per GPU
        "stderr_to_stdout": True,  # one log per job
        "slurm_signal_delay_s": SIGNAL_DELAY_S,
    }
    if cfg.gpus_per_node:
        params["gpus_per_node"] = cfg.gpus_per_node
    if cfg.cpus_per_task:
        params["cpus_per_task"] = cfg.cpus_per_task
    if cfg.mem_gb:
        params["mem_gb"] = cfg.mem_gb
    for key in ("partition", "account", "qos", "constraint"):
        if getattr(cfg, key):
            params[f"slurm_{key}"] = getattr(cfg, key)
    if cfg.array_parallelism:
        params["slurm_array_parallelism"] = cfg.array_parallelism
    extra = extra_sbatch_options(cfg.extra)
    if extra:
        params["slurm_additional_parameters"] = extra
    if cfg.setup:
        params["slurm_setup"] = params["local_setup"] = list(cfg.setup)
    return params


def _submitit() -> Any:
    try:
        import submitit
    except ImportError:
        raise UserError(
            "the slurm executor needs submitit: pip install 'scalelab[slurm]'"
        ) from None
    return submitit


def log_folder(study: Study, cfg: SlurmConfig) -> Path:
    """Where submitit writes the job scripts, pickles and logs."""
    return Path(cfg.log_folder or study.root / "slurm" / "logs").resolve()


def make_executor(cfg: SlurmConfig, folder: Path, name: str) -> Any:
    """submitit's AutoExecutor for ``cfg.cluster`` with the jobs' parameters set."""
    submitit = _submitit()
    if cfg.cluster == "slurm" and shutil.which("sbatch") is None:
        raise UserError(
            "the slurm executor needs sbatch (run it on a Slurm login node), "
            "or try the same jobs on this machine with --slurm.cluster local"
        )
    try:
        executor = submitit.AutoExecutor(
            folder=folder,
            cluster=cfg.cluster,
            slurm_max_num_timeout=cfg.max_timeouts,
            local_max_num_timeout=cfg.max_timeouts,
        )
        executor.update_parameters(**submitit_parameters(cfg, name))
    except (RuntimeError, ValueError) as exc:
        raise UserError(f"submitit refused the Slurm settings: {_first_line(exc)}") from None
    return executor


# --------------------------------------------------------------------------- the submitter
def run_rungs(
    study: Study,
    todo: list[Rung],
    cfg: SlurmConfig,
    *,
    threads: int,
    on_tick: Callable[[], None],
    note: Callable[[str], None],
) -> dict[str, str]:
    """Train ``todo`` as Slurm jobs and follow them until every job has ended.

    A rung whose recorded job is still queued or running is tracked, not submitted again;
    the others go out as one job array. Returns {rung id: message} for the rungs whose job
    ended before the rung did (the next call submits them again).
    """
    records = load_jobs(study)
    jobs = _Jobs()
    open_ = {r.id: records[r.id] for r in todo if r.id in records}
    open_ = {rid: rec for rid, rec in open_.items() if rec.get("outcome") is None}  # not settled
    jobs.refresh(list(open_.values()))
    tracked: list[Rung] = []
    fresh: list[Rung] = []
    for rung in todo:
        if rung.id in open_:
            state = jobs.state(open_[rung.id])
            if state in ACTIVE_STATES:
                tracked.append(rung)
                continue
            text, _ = _settle(study, rung, open_[rung.id], jobs, state)  # ended unwatched
            if text:
                note(text)
        status = study.rung_status(rung)
        if status == "running":  # a live process holds its directory
            note(f"scalelab: rung {rung.id} is being trained by another process; not submitted")
        elif status not in ("completed", "failed"):
            fresh.append(rung)
    save_jobs(study, records)
    if tracked:
        ids = ", ".join(f"{r.id} ({records[r.id]['job_id']})" for r in tracked)
        note(f"scalelab: {len(tracked)} rung(s) already have a job queued or running: {ids}")
    if fresh:
        _submit(study, fresh, cfg, threads, records, jobs)
        ids = ", ".join(f"{r.id} ({records[r.id]['job_id']})" for r in fresh)
        note(f"scalelab: submitted {len(fresh)} {cfg.cluster} job(s): {ids}")
    return _track(study, tracked + fresh, cfg, records, jobs, on_tick, note)


def _submit(
    study: Study,
    rungs: list[Rung],
    cfg: SlurmConfig,
    threads: int,
    records: dict[str, dict[str, Any]],
    jobs: _Jobs,
) -> None:
    """Submit ``rungs`` (one job array on Slurm) and record their jobs in ``jobs.json``."""
    folder = log_folder(study, cfg)
    executor = make_executor(cfg, folder, name=f"scalelab-{study.root.resolve().name}")
    tasks = [
        RungTask(
            rung=r.id,
            run_dir=str(study.rung_dir(r).resolve()),
            threads=threads,
            gpus_per_node=cfg.gpus_per_node,
            nodes=cfg.nodes,
        )
        for r in rungs
    ]
    try:
        with executor.batch():
            submitted = [executor.submit(task) for task in tasks]
    except (RuntimeError, OSError) as exc:  # sbatch's refusal, as submitit raises it
        raise UserError(f"submitting {len(tasks)} rung(s) failed: {_first_line(exc)}") from None
    for rung, job in zip(rungs, submitted, strict=True):
        old = records.get(rung.id) or {}
        earlier = [{k: old.get(k) for k in ("job_id", "state", "outcome", "log")}] if old else []
        records[rung.id] = {
            "job_id": job.job_id,
            "cluster": cfg.cluster,
            "folder": str(folder),
            "log": str(job.paths.stdout),
            "attempt": int(old.get("attempt", 0)) + 1,
            "submitted_at": _now(),
            "state": "SUBMITTED",
            "outcome": None,
            "previous": [*old.get("previous", []), *earlier][-10:],
        }
        jobs.live[job.job_id] = job
    save_jobs(study, records)


def _track(
    study: Study,
    rungs: list[Rung],
    cfg: SlurmConfig,
    records: dict[str, dict[str, Any]],
    jobs: _Jobs,
    on_tick: Callable[[], None],
    note: Callable[[str], None],
) -> dict[str, str]:
    """Poll the rungs' jobs until all have ended; {rung id: message} for early ends."""
    pending = {r.id: r for r in rungs}
    problems: dict[str, str] = {}
    last = ""
    try:
        while pending:
            jobs.refresh([records[rid] for rid in pending])
            states = {rid: jobs.state(records[rid]) for rid in pending}
            changed = False
            for rid, state in states.items():
                changed |= records[rid].get("state") != state
                records[rid]["state"] = state
                if state in ACTIVE_STATES:
                    continue
                text, early = _settle(study, pending.pop(rid), records[rid], jobs, state)
                study.write_results()
                if text:
                    note(text)
                if early and text:
                    problems[rid] = text
            if changed:
                save_jobs(study, records)
            counts = Counter(states[rid].lower() for rid in pending)
            line = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
            if pending and line != last:
                done = len(rungs) - len(pending)
                note(f"scalelab: jobs {line}; {done}/{len(rungs)} ended")
                last = line
            on_tick()
            if pending:
                time.sleep(cfg.poll_s)
    except KeyboardInterrupt:
        save_jobs(study, records)
        ids = " ".join(records[rid]["job_id"] for rid in pending)
        stop = f"; `scancel {ids}` stops them" if cfg.cluster == "slurm" else ""
        note(
            f"\nscalelab: {len(pending)} job(s) go on without this process; "
            f"`scalelab study run {study.root} --executor slurm` follows them again{stop}"
        )
        raise
    if problems:
        note(
            f"scalelab: {len(problems)} rung(s) whose job ended early are submitted again by "
            f"the next `scalelab study run {study.root} --executor slurm`"
        )
    return problems


def _settle(
    study: Study, rung: Rung, rec: dict[str, Any], jobs: _Jobs, state: str
) -> tuple[str | None, bool]:
    """Record how a rung's job ended: ``(line to show or None, ended before the rung)``."""
    job = jobs.job(rec)
    run_dir = study.rung_dir(rung)
    code: int | None = None
    if job.paths.result_pickle.exists():
        try:
            code = int(job.result())
        except Exception as exc:  # noqa: BLE001 - the job function's own error, as submitit gives it
            code = 1
            mark_failed(run_dir, code, f"job error: {_error_line(str(exc))}")
        if code not in (0, 130):
            mark_failed(run_dir, code)  # the node did it already, unless it was killed first
    status = study.rung_status(rung)
    early = status not in ("completed", "failed")
    rec.update(state=state, exit_code=code, ended_at=_now())
    rec["outcome"] = status if not early else "ended early"
    logs = f"job log: {rec.get('log') or job.paths.stdout}; rung log: {run_dir / 'train.log'}"
    if status == "failed":
        message = (study.rung_summary(rung) or {}).get("message", "")
        return f"scalelab: rung {rung.id} failed ({message}); {logs}", False
    if early:
        how = state if code is None else f"{state}, exit code {code}"
        return (
            f"scalelab: rung {rung.id}: job {rec['job_id']} ended ({how}) before the rung finished; {logs}",
            True,
        )
    return None, False


def _error_line(text: str) -> str:
    """The last line of the traceback in submitit's FailedJobError text."""
    lines = [ln.strip() for ln in text.splitlines()]
    end = next(
        (i for i, ln in enumerate(lines) if ln.startswith("You can check full logs")), len(lines)
    )
    body = [ln for ln in lines[:end] if ln and not set(ln) <= {"-"}]
    return body[-1] if body else "unknown error"


# --------------------------------------------------------------------------- job records
def jobs_path(study: Study) -> Path:
    """``STUDY/slurm/jobs.json``: the job of every rung submitted, and how it ended."""
    return study.root / "slurm" / "jobs.json"


def load_jobs(study: Study) -> dict[str, dict[str, Any]]:
    """{rung id: its job's record} from ``jobs.json`` (empty when there is none)."""
    path = jobs_path(study)
    if not path.is_file():
        return {}
    try:
        data = read_json(path)
    except (OSError, ValueError):
        raise UserError(f"{path} is not readable JSON; remove it to forget those jobs") from None
    rungs = data.get("rungs") if isinstance(data, dict) else None
    if not isinstance(rungs, dict):
        raise UserError(f"{path}: not a scalelab job record (no rungs)")
    return {k: v for k, v in rungs.items() if isinstance(v, dict) and v.get("job_id")}


def save_jobs(study: Study, records: dict[str, dict[str, Any]]) -> None:
    atomic_write_json(jobs_path(study), {"version": 1, "rungs": records})


class _Jobs:
    """submitit job objects for recorded jobs, and their states: one sacct call (or squeue,
    without accounting) per :meth:`refresh` for every Slurm job; local jobs by process."""

    def __init__(self) -> None:
        self.submitit = _submitit()
        self.live: dict[str, Any] = {}  # job id -> the job object of this session's submission
        self.queue: dict[str, str] | None = None  # squeue's states when there is no sacct

    def job(self, rec: dict[str, Any]) -> Any:
        if rec["job_id"] in self.live:
            return self.live[rec["job_id"]]
        cls = self.submitit.SlurmJob if rec.get("cluster") == "slurm" else self.submitit.LocalJob
        return cls(folder=rec["folder"], job_id=rec["job_id"])

    def refresh(self, records: list[dict[str, Any]]) -> None:
        slurm = [r for r in records if r.get("cluster") == "slurm"]
        for rec in slurm:
            self.job(rec)  # registers it with submitit's watcher
        if not slurm:
            return
        if shutil.which("sacct"):
            self.submitit.SlurmJob.watcher.update()
        else:
            self.queue = _squeue_states(self.submitit)

    def state(self, rec: dict[str, Any]) -> str:
        """The job's state word: PENDING, RUNNING, ... (ended ones: COMPLETED, FAILED, ...)."""
        job = self.job(rec)
        if job.paths.result_pickle.exists():
            return "COMPLETED"
        if rec.get("cluster") != "slurm":
            if getattr(job, "_process", None) is not None:  # submitted by this process
                code = job._process.poll()
                return "RUNNING" if code is None else "ENDED" if code == 0 else "FAILED"
            return "RUNNING" if _local_alive(rec["job_id"]) else "ENDED"
        if self.queue is not None:
            return self.queue.get(rec["job_id"], "ENDED")
        state = job.watcher.get_state(job.job_id, mode="cache")
        return (state.split() or ["UNKNOWN"])[0].upper()  # "CANCELLED by 123" -> CANCELLED

    def active(self, rec: dict[str, Any]) -> bool:
        return self.state(rec) in ACTIVE_STATES


def _squeue_states(submitit: Any) -> dict[str, str]:
    """{job id: state} of this user's queued and running jobs (squeue; arrays expanded)."""
    try:
        out = subprocess.run(
            ["squeue", "-h", "-u", getpass.getuser(), "-o", "%i|%T"],
            capture_output=True, text=True, timeout=120, check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError) as exc:
        raise UserError(
            f"cannot ask Slurm for the jobs' states (no sacct; squeue: {exc})"
        ) from None
    info = submitit.SlurmJob.watcher.read_info("JobID|State\n" + out)
    return {k: v["State"] for k, v in info.items()}


def _local_alive(job_id: str) -> bool:
    """Whether the local job's controller (its pid is the job id) still runs."""
    try:
        pid = int(job_id)
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (ValueError, OSError):
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z" and b"submitit" in cmdline


def active_jobs(study: Study) -> dict[str, tuple[str, str]]:
    """{rung id: (job id, state)} of the study's jobs that are still queued or running."""
    records = {k: v for k, v in load_jobs(study).items() if v.get("outcome") is None}
    if not records:
        return {}
    try:
        jobs = _Jobs()
    except UserError:  # submitit is gone: nothing can be asked
        return {}
    jobs.refresh(list(records.values()))
    states = {rid: jobs.state(rec) for rid, rec in records.items()}
    return {rid: (records[rid]["job_id"], s) for rid, s in states.items() if s in ACTIVE_STATES}


def jobs_line(study: Study) -> str | None:
    """``study status``'s line on the study's Slurm jobs (None: it never had any)."""
    if not jobs_path(study).is_file():
        return None
    try:
        _submitit()
    except UserError:
        return f"slurm jobs: in {jobs_path(study)} (install submitit to see their states)"
    active = active_jobs(study)
    counts = Counter(state.lower() for _, state in active.values())
    what = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "none queued or running"
    return f"slurm jobs: {what} ({jobs_path(study)})"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
