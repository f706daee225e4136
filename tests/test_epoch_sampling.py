"""Epoch sampling: every training window once per epoch, stateless and rank-invariant; old
run directories and studies resume with the i.i.d. sampler unchanged; summaries and
results.csv record unique tokens and epochs; plans refuse repetition unless allowed."""

from __future__ import annotations

import csv
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file
from tests.conftest import TINY_PRETRAIN

from scalelab.cli import main
from scalelab.data import DataConfig, DecoderBatches, open_dataset
from scalelab.data.batches import _pick
from scalelab.data.prepare import prepare
from scalelab.errors import UserError
from scalelab.study.plan import plan_rungs
from scalelab.study.policy import repetition_error
from scalelab.study.presets import demo_plan, fit_to_corpus, preset
from scalelab.study.run import RunConfig, run_study
from scalelab.study.study import Study
from scalelab.train.trainer import Trainer
from scalelab.utils.io import read_json, read_jsonl

T = 16


def _all_windows(sampler: DecoderBatches) -> set[tuple[int, int]]:
    return {(s, w) for s in range(len(sampler.sources)) for w in range(sampler.order.windows[s])}


def _expected_rows(sampler: DecoderBatches, index: np.ndarray) -> torch.Tensor:
    """The windows ``index`` should give, read straight from the shards."""
    src, win = sampler.order.lookup(index)
    rows = [np.asarray(sampler._arrays[s][w * T : w * T + T + 1]) for s, w in zip(src, win)]
    return torch.from_numpy(np.stack(rows).astype(np.int64))


def _step_rows(sampler: DecoderBatches, step: int, world: int) -> torch.Tensor:
    """A whole optimizer step's windows [accum * world * B, T + 1], in (micro, rank) order."""
    parts = []
    for micro in range(sampler.accum):
        for rank in range(world):
            b = sampler.get(step, micro, rank, world)
            parts.append(torch.cat([b["input_ids"], b["labels"][:, -1:]], dim=1))
    return torch.cat(parts)


@pytest.mark.parametrize(("world", "batch", "accum"), [(1, 8, 2), (2, 4, 2), (2, 2, 4)])
def test_every_window_once_per_epoch_at_any_world(tiny_bpe_dataset, world, batch, accum):
    ds = open_dataset(tiny_bpe_dataset)
    sampler = DecoderBatches(ds, seq_len=T, batch_size=batch, seed=3, accum=accum)
    ref = DecoderBatches(ds, seq_len=T, batch_size=16, seed=3)  # one process, one micro-batch
    per_step = batch * world * accum
    assert per_step == 16
    length = sampler.epoch_windows
    # At the natural mixture an epoch is exactly the windows that tile the training split.
    assert length == sum((len(a) - 1) // T for a in sampler._arrays)
    steps = -(-2 * length // per_step)  # two epochs and a bit
    rows = torch.cat([_step_rows(sampler, s, world) for s in range(steps)])
    assert torch.equal(rows[: 16 * 5], torch.cat([_step_rows(ref, s, 1) for s in range(5)]))
    index = np.arange(2 * length, dtype=np.int64)
    assert torch.equal(rows[: 2 * length], _expected_rows(sampler, index))
    for e in range(2):
        src, win = sampler.order.lookup(index[e * length : (e + 1) * length])
        seen = list(zip(src.tolist(), win.tolist()))
        assert len(set(seen)) == length and set(seen) == _all_windows(sampler)
    # Each epoch has its own order, and it is not the corpus order.
    first, second = (sampler.order.lookup(index[i * length : (i + 1) * length]) for i in (0, 1))
    assert not np.array_equal(first[1], second[1])
    flat = np.asarray(sampler.order.ends - sampler.order.per_epoch)[first[0]] + first[1]
    assert abs(np.corrcoef(flat, np.arange(length))[0, 1]) < 0.1


def test_the_stream_is_a_pure_function_of_seed_and_step(tiny_bpe_dataset):
    ds = open_dataset(tiny_bpe_dataset)
    a = DecoderBatches(ds, seq_len=T, batch_size=4, seed=7, accum=2)
    far = (10 * a.epoch_windows) // 8  # ten epochs in: another permutation is made
    wanted = [(far, 1), (3, 0), (far + 1, 0), (3, 1), (0, 0)]
    fresh = {
        k: DecoderBatches(ds, seq_len=T, batch_size=4, seed=7, accum=2).get(*k) for k in wanted
    }
    for k in reversed(wanted):  # asked in another order, from one sampler with a warm cache
        got = a.get(*k)
        assert torch.equal(got["input_ids"], fresh[k]["input_ids"])
        assert torch.equal(got["labels"], fresh[k]["labels"])
    other = DecoderBatches(ds, seq_len=T, batch_size=4, seed=8, accum=2).get(3, 0)
    assert not torch.equal(other["input_ids"], fresh[(3, 0)]["input_ids"])
    with pytest.raises(ValueError, match="micro 2 out of range"):
        a.get(0, 2)


def test_weights_reweight_sources_deterministically_within_an_epoch(tiny_bpe_dataset):
    """Shakespeare weighted 3x against Wikipedia: the epoch stays the corpus's length in
    windows, Shakespeare takes m = p/q times its windows, Wikipedia fewer than its own."""
    ds = open_dataset(tiny_bpe_dataset)
    natural = ds.mixture
    up = {"shakespeare": 3 * natural["shakespeare"], "wikipedia": natural["wikipedia"]}
    sampler = DecoderBatches(ds, seq_len=T, batch_size=8, seed=0, weights=up)
    order, names = sampler.order, sampler.sources
    tokens = np.asarray([len(a) for a in sampler._arrays], dtype=np.float64)
    multiplier = sampler.probs / (tokens / tokens.sum())  # m_s = p_s / q_s
    assert order.per_epoch.tolist() == np.rint(order.windows * multiplier).astype(int).tolist()
    assert abs(order.length - order.windows.sum()) <= len(names)  # an epoch: the corpus's size
    for share, p in zip(order.per_epoch / order.length, sampler.probs):
        assert share == pytest.approx(p, abs=1 / order.length)  # within one window
    shak, wiki = names.index("shakespeare"), names.index("wikipedia")
    assert (
        order.per_epoch[shak] > order.windows[shak] and order.per_epoch[wiki] < order.windows[wiki]
    )
    src, _ = order.lookup(np.arange(order.length, dtype=np.int64))
    counts = Counter(src.tolist())
    assert [counts[i] for i in range(len(names))] == order.per_epoch.tolist()
    # At the end of every epoch each window of a source has been seen floor(n) or ceil(n)
    # times, n its source's passes so far: 3 epochs of the up-weighted one (n > 1 per
    # epoch), 5 of the down-weighted one (n < 1 per epoch).
    for s, epochs in ((shak, 3), (wiki, 5)):
        src, win = order.lookup(np.arange(epochs * order.length, dtype=np.int64))
        for e in range(1, epochs + 1):
            n = e * order.per_epoch[s] / order.windows[s]
            mine = win[: e * order.length][src[: e * order.length] == s]
            seen = np.bincount(mine, minlength=int(order.windows[s]))
            assert set(seen.tolist()) <= {int(np.floor(n)), int(np.ceil(n))}, (s, e)


def test_iid_sampling_is_the_old_stream_bit_for_bit(tiny_bpe_dataset):
    """The formula of scalelab 0.3 and earlier, written out: a source by weight, then a
    uniform offset, from default_rng([seed, step, micro]); rank r takes slice r."""
    ds = open_dataset(tiny_bpe_dataset)
    sampler = DecoderBatches(ds, seq_len=T, batch_size=4, seed=5, sampling="iid")
    cum = np.cumsum(sampler.probs)
    arrays = [ds.tokens("train", s) for s in sampler.sources]
    for step, micro, rank in [(0, 0, 0), (9, 1, 1), (123, 3, 0)]:
        rng = np.random.default_rng([5, step, micro])
        src = _pick(rng, cum, 8)
        off = rng.integers(0, np.asarray([len(a) - T for a in arrays])[src])
        rows = [arrays[s][o : o + T + 1] for s, o in zip(src, off)][rank * 4 : rank * 4 + 4]
        want = torch.from_numpy(np.stack(rows).astype(np.int64))
        got = sampler.get(step, micro, rank, world=2)
        assert torch.equal(got["input_ids"], want[:, :-1]) and torch.equal(
            got["labels"], want[:, 1:]
        )


# ----------------------------------------------------------------------------- runs

EXACT = ["--runtime.precision", "fp32", "--runtime.deterministic", "--tokens", "6400"]


def _args(run: Path, dataset: Path, *extra: str) -> list[str]:
    return ["pretrain", str(run), "--dataset", str(dataset), *TINY_PRETRAIN, *EXACT, *extra]


class Crash(BaseException):
    """Stands for a SIGKILL right after a checkpoint."""


def test_an_old_run_directory_resumes_with_the_iid_sampler(tmp_path, tiny_bpe_dataset, monkeypatch):
    ref = tmp_path / "ref"
    assert main(_args(ref, tiny_bpe_dataset, "--sampling", "iid")) == 0
    old = tmp_path / "old"
    real = Trainer.checkpoint

    def checkpoint(self: Trainer) -> Path | None:
        path = real(self)
        if self.state.step >= 8:
            raise Crash
        return path

    with monkeypatch.context() as m:
        m.setattr(Trainer, "checkpoint", checkpoint)
        with pytest.raises(Crash):
            main(
                _args(
                    old, tiny_bpe_dataset, "--sampling", "iid", "--runtime.checkpoint-every-s", "0"
                )
            )
    # What scalelab 0.3 left: a config.yaml without the sampling key.
    saved = yaml.safe_load((old / "config.yaml").read_text())
    saved.pop("sampling")
    (old / "config.yaml").write_text(yaml.safe_dump(saved))
    assert main(_args(old, tiny_bpe_dataset)) == 0  # no --sampling: the new default is epoch
    a, b = read_json(ref / "summary.json"), read_json(old / "summary.json")
    assert b["status"] == "completed" and b["final_val_loss"] == a["final_val_loss"]
    curve = [
        (r["type"], r["step"], r.get("loss", r.get("val_loss")))
        for r in read_jsonl(old / "metrics.jsonl")
    ]
    assert curve == [
        (r["type"], r["step"], r.get("loss", r.get("val_loss")))
        for r in read_jsonl(ref / "metrics.jsonl")
    ]
    got, want = (load_file(d / "model" / "model.safetensors") for d in (old, ref))
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert yaml.safe_load((old / "config.yaml").read_text())["sampling"] == "iid"
    # summary.json: unique tokens (the training split), tokens seen and epochs.
    unique = open_dataset(tiny_bpe_dataset).num_tokens("train")
    assert b["unique_tokens"] == unique and b["tokens_seen"] == b["tokens"] == 6400
    assert b["epochs"] == pytest.approx(6400 / unique)
    # A new run samples by epoch: another data stream, another model.
    new = tmp_path / "new"
    assert main(_args(new, tiny_bpe_dataset)) == 0
    assert read_json(new / "summary.json")["final_val_loss"] != a["final_val_loss"]
    assert yaml.safe_load((new / "config.yaml").read_text())["sampling"] == "epoch"


# ----------------------------------------------------------------------------- studies


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory) -> Path:
    """A corpus of ~12k training tokens, so that a rung of 30k tokens repeats it."""
    cfg = DataConfig(sources=("shakespeare", "wikipedia"), max_chars=25_000, vocab_size=300)
    return prepare(cfg, root=tmp_path_factory.mktemp("small"))


def _plan(dataset: Path, out: Path, *extra: str) -> list[str]:
    return [
        "plan", "--design", "grid", "--sizes", "2e3,5e3", "--tokens", "4096,8192,16384,32768",
        "--min-tokens", "1024", "--holdout", "0", "--base.dataset", str(dataset),
        "--base.seq-len", "32", "--base.eval-tokens", "512", "--base.evals", "2",
        "--base.runtime.precision", "fp32", "--policy.rule", "fixed",
        "--policy.batch-tokens", "256", "--policy.lr", "0.01", "--out", str(out), *extra,
    ]  # fmt: skip


def test_plans_refuse_repetition_unless_allowed_and_record_epochs(tmp_path, small_corpus, capsys):
    unique = int(open_dataset(small_corpus).num_tokens("train"))
    assert 16384 < unique < 32768
    assert main(_plan(small_corpus, tmp_path / "refused")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1
        and "rung r03 of the plan trains" in err[0]
        and f"{32768 / unique:.2f} epochs" in err[0]
    )
    assert "--max-epochs" in err[0] and not (tmp_path / "refused" / "study.yaml").exists()
    root = tmp_path / "study"
    assert main(_plan(small_corpus, root, "--max-epochs", "3")) == 0
    out = capsys.readouterr().out
    assert "Data repetition (allowed by max_epochs 3)" in out and "2 rung(s)" in out
    # Trained without the study's own fit: only the tables matter here.
    run_study(Study.load(root), RunConfig(in_process=True, progress=False))
    capsys.readouterr()
    study = Study.load(root)
    assert not study.legacy and study.plan.base.sampling == "epoch"
    assert "allowed by max_epochs 3" in study.repetition_note()
    with open(root / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 8
    for r in rows:
        s = read_json(root / "rungs" / r["rung"] / "summary.json")
        assert int(r["unique_tokens"]) == s["unique_tokens"] == unique
        assert (
            float(r["epochs"]) == pytest.approx(int(r["D"]) / unique) == pytest.approx(s["epochs"])
        )
    assert max(float(r["epochs"]) for r in rows) > 1
    # The laws table finds unique_tokens as U: the data-constrained law fits the study table.
    table = ["fit", str(root / "results.csv"), "--loss", "final_val_loss"]
    assert main([*table, "--form", "data_constrained"]) == 0
    fitted = capsys.readouterr()
    assert "unique_tokens" in fitted.out + fitted.err
    # At run time a study planned without the data is checked once it is prepared.
    study.check_repetition(small_corpus)  # allowed: max_epochs 3
    strict = Study(root=root, plan=study.plan.replace(max_epochs=1.0), rungs=study.rungs, facts={})
    with pytest.raises(UserError, match="rung r03 of the study .* trains"):
        strict.check_repetition(small_corpus)


def test_an_old_study_keeps_iid_sampling_and_matches_its_plan(tmp_path, small_corpus, capsys):
    root = tmp_path / "study"
    assert main(_plan(small_corpus, root, "--max-epochs", "3", "--dry-run")) == 0
    assert main(_plan(small_corpus, root, "--max-epochs", "3")) == 0
    capsys.readouterr()
    doc = yaml.safe_load((root / "study.yaml").read_text())
    doc["plan"].pop("max_epochs")
    doc["plan"]["base"].pop("sampling")
    shutil.copytree(root, tmp_path / "old")
    (tmp_path / "old" / "study.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    old = Study.load(tmp_path / "old")
    assert old.legacy and old.plan.base.sampling == "iid" and old.plan.max_epochs == 1.0
    assert old.same_plan(Study.load(root).plan)  # the same design, planned before 0.4
    assert not Study.load(root).same_plan(old.plan)
    old.check_repetition(small_corpus)  # planned before the rule: not refused
    note = old.repetition_note()
    assert "not checked" in note and "i.i.d." in note
    rung = old.rungs[0].pretrain_config(old.plan.base)
    assert rung.sampling == "iid"


def test_presets_and_the_repetition_guard():
    unique = 10_677_251  # the built-in corpus's training split at vocabulary 1024
    default, medium = preset("default"), preset("medium")
    rungs = plan_rungs(default, vocab_size=1024)
    assert max(r.tokens for r in rungs) / unique == pytest.approx(0.19, abs=0.01)
    assert repetition_error(rungs, unique, default.max_epochs) is None
    rungs = plan_rungs(medium, vocab_size=1024)
    assert max(r.tokens for r in rungs) / unique == pytest.approx(0.45, abs=0.01)
    assert repetition_error(rungs, unique, medium.max_epochs) is None
    # Above one epoch is refused, naming the rung: here on a corpus a fifth of the size.
    assert "rung s" in str(repetition_error(rungs, unique // 5, 1.0))
    # gpu: sized down to the corpus it is given; refused on too small a corpus or none.
    gpu = preset("gpu")
    sized = fit_to_corpus(gpu, 300_000_000)
    top = max(r.tokens for r in plan_rungs(sized, vocab_size=32768))
    assert sized.budget_flops < gpu.budget_flops and 0.8 < top / 300_000_000 <= 1.0
    assert fit_to_corpus(gpu, 10**10) is gpu  # a large corpus takes the whole design
    with pytest.raises(
        UserError, match=r"needs >= [\d,]+ tokens of training data \(this one has 50,000,000\)"
    ):
        fit_to_corpus(gpu, 50_000_000)
    with pytest.raises(UserError, match=r"gpu preset needs >= .*--preset gpu --dataset DIR"):
        demo_plan("gpu")


def test_the_demo_plans_on_the_prepared_corpus_and_refuses_repetition(small_corpus, monkeypatch):
    """``scalelab demo`` prepares the built-in corpus first and checks the preset's epochs on
    it: on a corpus this small the default preset is refused in one line."""
    import scalelab.data.prepare as prep
    from scalelab.study.plan import make_plan

    monkeypatch.setattr(prep, "prepare", lambda cfg, root="data", out=None: small_corpus)
    plan, unique = demo_plan("default")
    assert unique == open_dataset(small_corpus).num_tokens("train")
    assert plan.to_dict() == preset("default").to_dict()  # the same study as before
    with pytest.raises(UserError, match=r"rung s\d-\w+ of the plan trains [\d.]+ epochs"):
        make_plan(plan, probe=False, workers=1, unique_tokens=unique)
