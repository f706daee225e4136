"""MFU in summary.json, activation checkpointing, FSDP2 (issue 12): tested on the CPU."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from tests.conftest import TINY_PRETRAIN

from scalelab.cli import main
from scalelab.errors import UserError
from scalelab.models.build import build_model
from scalelab.models.config import ModelConfig
from scalelab.train import mfu as mfu_mod
from scalelab.train.checkpoint import latest_checkpoint, load_optimizer_state
from scalelab.train.config import RuntimeConfig
from scalelab.train.pretrain import PretrainConfig
from scalelab.train.step import make_optimizer
from scalelab.utils.io import read_json

GPT2_124M = ModelConfig(
    arch="gpt2", n_layer=12, d_model=768, n_head=12, vocab_size=50304, max_seq_len=1024
)


def _args(run_dir, dataset, *extra):
    return [str(run_dir), "--dataset", str(dataset), *TINY_PRETRAIN, *extra]


# ---------------------------------------------------------------------------------- MFU


def test_palm_flops_of_gpt2_124m_by_hand():
    # Per block: qkv 3d^2+3d, proj d^2+d, fc d*4d+4d, proj 4d*d+d, two LayerNorms 4d.
    d = 768
    block = 3 * d * d + 3 * d + d * d + d + d * 4 * d + 4 * d + 4 * d * d + d + 4 * d
    n = 12 * block + 2 * d + 50304 * d  # + final LayerNorm + the tied head matmul
    assert n == 123_689_472
    attention = 12 * 12 * 12 * 64 * 1024  # 12 L H Q T
    fpt = mfu_mod.model_flops_per_token(GPT2_124M, 1024)
    assert fpt == 6 * n + attention == 855_383_040
    # 1M tokens in 10 s on one H100 SXM: 8.554e13 FLOP/s of 9.89e14.
    assert mfu_mod.mfu(fpt, 1e6, 10.0, 989e12) == pytest.approx(855_383_040e5 / 989e12)
    assert mfu_mod.mfu(fpt, 2e6, 10.0, 989e12, world=2) == pytest.approx(0.0864897, rel=1e-5)
    untied = GPT2_124M.replace(tie_embeddings=False)  # the head is then counted once, not twice
    assert mfu_mod.model_flops_per_token(untied, 1024) == fpt
    with pytest.raises(ValueError):
        mfu_mod.mfu(fpt, 1e6, 0.0, 989e12)


@pytest.mark.parametrize(
    ("name", "peak"),
    [
        ("NVIDIA H100 80GB HBM3", 989e12),
        ("NVIDIA H100 PCIe", 756e12),
        ("NVIDIA H100 NVL", 835e12),
        ("NVIDIA H200", 989e12),
        ("NVIDIA H200 NVL", 835e12),
        ("NVIDIA GH200 480GB", 989e12),
        ("NVIDIA A100-SXM4-80GB", 312e12),
        ("NVIDIA A100 80GB PCIe", 312e12),
        ("NVIDIA L4", 121e12),
        ("NVIDIA L40S", 362e12),
        ("NVIDIA A10", 125e12),
        ("NVIDIA GeForce RTX 4090", 165.2e12),
        ("NVIDIA A10G", None),  # not A10: AWS's variant has no published bf16 figure
        ("Tesla V100-SXM2-16GB", None),
        ("Tesla T4", None),
    ],
)
def test_peak_lookup_by_device_name(name, peak):
    found = mfu_mod.lookup_peak(name)
    assert (found.flops if found else None) == peak
    if found:
        assert "NVIDIA" in found.source


def test_peak_on_cpu_needs_the_flag():
    assert mfu_mod.peak_flops("cpu") == (None, pytest.approx(mfu_mod.peak_flops("cpu")[1]))
    assert "--runtime.peak-flops" in mfu_mod.peak_flops("cpu")[1]
    assert mfu_mod.peak_flops("cpu", 2e12) == (2e12, "runtime.peak_flops")
    facts = mfu_mod.mfu_facts({"mfu_flops_per_token": 100.0, "device": "cpu"}, 50, 2.0, 0)
    assert facts["mfu"] is None and facts["model_flops_per_s"] == 2500.0
    assert "--runtime.peak-flops" in facts["mfu_note"]
    assert mfu_mod.mfu_facts({}, 50, 2.0, 1e12) == {}  # fine-tuning: no model count
    with pytest.raises(UserError, match="peak_flops"):
        RuntimeConfig(peak_flops=-1.0)


def test_summary_carries_mfu_for_a_tiny_cpu_run(tmp_path, tiny_bpe_dataset):
    run = tmp_path / "run"
    assert main(["pretrain", *_args(run, tiny_bpe_dataset, "--runtime.peak-flops", "1e12")]) == 0
    s = read_json(run / "summary.json")
    cfg = PretrainConfig.load(run / "config.yaml")
    fpt = mfu_mod.model_flops_per_token(cfg.model, cfg.seq_len)
    assert s["mfu_flops_per_token"] == fpt
    assert s["mfu_convention"] == "palm_6n_attn"
    assert s["peak_flops"] == 1e12 and s["peak_flops_source"] == "runtime.peak_flops"
    assert s["mfu"] == pytest.approx(s["model_flops_per_s"] / 1e12)
    # One session: its tokens are the run's; the timed part (optimizer steps only) is no
    # longer than the whole run's training and evaluation time.
    train_s = fpt * s["tokens"] / s["model_flops_per_s"]
    assert 0 < train_s <= s["wall_time_s"]
    # A resumed session that trains nothing has nothing to measure: a note, no number.
    assert main(["pretrain", *_args(run, tiny_bpe_dataset, "--runtime.peak-flops", "1e12")]) == 0
    again = read_json(run / "summary.json")
    assert again["mfu"] is None and again["mfu_note"] == "no training step timed yet"


# ---------------------------------------------------------------- activation checkpointing


def _saved_tensors_and_grads(model, ids, labels):
    count = [0]

    def pack(t):
        count[0] += 1
        return t

    torch.manual_seed(1)  # dropout masks
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(ids, labels=labels)["loss"]
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    return loss.detach(), grads, count[0]


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_activation_checkpointing_gives_the_same_loss_and_gradients(arch):
    torch.manual_seed(0)
    cfg = ModelConfig(arch=arch, n_layer=3, d_model=32, n_head=2, vocab_size=97, max_seq_len=16,
                      dropout=0.1)  # fmt: skip
    model = build_model(cfg)
    ids = torch.randint(0, 97, (2, 16))
    labels = torch.roll(ids, -1, dims=1)
    plain_loss, plain_grads, plain_saved = _saved_tensors_and_grads(model, ids, labels)
    model.activation_checkpointing = True
    remat_loss, remat_grads, remat_saved = _saved_tensors_and_grads(model, ids, labels)
    assert remat_saved < plain_saved / 2  # the blocks' activations really were not kept
    torch.testing.assert_close(remat_loss, plain_loss)
    for name, grad in plain_grads.items():
        torch.testing.assert_close(remat_grads[name], grad, msg=name)


def test_pretrain_flag_turns_checkpointing_on():
    from scalelab.train import pretrain as pretrain_mod

    cfg = ModelConfig(n_layer=1, d_model=32, n_head=2, vocab_size=64)
    model, default = build_model(cfg), build_model(cfg)
    pretrain_mod._runtime_model_options(model, RuntimeConfig(activation_checkpointing=True))
    pretrain_mod._runtime_model_options(default, RuntimeConfig())
    assert model.activation_checkpointing is True and default.activation_checkpointing is False


# ----------------------------------------------------------------------------------- FSDP


def test_optimizer_state_keyed_by_name_loads_like_torchs_own():
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    torch.manual_seed(0)
    cfg = ModelConfig(n_layer=1, d_model=32, n_head=2, vocab_size=64, max_seq_len=16)
    model = build_model(cfg)
    opt = make_optimizer(model, lr=1e-2)
    ids = torch.randint(0, 64, (2, 16))
    model(ids, labels=ids)["loss"].backward()
    opt.step()
    opt.zero_grad(set_to_none=True)  # as after every trainer step
    by_name = get_optimizer_state_dict(model, opt, options=StateDictOptions(full_state_dict=True))
    assert all(isinstance(k, str) for k in by_name["state"])
    fresh_opt = make_optimizer(model, lr=1e-2)
    load_optimizer_state(model, fresh_opt, by_name)
    want, got = opt.state_dict(), fresh_opt.state_dict()
    same = [{**g, "betas": tuple(g["betas"])} for g in got["param_groups"]]  # a list when named
    assert same == want["param_groups"]
    for i, s in want["state"].items():
        for k, v in s.items():
            torch.testing.assert_close(got["state"][i][k], v)


def test_fsdp_refuses_to_keep_best_weights():
    from scalelab.train import distributed as ddp
    from scalelab.train.trainer import Evaluation

    model = torch.nn.Linear(2, 2)
    with pytest.raises(UserError, match="fsdp"):
        ddp.shard(
            model,
            torch.optim.AdamW(model.parameters()),
            ddp.DistInfo(),
            Evaluation(restore_best=True),
        )


@pytest.mark.slow
def test_fsdp_two_processes_match_one(tmp_path, tiny_bpe_dataset):
    """torchrun --nproc_per_node=2 --runtime.fsdp (gloo, CPU) matches one process (which
    tests/test_train_pretrain.py shows DDP matches), checkpoints and exports the model."""
    common = ["--runtime.precision", "fp32", "--tokens", "3200", "--model.n-layer", "2"]
    assert main(["pretrain", *_args(tmp_path / "one", tiny_bpe_dataset, *common)]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "scalelab", "pretrain",
           *_args(tmp_path / "two", tiny_bpe_dataset, *common, "--runtime.fsdp")]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    one = read_json(tmp_path / "one" / "summary.json")
    two = read_json(tmp_path / "two" / "summary.json")
    assert two["world_size"] == 2 and two["status"] == "completed"
    assert "rank_checksums_equal" not in two  # shards differ by design
    assert two["final_val_loss"] == pytest.approx(one["final_val_loss"], abs=2e-4)
    # The checkpoint holds the full optimizer state keyed by name; it loads in one process.
    ckpt = latest_checkpoint(tmp_path / "two")
    saved = torch.load(ckpt / "optimizer.pt", weights_only=True)
    assert all(isinstance(k, str) for k in saved["state"])
    from scalelab.models.hf import load_hf

    a, _ = load_hf(tmp_path / "one" / "model")
    b, _ = load_hf(tmp_path / "two" / "model")
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        torch.testing.assert_close(y, x, atol=1e-5, rtol=1e-4, msg=name)
    cfg = PretrainConfig.load(tmp_path / "two" / "config.yaml")
    model = build_model(cfg.model)
    load_optimizer_state(model, make_optimizer(model, lr=1e-3), saved)
