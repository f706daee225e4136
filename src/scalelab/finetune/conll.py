"""Column-format NER files (CoNLL-2003 and relatives): reading and writing.

Accepted input, one token per line:

* columns separated by tabs or by runs of spaces (``delimiter="auto"`` decides from the
  first token line: tab if it holds one, else whitespace), the token in one column
  (default the first) and the label in another (default the last), e.g. CoNLL-2003's
  ``token POS chunk NER``;
* sentences separated by blank lines -- a line of only whitespace counts as blank, which
  covers the Twitter NER file whose separator lines hold a single tab;
* ``-DOCSTART-`` lines (document breaks) are skipped and end the sentence;
* labels in IOB1, IOB2, IOBES, BILOU or IO, converted to IOB2 (:mod:`.schemes`).

Every line must have as many columns as the first token line; a line that does not is
an error naming the file and line.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from scalelab.data import readers
from scalelab.errors import UserError
from scalelab.finetune.examples import NerExample
from scalelab.finetune.schemes import canonical_scheme, check_tag, detect_scheme, to_iob2
from scalelab.finetune.textcls import read_task_text

_SPACES = re.compile(r"[ \t]+")
Delimiter = Literal["auto", "tab", "whitespace"]


@dataclasses.dataclass(frozen=True)
class ConllFile:
    """What :func:`read_conll` found in one file."""

    path: str
    examples: tuple[NerExample, ...]
    """Sentences with IOB2 tags."""
    scheme: str
    """The file's scheme (given, or detected when ``scheme="auto"``)."""
    scheme_reason: str
    """Why that scheme (``"given"`` or the detection rule that fired)."""
    n_repaired: int
    """Tags invalid in the scheme that were turned into entity starts (e.g. IOB2 ``I-X`` after ``O``)."""
    n_documents: int
    """``-DOCSTART-`` lines seen."""
    n_columns: int

    @property
    def n_tokens(self) -> int:
        return sum(len(ex.words) for ex in self.examples)

    def note(self) -> str:
        """One line for logs: sizes, scheme and repairs."""
        text = (
            f"{self.path}: {len(self.examples)} sentences, {self.n_tokens} tokens, "
            f"scheme {self.scheme} ({self.scheme_reason})"
        )
        if self.n_repaired:
            text += f", {self.n_repaired} invalid tags repaired to entity starts"
        return text


def _read_text(path: Path, encoding: str) -> str:
    return read_task_text(path, encoding, example=" (e.g. encoding='latin-1')")


def read_conll(
    path: str | Path,
    *,
    token_column: int = 0,
    label_column: int = -1,
    scheme: str = "auto",
    delimiter: Delimiter = "auto",
    encoding: str = "utf-8",
    docstart: str = "-DOCSTART-",
) -> ConllFile:
    """Read a column file into sentences with IOB2 tags.

    ``token_column`` and ``label_column`` are 0-based and may be negative (``-1`` is the
    last column). ``scheme`` is ``"auto"`` (see :func:`.schemes.detect_scheme`) or one of
    IOB1, IOB2/BIO, IOBES/BIOES, BILOU, IO. Raises :class:`UserError` naming the file and
    line for a wrong column count or an invalid tag, and for a file without sentences.
    """
    path = Path(path)
    wanted = canonical_scheme(scheme)
    if delimiter not in ("auto", "tab", "whitespace"):
        raise UserError(f"unknown delimiter '{delimiter}'; choose auto, tab or whitespace")
    text = _read_text(path, encoding)
    sentences, n_columns, n_documents = _parse_columns(
        path, text, token_column, label_column, delimiter, docstart
    )
    if not sentences:
        raise UserError(f"{path}: no sentences found (is it a column file with blank-line breaks?)")
    return _conll_file(path, sentences, wanted, n_documents=n_documents, n_columns=n_columns)


def _conll_file(
    path: Path,
    sentences: list[_Sentence],
    wanted: str,
    *,
    n_documents: int,
    n_columns: int,
    rows: bool = False,
) -> ConllFile:
    """The examples of ``sentences`` in the scheme ``wanted`` (``auto``: detected), with
    what was detected and repaired (column files and token-classification tables alike)."""
    if wanted == "auto":
        used, reason = detect_scheme(tags for _w, tags, _l in sentences)
    else:
        used, reason = wanted, "given"
    examples, n_repaired = _to_examples(
        path, sentences, used, scheme_given=wanted != "auto", rows=rows
    )
    return ConllFile(
        path=str(path),
        examples=tuple(examples),
        scheme=used,
        scheme_reason=reason,
        n_repaired=n_repaired,
        n_documents=n_documents,
        n_columns=n_columns,
    )


_Sentence = tuple[list[str], list[str], list[int]]  # words, raw tags, line numbers


def _parse_columns(
    path: Path, text: str, token_column: int, label_column: int, delimiter: str, docstart: str
) -> tuple[list[_Sentence], int, int]:
    """Sentences of ``text`` (words, raw tags, line numbers), columns, ``-DOCSTART-`` lines."""
    sentences: list[_Sentence] = []
    words: list[str] = []
    tags: list[str] = []
    lines: list[int] = []
    n_columns = 0
    first_line = 0
    use_tab = delimiter == "tab"
    n_documents = 0

    def flush() -> None:
        nonlocal words, tags, lines
        if words:
            sentences.append((words, tags, lines))
        words, tags, lines = [], [], []

    # Split on \n only: str.splitlines() would also break at \x1c, \u2028 ... inside tweets.
    for lineno, raw in enumerate(text.split("\n"), start=1):
        raw = raw.strip(" \t\r")
        if not raw.strip():
            flush()
            continue
        if not n_columns and delimiter == "auto":
            use_tab = "\t" in raw
        fields = raw.split("\t") if use_tab else _SPACES.split(raw)
        if fields[0] == docstart:
            n_documents += 1
            flush()
            continue
        if not n_columns:
            n_columns, first_line = len(fields), lineno
            _check_columns(path, lineno, n_columns, use_tab, token_column, label_column)
        elif len(fields) != n_columns:
            raise UserError(
                f"{path}:{lineno}: expected {n_columns} columns (as on line {first_line}), "
                f"found {len(fields)}"
            )
        words.append(fields[token_column])
        tags.append(fields[label_column])
        lines.append(lineno)
    flush()
    return sentences, n_columns, n_documents


def _check_columns(
    path: Path, lineno: int, n_columns: int, use_tab: bool, token_column: int, label_column: int
) -> None:
    """Raise unless the first token line has room for distinct token and label columns."""
    if n_columns < 2:
        raise UserError(
            f"{path}:{lineno}: found 1 column; a NER file needs a token and a label "
            f"column{' (separated by tabs)' if use_tab else ''}"
        )
    for name, col in (("token_column", token_column), ("label_column", label_column)):
        if not -n_columns <= col < n_columns:
            raise UserError(f"{path}:{lineno}: {name}={col} but lines have {n_columns} columns")
    if token_column % n_columns == label_column % n_columns:
        raise UserError(f"{path}: token_column and label_column are the same column")


def _to_examples(
    path: Path, sentences: list[_Sentence], used: str, *, scheme_given: bool, rows: bool = False
) -> tuple[list[NerExample], int]:
    """IOB2 examples of ``sentences`` (every tag checked against ``used``) and the tags
    repaired; ``rows``: the numbers are table rows (``file[row]``), not lines (``file:line``)."""
    examples: list[NerExample] = []
    n_repaired = 0
    at = "{}[{}]" if rows else "{}:{}"
    for sent_words, sent_tags, sent_lines in sentences:
        for tag, lineno in zip(sent_tags, sent_lines):
            problem = check_tag(tag, used)
            if problem is not None:
                hint = " (pass scheme=... to choose another)" if scheme_given else ""
                raise UserError(f"{at.format(path, lineno)}: {problem}{hint}")
        iob2, repaired = to_iob2(sent_tags, used)
        n_repaired += repaired
        source = at.format(path.name, sent_lines[0])
        examples.append(NerExample(sent_words, iob2, source=source))
    return examples, n_repaired


# ====================================================================== tables

_TOKEN_COLUMNS = ("tokens", "words")
_TAG_COLUMNS = ("ner_tags", "tags", "labels", "label")


def _list_column(schema: Any, given: str, default: str, candidates: tuple[str, ...]) -> str | None:
    """The list column to read: ``given`` when the user changed it from ``default``, else
    the first of ``candidates`` (``given`` first) that the table has as a list."""
    if given != default:
        return given
    for name in (given, *candidates):
        if name in schema.names and readers.column_type(schema, name).startswith("list of"):
            return name
    return None


def read_table_ner(
    path: str | Path, *, token_field: str = "text", tag_field: str = "label", scheme: str = "auto"
) -> ConllFile:
    """Read a token-classification table: one sentence per row, a list column of words
    (``tokens``) and one of tags (``ner_tags``: text, or integers that a ``datasets``
    ``ClassLabel`` names). Tags are converted to IOB2 like CoNLL files."""
    path = Path(path)
    wanted = canonical_scheme(scheme)
    sentences: list[_Sentence] = []
    for file in readers.table_files(path):
        sentences += _table_sentences(file, token_field, tag_field)
    if not sentences:
        raise UserError(f"{path}: no sentences found (every row is empty)")
    return _conll_file(path, sentences, wanted, n_documents=0, n_columns=2, rows=True)


def _table_sentences(file: Path, token_field: str, tag_field: str) -> list[_Sentence]:
    """The non-empty rows of one table file as (words, tags, [row] * length)."""
    fmt = readers.sniff(file)
    schema = readers.table_schema(file, fmt)
    tokens = _list_column(schema, token_field, "text", _TOKEN_COLUMNS)
    tags = _list_column(schema, tag_field, "label", _TAG_COLUMNS)
    hint = "choose the word and tag list columns with --task.text-field / --task.label-field"
    if tokens is None or tags is None:
        raise UserError(
            f"{file}: no list column of {'words' if tokens is None else 'tags'} "
            f"(columns: {', '.join(schema.names)}); {hint}"
        )
    readers.require_columns(file, schema, [tokens, tags], hint=hint)
    for column in (tokens, tags):
        kind = readers.column_type(schema, column)
        if not kind.startswith("list of"):
            raise UserError(f"{file}: column '{column}' holds {kind}, not a list per row; {hint}")
    names = readers.class_names(schema, tags, readers.dataset_info(file))
    out: list[_Sentence] = []
    row = 0
    for batch in readers.iter_batches(file, fmt, [tokens, tags]):
        for words, labels in zip(*(c.to_pylist() for c in batch.columns)):
            where = f"{file}[{row}]"
            words, labels = list(words or []), list(labels or [])
            if len(words) != len(labels):
                raise UserError(f"{where}: {len(words)} words but {len(labels)} tags")
            labels = [_tag_text(t, names, where) for t in labels]
            if words:
                out.append(([str(w) for w in words], labels, [row] * len(words)))
            row += 1
    return out


def _tag_text(tag: Any, names: list[str] | None, where: str) -> str:
    if isinstance(tag, str):
        return tag
    is_int = isinstance(tag, int) and not isinstance(tag, bool)
    if is_int and names is not None and 0 <= tag < len(names):
        return names[tag]
    raise UserError(
        f"{where}: tag {tag!r} is no tag name"
        + ("" if names is not None else " (integer tags need datasets ClassLabel names)")
    )


def _cell(text: str, delimiter: str) -> str:
    # A cell holding the delimiter (or nothing) would shift every later column.
    if delimiter.isspace():
        text = "_".join(text.split())
    else:
        text = text.replace(delimiter, "_")
    return text or "_"


def format_conll(
    words: Sequence[Sequence[str]],
    *columns: Sequence[Sequence[str]],
    delimiter: str = " ",
) -> str:
    """Sentences as column text: ``word col1 col2 ...`` per line, a blank line after each.

    With gold tags then predicted tags as the columns this is exactly the input the
    official ``conlleval`` script reads. Whitespace inside a word becomes ``_`` so the
    columns stay aligned.
    """
    out: list[str] = []
    for i, sent in enumerate(words):
        for col in columns:
            if len(col[i]) != len(sent):
                raise ValueError(f"sentence {i}: {len(sent)} words but {len(col[i])} labels")
        for j, word in enumerate(sent):
            cells = [_cell(word, delimiter)] + [_cell(col[i][j], delimiter) for col in columns]
            out.append(delimiter.join(cells))
        out.append("")
    return "\n".join(out) + ("\n" if out else "")


def write_conll(
    path: str | Path,
    words: Sequence[Sequence[str]],
    *columns: Sequence[Sequence[str]],
    delimiter: str = " ",
) -> Path:
    """Write :func:`format_conll` output atomically (never a half-written file)."""
    from scalelab.utils.io import atomic_write_text

    atomic_write_text(path, format_conll(words, *columns, delimiter=delimiter))
    return Path(path)
