"""Text-classification files: CSV with a header, and JSONL, each row a text and a label.

Labels are kept as text (a JSON number ``1`` becomes ``"1"``) so that a task's label list
is the same whatever file format it came from. A missing column/field, an empty text or
label, or a line that is not JSON is an error naming the file and line.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from pathlib import Path

from scalelab.errors import UserError
from scalelab.finetune.examples import TextExample


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


def _open_text(path: Path, encoding: str) -> str:
    check_encoding(encoding)
    if not path.is_file():
        raise UserError(f"file not found: {path}")
    try:
        return path.read_text(encoding=encoding)
    except UnicodeDecodeError as exc:
        raise UserError(
            f"{path}: not valid {encoding} at byte {exc.start}; pass the file's encoding"
        ) from None


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
    """Read a JSONL file of objects like ``{"text": ..., "label": ...}`` (blank lines skipped)."""
    path = Path(path)
    text = _open_text(path, encoding)
    out: list[TextExample] = []
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{where}: not valid JSON ({exc.msg})") from None
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
        out.append(TextExample(body.strip(), label, source=f"{path.name}:{lineno}"))
    if not out:
        raise UserError(f"{path}: no examples")
    return tuple(out)


def read_classification_file(
    path: str | Path,
    *,
    text_field: str = "text",
    label_field: str = "label",
    encoding: str = "utf-8",
) -> tuple[TextExample, ...]:
    """Dispatch on the extension: ``.jsonl``/``.json`` -> JSONL, ``.csv``/``.tsv`` -> CSV."""
    path = Path(path)
    suffix = path.suffix.lower()
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
        "use .csv, .tsv or .jsonl for classification data"
    )
