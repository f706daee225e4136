"""WSD cool-down branches at the training layer: a branch started from its trunk's
stable-phase checkpoint is the same run as an independent one with the same schedule."""

from __future__ import annotations

import pytest
from tests.conftest import TINY_PRETRAIN

from scalelab.cli import main
from scalelab.train.checkpoint import checkpoint_dirs
from scalelab.train.schedule import lr_multiplier, wsd_decay_start
from scalelab.utils.io import read_json, read_jsonl

EXACT = ["--runtime.precision", "fp32", "--runtime.deterministic", "--optim.warmup-steps", "5",
         "--optim.min-lr-ratio", "0.0", "--runtime.log-every", "2"]  # fmt: skip


def _run(run_dir, dataset, *extra):
    args = ["pretrain", str(run_dir), "--dataset", str(dataset), *TINY_PRETRAIN, *EXACT, *extra]
    assert main(args) == 0


def _losses(run, since=0):
    recs = read_jsonl(run / "metrics.jsonl")
    return [(r["step"], r["loss"]) for r in recs if r["type"] == "train" and r["step"] > since]


def test_wsd_schedule_shapes():
    assert wsd_decay_start(100, 0.2) == 80 and wsd_decay_start(3, 0.1) == 2
    lin = [lr_multiplier(s, 100, schedule="wsd", min_lr_ratio=0.0) for s in range(100)]
    sq = [
        lr_multiplier(s, 100, schedule="wsd", min_lr_ratio=0.0, decay_shape="1-sqrt")
        for s in range(100)
    ]
    assert lin[79] == sq[79] == 1.0 and lin[-1] == sq[-1] == 0.0
    # Halfway through the cool-down: linear at 1/2, 1-sqrt at 1 - sqrt(1/2).
    assert lin[89] == pytest.approx(0.5) and sq[89] == pytest.approx(1 - 0.5**0.5)


def test_branch_equals_an_independent_run(tmp_path, tiny_bpe_dataset):
    """Trunk: warmup + constant to step 40, keeping step 40 despite keep_checkpoints 1.
    Branch: 50 steps of wsd (decay 20%: steps 40-49) started from that checkpoint. The
    independent run trains the same 50-step wsd schedule from scratch."""
    total, frac = 50, 0.2
    start = wsd_decay_start(total, frac)
    trunk, branch, ref = tmp_path / "trunk", tmp_path / "branch", tmp_path / "ref"
    _run(trunk, tiny_bpe_dataset, "--optim.schedule", "constant", "--tokens", str(256 * 60),
         "--save-steps", str(start), "--runtime.keep-checkpoints", "1",
         "--runtime.checkpoint-every-s", "0")  # fmt: skip
    kept = [p.name for p in checkpoint_dirs(trunk)]
    assert f"step-{start:08d}" in kept and "step-00000060" in kept
    wsd = ["--optim.schedule", "wsd", "--optim.decay-fraction", str(frac),
           "--tokens", str(256 * total)]  # fmt: skip
    point = trunk / "checkpoints" / f"step-{start:08d}"
    _run(branch, tiny_bpe_dataset, *wsd, "--init-from", str(point))
    _run(ref, tiny_bpe_dataset, *wsd)
    a, b = read_json(ref / "summary.json"), read_json(branch / "summary.json")
    assert b["status"] == "completed" and b["tokens"] == a["tokens"] == 256 * total
    assert b["final_val_loss"] == pytest.approx(a["final_val_loss"], rel=1e-6)
    assert b["branch_of"] == {"checkpoint": str(point), "step": start}
    # The branch logs only its own (cool-down) steps, and they are the reference's.
    got, want = _losses(branch), _losses(ref, since=start)
    assert len(got) == 5 and got[0][0] == start + 2
    assert [s for s, _ in got] == [s for s, _ in want]
    assert [x for _, x in got] == pytest.approx([x for _, x in want], rel=1e-6)


def test_missing_trunk_checkpoint_is_one_line(tmp_path, tiny_bpe_dataset, capsys):
    args = ["pretrain", str(tmp_path / "b"), "--dataset", str(tiny_bpe_dataset), *TINY_PRETRAIN,
            "--init-from", str(tmp_path / "nowhere" / "step-00000010")]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "Traceback" not in err
