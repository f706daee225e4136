"""The Ray executor against a local Ray runtime: two rungs at once, one CPU each."""

from __future__ import annotations

import pytest

from scalelab.cli import main
from scalelab.utils.io import read_json

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.ray


def test_ray_executor_runs_two_rungs_at_once(tmp_path, tiny_bpe_dataset):
    out = tmp_path / "s"
    plan = [
        "plan", "--design", "grid", "--sizes", "3e3,8e3", "--tokens", "25600", "--holdout", "0",
        "--min-tokens", "1024", "--base.dataset", str(tiny_bpe_dataset), "--base.seq-len", "32",
        "--base.eval-tokens", "1024", "--policy.rule", "fixed", "--policy.batch-tokens", "128",
        "--out", str(out),
    ]  # fmt: skip
    assert main(plan) == 0
    try:
        code = main(
            [
                "study",
                "run",
                str(out),
                "--executor",
                "ray",
                "--workers",
                "2",
                "--threads",
                "1",
                "--no-progress",
            ]
        )
    finally:
        ray.shutdown()
    assert code == 0
    runs = [read_json(out / "rungs" / r / "summary.json") for r in ("r00", "r01")]
    assert all(r["status"] == "completed" for r in runs)
    (a0, a1), (b0, b1) = [(r["started_at"], r["updated_at"]) for r in runs]
    assert a0 < b1 and b0 < a1, "the two rungs did not run at the same time"
    assert (out / "results.csv").is_file()
