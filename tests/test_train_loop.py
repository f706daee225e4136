"""The one training loop on a toy model: completion, resume, failure, early stopping, signals."""

from __future__ import annotations

import math
import os
import signal

import pytest
import torch
from torch import nn

from scalelab.errors import TrainingFailed
from scalelab.train.checkpoint import checkpoint_dirs
from scalelab.train.loop import OptimConfig, RuntimeConfig, TrainJob, run
from scalelab.train.schedule import lr_multiplier
from scalelab.utils.io import read_json, read_jsonl

V, T, B = 32, 8, 4


class ToyLM(nn.Module):
    """Bigram LM with dropout so that RNG state matters for exact resume."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(V, 16)
        self.drop = nn.Dropout(0.1)
        self.out = nn.Linear(16, V)

    def forward(self, input_ids, labels=None):
        logits = self.out(self.drop(self.emb(input_ids)))
        loss = nn.functional.cross_entropy(logits.view(-1, V), labels.view(-1))
        return {"loss": loss}


class ToyBatches:
    """Stateless: the batch is a pure function of (step, micro, rank)."""

    def get(self, step, micro=0, rank=0, world=1):
        g = torch.Generator().manual_seed(1000 * step + 10 * micro + rank)
        x = torch.randint(0, V, (B, T), generator=g)
        return {"input_ids": x, "labels": (x * 3 + 1) % V}


def val_loss(model):
    batch = ToyBatches().get(10_000)
    return {"val_loss": float(model(**batch)["loss"])}


def make_job(run_dir, steps=30, **kw):
    torch.manual_seed(0)
    defaults = dict(
        run_dir=run_dir,
        model=ToyLM(),
        batches=ToyBatches(),
        total_steps=steps,
        grad_accum=2,
        optim=OptimConfig(lr=1e-2, warmup_fraction=0.1),
        runtime=RuntimeConfig(precision="fp32", progress=False, tensorboard=False, log_every=1),
        per_step=2 * B * T,
        tokens_per_step=2 * B * T,
        evaluate=val_loss,
        eval_every=10,
        checkpoint_every=5,
        flops_per_token={"6n_total": 6.0},
    )
    defaults.update(kw)
    return TrainJob(**defaults)


def test_completes_and_writes_run_dir(tmp_path):
    summary = run(make_job(tmp_path))
    assert summary["status"] == "completed" and summary["step"] == 30
    assert summary["tokens"] == 30 * 2 * B * T
    assert summary["flops"]["6n_total"] == 6.0 * summary["tokens"]
    on_disk = read_json(tmp_path / "summary.json")
    assert on_disk["status"] == "completed"
    records = read_jsonl(tmp_path / "metrics.jsonl")
    train = [r for r in records if r["type"] == "train"]
    evals = [r for r in records if r["type"] == "eval"]
    assert [r["step"] for r in train] == list(range(1, 31))
    assert [r["step"] for r in evals] == [10, 20, 30]
    assert train[-1]["loss"] < train[0]["loss"]  # it learns
    assert len(checkpoint_dirs(tmp_path)) == 2  # keep_checkpoints default
    # Rerunning a finished run does no more training.
    again = run(make_job(tmp_path))
    assert again["step"] == 30 and len(read_jsonl(tmp_path / "metrics.jsonl")) == len(records)


def test_resume_after_crash_is_exact(tmp_path):
    ref = run(make_job(tmp_path / "ref"))

    class Crash(Exception):
        pass

    def crash(step):
        if step == 12:
            raise Crash

    with pytest.raises(Crash):
        run(make_job(tmp_path / "crash", on_step_end=crash))
    assert max(int(p.name[5:]) for p in checkpoint_dirs(tmp_path / "crash")) == 10
    resumed = run(make_job(tmp_path / "crash"))
    assert resumed["last_eval"]["val_loss"] == ref["last_eval"]["val_loss"]
    a = [r["loss"] for r in read_jsonl(tmp_path / "ref" / "metrics.jsonl") if r["type"] == "train"]
    b = [
        r["loss"] for r in read_jsonl(tmp_path / "crash" / "metrics.jsonl") if r["type"] == "train"
    ]
    assert a == b  # one clean curve, identical to the uninterrupted run


def test_sigint_checkpoints_then_stops(tmp_path):
    def interrupt(step):
        if step == 7:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        run(make_job(tmp_path, on_step_end=interrupt, checkpoint_every=0))
    assert read_json(tmp_path / "summary.json")["status"] == "interrupted"
    assert [p.name for p in checkpoint_dirs(tmp_path)] == ["step-00000008"]
    ref = run(make_job(tmp_path / "ref"))
    assert run(make_job(tmp_path))["last_eval"] == ref["last_eval"]


def test_nan_loss_fails_cleanly(tmp_path):
    class NaNLM(ToyLM):
        def forward(self, input_ids, labels=None):
            out = super().forward(input_ids, labels)
            return (
                {"loss": out["loss"] * float("nan")}
                if self.training and self.emb.weight.sum() < 1e9
                else out
            )

    with pytest.raises(TrainingFailed, match="non-finite loss at step 0"):
        run(make_job(tmp_path, model=NaNLM()))
    summary = read_json(tmp_path / "summary.json")
    assert summary["status"] == "failed" and "lower the learning rate" in summary["message"]


def test_early_stopping_restores_best(tmp_path):
    scores = iter([0.5, 0.7, 0.6, 0.4, 0.3, 0.2])

    def evaluate(model):
        return {"acc": next(scores), "w": float(model.out.bias.sum())}

    job = make_job(
        tmp_path,
        evaluate=evaluate,
        eval_every=3,
        metric="acc",
        mode="max",
        patience=2,
        restore_best=True,
    )
    summary = run(job)
    assert summary["step"] == 12 and summary["best_acc"] == 0.7 and summary["best_step"] == 6
    evals = [r for r in read_jsonl(tmp_path / "metrics.jsonl") if r["type"] == "eval"]
    assert math.isclose(
        float(job.model.out.bias.detach().sum()), evals[1]["w"], rel_tol=0, abs_tol=1e-6
    )
    # An early-stopped run stays finished when run again.
    assert (
        run(make_job(tmp_path, evaluate=evaluate, patience=2, metric="acc", mode="max"))["step"]
        == 12
    )


def test_schedules():
    total = 100
    for name in ("cosine", "wsd", "linear", "constant"):
        ms = [
            lr_multiplier(s, total, schedule=name, warmup_steps=10, min_lr_ratio=0.1)
            for s in range(total)
        ]
        assert ms[0] == pytest.approx(0.1) and ms[9] == pytest.approx(1.0)
        assert max(ms) == pytest.approx(1.0)
        if name != "constant":
            assert ms[-1] == pytest.approx(0.1)
    wsd = [
        lr_multiplier(s, total, schedule="wsd", warmup_steps=10, decay_fraction=0.2)
        for s in range(total)
    ]
    assert all(m == 1.0 for m in wsd[10:80]) and wsd[85] < 1.0
