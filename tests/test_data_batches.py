"""Batch sampling: deterministic and resumable, rank-disjoint, label shift, validation
windows, and BERT-style encoder batches with the right masking and NSP statistics."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from scalelab.data import (
    DataConfig,
    DecoderBatches,
    EncoderBatches,
    encoder_validation_batches,
    open_dataset,
    validation_batches,
)
from scalelab.data.prepare import prepare
from scalelab.errors import UserError


def _corpus(root: Path) -> tuple[str, ...]:
    """Two sources of pseudo-English paragraphs (a text directory and a JSONL file)."""
    rng = random.Random(1)
    syll = ["ka", "lo", "mi", "ten", "sar", "vu", "pe", "ri", "dos", "an", "el", "th"]
    words = ["".join(rng.choice(syll) for _ in range(rng.randint(1, 3))) for _ in range(250)]

    def paragraph() -> str:
        return " ".join(
            " ".join(rng.choice(words) for _ in range(rng.randint(4, 12))).capitalize() + "."
            for _ in range(rng.randint(2, 6))
        )

    (root / "books").mkdir(parents=True)
    for i in range(5):
        (root / "books" / f"b{i}.txt").write_text("\n\n".join(paragraph() for _ in range(10)))
    with open(root / "posts.jsonl", "w") as fh:
        for _ in range(60):
            fh.write(json.dumps({"text": paragraph()}) + "\n")
    return (str(root / "books"), str(root / "posts.jsonl"))


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("bcorpus")
    sources = _corpus(root)
    common = {"sources": sources, "val_fraction": 0.2, "doc_chars": 500}
    bpe = open_dataset(prepare(DataConfig(vocab_size=350, **common), root=root / "data"))
    wp = open_dataset(
        prepare(DataConfig(tokenizer="wordpiece", vocab_size=240, **common), root=root / "data")
    )
    return bpe, wp


def _windows(arr: np.ndarray, width: int) -> np.ndarray:
    return np.lib.stride_tricks.sliding_window_view(np.asarray(arr, dtype=np.int64), width)


# ----------------------------------------------------------------------------- decoder


def test_decoder_batches_are_deterministic_and_shifted(datasets):
    ds, _ = datasets
    # Two micro-batches a step (the epoch order numbers the samples across them).
    sampler = DecoderBatches(ds, seq_len=32, batch_size=8, seed=7, accum=2)
    a = sampler.get(3, 1)
    b = DecoderBatches(ds, seq_len=32, batch_size=8, seed=7, accum=2).get(3, 1)
    assert a["input_ids"].shape == a["labels"].shape == (8, 32)
    assert a["input_ids"].dtype == torch.long and a["labels"].dtype == torch.long
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["labels"], b["labels"])
    # Next-token labels: labels[t] is the token after input_ids[t] in the same window.
    assert torch.equal(a["input_ids"][:, 1:], a["labels"][:, :-1])
    # Every window is a contiguous run of one source's training shard.
    windows = {s: {tuple(w) for w in _windows(ds.tokens("train", s), 33)} for s in ds.sources}
    full = torch.cat([a["input_ids"], a["labels"][:, -1:]], dim=1).numpy()
    assert all(any(tuple(row) in windows[s] for s in ds.sources) for row in full)
    # Other steps, micro-steps and seeds give other batches.
    for other in (
        sampler.get(4, 1),
        sampler.get(3, 0),
        DecoderBatches(ds, seq_len=32, batch_size=8, seed=8, accum=2).get(3, 1),
    ):
        assert not torch.equal(other["input_ids"], a["input_ids"])


def test_decoder_ranks_are_disjoint_slices_of_one_global_batch(datasets):
    ds, _ = datasets
    per_rank = DecoderBatches(ds, seq_len=16, batch_size=4, seed=0)
    r0, r1 = per_rank.get(10, 0, rank=0, world=2), per_rank.get(10, 0, rank=1, world=2)
    assert not torch.equal(r0["input_ids"], r1["input_ids"])
    # The union over ranks is the world=1 batch of the same global size.
    whole = DecoderBatches(ds, seq_len=16, batch_size=8, seed=0).get(10, 0)
    assert torch.equal(torch.cat([r0["input_ids"], r1["input_ids"]]), whole["input_ids"])
    with pytest.raises(ValueError):
        per_rank.get(0, 0, rank=2, world=2)


def test_decoder_weights_choose_sources(datasets):
    ds, _ = datasets
    only = DecoderBatches(ds, seq_len=16, batch_size=16, seed=0, weights={"posts": 1.0, "books": 0})
    posts = {tuple(w) for w in _windows(ds.tokens("train", "posts"), 17)}
    for step in range(3):
        b = only.get(step)
        full = torch.cat([b["input_ids"], b["labels"][:, -1:]], dim=1).numpy()
        assert all(tuple(row) in posts for row in full)
    natural = DecoderBatches(ds, seq_len=16, batch_size=4, seed=0)
    assert dict(zip(natural.sources, natural.probs)) == pytest.approx(ds.mixture)
    with pytest.raises(UserError, match="unknown sources"):
        DecoderBatches(ds, seq_len=16, batch_size=4, weights={"nope": 1.0})
    with (
        pytest.raises(UserError, match="no source has"),
        pytest.warns(UserWarning, match="left out"),
    ):
        DecoderBatches(ds, seq_len=10**7, batch_size=4)


def test_validation_batches_are_contiguous_and_capped(datasets):
    ds, _ = datasets
    val = validation_batches(ds, seq_len=16, batch_size=3, max_tokens_per_source=100)
    assert set(val) == set(ds.sources)
    for source, batches in val.items():
        shard = np.asarray(ds.tokens("val", source), dtype=np.int64)
        ids = torch.cat([b["input_ids"] for b in batches]).numpy()
        labels = torch.cat([b["labels"] for b in batches]).numpy()
        n_pred = min(len(shard) - 1, 100)
        assert (labels != -100).sum() == n_pred
        assert all(len(b["input_ids"]) <= 3 for b in batches)
        # Windows tile the shard from its start without overlap or gaps.
        assert np.array_equal(labels[labels != -100], shard[1 : n_pred + 1])
        assert np.array_equal(ids.reshape(-1)[:n_pred], shard[:n_pred])
        real = labels[:, 1:] != -100  # input t+1 is real text exactly where label t+1 is
        assert np.array_equal(ids[:, 1:][real], labels[:, :-1][real])
    again = validation_batches(ds, seq_len=16, batch_size=3, max_tokens_per_source=100)
    assert all(
        torch.equal(x["input_ids"], y["input_ids"]) for s in val for x, y in zip(val[s], again[s])
    )


# ----------------------------------------------------------------------------- encoder


def test_encoder_batch_layout(datasets):
    _, ds = datasets
    sp = ds.special_ids
    sampler = EncoderBatches(ds, seq_len=48, batch_size=16, seed=3)
    b = sampler.get(0)
    assert set(b) == {
        "input_ids",
        "token_type_ids",
        "attention_mask",
        "labels",
        "next_sentence_label",
    }
    assert all(v.dtype == torch.long for v in b.values())
    assert b["input_ids"].shape == (16, 48) and b["next_sentence_label"].shape == (16,)
    orig = torch.where(b["labels"] != -100, b["labels"], b["input_ids"])
    for row in range(16):
        n = int(b["attention_mask"][row].sum())
        assert torch.all(b["attention_mask"][row, :n] == 1) and torch.all(
            b["attention_mask"][row, n:] == 0
        )
        ids, types = orig[row], b["token_type_ids"][row]
        assert ids[0] == sp["cls"] and ids[n - 1] == sp["sep"]
        seps = torch.nonzero(ids[:n] == sp["sep"]).flatten().tolist()
        assert len(seps) == 2
        first = seps[0]
        assert torch.all(types[: first + 1] == 0) and torch.all(types[first + 1 : n] == 1)
        assert torch.all(types[n:] == 0) and torch.all(ids[n:] == sp["pad"])
        # No special token or padding is ever a target.
        targets = b["labels"][row] != -100
        assert targets.any()
        assert not targets[0] and not targets[seps].any() and not targets[n:].any()
    # Is-next pairs are contiguous runs of one document.
    shard_windows = {}
    for row in torch.nonzero(b["next_sentence_label"] == 0).flatten().tolist():
        n = int(b["attention_mask"][row].sum())
        ids = orig[row, :n].tolist()
        first = ids.index(sp["sep"])
        ab = ids[1:first] + ids[first + 1 : n - 1]
        width = len(ab)
        for s in ds.sources:
            if (s, width) not in shard_windows:
                shard_windows[(s, width)] = {
                    tuple(w) for w in _windows(ds.tokens("train", s), width)
                }
        assert any(tuple(ab) in shard_windows[(s, width)] for s in ds.sources)


def test_encoder_masking_and_nsp_statistics(datasets):
    _, ds = datasets
    special = torch.tensor(sorted(ds.special_ids.values()))
    sampler = EncoderBatches(ds, seq_len=64, batch_size=32, seed=0)
    cand = chosen = to_mask = unchanged = random_tok = 0
    nsp = []
    for step in range(60):
        b = sampler.get(step)
        labels, ids = b["labels"], b["input_ids"]
        target = labels != -100
        orig = torch.where(target, labels, ids)
        cand += int(((b["attention_mask"] == 1) & ~torch.isin(orig, special)).sum())
        chosen += int(target.sum())
        to_mask += int((target & (ids == ds.special_ids["mask"])).sum())
        unchanged += int((target & (ids == labels)).sum())
        random_tok += int((target & (ids != labels) & (ids != ds.special_ids["mask"])).sum())
        assert not torch.isin(
            ids[target & (ids != labels) & (ids != ds.special_ids["mask"])], special
        ).any()
        nsp += b["next_sentence_label"].tolist()
    # About 50k candidate tokens: 15% chosen, then 80/10/10, each within a few std devs.
    assert chosen / cand == pytest.approx(0.15, abs=0.01)
    assert to_mask / chosen == pytest.approx(0.8, abs=0.02)
    assert unchanged / chosen == pytest.approx(0.1, abs=0.02)
    assert random_tok / chosen == pytest.approx(0.1, abs=0.02)
    assert np.mean(nsp) == pytest.approx(0.5, abs=0.04)


def test_encoder_determinism_ranks_and_options(datasets):
    bpe, ds = datasets
    sampler = EncoderBatches(ds, seq_len=32, batch_size=4, seed=5)
    a, b = sampler.get(2, 1), sampler.get(2, 1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    r0, r1 = sampler.get(2, 1, rank=0, world=2), sampler.get(2, 1, rank=1, world=2)
    assert not torch.equal(r0["input_ids"], r1["input_ids"])
    whole = EncoderBatches(ds, seq_len=32, batch_size=8, seed=5).get(2, 1)
    assert all(torch.equal(torch.cat([r0[k], r1[k]]), whole[k]) for k in whole)
    single = EncoderBatches(ds, seq_len=32, batch_size=4, seed=5, nsp=False).get(0)
    assert "next_sentence_label" not in single
    assert torch.all(single["token_type_ids"] == 0)
    assert torch.all((single["input_ids"] == ds.special_ids["sep"]).sum(1) <= 1)
    with pytest.raises(UserError, match="wordpiece"):
        EncoderBatches(bpe, seq_len=32, batch_size=4)


def test_encoder_validation_is_fixed_per_source(datasets):
    _, ds = datasets
    val = encoder_validation_batches(ds, seq_len=32, batch_size=4, max_tokens_per_source=300)
    again = EncoderBatches(ds, seq_len=32, batch_size=4, seed=99).validation(
        max_tokens_per_source=300
    )
    assert set(val) == set(ds.sources)
    for source in val:
        assert len(val[source]) == 3  # ceil(300 / (4 * 32))
        for x, y in zip(val[source], again[source]):
            assert all(torch.equal(x[k], y[k]) for k in x)
