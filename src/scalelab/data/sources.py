"""Text sources behind one interface: built-in corpora and the user's own files.

A *source spec* is one string, ``[NAME=]WHAT[:WEIGHT]``:

======================  =========================================================
``shakespeare``         a built-in corpus (shakespeare, wikipedia, news, bible)
``wikipedia:2``         ... sampled at twice its natural share of the mixture
``notes.txt``           one text file (the source is named ``notes``)
``docs/``               every ``*.txt`` and ``*.md`` below a directory, recursively
``'books/**/*.txt'``    a glob (``**`` crosses directories); quote it in a shell
``tweets.jsonl``        JSON lines, the text in field ``text`` (``--text-field``);
                        also ``.jsonl.gz`` and ``.jsonl.zst`` (needs zstandard)
``posts.json``          a JSON array of objects (field ``text``) or of strings
``web.parquet``         a Parquet file, the text in column ``text``; read by row
                        group, only that column (``'shards/*.parquet'``: many)
``corpus/``             ... a directory without *.txt/*.md: its *.parquet, else
                        *.arrow, else *.jsonl[.gz|.zst] files
``saved/``              a ``datasets`` ``save_to_disk`` directory (Arrow files);
                        a ``DatasetDict`` one gives all its splits
``mine=a/*.txt:0.5``    an explicit source name and a weight
======================  =========================================================

A file's format is told by its first bytes (Parquet, Arrow, gzip, zstd magic), else by
its name (:mod:`scalelab.data.readers`). Binary files and files where more than 0.1%
of the bytes are not UTF-8 are refused (``--errors allow`` reads them anyway).

A source yields :class:`Document` objects: long texts are cut into documents of about
``doc_chars`` characters at paragraph boundaries (else sentence, line or word
boundaries), so that the document-level train/validation split has enough documents to
choose from. Every document has an id that is stable across runs (file name and chunk
number, article title, ...); the split hashes that id.

A source also reports a *fingerprint*: the package version of a built-in, or the names,
sizes and content hashes of user files. The dataset's content hash covers it, so editing
a file makes a new dataset rather than silently reusing the old one.
"""

from __future__ import annotations

import dataclasses
import difflib
import glob
import hashlib
import json
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from scalelab.data import readers
from scalelab.data.readers import decode_bytes  # noqa: F401 - re-exported
from scalelab.errors import UserError

_SPEC_NAME_RE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9_.+-]*)=(.+)$")
_SPEC_WEIGHT_RE = re.compile(r"^(.+):([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)$")
_GLOB_CHARS = re.compile(r"[*?\[]")
_TEXT_SUFFIXES = (".txt", ".md")
# Read from a directory without *.txt/*.md files, the first kind found (in this order).
_DATA_SUFFIXES = (
    (".parquet", ".pq"),
    (".arrow", ".feather"),
    (".jsonl", ".jsonl.gz", ".jsonl.zst", ".ndjson", ".ndjson.gz", ".ndjson.zst"),
)


@dataclasses.dataclass(frozen=True)
class Document:
    """One document of a source: a stable id (unique within the source) and its text."""

    id: str
    text: str


@dataclasses.dataclass(frozen=True)
class SourceSpec:
    """A parsed ``[NAME=]WHAT[:WEIGHT]`` string."""

    spec: str
    what: str
    name: str | None = None
    weight: float | None = None


def parse_spec(spec: str) -> SourceSpec:
    """Split a spec string into name, what and weight (no file system access)."""
    text = spec.strip()
    if not text:
        raise UserError("empty source spec")
    name = weight = None
    m = _SPEC_NAME_RE.match(text)
    if m and "/" not in m.group(1):
        name, text = m.group(1), m.group(2)
    m = _SPEC_WEIGHT_RE.match(text)
    if m:
        text, weight = m.group(1), float(m.group(2))
    if not text:
        raise UserError(f"source spec {spec!r} names nothing to read")
    return SourceSpec(spec=spec, what=text, name=name, weight=weight)


class Source(ABC):
    """A named stream of documents with a weight and a content fingerprint."""

    kind: str = "source"

    def __init__(self, *, name: str, spec: str, weight: float = 1.0) -> None:
        self.name = name
        self.spec = spec
        self.weight = weight
        #: Undecodable byte sequences met while reading (user files only).
        self.undecodable = 0

    @abstractmethod
    def fingerprint(self) -> dict[str, Any]:
        """Facts that change whenever the text could change (JSON-safe)."""

    @abstractmethod
    def texts(self) -> Iterator[tuple[str, str]]:
        """Yield ``(id, text)`` for each raw text, before it is cut into documents."""

    def peek(self) -> None:
        """Read this source's first text: a wrong format, field or encoding at the start of
        a file fails here, before anything is written. Built-in sources need no check."""
        return None

    def documents(
        self, *, doc_chars: int = 4000, max_chars: int | None = None
    ) -> Iterator[Document]:
        """Yield the source's documents, cut to about ``doc_chars``, at most ``max_chars`` in all."""
        total = 0
        for text_id, text in self.texts():
            pieces = chunk_text(text, doc_chars)
            for k, piece in enumerate(pieces):
                doc_id = text_id if len(pieces) == 1 else f"{text_id}#{k}"
                if max_chars is not None and total + len(piece) >= max_chars:
                    piece = piece[: max_chars - total].rstrip()
                    if piece:
                        yield Document(doc_id, piece)
                    return
                total += len(piece)
                yield Document(doc_id, piece)

    def describe(self) -> str:
        return self.spec


# ====================================================================== chunking


_SENTENCE_END = re.compile(r"[.!?;:][\"')\]]*\s+")


def chunk_text(text: str, target: int) -> list[str]:
    """Cut ``text`` into pieces of at most ``target`` characters at natural boundaries.

    Preference: a paragraph break (blank line), then a line break, then a sentence end,
    then any space, looked for in the second half of the window first (so pieces are not
    tiny) and then in the whole window; a hard cut only when a window has no space at all.
    Whitespace at the cut is dropped, the text in between is kept exactly.
    """
    text = text.strip()
    if len(text) <= target:
        return [text] if text else []
    pieces: list[str] = []
    start, n = 0, len(text)
    while start < n:
        if n - start <= target:
            pieces.append(text[start:].strip())
            break
        end = _cut(text, start, start + target)
        piece = text[start:end].strip()
        if piece:
            pieces.append(piece)
        start = end
        while start < n and text[start].isspace():
            start += 1
    return [p for p in pieces if p]


def _cut(text: str, start: int, limit: int) -> int:
    """Position of the best cut in ``text[start:limit]`` (returns an index > start)."""
    for lo in (start + (limit - start) // 2, start + 1):
        i = text.rfind("\n\n", lo, limit)
        if i > start:
            return i
        i = text.rfind("\n", lo, limit)
        if i > start:
            return i
        last = None
        for m in _SENTENCE_END.finditer(text, lo, limit):
            last = m
        if last is not None and last.end() > start:
            return last.end()
        i = text.rfind(" ", lo, limit)
        if i > start:
            return i
    return limit


# ====================================================================== user sources


# How much of a text file (or JSON array) :meth:`FileSource.peek` checks before a build.
PEEK_BYTES = 1 << 16


class FileSource(Source):
    """A user's files (one file, a glob or a directory), each read by its format.

    Text files are one text each; JSON lines, JSON arrays and Parquet/Arrow tables hold
    records, one text per record in the field/column ``text_field``. Record ids are
    ``file:line`` (JSON lines, 1-based) or ``file[row]`` (arrays and tables, 0-based).
    """

    def __init__(
        self,
        *,
        name: str,
        spec: str,
        files: list[Path],
        root: Path,
        kind: str,
        weight: float = 1.0,
        text_field: str = "text",
        errors: str = "replace",
    ) -> None:
        super().__init__(name=name, spec=spec, weight=weight)
        self.files = files
        self.root = root
        self.kind = kind
        self.text_field = text_field
        self.errors = errors

    def _rel(self, path: Path) -> str:
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return path.name

    def peek(self) -> None:
        """Streamed formats (tables, JSON lines) read their first record; files read whole
        (text, JSON arrays) only their first 64 KiB, so no file is read twice."""
        if not self.files:
            return
        first = self.files[0]
        fmt = readers.sniff(first)
        if fmt.is_table or fmt.kind == "jsonl":
            texts = self.texts()
            try:
                next(texts, None)
            finally:
                texts.close()
            self.undecodable = 0  # counted again by the real pass
            return
        with readers.open_binary(first, fmt.compression) as fh:
            head = fh.read(PEEK_BYTES + 1)
        if self.errors != "allow" and (what := readers.binary_kind(head)) is not None:
            raise readers.refuse_binary(first, what)
        if len(head) > PEEK_BYTES:  # cut where no UTF-8 sequence is split
            head = head[:PEEK_BYTES]
            while head and (head[-1] & 0xC0) == 0x80:
                head = head[:-1]
            head = head[:-1] if head and head[-1] >= 0xC0 else head
        readers.decode_bytes(head, where=str(first), errors=self.errors)

    def fingerprint(self) -> dict[str, Any]:
        files = []
        for path in self.files:
            h = hashlib.sha256()
            with open(path, "rb") as fh:
                while block := fh.read(1 << 20):
                    h.update(block)
            stat = path.stat()
            files.append([self._rel(path), stat.st_size, h.hexdigest()[:16]])
        digest = hashlib.sha256(json.dumps(files).encode()).hexdigest()[:16]
        return {"kind": self.kind, "files": len(files), "content": digest}

    def texts(self) -> Iterator[tuple[str, str]]:
        self.undecodable = 0
        for path in self.files:
            rel = self._rel(path)
            fmt = readers.sniff(path)
            if fmt.is_table:
                yield from self._rows(path, rel, fmt)
            elif fmt.kind == "jsonl":
                tally = readers.Tally()
                try:
                    for lineno, record in readers.iter_json_lines(
                        path, fmt, errors=self.errors, tally=tally
                    ):
                        text = self._record_text(record, f"{path}:{lineno}")
                        if text is not None:
                            yield f"{rel}:{lineno}", text
                finally:
                    self.undecodable += tally.bad
            elif fmt.kind == "json":
                entries, bad = readers.read_json_array(path, fmt, errors=self.errors)
                self.undecodable += bad
                for i, entry in enumerate(entries):
                    text = self._record_text(entry, f"{path}[{i}]", strings=True)
                    if text is not None:
                        yield f"{rel}[{i}]", text
            else:
                text, bad = readers.read_text(path, fmt, errors=self.errors)
                self.undecodable += bad
                yield rel, text

    def _record_text(self, record: Any, where: str, *, strings: bool = False) -> str | None:
        """The text of one JSON record (None: a null text, skipped); ``strings``: a bare
        string is a text too (entries of a JSON array)."""
        field = self.text_field
        if strings and isinstance(record, str):
            return record
        if not isinstance(record, dict):
            expected = "a JSON object or string" if strings else "a JSON object"
            raise UserError(f"{where}: expected {expected}, got {type(record).__name__}")
        if field not in record:
            keys = ", ".join(sorted(map(str, record))[:8]) or "none"
            raise UserError(
                f"{where}: no field {field!r} (fields: {keys}); choose one with --text-field"
            )
        value = record[field]
        if value is not None and not isinstance(value, str):
            raise UserError(f"{where}: field {field!r} holds {type(value).__name__}, expected text")
        return value

    def _rows(self, path: Path, rel: str, fmt: readers.Format) -> Iterator[tuple[str, str]]:
        """The texts of a Parquet/Arrow file's text column, streamed batch by batch."""
        field = self.text_field
        schema = readers.table_schema(path, fmt)
        readers.require_columns(path, schema, [field], hint="choose one with --text-field")
        kind = readers.column_type(schema, field)
        if kind != "text":
            raise UserError(
                f"{path}: column {field!r} holds {kind}, not text; choose the text column with "
                f"--text-field (columns: {', '.join(schema.names)})"
            )
        row = 0
        for batch in readers.iter_batches(path, fmt, [field]):
            for value in batch.column(0).to_pylist():
                if value is not None:
                    yield f"{rel}[{row}]", value
                row += 1


def _name_from_path(what: str) -> str:
    """A source name from a path or glob: the file stem, else the last plain directory."""
    parts = [p for p in Path(what).parts if p not in ("/", ".", "..")]
    plain = [p for p in parts if not _GLOB_CHARS.search(p)]
    if parts and not _GLOB_CHARS.search(parts[-1]):
        last = re.sub(r"\.(gz|gzip|zst|zstd)$", "", parts[-1], flags=re.IGNORECASE)
        stem = Path(last).stem if Path(what).suffix else parts[-1]
    else:
        stem = plain[-1] if plain else "files"
    name = re.sub(r"[^A-Za-z0-9_.+-]+", "_", stem).strip("._") or "files"
    return name if name[0].isalnum() else f"s{name}"


def _glob_root(pattern: str) -> Path:
    """The directory part of a glob before its first wildcard (ids are relative to it)."""
    parts = Path(pattern).parts
    plain = []
    for part in parts:
        if _GLOB_CHARS.search(part):
            break
        plain.append(part)
    return Path(*plain) if plain else Path(".")


def user_source(spec: SourceSpec, *, text_field: str, errors: str) -> FileSource:
    """Resolve a user spec to its files; a missing path or an empty match is a UserError."""
    what = os.path.expanduser(spec.what)
    name = spec.name or _name_from_path(what)
    common = {
        "name": name,
        "spec": spec.spec,
        "weight": 1.0,
        "text_field": text_field,
        "errors": errors,
    }
    if _GLOB_CHARS.search(what):
        files = sorted(Path(p) for p in glob.glob(what, recursive=True) if os.path.isfile(p))
        if not files:
            raise UserError(f"source {spec.spec!r}: the pattern {what!r} matches no files")
        return FileSource(files=files, root=_glob_root(what), kind="glob", **common)
    path = Path(what)
    if path.is_dir():
        files = readers.dataset_dir_files(path)
        if files:
            return FileSource(files=files, root=path, kind="hf-dataset", **common)
        return FileSource(files=_dir_files(path, spec), root=path, kind="dir", **common)
    if path.is_file():
        fmt = readers.sniff(path)
        kind = "file" if fmt.kind == "text" else fmt.kind  # part of the fingerprint
        return FileSource(files=[path], root=path.parent, kind=kind, **common)
    raise UserError(f"source {spec.spec!r}: no such file or directory: {path}")


def _dir_files(path: Path, spec: SourceSpec) -> list[Path]:
    """A directory's *.txt/*.md files, recursively; without any, its data files of the
    first kind found: Parquet, Arrow, JSON lines (plain or compressed)."""
    every = sorted(p for p in path.rglob("*") if p.is_file())
    files = [p for p in every if p.suffix.lower() in _TEXT_SUFFIXES]
    for suffixes in _DATA_SUFFIXES:
        if files:
            break
        files = [p for p in every if p.name.lower().endswith(suffixes)]
    if not files:
        raise UserError(
            f"source {spec.spec!r}: directory {path} holds no *.txt or *.md files, nor "
            "*.parquet, *.arrow or *.jsonl[.gz|.zst] files, nor a datasets save_to_disk layout"
        )
    return files


def resolve_sources(
    specs: tuple[str, ...] | list[str],
    *,
    weights: tuple[float, ...] | list[float] = (),
    text_field: str = "text",
    errors: str = "replace",
) -> list[Source]:
    """Turn spec strings into sources, checking that each exists and names are unique."""
    from scalelab.data.corpora import BUILTINS, builtin_source

    sources: list[Source] = []
    for i, raw in enumerate(specs):
        spec = parse_spec(raw)
        if spec.what in BUILTINS and not os.path.exists(spec.what):
            source: Source = builtin_source(spec.what, spec=spec.spec, name=spec.name)
        elif _looks_like_name(spec.what) and not os.path.exists(spec.what):
            close = difflib.get_close_matches(spec.what, list(BUILTINS), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise UserError(
                f"source {raw!r}: not a built-in source and no such file or directory; {hint}"
                f"built-ins are {', '.join(BUILTINS)}"
            )
        else:
            source = user_source(spec, text_field=text_field, errors=errors)
        if weights:
            if spec.weight is not None and spec.weight != weights[i]:
                raise UserError(
                    f"source {raw!r}: weight {spec.weight:g} in the spec disagrees with weights[{i}]"
                    f" = {weights[i]:g}; give it in one place"
                )
            source.weight = float(weights[i])
        elif spec.weight is not None:
            source.weight = spec.weight
        sources.append(source)
    names = [s.name for s in sources]
    for name in names:
        if names.count(name) > 1:
            raise UserError(
                f"two sources are named {name!r}; name them apart with NAME=WHAT, e.g. {name}2=..."
            )
    if all(s.weight == 0 for s in sources):
        raise UserError("every source has weight 0; give at least one a positive weight")
    return sources


def _looks_like_name(what: str) -> bool:
    """A bare word (no path separator, no suffix, no wildcard): meant as a built-in name."""
    return bool(re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", what))
