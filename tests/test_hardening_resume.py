"""Resume against corrupt state: broken checkpoints, leftover temporaries, SIGKILL during
checkpoint writes, two runners on one study, and a study's live progress."""

from __future__ import annotations

import multiprocessing
import os
import random
import shutil
import signal
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tests.conftest import TINY_PRETRAIN
from tests.test_study_e2e import _plan_args

from scalelab.cli import main
from scalelab.study.study import Study
from scalelab.train.checkpoint import MANIFEST, checkpoint_dirs, step_dirs
from scalelab.train.lock import holder_pid, run_lock
from scalelab.train.trainer import Trainer
from scalelab.utils.io import atomic_write_json, read_json, read_jsonl

# fp32 and deterministic kernels: a resumed run must retrace the uninterrupted one exactly.
EXACT = ["--runtime.precision", "fp32", "--runtime.deterministic", "--tokens", "25600"]
STEPS = 100
EVERY_STEP = ["--runtime.checkpoint-every-s", "0"]
# fork() shares the imported torch/transformers, so a killable run starts in well under a
# second instead of the ~7 s of a fresh interpreter.
FORK = multiprocessing.get_context("fork")


def _args(run_dir: Path, dataset: Path, *extra: str) -> list[str]:
    return ["pretrain", str(run_dir), "--dataset", str(dataset), *TINY_PRETRAIN, *EXACT, *extra]


def _curve(run_dir: Path) -> list[tuple[str, int, float]]:
    return [
        (r["type"], r["step"], r.get("loss", r.get("val_loss")))
        for r in read_jsonl(run_dir / "metrics.jsonl")
    ]


def _assert_same_result(run_dir: Path, ref: Path) -> None:
    a, b = read_json(ref / "summary.json"), read_json(run_dir / "summary.json")
    assert b["status"] == "completed" and b["step"] == STEPS
    assert b["final_val_loss"] == a["final_val_loss"] and b["last_eval"] == a["last_eval"]
    assert _curve(run_dir) == _curve(ref)
    got, want = (load_file(d / "model" / "model.safetensors") for d in (run_dir, ref))
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_bpe_dataset) -> Path:
    """The uninterrupted run every interrupted one must reproduce bit for bit."""
    run = tmp_path_factory.mktemp("ref") / "run"
    assert main(_args(run, tiny_bpe_dataset)) == 0
    return run


class Crash(BaseException):
    """Stands for a SIGKILL right after a checkpoint (nothing below catches it)."""


def _crashed_run(run: Path, dataset: Path, monkeypatch, at: int = 20) -> None:
    """A run killed right after writing its step-``at`` checkpoint (one every step)."""
    real = Trainer.checkpoint

    def checkpoint(self: Trainer) -> Path | None:
        path = real(self)
        if self.state.step >= at:
            raise Crash
        return path

    with monkeypatch.context() as m:
        m.setattr(Trainer, "checkpoint", checkpoint)
        with pytest.raises(Crash):
            main(_args(run, dataset, *EVERY_STEP))
    assert [p.name for p in checkpoint_dirs(run)] == [f"step-{at - 1:08d}", f"step-{at:08d}"]
    assert read_json(run / "summary.json")["status"] == "running"
    assert not list((run / "checkpoints").glob(".*"))  # no temporaries: a clean stop


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("damage", ["truncated-weights", "broken-state", "legacy-truncated"])
def test_broken_latest_checkpoint_falls_back_to_the_previous_one(
    tmp_path, tiny_bpe_dataset, reference, monkeypatch, capsys, damage
):
    run = tmp_path / "run"
    _crashed_run(run, tiny_bpe_dataset, monkeypatch)
    latest = run / "checkpoints" / "step-00000020"
    if damage == "legacy-truncated":  # written before manifests: judged by loading it
        for ckpt in checkpoint_dirs(run):
            (ckpt / MANIFEST).unlink()
    if damage == "broken-state":
        (latest / "trainer_state.json").write_text('{"step": 20, "tok')
    else:
        _truncate(latest / "model.safetensors")
    capsys.readouterr()
    assert main(["pretrain", str(run)]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert f"warning: skipping broken checkpoint {latest}" in err
    assert "resuming" in err and "from step 19/100" in err
    summary = read_json(run / "summary.json")
    assert summary["resumed_from"] == 19
    [skipped] = summary["skipped_checkpoints"]
    assert skipped["step"] == 20
    expected = {
        "truncated-weights": "model.safetensors: ",
        "broken-state": "trainer_state.json: ",
        "legacy-truncated": "does not load: ",
    }[damage]
    assert skipped["reason"].startswith(expected), skipped["reason"]
    _assert_same_result(run, reference)


def test_the_fallback_stays_recorded_across_later_resumes(
    tmp_path, tiny_bpe_dataset, reference, monkeypatch, capsys
):
    run = tmp_path / "run"
    _crashed_run(run, tiny_bpe_dataset, monkeypatch)
    _truncate(run / "checkpoints" / "step-00000020" / "rng.pt")
    _crashed_run(run, tiny_bpe_dataset, monkeypatch, at=30)  # falls back to 19, dies at 30
    capsys.readouterr()
    assert main(["pretrain", str(run)]) == 0  # a plain resume from step 30
    assert "from step 30/100" in capsys.readouterr().err
    summary = read_json(run / "summary.json")
    assert summary["resumed_from"] == 19
    assert [s["step"] for s in summary["skipped_checkpoints"]] == [20]
    _assert_same_result(run, reference)


def test_checkpoints_without_manifest_still_resume(
    tmp_path, tiny_bpe_dataset, reference, monkeypatch, capsys
):
    """Run directories of the previous version (no manifests) resume as they did."""
    run = tmp_path / "run"
    _crashed_run(run, tiny_bpe_dataset, monkeypatch)
    for ckpt in checkpoint_dirs(run):
        (ckpt / MANIFEST).unlink()
    capsys.readouterr()
    assert main(["pretrain", str(run)]) == 0
    err = capsys.readouterr().err
    assert "from step 20/100" in err and "warning" not in err
    summary = read_json(run / "summary.json")
    assert "resumed_from" not in summary and "skipped_checkpoints" not in summary
    _assert_same_result(run, reference)


def test_no_intact_checkpoint_refuses_in_one_line(tmp_path, tiny_bpe_dataset, monkeypatch, capsys):
    run = tmp_path / "run"
    _crashed_run(run, tiny_bpe_dataset, monkeypatch)
    ckpts = checkpoint_dirs(run)
    for ckpt in ckpts:
        _truncate(ckpt / "optimizer.pt")
    capsys.readouterr()
    assert main(["pretrain", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "step-00000020: optimizer.pt" in err[0] and "step-00000019: optimizer.pt" in err[0]
    assert f"remove {run / 'checkpoints'} to restart" in err[0]
    # Nothing was discarded: the checkpoints and the log are as the crash left them.
    assert step_dirs(run) == ckpts and read_json(run / "summary.json")["status"] == "running"
    assert max(r["step"] for r in read_jsonl(run / "metrics.jsonl")) == 20


def test_leftover_temporaries_are_removed_by_the_next_start(
    tmp_path, tiny_bpe_dataset, reference, monkeypatch, capsys
):
    run = tmp_path / "run"
    _crashed_run(run, tiny_bpe_dataset, monkeypatch)
    ckpt_root = run / "checkpoints"
    # What kills during writes leave: a whole checkpoint under a temporary name, temporary
    # files of atomic writes, a final model directory cut short.
    shutil.copytree(ckpt_root / "step-00000020", ckpt_root / ".step-00000021.k3j2h1g0.tmp")
    leftovers = [
        ckpt_root / ".step-00000021.k3j2h1g0.tmp",
        run / ".config.yaml.x1y2z3w4.tmp",
        run / ".summary.json.q_er7yu1.tmp",
        run / ".model.ab12cd34.tmp",
    ]
    for path in leftovers[1:3]:
        path.write_text("half")
    leftovers[3].mkdir()
    # Not scalelab's temporaries (or the only copy of a directory): left alone.
    kept = [run / "notes.tmp", run / ".notes.tmp", ckpt_root / ".step-00000018.old"]
    kept[0].write_text("mine")
    kept[1].write_text("mine")
    kept[2].mkdir()
    # Another process holds the run: it is refused in one line and removes nothing.
    with run_lock(run):
        capsys.readouterr()
        assert main(["pretrain", str(run)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"in use by another scalelab process (pid {os.getpid()})" in err[0]
    assert all(p.exists() for p in leftovers + kept)
    assert main(["pretrain", str(run)]) == 0
    assert not any(p.exists() for p in leftovers) and all(p.exists() for p in kept)
    _assert_same_result(run, reference)


def _child(argv: list[str], log: str) -> None:
    """A forked pretraining process: output to ``log``; exits with the CLI's code."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.stdout = sys.stderr = open(1, "w", closefd=False)  # noqa: SIM115 - until _exit
    try:
        code = main(argv)
    except BaseException:  # noqa: BLE001 - the parent reads the log
        import traceback

        traceback.print_exc()
        code = 99
    sys.stdout.flush()
    os._exit(code)


def _temporaries(run: Path) -> list[str]:
    root = run / "checkpoints"
    return [n for n in os.listdir(root) if n.endswith(".tmp")] if root.is_dir() else []


def test_sigkill_during_checkpoint_writes_resumes_bit_identical(
    tmp_path, tiny_bpe_dataset, reference
):
    """Kill a run with SIGKILL while it writes a checkpoint, over and over; the run that
    finally completes matches the uninterrupted one exactly."""
    rng = random.Random(1234)
    run, log = tmp_path / "run", tmp_path / "train.log"
    argv = _args(run, tiny_bpe_dataset, *EVERY_STEP)
    kills_mid_write = attempts = 0
    while kills_mid_write < 5 and attempts < 15:
        attempts += 1
        old = set(_temporaries(run))  # the last kill's, for this start to remove
        proc = FORK.Process(target=_child, args=(argv, str(log)))
        proc.start()
        time.sleep(rng.uniform(0.05, 0.3))  # some steps, then the next checkpoint write
        deadline = time.monotonic() + 30
        while proc.is_alive() and not set(_temporaries(run)) - old and time.monotonic() < deadline:
            time.sleep(0.0005)
        time.sleep(rng.uniform(0.0, 0.003))
        os.kill(proc.pid, signal.SIGKILL)
        proc.join()
        if proc.exitcode != -signal.SIGKILL:
            break  # it finished before the kill (checked below)
        kills_mid_write += bool(set(_temporaries(run)) - old)
    assert kills_mid_write >= 5, (attempts, log.read_text()[-2000:])
    assert read_json(run / "summary.json")["status"] == "running"
    assert main(["pretrain", str(run)]) == 0
    assert not _temporaries(run)
    _assert_same_result(run, reference)


def _hold_study(root: str, held, release) -> None:  # noqa: ANN001 - multiprocessing events
    with Study.load(root).runner_lock():
        held.set()
        release.wait(30)
    os._exit(0)


def test_second_study_runner_is_refused_while_status_works(tmp_path, tiny_bpe_dataset, capsys):
    root = tmp_path / "study"
    assert main(_plan_args(tiny_bpe_dataset, root)) == 0
    held, release = FORK.Event(), FORK.Event()
    holder = FORK.Process(target=_hold_study, args=(str(root), held, release))
    holder.start()
    try:
        assert held.wait(30)
        capsys.readouterr()
        assert main(["study", "run", str(root), "--no-progress"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1, err
        assert "another `scalelab study run`" in err[0] and f"(pid {holder.pid})" in err[0]
        assert not (root / "rungs").exists()  # it started nothing
        assert main(["study", "status", str(root)]) == 0  # read-only: needs no lock
        assert "7 pending" in capsys.readouterr().out
    finally:
        release.set()
        holder.join(30)


def test_status_and_progress_are_live_for_a_running_rung(tmp_path, tiny_bpe_dataset, capsys):
    from scalelab.study.run import _Progress, status_text

    root = tmp_path / "study"
    assert main(_plan_args(tiny_bpe_dataset, root)) == 0
    study = Study.load(root)
    rung = study.rungs[0]
    rung_dir = study.rung_dir(rung)
    rung_dir.mkdir(parents=True)
    # A running rung before its first checkpoint: the summary says step 0, the log more.
    atomic_write_json(rung_dir / "summary.json", {"status": "running", "step": 0, "total_steps": 8})
    (rung_dir / "metrics.jsonl").write_text(
        '{"type": "train", "step": 3, "tokens": 384, "loss": 6.0}\n'
        '{"type": "eval", "step": 4, "tokens": 512, "val_loss": 5.9}\n'
        '{"type": "train", "st'  # torn by a kill
    )

    def row() -> list[str]:
        return next(ln for ln in status_text(study).splitlines() if ln.startswith(rung.id)).split()

    with run_lock(rung_dir):
        assert row()[2:4] == ["running", "50%"]
        assert study.rung_progress(rung) == ("running", 0.5)
        progress = _Progress(study, study.rungs, enabled=True)
        progress.update()
        progress.bar.close()
        bar = capsys.readouterr().err.strip().splitlines()[-1]
        assert bar.count("ETA") == 1 and "0/7 rungs" in bar and "<" not in bar
    assert row()[2:4] == ["interrupted", "0%"]  # killed: its checkpoint is what counts


def test_a_status_probe_does_not_make_a_starting_run_fail(tmp_path):
    """``is_locked`` takes the lock for an instant; a run starting then waits it out."""
    import fcntl
    import threading

    (tmp_path / ".lock").touch()
    fd = os.open(tmp_path / ".lock", os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_SH)  # a probe, caught in the act
    threading.Timer(0.1, os.close, (fd,)).start()
    with run_lock(tmp_path):
        assert holder_pid(tmp_path) == os.getpid()
