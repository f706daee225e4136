"""The user's data gets in: Parquet, Arrow, datasets save_to_disk directories, compressed
and array JSON as pretraining sources and as fine-tuning tasks; binary input is refused."""

from __future__ import annotations

import gzip
import json
import random
import sys
from pathlib import Path

import pytest

from scalelab.cli import main
from scalelab.data import readers
from scalelab.data.sources import resolve_sources
from scalelab.errors import UserError
from scalelab.finetune.tasks import load_task

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
pytest.importorskip("pyarrow.ipc")

TEXTS = [f"Document number {i} says hello." for i in range(10)]


def _table(n: int = 10, **extra):
    cols = {"id": list(range(n)), "text": [f"Document number {i} says hello." for i in range(n)]}
    cols.update(extra)
    return pa.table(cols)


def _write_parquet(path: Path, table, **kw) -> Path:
    pq.write_table(table, path, **kw)
    return path


def _write_ipc(path: Path, table, *, stream: bool, batch_rows: int = 3) -> Path:
    opener = pa.ipc.new_stream if stream else pa.ipc.new_file
    with pa.OSFile(str(path), "wb") as sink, opener(sink, table.schema) as writer:
        for batch in table.to_batches(max_chunksize=batch_rows):
            writer.write_batch(batch)
    return path


def _save_to_disk_like(directory: Path, table, features: dict, *, shards: int = 1) -> Path:
    """The layout ``datasets.Dataset.save_to_disk`` writes (checked against datasets 5.2):
    ``data-0000K-of-0000N.arrow`` IPC *stream* files whose schema metadata holds the
    features under ``huggingface``, ``dataset_info.json`` and ``state.json`` naming the files."""
    directory.mkdir(parents=True)
    meta = {b"huggingface": json.dumps({"info": {"features": features}}).encode()}
    table = table.replace_schema_metadata(meta)
    names = []
    per = -(-table.num_rows // shards)
    for k in range(shards):
        name = f"data-{k:05d}-of-{shards:05d}.arrow"
        _write_ipc(directory / name, table.slice(k * per, per), stream=True)
        names.append({"filename": name})
    (directory / "dataset_info.json").write_text(json.dumps({"features": features}))
    state = {
        "_data_files": names,
        "_fingerprint": "0123456789abcdef",
        "_format_columns": None,
        "_format_kwargs": {},
        "_format_type": None,
        "_output_all_columns": False,
        "_split": None,
    }
    (directory / "state.json").write_text(json.dumps(state))
    return directory


def _docs(spec: str, **kw) -> list[tuple[str, str]]:
    (source,) = resolve_sources([spec], **kw)
    return [(d.id, d.text) for d in source.documents()]


# ----------------------------------------------------------------------------- sources


def test_parquet_file_streams_by_row_group_and_reads_one_column(tmp_path, monkeypatch):
    table = _table(10, other=[b"\x00\xff" * 100] * 10)
    path = _write_parquet(tmp_path / "web.parquet", table, row_group_size=4)
    assert readers.sniff(path) == readers.Format("parquet")
    batches = list(readers.iter_batches(path, readers.Format("parquet"), ["text"]))
    assert [b.num_rows for b in batches] == [4, 4, 2] and all(b.num_columns == 1 for b in batches)

    def whole(*_a, **_k):
        raise AssertionError("read the whole file")

    monkeypatch.setattr(pq, "read_table", whole)
    docs = _docs(str(path))
    assert docs == [(f"web.parquet[{i}]", TEXTS[i]) for i in range(10)]
    (src,) = resolve_sources([str(path)])
    assert (src.kind, src.name, src.undecodable) == ("parquet", "web", 0)


def test_parquet_nulls_skipped_text_field_and_missing_column(tmp_path):
    table = pa.table({"body": ["one", None, "three"], "n": [1, 2, 3]})
    path = _write_parquet(tmp_path / "t.parquet", table)
    assert _docs(str(path), text_field="body") == [
        ("t.parquet[0]", "one"),
        ("t.parquet[2]", "three"),
    ]
    with pytest.raises(
        UserError,
        match=r"t\.parquet: no column 'text' \(columns: body, n\); choose one with --text-field",
    ):
        _docs(str(path))
    with pytest.raises(UserError, match=r"column 'n' holds int64, not text"):
        _docs(str(path), text_field="n")


def test_parquet_directory_and_glob(tmp_path):
    shards = tmp_path / "shards"
    (shards / "sub").mkdir(parents=True)
    _write_parquet(shards / "a.parquet", _table(3))
    _write_parquet(shards / "sub" / "b.parquet", pa.table({"text": ["from b"]}))
    (shards / "_SUCCESS").write_text("")
    (src,) = resolve_sources([str(shards)])
    assert src.kind == "dir"
    assert [d.id for d in src.documents()] == [
        "a.parquet[0]",
        "a.parquet[1]",
        "a.parquet[2]",
        "sub/b.parquet[0]",
    ]
    (glob_src,) = resolve_sources([f"g={shards}/*.parquet"])
    assert [d.text for d in glob_src.documents()] == TEXTS[:3]


@pytest.mark.parametrize("stream", [False, True], ids=["file-format", "stream-format"])
def test_arrow_ipc_files(tmp_path, stream):
    path = _write_ipc(tmp_path / "c.arrow", _table(7), stream=stream)
    assert readers.sniff(path).kind == "arrow"
    assert _docs(str(path)) == [(f"c.arrow[{i}]", TEXTS[i]) for i in range(7)]


def test_formats_are_told_by_magic_bytes_not_names(tmp_path):
    _write_parquet(tmp_path / "p.txt", _table(2))
    _write_ipc(tmp_path / "s.bin", _table(2), stream=True)
    with gzip.open(tmp_path / "posts.jsonl", "wt") as fh:
        fh.write(json.dumps({"text": "gzipped but named .jsonl"}) + "\n")
    assert readers.sniff(tmp_path / "p.txt").kind == "parquet"
    assert _docs(str(tmp_path / "p.txt")) == [("p.txt[0]", TEXTS[0]), ("p.txt[1]", TEXTS[1])]
    assert [t for _, t in _docs(str(tmp_path / "s.bin"))] == TEXTS[:2]
    assert readers.sniff(tmp_path / "posts.jsonl") == readers.Format("jsonl", "gzip")
    assert _docs(str(tmp_path / "posts.jsonl")) == [("posts.jsonl:1", "gzipped but named .jsonl")]
    (tmp_path / "fake.parquet").write_text("not parquet at all")
    with pytest.raises(UserError, match=r"fake\.parquet: not a Parquet file"):
        resolve_sources([str(tmp_path / "fake.parquet")])


def test_save_to_disk_directory_dataset_and_dataset_dict(tmp_path):
    feats = {
        "text": {"dtype": "string", "_type": "Value"},
        "id": {"dtype": "int64", "_type": "Value"},
    }
    one = _save_to_disk_like(tmp_path / "saved", _table(5), feats, shards=2)
    (src,) = resolve_sources([str(one)])
    assert (src.kind, src.name) == ("hf-dataset", "saved")
    docs = [(d.id, d.text) for d in src.documents()]
    assert docs == [
        ("data-00000-of-00002.arrow[0]", TEXTS[0]),
        ("data-00000-of-00002.arrow[1]", TEXTS[1]),
        ("data-00000-of-00002.arrow[2]", TEXTS[2]),
        ("data-00001-of-00002.arrow[0]", TEXTS[3]),
        ("data-00001-of-00002.arrow[1]", TEXTS[4]),
    ]
    dd = tmp_path / "dd"
    _save_to_disk_like(dd / "train", _table(3), feats)
    _save_to_disk_like(dd / "test", pa.table({"text": ["held out"], "id": [9]}), feats)
    (dd / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "test"]}))
    ids = [d.id for d in resolve_sources([str(dd)])[0].documents()]
    assert ids[-1] == "test/data-00000-of-00001.arrow[0]" and len(ids) == 4
    (one / "state.json").write_text(json.dumps({"_data_files": [{"filename": "gone.arrow"}]}))
    with pytest.raises(UserError, match=r"state\.json: names gone\.arrow, which is missing"):
        resolve_sources([str(one)])


def test_a_real_datasets_save_to_disk_directory(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    features = datasets.Features(
        {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])}
    )
    ds = datasets.Dataset.from_dict(
        {"text": [f"review {i} text" for i in range(20)], "label": [i % 2 for i in range(20)]},
        features=features,
    )
    ds.shuffle(seed=0).save_to_disk(str(tmp_path / "real"))
    want = list(ds.shuffle(seed=0)["text"])
    assert [d.text for d in resolve_sources([str(tmp_path / "real")])[0].documents()] == want
    task = load_task(str(tmp_path / "real"), dev_fraction=0.2, test_fraction=0.2)
    assert task.labels == ("neg", "pos") and sum(task.sizes().values()) == 20


def test_compressed_and_array_json(tmp_path):
    records = [{"text": f"line {i}"} for i in range(3)]
    with gzip.open(tmp_path / "r.jsonl.gz", "wt") as fh:
        fh.write("\n".join(json.dumps(r) for r in records) + "\n")
    (src,) = resolve_sources([str(tmp_path / "r.jsonl.gz")])
    assert (src.name, src.kind) == ("r", "jsonl")
    assert [(d.id, d.text) for d in src.documents()] == [
        (f"r.jsonl.gz:{i + 1}", f"line {i}") for i in range(3)
    ]
    (tmp_path / "a.json").write_text(
        json.dumps([{"text": "first"}, {"text": None}, {"text": "third"}])
    )
    assert _docs(str(tmp_path / "a.json")) == [("a.json[0]", "first"), ("a.json[2]", "third")]
    (tmp_path / "s.json").write_text(json.dumps(["just a string", "another"]))
    assert [t for _, t in _docs(str(tmp_path / "s.json"))] == ["just a string", "another"]
    (tmp_path / "bad.json").write_text(json.dumps([{"body": "x"}]))
    with pytest.raises(UserError, match=r"bad\.json\[0\]: no field 'text' \(fields: body\)"):
        _docs(str(tmp_path / "bad.json"))
    (tmp_path / "lines.json").write_text('{"text": "json lines named .json"}\n')
    assert _docs(str(tmp_path / "lines.json")) == [("lines.json:1", "json lines named .json")]


def test_zstd_jsonl_and_its_missing_package(tmp_path, monkeypatch):
    zstandard = pytest.importorskip("zstandard")
    data = (json.dumps({"text": "zstd record"}) + "\n").encode()
    (tmp_path / "z.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(data))
    assert _docs(str(tmp_path / "z.jsonl.zst")) == [("z.jsonl.zst:1", "zstd record")]
    monkeypatch.setitem(sys.modules, "zstandard", None)  # import fails: not installed
    with pytest.raises(
        UserError,
        match=r"z\.jsonl\.zst: reading \.zst files needs the zstandard package: pip install zstandard",
    ):
        _docs(str(tmp_path / "z.jsonl.zst"))


# ----------------------------------------------------------------------------- refusals


def test_binary_files_are_refused_in_one_line(tmp_path):
    (tmp_path / "img.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    (tmp_path / "blob.dat").write_bytes(b"abc\x00\x01\x02" * 50)
    (tmp_path / "doc.txt").write_bytes(b"PK\x03\x04" + b"\x14\x00" * 40)
    for name, what in (
        ("img.png", "a PNG image"),
        ("blob.dat", "NUL bytes"),
        ("doc.txt", "zip archive"),
    ):
        with pytest.raises(
            UserError, match=rf"{name}: not UTF-8 text but .*{what}.*Parquet"
        ) as exc:
            _docs(str(tmp_path / name))
        assert "\n" not in str(exc.value)
    # A directory of them, through the CLI: exit 2 and one line, no dataset.
    argv = [
        "data",
        "prepare",
        "--sources",
        str(tmp_path / "blob.dat"),
        "--out",
        str(tmp_path / "d"),
    ]
    assert main(argv) == 2
    assert not (tmp_path / "d").exists()


def test_many_undecodable_bytes_are_refused_unless_allowed(tmp_path):
    rng = random.Random(0)
    latin = " ".join("caf\xe9 na\xefve" for _ in range(200)).encode("latin-1")
    (tmp_path / "latin.txt").write_bytes(latin)
    with pytest.raises(
        UserError,
        match=r"latin\.txt: 400 byte sequences \(.*% of its bytes\) are not UTF-8.*--errors allow",
    ):
        _docs(str(tmp_path / "latin.txt"))
    (src,) = resolve_sources([str(tmp_path / "latin.txt")], errors="allow")
    text = "".join(d.text for d in src.documents())
    assert src.undecodable == 400 and text.count("\ufffd") == 400
    # A stray byte or two in a long file is counted, not refused (the 0.1% rule).
    words = " ".join(rng.choice(["alpha", "beta", "gamma"]) for _ in range(2000)).encode()
    (tmp_path / "ok.txt").write_bytes(words[:5000] + b"\xff" + words[5000:])
    (src,) = resolve_sources([str(tmp_path / "ok.txt")])
    list(src.documents())
    assert src.undecodable == 1
    # The same rule for JSON lines, where each line is decoded as it streams by.
    bad = b"".join(b'{"text": "\xe9\xe9\xe9 %d"}\n' % i for i in range(20))
    (tmp_path / "l.jsonl").write_bytes(bad)
    with pytest.raises(UserError, match=r"l\.jsonl: 60 byte sequences"):
        _docs(str(tmp_path / "l.jsonl"))


def test_strict_errors_name_the_file_offset_in_streamed_jsonl(tmp_path):
    (tmp_path / "r.jsonl").write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(UserError, match=r"r\.jsonl: undecodable bytes at byte offset 28 "):
        _docs(str(tmp_path / "r.jsonl"), errors="strict")


def test_directory_without_readable_files_names_the_formats(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.csv").write_text("a,b\n")
    with pytest.raises(UserError, match=r"holds no \*\.txt or \*\.md files, nor \*\.parquet"):
        resolve_sources([str(tmp_path / "d")])


# ----------------------------------------------------------------------------- prepare


def test_prepare_from_parquet_end_to_end(tmp_path, capsys):
    rng = random.Random(1)
    words = ["lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit"]
    texts = [" ".join(rng.choice(words) for _ in range(40)) + "." for _ in range(60)]
    table = pa.table({"body": texts, "n": list(range(60))})
    _write_parquet(tmp_path / "c.parquet", table, row_group_size=16)
    out = tmp_path / "ds"
    argv = ["data", "prepare", "--sources", str(tmp_path / "c.parquet"), "--vocab-size", "280"]
    # The spelling (--data.text-field, as in pretrain) works beside --text-field.
    argv += ["--data.text-field", "body"]
    assert main([*argv, "--val-fraction", "0.1", "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    entry = manifest["sources"]["c"]
    assert entry["kind"] == "parquet" and entry["undecodable"] == 0
    assert sum(entry["docs"].values()) == 60
    assert sum(entry["chars"].values()) == sum(len(t) for t in texts)
    from scalelab.data.tokenizer import load_tokenizer

    tok = load_tokenizer(out / "tokenizer")
    ids = tok.encode("lorem ipsum dolor")
    assert tok.decode(ids).strip() == "lorem ipsum dolor" and len(ids) < 17  # merges learnt


# ----------------------------------------------------------------------------- tasks


def _cls_table(n: int = 40):
    return pa.table(
        {
            "sentence": [f"example {i} is {'good' if i % 2 else 'bad'}" for i in range(n)],
            "label": [i % 2 for i in range(n)],
        }
    )


def test_classification_task_from_parquet_arrow_and_jsonl_gz(tmp_path):
    table = _cls_table()
    _write_parquet(tmp_path / "t.parquet", table)
    _write_ipc(tmp_path / "t.arrow", table, stream=False)
    with gzip.open(tmp_path / "t.jsonl.gz", "wt") as fh:
        for row in table.to_pylist():
            fh.write(json.dumps({"text": row["sentence"], "label": row["label"]}) + "\n")
    a = load_task(str(tmp_path / "t.parquet"), text_field="sentence")
    b = load_task(str(tmp_path / "t.arrow"), text_field="sentence")
    c = load_task(str(tmp_path / "t.jsonl.gz"))
    assert a.kind == b.kind == c.kind == "classification"
    assert a.labels == ("0", "1") and a.sizes() == {"train": 32, "dev": 4, "test": 4}
    assert [(e.text, e.label) for e in a.test] == [(e.text, e.label) for e in c.test]
    assert [(e.text, e.label) for e in a.train] == [(e.text, e.label) for e in b.train]
    assert (a.train[0].source, b.train[0].source) == ("t.parquet[0]", "t.arrow[0]")
    assert (a.name, c.name) == ("t", "t")
    with pytest.raises(
        UserError, match=r"t\.parquet: no column 'text' \(columns: sentence, label\)"
    ):
        load_task(str(tmp_path / "t.parquet"), kind="classification")


def test_class_label_names_and_a_dataset_dict_task(tmp_path):
    feats = {
        "sentence": {"dtype": "string", "_type": "Value"},
        "label": {"names": ["neg", "pos"], "_type": "ClassLabel"},
    }
    dd = tmp_path / "sst"
    table = _cls_table(40)
    _save_to_disk_like(dd / "train", table, feats)
    _save_to_disk_like(dd / "validation", table.slice(0, 6), feats)
    _save_to_disk_like(dd / "test", table.slice(6, 6), feats)
    (dd / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "validation", "test"]}))
    task = load_task(str(dd), text_field="sentence")
    assert task.name == "sst" and task.labels == ("neg", "pos")
    assert task.sizes() == {"train": 40, "dev": 6, "test": 6}
    assert task.dev[0].label == "neg" and task.dev[1].label == "pos"
    assert task.test[0].text == "example 6 is bad"


def test_token_classification_table(tmp_path):
    feats = {
        "tokens": {"feature": {"dtype": "string", "_type": "Value"}, "_type": "List"},
        "ner_tags": {
            "feature": {"names": ["O", "B-PER", "I-PER"], "_type": "ClassLabel"},
            "_type": "List",
        },
    }
    n = 30
    table = pa.table(
        {
            "tokens": [["Ann", "Lee", "sings", str(i)] for i in range(n)],
            "ner_tags": [[1, 2, 0, 0] for _ in range(n)],
        }
    )
    _save_to_disk_like(tmp_path / "ner", table, feats)
    task = load_task(str(tmp_path / "ner"))
    assert task.kind == "ner" and task.entity_types == ("PER",)
    assert task.train[0].tags == ("B-PER", "I-PER", "O", "O")
    assert task.train[0].source.startswith("ner[")
    text_tags = pa.table({"words": [["a", "b"]] * n, "tags": [["B-X", "O"]] * n})
    _write_parquet(tmp_path / "n.parquet", text_tags)
    task = load_task(str(tmp_path / "n.parquet"))
    assert task.kind == "ner" and task.train[0].tags == ("B-X", "O")
    bad = pa.table({"tokens": [["a", "b"]] * n, "ner_tags": [["B-X"]] * n})
    _write_parquet(tmp_path / "bad.parquet", bad)
    with pytest.raises(UserError, match=r"bad\.parquet\[0\]: 2 words but 1 tags"):
        load_task(str(tmp_path / "bad.parquet"))


def test_binary_task_file_is_called_binary(tmp_path):
    (tmp_path / "t.csv").write_bytes(b"PK\x03\x04\x14\x00\x00\x00\x08\x00\xff\xfe" * 10)
    with pytest.raises(
        UserError, match=r"t\.csv: not valid utf-8 at byte \d+; it looks like a zip archive"
    ):
        load_task(str(tmp_path / "t.csv"))
    _write_parquet(tmp_path / "p.conll", _cls_table())
    task = load_task(str(tmp_path / "p.conll"), text_field="sentence")  # magic bytes win
    assert task.kind == "classification"


def test_peek_checks_the_head_of_a_text_file_without_splitting_a_character(tmp_path):
    from scalelab.data.sources import PEEK_BYTES

    good = tmp_path / "good.txt"
    good.write_text("é" * PEEK_BYTES, encoding="utf-8")  # the cut falls inside a character
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"ab\xff" + b"x" * 10)
    late = tmp_path / "late.txt"
    late.write_bytes(b"x" * (PEEK_BYTES + 10) + b"\xff")  # beyond the head: the full read
    for path, fails in ((good, False), (bad, True), (late, False)):
        (source,) = resolve_sources([str(path)], errors="strict")
        if fails:
            with pytest.raises(UserError, match="undecodable bytes at byte offset 2"):
                source.peek()
        else:
            source.peek()
    (source,) = resolve_sources([str(late)], errors="strict")
    with pytest.raises(UserError, match="undecodable"):
        list(source.texts())
