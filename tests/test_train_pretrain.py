"""``scalelab pretrain`` end to end: run directory, HF export, kill -9 and resume, DDP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tests.conftest import TINY_PRETRAIN

from scalelab.cli import main
from scalelab.train.checkpoint import checkpoint_dirs
from scalelab.utils.io import read_json, read_jsonl


def _args(run_dir, dataset, *extra):
    return [str(run_dir), "--dataset", str(dataset), *TINY_PRETRAIN, *extra]


def test_pretrain_run_directory_and_hf_export(tmp_path, tiny_bpe_dataset, capsys):
    run = tmp_path / "run"
    assert main(["pretrain", *_args(run, tiny_bpe_dataset)]) == 0
    assert "completed" in capsys.readouterr().out
    for name in (
        "config.yaml",
        "metrics.jsonl",
        "summary.json",
        "model/config.json",
        "model/tokenizer.json",
    ):
        assert (run / name).is_file(), name
    s = read_json(run / "summary.json")
    assert s["status"] == "completed" and s["tokens"] == 12800 and s["step"] == 50
    p = s["params"]
    assert (
        p["embedding"] + p["non_embedding"] + p["head"] == p["total"]
        and s["N"] == p["non_embedding"]
    )
    assert set(s["flops"]) >= {"6n_kaplan", "6n_total", "chinchilla"}
    assert s["flops"]["6n_kaplan"] == pytest.approx(6 * p["non_embedding"] * 12800)
    assert set(s["last_eval"]) == {"val_loss", "val_loss/shakespeare", "val_loss/wikipedia"}
    assert s["final_val_loss"] < 6.2  # ln(512) = 6.24: it learned something
    evals = [r for r in read_jsonl(run / "metrics.jsonl") if r["type"] == "eval"]
    assert len(evals) == 10 and evals[-1]["step"] == 50

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from scalelab.models.hf import load_hf

    hf = AutoModelForCausalLM.from_pretrained(run / "model")
    tok = AutoTokenizer.from_pretrained(run / "model")
    ids = tok("Now is the winter of our discontent", return_tensors="pt").input_ids
    ours, _ = load_hf(run / "model")
    with torch.no_grad():
        assert torch.allclose(hf(ids).logits, ours(ids)["logits"], atol=1e-5)


def test_rerun_resumes_and_refuses_changed_config(tmp_path, tiny_bpe_dataset, capsys):
    run = tmp_path / "run"
    assert main(["pretrain", *_args(run, tiny_bpe_dataset)]) == 0
    before = read_json(run / "summary.json")
    assert main(["pretrain", str(run)]) == 0  # saved config, nothing left to do
    assert read_json(run / "summary.json")["final_val_loss"] == before["final_val_loss"]
    capsys.readouterr()
    assert main(["pretrain", *_args(run, tiny_bpe_dataset, "--optim.lr", "0.01")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "differs in: optim" in err[0]


def _spawn(args, env_extra=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "scalelab", "pretrain", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=Path(__file__).resolve().parents[1],
    )


def test_sigkill_and_resume_reach_the_same_loss(tmp_path, tiny_bpe_dataset):
    """A real subprocess killed with SIGKILL mid-run resumes to the identical result (fp32)."""
    exact = ["--runtime.precision", "fp32", "--runtime.deterministic", "--tokens", "51200",
             "--runtime.checkpoint-every-s", "0.3"]  # fmt: skip
    ref = _spawn(_args(tmp_path / "ref", tiny_bpe_dataset, *exact))
    victim = _spawn(_args(tmp_path / "victim", tiny_bpe_dataset, *exact))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(checkpoint_dirs(tmp_path / "victim")) < 2:
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    ckpts = checkpoint_dirs(tmp_path / "victim")
    assert ckpts and read_json(tmp_path / "victim" / "summary.json")["status"] == "running"
    killed_at = int(ckpts[-1].name.split("-")[1])
    assert 0 < killed_at < 200, "the run finished before it could be killed"
    assert ref.wait() == 0, ref.stdout.read().decode()
    resumed = _spawn([str(tmp_path / "victim")])
    out = resumed.communicate()[0].decode()
    assert resumed.returncode == 0, out
    a = read_json(tmp_path / "ref" / "summary.json")
    b = read_json(tmp_path / "victim" / "summary.json")
    assert b["status"] == "completed" and b["final_val_loss"] == a["final_val_loss"]

    def curve(run):
        return [r["loss"] for r in read_jsonl(run / "metrics.jsonl") if r["type"] == "train"]

    assert curve(tmp_path / "victim") == curve(tmp_path / "ref")


def test_nan_loss_marks_run_failed(tmp_path, tiny_bpe_dataset, capsys):
    run = tmp_path / "run"
    assert (
        main(
            [
                "pretrain",
                *_args(run, tiny_bpe_dataset, "--optim.lr", "1e6", "--optim.grad-clip", "0"),
            ]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert "non-finite loss" in err and "Traceback" not in err
    assert read_json(run / "summary.json")["status"] == "failed"


@pytest.mark.slow
def test_ddp_two_processes_match_single_process(tmp_path, tiny_bpe_dataset):
    """torchrun --nproc_per_node=2 (gloo): ranks stay in sync and match one process."""
    common = ["--runtime.precision", "fp32", "--tokens", "6400"]
    single = _spawn(_args(tmp_path / "one", tiny_bpe_dataset, *common))
    assert single.wait() == 0, single.stdout.read().decode()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "scalelab", "pretrain", *_args(tmp_path / "two", tiny_bpe_dataset, *common)]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    one = read_json(tmp_path / "one" / "summary.json")
    two = read_json(tmp_path / "two" / "summary.json")
    assert two["world_size"] == 2 and two["status"] == "completed"
    assert two["rank_checksums_equal"] is True
    assert two["final_val_loss"] == pytest.approx(one["final_val_loss"], abs=2e-4)
