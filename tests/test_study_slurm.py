"""The slurm executor through submitit: a real tiny study on submitit's local executor (the
same submission, tracking and resume code as on a cluster), and, with stand-in ``srun``,
``sbatch`` and ``sacct`` programs, the sbatch script and the job states of a Slurm cluster."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scalelab.cli import main
from scalelab.errors import UserError
from scalelab.study.study import Study
from scalelab.utils.io import read_json

submitit = pytest.importorskip("submitit")

from scalelab.study import slurm  # noqa: E402
from scalelab.study.jobs import RungTask  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _plan(dataset: Path, out: Path) -> Study:
    assert main([
        "plan", "--design", "grid", "--sizes", "3e3,8e3", "--tokens", "6400", "--holdout", "0",
        "--min-tokens", "1024", "--base.dataset", str(dataset), "--base.seq-len", "32",
        "--base.eval-tokens", "1024", "--base.runtime.checkpoint-every-s", "0.2",
        "--policy.rule", "fixed", "--policy.batch-tokens", "128", "--out", str(out),
    ]) == 0  # fmt: skip
    return Study.load(out)


def _run_args(study: Path, *extra: str) -> list[str]:
    return [
        "study", "run", str(study), "--executor", "slurm", "--slurm.cluster", "local",
        "--slurm.poll-s", "0.3", "--threads", "1", "--no-progress", *extra,
    ]  # fmt: skip


def _records(study: Path) -> dict:
    return read_json(study / "slurm" / "jobs.json")["rungs"]


def test_local_jobs_fail_resubmit_outlive_the_submitter_and_finish_once(
    tmp_path, tiny_bpe_dataset, capsys
):
    root = tmp_path / "study"
    study = _plan(tiny_bpe_dataset, root)
    capsys.readouterr()

    # 1. Both jobs fail before training (their setup line exits 3): reported with their logs.
    assert main(_run_args(root, "--slurm.setup", "exit 3")) == 1
    err = capsys.readouterr().err
    first = _records(root)
    assert set(first) == {"r00", "r01"}
    for rid, rec in first.items():
        assert rec["attempt"] == 1 and rec["outcome"] == "ended early" and rec["state"] == "FAILED"
        assert f"rung {rid}: job {rec['job_id']} ended (FAILED)" in err and rec["log"] in err
    assert [study.rung_status(r) for r in study.rungs] == ["pending", "pending"]

    # 2. The next run submits them again; it is killed (SIGKILL) once both rungs have started.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(tmp_path / "submitter.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "scalelab", *_run_args(root)], env=env, cwd=ROOT, stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    logs = [root / "rungs" / r.id / "train.log" for r in study.rungs]
    deadline = time.monotonic() + 120
    while not all(p.is_file() for p in logs) and proc.poll() is None:
        assert time.monotonic() < deadline, (tmp_path / "submitter.log").read_text()
        time.sleep(0.1)
    assert proc.poll() is None, (tmp_path / "submitter.log").read_text()
    proc.kill()
    proc.wait()
    second = _records(root)
    for rid, rec in second.items():
        assert rec["attempt"] == 2 and rec["job_id"] != first[rid]["job_id"]
        assert rec["previous"][-1]["job_id"] == first[rid]["job_id"]

    # 3. A new run follows the jobs that outlived their submitter: nothing is submitted again.
    assert main(_run_args(root)) == 0
    err = capsys.readouterr().err
    assert "submitted" not in err and "2 rung(s) already have a job queued or running" in err
    third = _records(root)
    for rid, rec in third.items():
        assert rec["job_id"] == second[rid]["job_id"] and rec["attempt"] == 2
        assert rec["outcome"] == "completed" and rec["exit_code"] == 0
    for rung, path in zip(study.rungs, logs, strict=True):
        summary = study.rung_summary(rung)
        assert summary["status"] == "completed" and summary["tokens"] == rung.tokens
        assert summary["step"] == summary["total_steps"] == math.ceil(rung.tokens / 128)
        assert summary["params"]["non_embedding"] == rung.N
        assert 0 < summary["final_val_loss"] < math.log(512) + 0.5
        text = path.read_text()
        assert text.count("completed:") == 1 and "in use" not in text  # trained once
    rows = (root / "results.csv").read_text().splitlines()[1:]
    assert [r.split(",")[2] for r in rows] == ["completed", "completed"]

    # 4. A rerun has nothing to submit and leaves the records and the rungs as they were.
    walls = [study.rung_summary(r)["wall_time_s"] for r in study.rungs]
    assert main(_run_args(root)) == 0
    assert _records(root) == third
    assert [study.rung_summary(r)["wall_time_s"] for r in study.rungs] == walls
    capsys.readouterr()
    assert main(["study", "status", str(root)]) == 0
    assert "slurm jobs: none queued or running" in capsys.readouterr().out


def _stand_in(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """``srun``, ``sbatch`` (job 4242) and ``sacct`` (the states in ``SACCT_OUT``) on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _stand_in(bin_dir, "srun", "exit 0")
    _stand_in(bin_dir, "sbatch", 'echo "Submitted batch job 4242"')
    sacct_out = tmp_path / "sacct.txt"
    _stand_in(bin_dir, "sacct", f'cat "{sacct_out}"')
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return sacct_out


def test_sbatch_script_carries_the_slurm_options(tmp_path, fake_slurm):
    cfg = slurm.SlurmConfig(
        partition="gpu", account="lab", qos="high", time_min=90, gpus_per_node=4,
        cpus_per_task=16, mem_gb=64, nodes=2, constraint="a100", array_parallelism=1,
        extra="mail-type=END exclude=n1,n2 --exclusive", setup=("module load cuda",),
    )  # fmt: skip
    executor = slurm.make_executor(cfg, tmp_path / "logs", "scalelab-iso")
    with executor.batch():
        jobs = [executor.submit(RungTask(rung=r, run_dir=str(tmp_path / r))) for r in ("a", "b")]
    assert [j.job_id for j in jobs] == ["4242_0", "4242_1"]
    script = (tmp_path / "logs" / "4242_submission.sh").read_text()
    flags = {line for line in script.splitlines() if line.startswith("#SBATCH")}
    expected = {
        "--job-name=scalelab-iso", "--partition=gpu", "--account=lab", "--qos=high",
        "--time=90", "--nodes=2", "--ntasks-per-node=1", "--gpus-per-node=4",
        "--cpus-per-task=16", "--mem=64GB", "--constraint=a100", "--array=0-1%1",
        "--mail-type=END", "--exclude=n1,n2", "--exclusive", "--signal=USR2@120",
        f"--output={tmp_path / 'logs'}/%A_%a_0_log.out",
    }  # fmt: skip
    assert {f"#SBATCH {x}" for x in expected} <= flags
    assert not any(f.startswith("#SBATCH --error") for f in flags)  # one log per job
    assert "module load cuda" in script.split("# command")[0]
    # The defaults ask for nothing the cluster would not give by default.
    text = slurm.submitit_parameters(slurm.SlurmConfig(), "x")
    assert not {"gpus_per_node", "cpus_per_task", "mem_gb", "slurm_partition"} & set(text)


def test_bad_slurm_options_are_one_line_errors(tmp_path):
    for bad, words in [
        ({"extra": "array=0-3"}, "sets --array itself"),
        ({"extra": "a=b 'unclosed"}, "slurm.extra"),
        ({"nodes": 2, "cluster": "local"}, "nodes must be 1"),
        ({"gpus_per_node": -1}, ">= 0"),
    ]:
        with pytest.raises(UserError, match=words):
            slurm.SlurmConfig(**bad)
    if shutil.which("sbatch") is None:  # not on a Slurm login node
        with pytest.raises(UserError, match="--slurm.cluster local"):
            slurm.make_executor(slurm.SlurmConfig(), tmp_path, "x")


def test_rung_task_commands_on_the_node(tmp_path, monkeypatch):
    run = tmp_path / "r00"
    one = RungTask(rung="r00", run_dir=str(run), threads=3).command()
    assert one == ([sys.executable, "-m", "scalelab", "pretrain", str(run.resolve()), "--config",
                    str(run.resolve() / "rung.yaml"), "--runtime.threads", "3",
                    "--no-runtime.progress"], 3)  # fmt: skip
    cmd, threads = RungTask(rung="r00", run_dir=str(run), threads=8, gpus_per_node=2).command()
    assert cmd[1:6] == ["-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone"]
    assert cmd[6:] == one[0][1:-2] + ["8", "--no-runtime.progress"] and threads == 8
    # Node 1 of a 2-node Slurm job: torchrun with a c10d rendezvous at the first node.
    for key, value in {
        "SUBMITIT_EXECUTOR": "slurm", "SLURM_JOB_ID": "77", "SLURM_JOB_NUM_NODES": "2",
        "SLURM_NODEID": "1", "SLURM_JOB_NODELIST": "gpu[07-08]", "SLURM_NTASKS": "2",
        "SLURM_PROCID": "1", "SLURM_LOCALID": "0", "MASTER_PORT": "29411",
    }.items():  # fmt: skip
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    cmd, _ = RungTask(rung="r00", run_dir=str(run), threads=4, gpus_per_node=4, nodes=2).command()
    assert cmd[1:5] == ["-m", "torch.distributed.run", "--nproc_per_node", "4"]
    assert cmd[5:13] == [
        "--nnodes", "2", "--rdzv-backend", "c10d", "--rdzv-endpoint", "gpu07:29411",
        "--rdzv-id", "77",
    ]  # fmt: skip
    assert "--standalone" not in cmd and cmd[13:16] == ["-m", "scalelab", "pretrain"]


def test_sacct_states_decide_what_is_still_running(tmp_path, tiny_bpe_dataset, fake_slurm, capsys):
    root = tmp_path / "study"
    study = _plan(tiny_bpe_dataset, root)
    fake_slurm.write_text(
        "JobID|State|NodeList\n5150_0|RUNNING|n1\n5150_1|FAILED|n2\n5150_[2-3%1]|PENDING|\n"
        "5151|CANCELLED by 1000|\n"
    )
    ids = {"r00": "5150_0", "r01": "5150_1", "x02": "5150_2", "x03": "5151"}
    recs = {k: {"job_id": v, "cluster": "slurm", "folder": str(tmp_path / "logs"), "outcome": None}
            for k, v in ids.items()}  # fmt: skip
    slurm.save_jobs(study, recs)
    assert slurm.active_jobs(study) == {"r00": ("5150_0", "RUNNING"), "x02": ("5150_2", "PENDING")}
    capsys.readouterr()
    assert main(["study", "status", str(root)]) == 0
    assert "slurm jobs: 1 pending, 1 running" in capsys.readouterr().out
    # Another executor must leave r00 to its job.
    assert main(["study", "run", str(root), "--no-progress", "--only", "r00"]) == 2
    err = capsys.readouterr().err
    assert "still queued or running for r00 (job 5150_0, RUNNING)" in err
    assert json.loads((root / "slurm" / "jobs.json").read_text())["rungs"] == recs
    # Without accounting (no sacct), squeue's list of queued and running jobs decides.
    (fake_slurm.parent / "bin" / "sacct").unlink()
    squeue = "echo '5150_1|RUNNING'; echo '5150_[2-3%1]|PENDING'"
    _stand_in(fake_slurm.parent / "bin", "squeue", squeue)
    assert slurm.active_jobs(study) == {"r01": ("5150_1", "RUNNING"), "x02": ("5150_2", "PENDING")}
