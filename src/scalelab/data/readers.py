"""Reading the user's data files: what format a file is, its text, its records, its rows.

Shared by the pretraining sources (:mod:`scalelab.data.sources`) and the fine-tuning task
readers (:mod:`scalelab.finetune.textcls`). A file's format is told by its first bytes
first and by its name only where they say nothing:

============================  ==========================================================
Parquet                       ``PAR1`` magic (``.parquet``); read by row group, one
                              column at a time, never the whole file
Arrow IPC                     ``ARROW1`` (file format) or ``FF FF FF FF`` (stream format,
                              ``datasets``' ``data-*.arrow``); memory-mapped, by batch
gzip / zstandard              ``1F 8B`` / ``28 B5 2F FD`` (``.gz``, ``.zst``); the inner
                              format by the inner suffix (``x.jsonl.gz`` is JSON lines)
JSON lines                    ``.jsonl``, ``.ndjson``; a ``.json`` file whose first
                              character is ``{`` (``Dataset.to_json`` writes these)
JSON array                    a ``.json`` file whose first character is ``[``; objects or
                              strings; read whole
text                          anything else that decodes as UTF-8
============================  ==========================================================

A ``datasets`` ``save_to_disk`` directory (``state.json`` naming its ``data-*.arrow``
stream files; a ``DatasetDict`` adds ``dataset_dict.json`` naming its split directories)
is read with pyarrow directly: no ``datasets`` import, no network.

Binary input is refused, never read as text: a file that holds NUL bytes in its first
8000 bytes (git's test for binary files) or where more than :data:`MAX_BAD_FRACTION` of
the bytes are not UTF-8 stops with one line naming the file and the formats that work.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from scalelab.errors import UserError

#: What ``--sources`` and task files accept, for error messages.
FORMATS = (
    "UTF-8 text (.txt, .md, ...), JSON lines (.jsonl, .jsonl.gz, .jsonl.zst), JSON arrays "
    "(.json), Parquet (.parquet, a directory or glob of them), Arrow IPC (.arrow) and "
    "datasets save_to_disk directories"
)
#: A file with more undecodable bytes than this fraction (and at least
#: :data:`MIN_BAD_TO_REFUSE` bad sequences) is refused unless ``errors="allow"``: one bad
#: byte in a thousand is a stray, more is a binary file or another encoding.
MAX_BAD_FRACTION = 0.001
#: So that a few stray bytes in a short note are counted, not refused.
MIN_BAD_TO_REFUSE = 10
#: Bytes looked at for NUL bytes (git's ``buffer_is_binary`` looks at the first 8000).
BINARY_PROBE = 8000
#: Rows per batch when a Parquet file is read (its row groups bound the memory further).
BATCH_ROWS = 1024

_FFFD_UTF8 = "\ufffd".encode()
_COMPRESSED = {".gz": "gzip", ".gzip": "gzip", ".zst": "zstd", ".zstd": "zstd"}
_MAGIC = (
    (b"PAR1", "parquet", None),
    (b"ARROW1", "arrow", None),
    (b"\xff\xff\xff\xff", "arrow", None),  # an IPC stream's continuation marker
    (b"\x1f\x8b", None, "gzip"),
    (b"\x28\xb5\x2f\xfd", None, "zstd"),
)
_BINARY_MAGIC = (
    (b"PK\x03\x04", "a zip archive (.zip, .docx, .xlsx, ...)"),
    (b"%PDF", "a PDF document"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"SQLite format 3\x00", "an SQLite database"),
    (b"\x93NUMPY", "a NumPy array"),
    (b"\xfd7zXZ\x00", "an xz archive"),
    (b"BZh", "a bzip2 archive"),
    (b"7z\xbc\xaf", "a 7-zip archive"),
    (b"\xff\xfe", "UTF-16 text (convert it to UTF-8)"),
    (b"\xfe\xff", "UTF-16 text (convert it to UTF-8)"),
)
_JSONL_SUFFIXES = (".jsonl", ".ndjson")
_TABLE_SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".arrow": "arrow", ".feather": "arrow"}


@dataclasses.dataclass(frozen=True)
class Format:
    """What a file holds: ``kind`` is parquet, arrow, jsonl, json or text; ``compression``
    is None, ``"gzip"`` or ``"zstd"`` (JSON and text only)."""

    kind: str
    compression: str | None = None

    @property
    def is_table(self) -> bool:
        return self.kind in ("parquet", "arrow")


@dataclasses.dataclass
class Tally:
    """Undecodable byte sequences and bytes read, counted while a file streams by."""

    bad: int = 0
    nbytes: int = 0


# ====================================================================== formats


def _inner_name(path: Path) -> tuple[str, str | None]:
    """The name without a compression suffix, and the compression that suffix names."""
    name = path.name.lower()
    for suffix, compression in _COMPRESSED.items():
        if name.endswith(suffix):
            return name[: -len(suffix)], compression
    return name, None


def _head(path: Path, n: int) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(n)
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror or exc})") from None


def sniff(path: str | Path) -> Format:
    """The :class:`Format` of ``path``: its magic bytes first, then its name."""
    path = Path(path)
    head = _head(path, 8)
    kind = compression = None
    for magic, k, c in _MAGIC:
        if head.startswith(magic):
            kind, compression = k, c
            break
    inner, named_compression = _inner_name(path)
    suffix = Path(inner).suffix
    if kind is not None:
        return Format(kind)
    if compression is None and named_compression is not None:
        raise UserError(f"{path}: not a {named_compression} file (its first bytes say otherwise)")
    if compression is None and suffix in _TABLE_SUFFIXES:
        if _TABLE_SUFFIXES[suffix] == "parquet":
            raise UserError(f"{path}: not a Parquet file (no PAR1 magic bytes)")
        return Format("arrow")  # an old (pre-0.15) IPC stream, without the marker
    if suffix in _JSONL_SUFFIXES:
        return Format("jsonl", compression)
    if suffix == ".json":
        first = _first_char(path, compression)
        return Format("json" if first == "[" else "jsonl", compression)
    if compression is not None and suffix not in (".txt", ".md"):
        # x.gz: JSON lines when the first character opens an object, else text.
        return Format("jsonl" if _first_char(path, compression) == "{" else "text", compression)
    return Format("text", compression)


def _first_char(path: Path, compression: str | None) -> str:
    """The first non-space character of the (decompressed) file ('' when there is none)."""
    try:
        with open_binary(path, compression) as fh:
            while block := fh.read(4096):
                stripped = block.lstrip(b" \t\r\n\xef\xbb\xbf")
                if stripped:
                    return chr(stripped[0])
    except _compressed_errors() as exc:
        raise UserError(f"{path}: a damaged {compression} file ({exc})") from None
    return ""


def open_binary(path: str | Path, compression: str | None = None) -> BinaryIO:
    """``path`` opened for reading bytes, decompressed on the fly (gzip, zstd)."""
    path = Path(path)
    if compression == "gzip":
        return gzip.open(path, "rb")  # type: ignore[return-value]
    if compression == "zstd":
        try:
            import zstandard
        except ImportError:
            raise UserError(
                f"{path}: reading .zst files needs the zstandard package: pip install zstandard"
            ) from None
        raw = open(path, "rb")  # noqa: SIM115 - closed with the reader (closefd)
        reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
        return io.BufferedReader(reader)  # type: ignore[arg-type]
    return open(path, "rb")  # noqa: SIM115 - the caller closes it


def compression_of(path: str | Path) -> str | None:
    """``"gzip"`` or ``"zstd"`` when the file's first bytes say so, else None."""
    head = _head(Path(path), 4)
    for magic, kind, compression in _MAGIC:
        if kind is None and head.startswith(magic):
            return compression
    return None


def read_bytes(path: str | Path) -> bytes:
    """The bytes of a file, decompressed when its magic bytes say gzip or zstd."""
    path = Path(path)
    compression = compression_of(path)
    try:
        with open_binary(path, compression) as fh:
            return fh.read()
    except _compressed_errors() as exc:
        raise UserError(f"{path}: a damaged {compression} file ({exc})") from None


def _compressed_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [gzip.BadGzipFile, EOFError, zlib.error]
    try:
        import zstandard
    except ImportError:
        pass
    else:
        errors.append(zstandard.ZstdError)
    return tuple(errors)


# ====================================================================== text and binary


def binary_kind(head: bytes) -> str | None:
    """What ``head`` (a file's first bytes) shows the file to be when it is not text."""
    for magic, what in _BINARY_MAGIC:
        if head.startswith(magic):
            return what
    if b"\x00" in head[:BINARY_PROBE]:
        return "binary data (it holds NUL bytes)"
    return None


def refuse_binary(path: str | Path, what: str) -> UserError:
    """The one-line error for a file that is not text and not a format scalelab reads."""
    return UserError(f"{path}: not UTF-8 text but {what}; the formats that work are {FORMATS}")


def decode_bytes(
    raw: bytes, *, where: str, errors: str, offset: int = 0, hint: str = "--errors replace"
) -> tuple[str, int]:
    """UTF-8 text of ``raw`` and the number of undecodable byte sequences in it.

    ``errors="strict"`` raises a :class:`UserError` naming ``where`` and the byte offset
    (``offset`` is where ``raw`` starts in its file); ``"replace"`` and ``"allow"`` put
    U+FFFD for each bad sequence and count them. Line breaks become ``\\n``; a UTF-8
    byte-order mark at the start of the file is dropped.
    """
    if offset == 0 and raw.startswith(b"\xef\xbb\xbf"):  # a byte-order mark is not text
        raw = raw[3:]
        offset = 3
    try:
        text = raw.decode("utf-8")
        bad = 0
    except UnicodeDecodeError as exc:
        if errors == "strict":
            raise UserError(
                f"{where}: undecodable bytes at byte offset {offset + exc.start} (not UTF-8); "
                f"use {hint} to replace and count them"
            ) from None
        text = raw.decode("utf-8", errors="replace")
        # A file may contain real U+FFFD characters: those are no decoding errors.
        bad = text.count("\ufffd") - raw.count(_FFFD_UTF8)
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text, bad


def check_decoded(path: str | Path, tally: Tally, errors: str) -> None:
    """Refuse a file read with too many undecodable bytes (unless ``errors="allow"``)."""
    if errors == "allow" or tally.bad < MIN_BAD_TO_REFUSE:
        return
    if tally.bad > MAX_BAD_FRACTION * max(tally.nbytes, 1):
        share = 100 * tally.bad / max(tally.nbytes, 1)
        raise UserError(
            f"{path}: {tally.bad} byte sequences ({share:.2g}% of its bytes) are not UTF-8, so "
            "it is binary or in another encoding; convert it to UTF-8, or pass --errors allow "
            f"to read it with U+FFFD for each (the formats that work are {FORMATS})"
        )


def read_text(path: str | Path, fmt: Format, *, errors: str) -> tuple[str, int]:
    """The UTF-8 text of a (possibly compressed) text file and its undecodable sequences.

    Binary files are refused (NUL bytes, known magic, or too many undecodable bytes, see
    :func:`check_decoded`) unless ``errors="allow"``.
    """
    path = Path(path)
    raw = read_bytes(path)
    if errors != "allow" and (what := binary_kind(raw[:BINARY_PROBE])) is not None:
        raise refuse_binary(path, what)
    text, bad = decode_bytes(raw, where=str(path), errors=errors)
    check_decoded(path, Tally(bad=bad, nbytes=len(raw)), errors)
    return text, bad


# ====================================================================== JSON


def iter_json_lines(
    path: str | Path, fmt: Format, *, errors: str, tally: Tally
) -> Iterator[tuple[int, Any]]:
    """``(line number, value)`` of each non-blank line of a JSON-lines file, streamed.

    Lines are read one at a time (also from gzip/zstd files), so memory stays bounded;
    a line that is not JSON is a :class:`UserError` naming the file and line.
    """
    path = Path(path)
    lineno = 0
    try:
        with open_binary(path, fmt.compression) as fh:
            for raw in fh:
                if tally.nbytes == 0 and errors != "allow":
                    what = binary_kind(raw[:BINARY_PROBE])
                    if what is not None:
                        raise refuse_binary(path, what)
                text, bad = decode_bytes(raw, where=str(path), errors=errors, offset=tally.nbytes)
                tally.nbytes += len(raw)
                tally.bad += bad
                pieces = text.split("\n")
                if text.endswith("\n"):
                    pieces.pop()  # the part after the line's own terminator
                for line in pieces:
                    lineno += 1
                    if line.strip():
                        yield lineno, _json_value(line, f"{path}:{lineno}")
    except _compressed_errors() as exc:
        raise UserError(f"{path}: a damaged {fmt.compression} file ({exc})") from None
    check_decoded(path, tally, errors)


def _json_value(line: str, where: str) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        raise UserError(f"{where}: not valid JSON ({exc.msg})") from None
    except RecursionError:
        raise UserError(f"{where}: JSON nested too deeply") from None


def read_json_array(path: str | Path, fmt: Format, *, errors: str) -> tuple[list[Any], int]:
    """The entries of a file holding one JSON array (read whole) and its bad sequences."""
    path = Path(path)
    text, bad = read_text(path, fmt, errors=errors)
    value = _json_value(text, str(path))
    if not isinstance(value, list):
        raise UserError(
            f"{path}: expected a JSON array (or JSON lines), got {type(value).__name__}"
        )
    return value, bad


# ====================================================================== tables


def _pyarrow(path: Path) -> Any:
    try:
        import pyarrow
        import pyarrow.ipc  # noqa: F401 - makes pyarrow.ipc available
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise UserError(
            f"{path}: reading Parquet/Arrow files needs pyarrow: pip install pyarrow"
        ) from None
    return pyarrow


def _arrow_error(path: Path, exc: BaseException) -> UserError:
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return UserError(f"{path}: not a readable Parquet/Arrow file ({first})")


def table_schema(path: str | Path, fmt: Format) -> Any:
    """The ``pyarrow.Schema`` of a Parquet or Arrow file (its columns and metadata)."""
    path = Path(path)
    pa = _pyarrow(path)
    try:
        if fmt.kind == "parquet":
            return pa.parquet.read_schema(path)
        with pa.memory_map(str(path)) as source, _open_ipc(pa, source) as reader:
            return reader.schema
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise _arrow_error(path, exc) from None


def _open_ipc(pa: Any, source: Any) -> Any:
    """An IPC reader of ``source``: the file format (random access) or the stream format."""
    try:
        return pa.ipc.open_file(source)
    except pa.ArrowInvalid:
        source.seek(0)
        return pa.ipc.open_stream(source)


def require_columns(path: str | Path, schema: Any, names: list[str], *, hint: str) -> None:
    """Raise a one-line :class:`UserError` listing the columns when one of ``names`` is missing."""
    missing = [n for n in names if n not in schema.names]
    if missing:
        shown = ", ".join(schema.names[:20]) + (", ..." if len(schema.names) > 20 else "")
        raise UserError(
            f"{path}: no column {', '.join(repr(m) for m in missing)} "
            f"(columns: {shown or 'none'}); {hint}"
        )


def iter_batches(path: str | Path, fmt: Format, columns: list[str]) -> Iterator[Any]:
    """``pyarrow.RecordBatch`` es of ``columns``, one at a time: memory stays bounded.

    Parquet is read by row group and only the named columns are decoded; Arrow IPC files
    are memory-mapped, so a batch costs no copy.
    """
    path = Path(path)
    pa = _pyarrow(path)
    try:
        if fmt.kind == "parquet":
            with pa.parquet.ParquetFile(path) as pf:
                for group in range(pf.num_row_groups):  # one row group in memory at a time
                    yield from pf.iter_batches(
                        batch_size=BATCH_ROWS, row_groups=[group], columns=columns
                    )
            return
        with pa.memory_map(str(path)) as source, _open_ipc(pa, source) as reader:
            if isinstance(reader, pa.ipc.RecordBatchFileReader):
                batches: Any = (reader.get_batch(i) for i in range(reader.num_record_batches))
            else:
                batches = reader
            for batch in batches:
                yield batch.select(columns)
    except (pa.ArrowException, OSError) as exc:
        raise _arrow_error(path, exc) from None


def column_type(schema: Any, name: str) -> str:
    """A short name of a column's type: ``"text"``, ``"list of text"``, ``"int64"``, ..."""
    import pyarrow as pa

    typ = schema.field(name).type
    if pa.types.is_dictionary(typ):
        typ = typ.value_type
    if pa.types.is_string(typ) or pa.types.is_large_string(typ) or _is_string_view(pa, typ):
        return "text"
    if pa.types.is_list(typ) or pa.types.is_large_list(typ):
        inner = typ.value_type
        if pa.types.is_string(inner) or pa.types.is_large_string(inner):
            return "list of text"
        if pa.types.is_integer(inner):
            return "list of integers"
        return f"list of {inner}"
    return str(typ)


def _is_string_view(pa: Any, typ: Any) -> bool:
    check = getattr(pa.types, "is_string_view", None)
    return bool(check and check(typ))


def class_names(schema: Any, name: str, info: dict[str, Any] | None = None) -> list[str] | None:
    """The names of a ``datasets`` ``ClassLabel`` column (or of a list of them), if any.

    Read from the ``huggingface`` schema metadata that ``datasets`` writes into Parquet and
    Arrow files, else from ``info`` (a ``dataset_info.json``).
    """
    features = None
    meta = schema.metadata or {}
    if b"huggingface" in meta:
        try:
            features = json.loads(meta[b"huggingface"]).get("info", {}).get("features")
        except (ValueError, AttributeError):
            features = None
    if not isinstance(features, dict) and info is not None:
        features = info.get("features")
    feature = features.get(name) if isinstance(features, dict) else None
    while isinstance(feature, dict):
        if feature.get("_type") == "ClassLabel" and isinstance(feature.get("names"), list):
            return [str(n) for n in feature["names"]]
        feature = feature.get("feature")
        if isinstance(feature, list) and feature:  # the oldest Sequence form: [feature]
            feature = feature[0]
    return None


# ====================================================================== directories


def dataset_dir_splits(path: str | Path) -> dict[str, Path] | None:
    """A ``DatasetDict`` ``save_to_disk`` directory's splits, ``{name: dir}`` (None: not one)."""
    path = Path(path)
    marker = path / "dataset_dict.json"
    if not marker.is_file():
        return None
    try:
        splits = json.loads(marker.read_text(encoding="utf-8")).get("splits")
    except (ValueError, AttributeError, OSError):
        raise UserError(f"{marker}: not a readable dataset_dict.json") from None
    if not isinstance(splits, list) or not splits:
        raise UserError(f"{marker}: names no splits")
    out = {str(s): path / str(s) for s in splits}
    for split, directory in out.items():
        if not directory.is_dir():
            raise UserError(f"{marker}: the split {split!r} has no directory {directory}")
    return out


def dataset_dir_files(path: str | Path) -> list[Path] | None:
    """The Arrow files of a ``datasets`` ``save_to_disk`` directory, in order (None: not one).

    A ``Dataset`` directory names its files in ``state.json`` (``_data_files``); a
    ``DatasetDict`` directory gives every split's files, split by split.
    """
    path = Path(path)
    splits = dataset_dir_splits(path)
    if splits is not None:
        files: list[Path] = []
        for directory in splits.values():
            files += dataset_dir_files(directory) or []
        return files
    state = path / "state.json"
    if not state.is_file():
        if (path / "dataset_info.json").is_file():
            found = sorted(path.glob("data-*.arrow"))
            return found or None
        return None
    try:
        entries = json.loads(state.read_text(encoding="utf-8")).get("_data_files")
        names = [str(e["filename"]) for e in entries]
    except (ValueError, AttributeError, OSError, KeyError, TypeError):
        raise UserError(f"{state}: not a datasets state.json (no _data_files list)") from None
    files = [path / n for n in names]
    for file in files:
        if not file.is_file():
            raise UserError(f"{state}: names {file.name}, which is missing")
    return files


def dataset_info(path: str | Path) -> dict[str, Any] | None:
    """``dataset_info.json`` beside an Arrow file of a ``save_to_disk`` directory, if any."""
    info = Path(path).parent / "dataset_info.json"
    try:
        data = json.loads(info.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def table_files(path: str | Path) -> list[Path]:
    """The Parquet/Arrow files a table source names: a file, a ``save_to_disk`` directory
    or a directory of ``*.parquet`` (else ``*.arrow``) files (recursively, sorted)."""
    path = Path(path)
    if not path.is_dir():
        return [path]
    found = dataset_dir_files(path)
    if found:
        return found
    for suffixes in ((".parquet", ".pq"), (".arrow", ".feather")):
        found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
        if found:
            return found
    raise UserError(
        f"{path}: a directory without *.parquet or *.arrow files (nor a datasets save_to_disk layout)"
    )


def is_table_source(path: str | Path) -> bool:
    """Whether ``path`` is a Parquet/Arrow file or a directory :func:`table_files` reads."""
    path = Path(path)
    if path.is_dir():
        try:
            return bool(table_files(path))
        except UserError:
            return False
    return path.is_file() and sniff(path).is_table
