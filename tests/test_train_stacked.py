"""Stacked training (``scalelab.train.stacked``): k same-shape members in one model train
as k independent ``pretrain`` runs would, resume after kill -9, refuse what cannot stack."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scalelab.errors import UserError
from scalelab.train.checkpoint import checkpoint_dirs
from scalelab.train.pretrain import PretrainConfig, pretrain
from scalelab.train.stacked import train_stacked
from scalelab.utils.io import read_json, read_jsonl


def _cfg(dataset: Path, lr: float = 1e-3, arch: str = "llama", **kw) -> PretrainConfig:
    """A model that trains in about a second (fp32, deterministic: exact comparisons)."""
    optim = {"lr": lr, **kw.pop("optim", {})}
    runtime = {"threads": 1, "progress": False, "tensorboard": False, "precision": "fp32",
               "deterministic": True, **kw.pop("runtime", {})}  # fmt: skip
    return PretrainConfig.from_dict(
        {
            "arch": arch,
            "model": {"n_layer": 1, "d_model": 32, "n_head": 2},
            "dataset": str(dataset),
            "seq_len": 32,
            "batch_tokens": 256,
            "tokens": 12800,
            "eval_tokens": 2048,
            "optim": optim,
            "runtime": runtime,
            **kw,
        }
    )


def _train_losses(run_dir: Path) -> list[float]:
    return [r["loss"] for r in read_jsonl(run_dir / "metrics.jsonl") if r["type"] == "train"]


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_members_match_independent_runs(tmp_path, tiny_bpe_dataset, arch):
    """Member i = pretrain(cfgs[i]) (different lr, decay, clipping, schedule); a member
    whose loss goes non-finite fails alone and leaves the stack."""
    cfgs = [
        _cfg(tiny_bpe_dataset, 1e-3, arch),
        _cfg(tiny_bpe_dataset, 3e-3, arch,
             optim={"weight_decay": 0.0, "grad_clip": 0.5, "schedule": "wsd", "beta2": 0.99}),
        _cfg(tiny_bpe_dataset, 1e4, arch),  # diverges within a few steps
    ]  # fmt: skip
    stacked = train_stacked(cfgs, [tmp_path / f"s{i}" for i in range(3)])
    assert [s["status"] for s in stacked] == ["completed", "completed", "failed"]
    assert "non-finite loss" in stacked[2]["message"] and stacked[2]["step"] < 50
    for i in range(2):
        alone = pretrain(cfgs[i], tmp_path / f"p{i}")
        assert stacked[i]["step"] == alone["step"] == 50
        # fp32: the same operations in batched kernels (measured: ~2e-8 relative)
        assert stacked[i]["final_val_loss"] == pytest.approx(alone["final_val_loss"], rel=1e-5)
        assert stacked[i]["best_val_loss"] == pytest.approx(alone["best_val_loss"], rel=1e-5)
        assert _train_losses(tmp_path / f"s{i}") == pytest.approx(
            _train_losses(tmp_path / f"p{i}"), rel=1e-5
        )
    assert stacked[0]["final_val_loss"] != pytest.approx(stacked[1]["final_val_loss"], rel=1e-3)


def test_summary_metrics_and_model_have_pretrains_format(tmp_path, tiny_bpe_dataset):
    cfgs = [_cfg(tiny_bpe_dataset, lr) for lr in (1e-3, 2e-3)]
    dirs = [tmp_path / "s0", tmp_path / "s1"]
    s = train_stacked(cfgs, dirs)[1]
    alone = pretrain(cfgs[1], tmp_path / "p1")
    assert set(alone) - set(s) == set()  # every key a study reads from pretrain's summary
    for key in ("status", "step", "total_steps", "tokens", "flops", "final_val_loss",
                "best_val_loss", "N", "params", "shape", "lr", "batch_tokens", "seq_len",
                "unique_tokens", "tokens_seen", "epochs", "wall_time_s", "tokens_per_s",
                "config_hash"):  # fmt: skip
        assert s[key] is not None, key
    assert s["kind"] == "pretrain" and s["lr"] == 2e-3 and s["tokens"] == 12800
    assert s["config_hash"] == alone["config_hash"] and s["shape"] == alone["shape"]
    assert s["flops"] == alone["flops"] and s["params"] == alone["params"]
    assert s["stacked"] == {"k": 2, "member": 1, "run_dirs": [str(d) for d in dirs]}
    assert read_json(dirs[1] / "summary.json") == s
    ours, theirs = read_jsonl(dirs[1] / "metrics.jsonl"), read_jsonl(tmp_path / "p1/metrics.jsonl")
    assert [(r["type"], r["step"], sorted(r)) for r in ours] == [
        (r["type"], r["step"], sorted(r)) for r in theirs
    ]
    from scalelab.models.hf import load_hf
    from scalelab.train.pretrain import load_run_config

    assert load_run_config(dirs[1]).optim.lr == 2e-3
    load_hf(dirs[1] / "model")
    assert (dirs[1] / "model" / "tokenizer.json").is_file()
    # A member's checkpoints are pretrain's: pretrain finds it done and changes nothing.
    again = pretrain(cfgs[1], dirs[1])
    assert again["status"] == "completed" and again["final_val_loss"] == s["final_val_loss"]


_CHILD = """
import sys
from scalelab.train.pretrain import PretrainConfig
from scalelab.train.stacked import train_stacked
dirs = sys.argv[1:]
train_stacked([PretrainConfig.load(d + ".yaml") for d in dirs], dirs)
"""


def test_kill_and_resume_equals_uninterrupted(tmp_path, tiny_bpe_dataset):
    """kill -9 in the middle (checkpoints every step), resume: the same result exactly."""
    cfgs = [_cfg(tiny_bpe_dataset, lr, tokens=25600, runtime={"keep_checkpoints": 1})
            for lr in (1e-3, 3e-3)]  # fmt: skip
    ref = train_stacked(cfgs, [tmp_path / "ref0", tmp_path / "ref1"])
    dirs = [tmp_path / "kill0", tmp_path / "kill1"]
    for c, d in zip(cfgs, dirs):  # the killed session checkpoints after every step
        every_step = c.runtime.replace(checkpoint_every_s=0.0)
        c.replace(runtime=every_step).to_yaml(d.with_suffix(".yaml"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, "-c", _CHILD, *map(str, dirs)], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and child.poll() is None:
        steps = [int(p.name[5:]) for p in checkpoint_dirs(dirs[1])]
        if steps and max(steps) >= 10:
            break
        time.sleep(0.01)
    assert child.poll() is None, child.stderr.read().decode()[-2000:]
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert read_json(dirs[0] / "summary.json")["status"] == "running"
    resumed = train_stacked(cfgs, dirs)
    for a, b, d, r in zip(ref, resumed, dirs, ("ref0", "ref1")):
        assert b["status"] == "completed" and b["step"] == a["step"] == 100
        assert b["final_val_loss"] == pytest.approx(a["final_val_loss"], rel=1e-6, abs=0)
        assert b["best_val_loss"] == pytest.approx(a["best_val_loss"], rel=1e-6, abs=0)
        assert _train_losses(d) == pytest.approx(_train_losses(tmp_path / r), rel=1e-6)
        assert [x["step"] for x in read_jsonl(d / "metrics.jsonl")] == [
            x["step"] for x in read_jsonl(tmp_path / r / "metrics.jsonl")
        ]
        assert len(checkpoint_dirs(d)) == 1  # keep_checkpoints=1, pruned after all written
    assert train_stacked(cfgs, dirs) == resumed  # a finished set only returns its summaries


def test_refusals_are_one_line(tmp_path, tiny_bpe_dataset):
    base = _cfg(tiny_bpe_dataset)
    wide = base.replace(model=base.model.replace(d_model=64))
    cases = [
        ([base, wide], "differs from member 0 in model"),
        ([base, base.replace(seq_len=64)], "seq_len"),
        ([base, base.replace(seed=1)], "seed"),
        ([base, base.replace(arch="bert")], "decoder"),
        ([base, base.replace(optim=base.optim.replace(lr=None))], "learning rate"),
        ([base], "one run directory per config"),
    ]
    for cfgs, words in cases:
        dirs = [tmp_path / "a", tmp_path / "b"]
        with pytest.raises(UserError) as err:
            train_stacked(cfgs, dirs)
        assert words in str(err.value) and "\n" not in str(err.value), str(err.value)
    assert not (tmp_path / "a").exists()  # refused before anything was written
