"""Text-classification files, each row a text and a label: CSV/TSV with a header, JSON
lines, JSON arrays of objects (also gzip/zstd-compressed: ``x.jsonl.gz``), and Parquet or
Arrow tables (a file, a directory of them, a ``datasets`` ``save_to_disk`` directory).

Labels are kept as text (a JSON number ``1`` becomes ``"1"``) so that a task's label list
is the same whatever file format it came from; an integer column that ``datasets`` marks
as a ``ClassLabel`` gives its class names instead. A missing column/field, an empty text
or label, or a line that is not JSON is an error naming the file and line (``file[row]``
for arrays and tables, 0-based).
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from scalelab.data import readers
from scalelab.errors import UserError
from scalelab.finetune.examples import TaskKind, TextExample

#: The task file formats, for error messages.
TASK_FORMATS = (
    "CSV/TSV, JSON lines (.jsonl, .jsonl.gz, .jsonl.zst), JSON arrays (.json), CoNLL columns, "
    "Parquet and Arrow files or directories"
)


def check_encoding(encoding: str) -> None:
    """Raise :class:`UserError` unless Python knows the text encoding ``encoding``.

    Reading with an unknown one raises ``LookupError``, which is no user-facing error.
    """
    try:
        # Codecs such as base64 or rot13 are found but read no text files either.
        known = getattr(codecs.lookup(encoding), "_is_text_encoding", True)
    except (LookupError, TypeError, ValueError):
        known = False
    if not known:
        raise UserError(
            f"unknown text encoding {encoding!r}; use a Python codec name such as utf-8, "
            "latin-1 or cp1252"
        )


def read_task_text(path: str | Path, encoding: str, *, example: str = "") -> str:
    """The text of a task file (gzip/zstd files decompressed), decoded with ``encoding``.

    A file that does not decode is an error naming the byte, and calling a binary file
    binary rather than suggesting another encoding; ``example`` adds one to the hint.
    """
    path = Path(path)
    check_encoding(encoding)
    if not path.is_file():
        raise UserError(f"file not found: {path}")
    raw = readers.read_bytes(path)
    what = readers.binary_kind(raw[: readers.BINARY_PROBE])
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as exc:
        if what is not None:
            raise UserError(
                f"{path}: not valid {encoding} at byte {exc.start}; it looks like {what} "
                f"(task files are {TASK_FORMATS})"
            ) from None
        raise UserError(
            f"{path}: not valid {encoding} at byte {exc.start}; pass the file's encoding{example}"
        ) from None
    if "\x00" in text[: readers.BINARY_PROBE]:
        raise UserError(
            f"{path}: not a text file but binary data (it holds NUL bytes); task files are "
            f"{TASK_FORMATS}"
        )
    return text


def _open_text(path: Path, encoding: str) -> str:
    return read_task_text(path, encoding)


def _label_text(value: object, where: str, field: str) -> str:
    if isinstance(value, bool) or value is None or isinstance(value, dict | list):
        raise UserError(f"{where}: field '{field}' must be text or a number, got {value!r}")
    text = str(value).strip()
    if not text:
        raise UserError(f"{where}: empty {field}")
    return text


def read_csv_examples(
    path: str | Path,
    *,
    text_column: str = "text",
    label_column: str = "label",
    delimiter: str | None = None,
    encoding: str = "utf-8",
) -> tuple[TextExample, ...]:
    """Read a CSV (or TSV) file whose header names a text and a label column.

    ``delimiter=None`` sniffs comma, tab or semicolon from the header line. Quoted fields
    may span lines; the line numbers in errors and in ``source`` are those where the row
    starts.
    """
    path = Path(path)
    text = _open_text(path, encoding)
    if not text.strip():
        raise UserError(f"{path}: empty file")
    if delimiter is None:
        header = text.split("\n", 1)[0]
        delimiter = max(",\t;", key=header.count)
    # StringIO(newline="") splits rows only at \r / \n, never at \u2028 & co. inside a text.
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        columns = [c.strip() for c in next(reader)]
    except csv.Error as exc:
        raise UserError(f"{path}:1: cannot parse the CSV header: {exc}") from None
    missing = [c for c in (text_column, label_column) if c not in columns]
    if missing:
        raise UserError(
            f"{path}:1: no column {', '.join(repr(m) for m in missing)} in the header "
            f"(columns: {', '.join(columns)}); choose them with text_column=/label_column="
        )
    i_text, i_label = columns.index(text_column), columns.index(label_column)
    out: list[TextExample] = []
    start = reader.line_num + 1
    try:
        for row in reader:
            where = f"{path}:{start}"
            start = reader.line_num + 1
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) != len(columns):
                raise UserError(f"{where}: expected {len(columns)} fields, found {len(row)}")
            body = row[i_text].strip()
            if not body:
                raise UserError(f"{where}: empty {text_column}")
            label = _label_text(row[i_label], where, label_column)
            out.append(TextExample(body, label, source=f"{path.name}:{where.rsplit(':', 1)[1]}"))
    except csv.Error as exc:
        raise UserError(f"{path}:{reader.line_num}: {exc}") from None
    if not out:
        raise UserError(f"{path}: no rows after the header")
    return tuple(out)


def read_jsonl_examples(
    path: str | Path,
    *,
    text_field: str = "text",
    label_field: str = "label",
    encoding: str = "utf-8",
) -> tuple[TextExample, ...]:
    """Read JSON lines of objects like ``{"text": ..., "label": ...}`` (blank lines skipped),
    or a JSON array of such objects (a ``.json`` file whose first character is ``[``)."""
    path = Path(path)
    text = _open_text(path, encoding)
    out: list[TextExample] = []
    arrays = inner_suffix(path) == ".json"  # a .jsonl file is lines, whatever it starts with
    for where, source, record in _json_records(path, text, arrays=arrays):
        if not isinstance(record, dict):
            raise UserError(f"{where}: expected a JSON object, got {type(record).__name__}")
        for field in (text_field, label_field):
            if field not in record:
                raise UserError(
                    f"{where}: no field '{field}' (fields: {', '.join(map(str, record))}); "
                    "choose them with text_field=/label_field="
                )
        body = record[text_field]
        if not isinstance(body, str) or not body.strip():
            raise UserError(f"{where}: field '{text_field}' must be non-empty text")
        label = _label_text(record[label_field], where, label_field)
        out.append(TextExample(body.strip(), label, source=source))
    if not out:
        raise UserError(f"{path}: no examples")
    return tuple(out)


def _json_records(path: Path, text: str, *, arrays: bool) -> Iterator[tuple[str, str, Any]]:
    """``(where, source, value)`` of each JSON line, or (``arrays``: when the text starts
    with ``[``) of each entry of a JSON array."""
    if arrays and text.lstrip("\ufeff \t\r\n").startswith("["):
        try:
            entries = json.loads(text.lstrip("\ufeff"))
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
        if not isinstance(entries, list):
            raise UserError(f"{path}: expected a JSON array, got {type(entries).__name__}")
        for i, entry in enumerate(entries):
            yield f"{path}[{i}]", f"{path.name}[{i}]", entry
        return
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{where}: not valid JSON ({exc.msg})") from None
        yield where, f"{path.name}:{lineno}", record


def read_table_examples(
    path: str | Path, *, text_field: str = "text", label_field: str = "label"
) -> tuple[TextExample, ...]:
    """Read a Parquet/Arrow table (a file, a directory of them, a ``save_to_disk`` one).

    Streams the two columns batch by batch; a ``datasets`` ``ClassLabel`` label column
    gives its class names, any other label is kept as text.
    """
    path = Path(path)
    out: list[TextExample] = []
    hint = "choose them with --task.text-field / --task.label-field"
    for file in readers.table_files(path):
        fmt = readers.sniff(file)
        schema = readers.table_schema(file, fmt)
        readers.require_columns(file, schema, [text_field, label_field], hint=hint)
        kind = readers.column_type(schema, text_field)
        if kind != "text":
            raise UserError(
                f"{file}: column '{text_field}' holds {kind}, not text; {hint} "
                f"(columns: {', '.join(schema.names)})"
            )
        names = readers.class_names(schema, label_field, readers.dataset_info(file))
        rel = file.name if file == path else file.relative_to(path).as_posix()
        row = 0
        for batch in readers.iter_batches(file, fmt, [text_field, label_field]):
            texts, labels = (c.to_pylist() for c in batch.columns)
            for body, label in zip(texts, labels):
                where = f"{file}[{row}]"
                if not isinstance(body, str) or not body.strip():
                    raise UserError(f"{where}: empty {text_field}")
                if names is not None and isinstance(label, int) and 0 <= label < len(names):
                    label = names[label]
                label = _label_text(label, where, label_field)
                out.append(TextExample(body.strip(), label, source=f"{rel}[{row}]"))
                row += 1
    if not out:
        raise UserError(f"{path}: no examples")
    return tuple(out)


def infer_table_kind(path: str | Path, text_field: str = "text") -> TaskKind:
    """NER when a table has list-of-words columns and no text column, else classification."""
    file = readers.table_files(path)[0]
    schema = readers.table_schema(file, readers.sniff(file))
    if text_field in schema.names and readers.column_type(schema, text_field) == "text":
        return "classification"
    if any(readers.column_type(schema, n) == "list of text" for n in schema.names):
        return "ner"
    return "classification"


def inner_suffix(path: Path) -> str:
    """The extension, looking through a compression suffix (``x.jsonl.gz`` -> ``.jsonl``)."""
    name = path.name.lower()
    for suffix in (".gz", ".gzip", ".zst", ".zstd"):
        if name.endswith(suffix):
            return Path(name[: -len(suffix)]).suffix
    return path.suffix.lower()


def read_classification_file(
    path: str | Path,
    *,
    text_field: str = "text",
    label_field: str = "label",
    encoding: str = "utf-8",
) -> tuple[TextExample, ...]:
    """Dispatch on the content, then the extension: Parquet/Arrow (magic bytes or a
    directory) -> tables; ``.jsonl``/``.json`` -> JSON; ``.csv``/``.tsv`` -> CSV (each
    also gzip/zstd-compressed)."""
    path = Path(path)
    if readers.is_table_source(path):
        return read_table_examples(path, text_field=text_field, label_field=label_field)
    suffix = inner_suffix(path)
    if suffix in (".jsonl", ".json", ".ndjson"):
        return read_jsonl_examples(
            path, text_field=text_field, label_field=label_field, encoding=encoding
        )
    if suffix in (".csv", ".tsv"):
        return read_csv_examples(
            path,
            text_column=text_field,
            label_column=label_field,
            delimiter="\t" if suffix == ".tsv" else None,
            encoding=encoding,
        )
    raise UserError(
        f"{path}: cannot tell the format from the extension '{suffix}'; "
        "use .csv, .tsv, .jsonl (also .gz/.zst), .json, .parquet or .arrow for classification data"
    )
