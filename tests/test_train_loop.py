"""The trainer on a toy model: completion, resume, failure, early stopping, signals, tokens."""

from __future__ import annotations

import itertools
import json
import math
import os
import signal

import pytest
import torch
from torch import nn

from scalelab.errors import TrainingFailed, UserError
from scalelab.train.checkpoint import checkpoint_dirs
from scalelab.train.config import OptimConfig, RuntimeConfig
from scalelab.train.schedule import lr_multiplier
from scalelab.train.trainer import Evaluation, Trainer, TrainJob, TrainState
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


class PaddedLM(ToyLM):
    """The toy LM on padded rows: padding positions are not predicted."""

    def forward(self, input_ids, labels=None, attention_mask=None):
        logits = self.out(self.drop(self.emb(input_ids)))
        if attention_mask is not None:
            labels = labels.masked_fill(attention_mask == 0, -100)
        return {"loss": nn.functional.cross_entropy(logits.view(-1, V), labels.view(-1))}


class PaddedBatches:
    """Like a fine-tuning collator: rows of random length, right-padded to the longest."""

    def get(self, step, micro=0, rank=0, world=1):
        g = torch.Generator().manual_seed(1000 * step + 10 * micro + rank)
        lengths = torch.randint(1, T + 1, (B,), generator=g)
        width = int(lengths.max())
        x = torch.randint(0, V, (B, width), generator=g)
        mask = (torch.arange(width) < lengths[:, None]).long()
        return {"input_ids": x * mask, "labels": (x * 3 + 1) % V, "attention_mask": mask}


class Crash(Exception):
    pass


def crash_at(when):
    def hook(step):
        if step == when:
            raise Crash

    return hook


def val_loss(model):
    batch = ToyBatches().get(10_000)
    return {"val_loss": float(model(**batch)["loss"])}


def run(job):
    return Trainer(job).fit()


def make_job(run_dir, steps=30, evaluation=None, **kw):
    """The toy job; ``evaluation`` holds :class:`Evaluation` fields to change."""
    torch.manual_seed(0)
    defaults = dict(
        run_dir=run_dir,
        model=ToyLM(),
        batches=ToyBatches(),
        total_steps=steps,
        grad_accum=2,
        optim=OptimConfig(lr=1e-2, warmup_fraction=0.1),
        runtime=RuntimeConfig(precision="fp32", progress=False, tensorboard=False, log_every=1),
        tokens_per_step=2 * B * T,
        evaluation=Evaluation(**{"fn": val_loss, "every": 10, **(evaluation or {})}),
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
    with pytest.raises(Crash):
        run(make_job(tmp_path / "crash", on_step_end=crash_at(12)))
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
        evaluation=dict(
            fn=evaluate, every=3, metric="acc", mode="max", patience=2, restore_best=True
        ),
    )
    summary = run(job)
    assert summary["step"] == 12 and summary["best_acc"] == 0.7 and summary["best_step"] == 6
    evals = [r for r in read_jsonl(tmp_path / "metrics.jsonl") if r["type"] == "eval"]
    assert math.isclose(
        float(job.model.out.bias.detach().sum()), evals[1]["w"], rel_tol=0, abs_tol=1e-6
    )
    # An early-stopped run stays finished when run again.
    again = make_job(tmp_path, evaluation=dict(fn=evaluate, patience=2, metric="acc", mode="max"))
    assert run(again)["step"] == 12


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


def padded_job(run_dir, **kw):
    """A fine-tuning-like job: tokens counted per batch, examples reported."""
    torch.manual_seed(0)  # the same initial weights in every run
    return make_job(
        run_dir,
        model=PaddedLM(),
        batches=PaddedBatches(),
        tokens_per_step=None,
        examples_per_step=2 * B,
        **kw,
    )


def padded_tokens(steps, grad_accum=2):
    """Non-padding tokens of each step of ``PaddedBatches``, counted independently."""
    b = PaddedBatches()
    return [
        sum(int(b.get(s, m)["attention_mask"].sum()) for m in range(grad_accum))
        for s in range(steps)
    ]


def curve(run_dir):
    return [
        (r["step"], r["tokens"], r["loss"])
        for r in read_jsonl(run_dir / "metrics.jsonl")
        if r["type"] == "train"
    ]


def test_counted_tokens_follow_the_attention_mask_and_survive_resume(tmp_path):
    per_step = padded_tokens(30)
    assert len(set(per_step)) > 1 and sum(per_step) < 30 * 2 * B * T  # padding varies
    ref = run(padded_job(tmp_path / "ref"))
    assert ref["tokens"] == sum(per_step) and ref["examples"] == 30 * 2 * B
    assert ref["tokens_per_s"] > 0 and ref["flops"]["6n_total"] == 6.0 * sum(per_step)
    assert read_json(tmp_path / "ref" / "summary.json")["tokens"] == sum(per_step)
    records = read_jsonl(tmp_path / "ref" / "metrics.jsonl")
    cumulative = list(itertools.accumulate(per_step))
    train = [r for r in records if r["type"] == "train"]
    assert [r["tokens"] for r in train] == cumulative
    assert all(r["tokens_per_s"] > 0 for r in train)
    evals = [r for r in records if r["type"] == "eval"]
    assert [r["tokens"] for r in evals] == [cumulative[9], cumulative[19], cumulative[29]]
    # Killed after step 12 and resumed from the step-10 checkpoint: the count carries on.
    with pytest.raises(Crash):
        run(padded_job(tmp_path / "crash", on_step_end=crash_at(12)))
    saved = read_json(checkpoint_dirs(tmp_path / "crash")[-1] / "trainer_state.json")
    assert saved["step"] == 10 and saved["tokens"] == cumulative[9]
    resumed = run(padded_job(tmp_path / "crash"))
    assert resumed["tokens"] == ref["tokens"] and resumed["tokens_per_s"] > 0
    assert curve(tmp_path / "crash") == curve(tmp_path / "ref")


def test_fixed_tokens_per_step_reports_no_examples(tmp_path):
    summary = run(make_job(tmp_path, steps=5))
    assert summary["tokens"] == 5 * 2 * B * T and "examples" not in summary
    assert [r[1] for r in curve(tmp_path)] == [s * 2 * B * T for s in range(1, 6)]


def test_train_state_round_trips_through_a_checkpoint(tmp_path):
    state = TrainState(
        step=3,
        best=0.5,
        best_step=2,
        evals_without_improvement=1,
        elapsed_s=1.5,
        last_eval={"val_loss": 0.5},
        finished=True,
        tokens=99,
    )
    assert TrainState.from_dict(json.loads(json.dumps(state.to_dict()))) == state
    summary = run(make_job(tmp_path))
    saved = read_json(checkpoint_dirs(tmp_path)[-1] / "trainer_state.json")
    # The keys older versions wrote (their run directories must resume), then the new one.
    assert list(saved) == [
        "step",
        "best",
        "best_step",
        "evals_without_improvement",
        "elapsed_s",
        "last_eval",
        "finished",
        "tokens",
    ]
    restored = TrainState.from_dict(saved)
    assert restored.step == 30 and restored.tokens == summary["tokens"]
    assert restored.best == summary["best_val_loss"] and restored.last_eval == summary["last_eval"]
    assert restored.elapsed_s == pytest.approx(summary["wall_time_s"])


@pytest.mark.parametrize("job", [make_job, padded_job], ids=["fixed", "counted"])
def test_checkpoint_without_token_count_resumes_exactly(tmp_path, job):
    """Checkpoints written before the token count was kept resume; the count is rebuilt."""
    ref = run(job(tmp_path / "ref"))
    with pytest.raises(Crash):
        run(job(tmp_path / "old", on_step_end=crash_at(12)))
    for ckpt in checkpoint_dirs(tmp_path / "old"):
        path = ckpt / "trainer_state.json"
        old = read_json(path)
        del old["tokens"]
        path.write_text(json.dumps(old))
    assert TrainState.from_dict(old).tokens == 0 and TrainState.from_dict(old).step == 10
    resumed = run(job(tmp_path / "old"))
    assert resumed["tokens"] == ref["tokens"] and resumed["last_eval"] == ref["last_eval"]
    assert curve(tmp_path / "old") == curve(tmp_path / "ref")


@pytest.mark.parametrize(
    "bad",
    [
        {"lr": 0.0},
        {"lr": -1e-3},
        {"lr": float("nan")},
        {"beta1": 1.5},
        {"beta1": -0.1},
        {"beta2": 1.0},
        {"eps": 0.0},
        {"eps": -1e-8},
    ],
)
def test_bad_optimizer_settings_are_user_errors(bad):
    (name,) = bad
    with pytest.raises(UserError, match=name):
        OptimConfig(**bad)


def test_no_learning_rate_is_a_user_error(tmp_path):
    assert OptimConfig(lr=None).lr is None
    assert OptimConfig.from_dict({"lr": "none"}).lr is None
    with pytest.raises(UserError, match="learning rate"):
        Trainer(make_job(tmp_path / "run", optim=OptimConfig(lr=None))).fit()
    assert not (tmp_path / "run").exists()


def test_config_serialisation_is_unchanged():
    """Saved config.yaml files and config hashes depend on these exact keys and defaults."""
    assert OptimConfig().to_dict() == {
        "lr": 1e-3,
        "weight_decay": 0.1,
        "beta1": 0.9,
        "beta2": 0.95,
        "eps": 1e-8,
        "grad_clip": 1.0,
        "schedule": "cosine",
        "warmup_fraction": 0.05,
        "warmup_steps": 0,  # 0.3.0: saved configs without it load with this default
        "min_lr_ratio": 0.1,
        "decay_fraction": 0.2,
        "decay_shape": "linear",  # 0.3.0, as above
    }
    assert RuntimeConfig().to_dict() == {
        "device": "auto",
        "precision": "bf16",
        "compile": False,
        "threads": 0,
        "checkpoint_every_s": 120.0,
        "keep_checkpoints": 2,
        "log_every": 10,
        "progress": True,
        "tensorboard": True,
        "deterministic": False,
        "wandb": False,
        "wandb_project": "scalelab",
        "wandb_name": "",
        "wandb_group": "",
        "peak_flops": 0.0,
        "activation_checkpointing": False,
        "fsdp": False,
    }
    assert "fine-tuning picks one by method" in OptimConfig.field_docs()["lr"]


def test_old_imports_still_work(tmp_path):
    from scalelab.train import loop

    assert loop.OptimConfig is OptimConfig and loop.RuntimeConfig is RuntimeConfig
    assert loop.TrainJob is TrainJob
    assert loop.run(make_job(tmp_path, steps=3))["status"] == "completed"
