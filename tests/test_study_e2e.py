"""A tiny study end to end: plan, run (two rungs at a time), SIGKILL and resume, fit, report."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scalelab.cli import main
from scalelab.study.study import Study
from scalelab.utils.io import read_json

ROOT = Path(__file__).resolve().parents[1]


def _plan_args(dataset, out):
    return [
        "plan", "--design", "grid", "--sizes", "2e3,6e3,1.5e4", "--tokens", "3072,6144",
        "--min-tokens", "1024", "--holdout", "1", "--holdout-factor", "1.5",
        "--base.dataset", str(dataset), "--base.seq-len", "32", "--base.eval-tokens", "1024",
        "--base.runtime.precision", "fp32", "--base.runtime.checkpoint-every-s", "0.2",
        "--policy.rule", "fixed", "--policy.batch-tokens", "128", "--policy.lr", "0.01",
        "--out", str(out),
    ]  # fmt: skip


def _study_run(study, *extra):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "scalelab",
        "study",
        "run",
        str(study),
        "--workers",
        "2",
        "--no-progress",
        *extra,
    ]
    return subprocess.Popen(
        cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )


def test_tiny_study_end_to_end(tmp_path, tiny_bpe_dataset, capsys):
    study_dir = tmp_path / "study"
    assert main(_plan_args(tiny_bpe_dataset, study_dir)) == 0
    study = Study.load(study_dir)
    assert [r.role for r in study.rungs] == ["fit"] * 6 + ["holdout"]
    assert len({r.N for r in study.rungs if r.role == "fit"}) == 3

    # Kill the whole study with SIGKILL once the first rungs have finished.
    proc = _study_run(study_dir)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        done = [r for r in study.rungs if study.rung_status(r) == "completed"]
        if len(done) >= 2:
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = {r.id: read_json(study.rung_dir(r) / "summary.json")["wall_time_s"] for r in done}
    assert finished, "no rung finished before the kill"
    time.sleep(1.5)  # orphaned rungs notice their parent died, checkpoint and stop

    proc = _study_run(study_dir)
    out = proc.communicate(timeout=300)[0].decode()
    assert proc.returncode == 0, out
    # Finished rungs were not trained again; every rung is complete now.
    for rid, wall in finished.items():
        assert read_json(study_dir / "rungs" / rid / "summary.json")["wall_time_s"] == wall
    assert all(study.rung_status(r) == "completed" for r in study.rungs)

    rows = (study_dir / "results.csv").read_text().splitlines()
    assert len(rows) == 8 and rows[0].startswith(
        "rung,role,status,in_fit,budget_flops,budget_convention,N_non_embedding,"
    )
    fits = read_json(study_dir / "fits" / "summary.json")
    assert fits["n_fit"] == 6 and fits["holdout"][0]["rung"] == "holdout0"
    assert {"estimate", "actual", "rel_error", "pred_lo", "pred_hi"} <= set(fits["holdout"][0])
    html = (study_dir / "report.html").read_text()
    assert (
        "Extrapolation check" in html
        and "data:image/png;base64" in html
        and "Plan and rungs" in html
    )
    assert (study_dir / "report.md").is_file()
    assert "held out holdout0" in out

    # Status and a second run: nothing left to train, the report is re-rendered.
    capsys.readouterr()
    assert main(["study", "status", str(study_dir)]) == 0
    assert "7 completed" in capsys.readouterr().out
    assert main(["study", "run", str(study_dir), "--no-progress"]) == 0


def test_plan_errors_are_one_line(tmp_path, capsys):
    assert main(["plan", "--design", "isoflop", "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "budget" in err[0]
    assert main(["study", "run", str(tmp_path / "nothing")]) == 2
    assert "is not a study" in capsys.readouterr().err


def test_isoflop_plan_spends_the_budget():
    from scalelab.study.plan import PlanConfig, plan_rungs

    cfg = PlanConfig(
        design="isoflop", budget_flops=1e13, n_budgets=3, sizes_per_budget=4, min_tokens=1,
        flops_convention="6n_kaplan",
    )  # fmt: skip
    rungs = plan_rungs(cfg, vocab_size=4096)
    fit = [r for r in rungs if r.role == "fit"]
    assert len(fit) == 12 and rungs[-1].role == "holdout"
    assert sum(r.flops["6n_kaplan"] for r in rungs) == pytest.approx(1e13, rel=0.05)
    levels = sorted({r.budget for r in fit})
    assert levels[1] / levels[0] == pytest.approx(3.0)
    for r in fit:  # every rung of a level spends that level's budget (up to batch rounding)
        assert r.flops["6n_kaplan"] == pytest.approx(r.budget, rel=0.05)
    assert rungs[-1].flops["6n_kaplan"] == pytest.approx(2 * levels[-1], rel=0.05)
