"""Column-file reader/writer and tagging schemes."""

from __future__ import annotations

import pytest

from scalelab.errors import UserError
from scalelab.finetune.conll import format_conll, read_conll, write_conll
from scalelab.finetune.schemes import (
    canonical_scheme,
    detect_scheme,
    iob2_labels,
    iob2_spans,
    spans_to_iob2,
    to_iob2,
)

# CoNLL-2003 layout: token POS chunk NER, -DOCSTART-, blank-line breaks; its NER column is
# IOB1 (entities open with I-, B- only between two adjacent entities of one type).
CONLL2003 = """\
-DOCSTART- -X- -X- O

EU NNP I-NP I-ORG
rejects VBZ I-VP O
German JJ I-NP I-MISC
call NN I-NP O
. . O O

Peter NNP I-NP I-PER
Blackburn NNP I-NP I-PER

-DOCSTART- -X- -X- O

In IN I-PP O
Paris NNP I-NP I-LOC
Rome NNP I-NP B-LOC
"""


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_conll2003_iob1_read_and_normalised(tmp_path):
    found = read_conll(write(tmp_path, "eng.train", CONLL2003))
    assert found.scheme == "IOB1"
    assert found.n_documents == 2 and found.n_columns == 4
    assert [ex.words for ex in found.examples] == [
        ("EU", "rejects", "German", "call", "."),
        ("Peter", "Blackburn"),
        ("In", "Paris", "Rome"),
    ]
    assert found.examples[0].tags == ("B-ORG", "O", "B-MISC", "O", "O")
    assert found.examples[1].tags == ("B-PER", "I-PER")
    # B-LOC after I-LOC separates two adjacent locations: two entities.
    assert found.examples[2].tags == ("O", "B-LOC", "B-LOC")
    assert found.n_repaired == 0  # I- openers are legal in IOB1
    assert found.examples[0].source == "eng.train:3"


def test_choose_columns(tmp_path):
    found = read_conll(
        write(tmp_path, "x.txt", CONLL2003), token_column=1, label_column=2, scheme="IOB1"
    )
    assert found.examples[0].words[0] == "NNP"
    assert found.examples[0].tags[:2] == ("B-NP", "B-VP")


def test_twitter_format_tab_and_single_tab_separator(tmp_path):
    text = "Empire\tB-facility\nState\tI-facility\nis\tO\n\t\nhi\tO\n@bob\tB-person\n\t\n"
    found = read_conll(write(tmp_path, "ner.txt", text))
    assert found.scheme == "IOB2"
    assert len(found.examples) == 2
    assert found.examples[0].tags == ("B-facility", "I-facility", "O")
    assert found.examples[1].words == ("hi", "@bob")


def test_tab_mode_allows_spaces_inside_tokens(tmp_path):
    found = read_conll(write(tmp_path, "t.tsv", "New York\tB-LOC\nis\tO\n"), delimiter="tab")
    assert found.examples[0].words == ("New York", "is")


@pytest.mark.parametrize(
    ("scheme", "tags", "expected"),
    [
        (
            "IOBES",
            ["S-PER", "O", "B-LOC", "I-LOC", "E-LOC", "S-LOC"],
            ["B-PER", "O", "B-LOC", "I-LOC", "I-LOC", "B-LOC"],
        ),
        (
            "BILOU",
            ["U-PER", "B-LOC", "L-LOC", "U-LOC", "O"],
            ["B-PER", "B-LOC", "I-LOC", "B-LOC", "O"],
        ),
        ("IO", ["PER", "PER", "O", "LOC", "PER"], ["B-PER", "I-PER", "O", "B-LOC", "B-PER"]),
    ],
)
def test_other_schemes_convert_to_iob2(tmp_path, scheme, tags, expected):
    text = "".join(f"w{i} {t}\n" for i, t in enumerate(tags))
    found = read_conll(write(tmp_path, "s.txt", text))
    assert found.scheme == scheme  # detected
    assert list(found.examples[0].tags) == expected
    assert found.n_repaired == 0


def test_repairs_are_counted():
    # IOB2 with an I- opener; IOBES with I- right after a closed E-.
    assert to_iob2(["O", "I-X", "I-X"], "IOB2") == (("O", "B-X", "I-X"), 1)
    assert to_iob2(["B-X", "E-X", "I-X", "E-X"], "IOBES") == (("B-X", "I-X", "B-X", "I-X"), 1)
    assert to_iob2(["I-X", "B-X"], "IOB1") == (("B-X", "B-X"), 0)


def test_detect_scheme_rules():
    assert detect_scheme([["B-X", "I-X", "O"]])[0] == "IOB2"
    assert detect_scheme([["O", "O"]])[0] == "IOB2"
    assert detect_scheme([["I-X", "B-X"]])[0] == "IOB1"
    assert detect_scheme([["S-X"], ["B-X", "E-X"]])[0] == "IOBES"
    assert detect_scheme([["U-X"]])[0] == "BILOU"
    # Mostly IOB2 with one stray I- opener: IOB2, the opener repaired.
    scheme, reason = detect_scheme([["B-X", "O", "B-Y", "O", "I-Z"]])
    assert scheme == "IOB2" and "repaired" in reason
    # Mixtures: the majority wins and the reader reports the odd tag by line.
    assert detect_scheme([["S-X", "S-X", "U-X"]])[0] == "IOBES"
    assert detect_scheme([["B-X", "PER"]])[0] == "IOB2"


def test_wrong_column_count_names_file_and_line(tmp_path):
    path = write(tmp_path, "bad.conll", "a NN B-X\nb NN I-X\n\nc NN\n")
    with pytest.raises(
        UserError, match=r"bad\.conll:4: expected 3 columns \(as on line 1\), found 2"
    ):
        read_conll(path)


def test_invalid_tag_names_line(tmp_path):
    path = write(tmp_path, "bad.conll", "a B-X\nb I-X\nc Q-X\n")
    with pytest.raises(UserError, match=r"bad\.conll:3: invalid IOB2 tag 'Q-X'"):
        read_conll(path)
    with pytest.raises(UserError, match=r"mix\.conll:2: .*'U-X' uses prefix U- which IOBES"):
        read_conll(write(tmp_path, "mix.conll", "a S-X\nb U-X\nc S-X\n"))
    # A tag the given scheme does not have.
    with pytest.raises(UserError, match=r":1: .*S- which IOB2"):
        read_conll(write(tmp_path, "s.conll", "a S-X\n"), scheme="IOB2")


def test_unknown_scheme_and_empty_and_missing(tmp_path):
    with pytest.raises(UserError, match="unknown tagging scheme 'IOX'"):
        read_conll(write(tmp_path, "a.conll", "a O\n"), scheme="IOX")
    with pytest.raises(UserError, match="no sentences"):
        read_conll(write(tmp_path, "empty.conll", "\n\n-DOCSTART- O\n\n"))
    with pytest.raises(UserError, match="file not found"):
        read_conll(tmp_path / "nope.conll")
    with pytest.raises(UserError, match="label_column=5"):
        read_conll(write(tmp_path, "b.conll", "a O\n"), label_column=5)
    with pytest.raises(UserError, match="found 1 column"):
        read_conll(write(tmp_path, "c.conll", "a\nb\n"))
    assert canonical_scheme("bio") == "IOB2" and canonical_scheme("BIOES") == "IOBES"


def test_write_then_read_roundtrip(tmp_path):
    words = [["New", "York", "is"], ["a b", "c"]]
    gold = [["B-LOC", "I-LOC", "O"], ["O", "B-X"]]
    pred = [["B-LOC", "O", "O"], ["O", "B-X"]]
    path = write_conll(tmp_path / "out" / "pred.txt", words, gold, pred)
    text = path.read_text()
    assert text.startswith("New B-LOC B-LOC\nYork I-LOC O\nis O O\n\na_b O O\n")
    back = read_conll(path, label_column=1)
    assert [list(ex.tags) for ex in back.examples] == gold
    assert read_conll(path, label_column=2).examples[0].tags == ("B-LOC", "O", "O")
    with pytest.raises(ValueError, match="sentence 0"):
        format_conll(words, [["O"], ["O", "O"]])


def test_span_helpers():
    tags = ("B-A", "I-A", "O", "I-B", "B-B", "I-A")
    # Strict: I-B after O and I-A after B-B open nothing.
    assert iob2_spans(tags) == [("A", 0, 2), ("B", 4, 5)]
    assert spans_to_iob2(6, [("A", 0, 2), ("B", 4, 5)]) == ("B-A", "I-A", "O", "O", "B-B", "O")
    assert iob2_labels(["PER", "LOC"]) == ("O", "B-LOC", "I-LOC", "B-PER", "I-PER")


def test_split_words_for_raw_text():
    from scalelab.finetune.examples import split_words

    text = "Hi @bob, it's New-York! see https://x.y/z?a=1 #nlp 3.5%"
    assert split_words(text) == [
        "Hi", "@bob", ",", "it's", "New-York", "!", "see", "https://x.y/z?a=1", "#nlp", "3.5", "%",
    ]  # fmt: skip
    assert split_words("   ") == []
