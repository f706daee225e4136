"""Reading the cells of a run table as researchers actually write them.

:func:`read_source` turns a CSV/TSV path, a dict of columns, a list of row dicts or a
DataFrame-like object into ``(label, header, columns, delimiter)``. A file's delimiter is
``,``, ``;`` or a tab, sniffed from the header line (``.tsv``/``.tab`` files are always
tab-separated). :func:`parse_number` reads ``40M``, ``1.4B``, ``7k``, ``1.2T``, ``2.5e9``,
``40,000,000`` and ``40_000_000``, and refuses a cell it could misread: ``1,5`` (a decimal
comma) is never 15, and ``1,500`` in a ``;``- or tab-separated file (where a comma is
usually a decimal comma) is refused as ambiguous rather than guessed. :func:`detect_columns`
finds the N, D and C columns by their common names when none is named.
"""

from __future__ import annotations

import csv
import difflib
import math
import re
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import numpy as np

from scalelab.errors import UserError

# Magnitude suffixes as model cards and papers write them (Pythia-70m, OPT-1.3b, 1.4T
# tokens): k thousand, M million, B or G billion, T trillion; m/b/t are read the same way
# (a milli-parameter is not a thing).
SUFFIXES = {"k": 3, "K": 3, "m": 6, "M": 6, "b": 9, "B": 9, "G": 9, "t": 12, "T": 12}
_SUFFIXED = re.compile(r"([+-]?(?:\d[\d_]*(?:\.[\d_]*)?|\.\d[\d_]*))\s*([kKmMbBGtT])")
# Thousands grouping: 1-3 digits (not a leading 0), then groups of exactly 3.
_GROUPED = re.compile(r"([+-]?)([1-9]\d{0,2}(?:,\d{3})+)(\.\d+)?\s*([kKmMbBGtT]?)")

# Column names found without --n/--d/--c, in order of preference (matched ignoring case).
# ``N_non_embedding`` is the study's results.csv name for Kaplan's N; ``N`` keeps working.
CANDIDATES = {
    "N": ("N", "N_non_embedding", "params", "n_params", "num_params", "parameters"),
    "D": ("D", "tokens", "n_tokens", "num_tokens", "train_tokens"),
    "C": ("C", "flops", "compute", "train_flops"),
}
BUDGET_CANDIDATES = ("budget_flops", "budget")
"""IsoFLOP budget columns found by name (the study's results.csv writes ``budget_flops``)."""


def parse_number(text: str, delimiter: str | None = None) -> float:
    """The number a cell's ``text`` means; ``ValueError`` with the reason when it is none.

    ``delimiter`` is the file's field separator (None for in-memory sources): a single
    comma group such as ``1,500`` is a thousands separator in a comma-separated file (the
    cell had to be quoted) or an in-memory value, and ambiguous in a ``;``/tab one.
    """
    if "," in text:
        text = _ungroup(text, delimiter)
    try:
        return float(text)
    except ValueError:
        pass
    match = _SUFFIXED.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a number")
    try:  # Decimal keeps "1.4B" exactly 1.4e9 (1.4 * 1e9 in floats is not)
        return float(Decimal(match.group(1)).scaleb(SUFFIXES[match.group(2)]))
    except InvalidOperation:
        raise ValueError(f"{text!r} is not a number") from None


def _ungroup(text: str, delimiter: str | None) -> str:
    """``text`` without its thousands separators, or ``ValueError`` if a comma is anything else."""
    match = _GROUPED.fullmatch(text)
    if match is None:
        hint = f"write {text.replace(',', '.')}; " if text.count(",") == 1 else ""
        raise ValueError(
            f"{text!r} is not a number (a decimal comma? {hint}commas may only separate "
            "thousands, as in 40,000,000)"
        )
    sign, digits, fraction, suffix = match.groups()
    if digits.count(",") == 1 and not fraction and delimiter not in (",", None):
        raise ValueError(
            f"{text!r} is ambiguous (a thousands separator or a decimal comma?); write "
            f"{digits.replace(',', '')} or {digits.replace(',', '.')}"
        )
    return f"{sign}{digits.replace(',', '')}{fraction or ''}{suffix}"


def text_of(value: Any) -> str:
    """A cell as stripped text (None is empty, a float nan is ``"nan"``)."""
    if value is None:
        return ""
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return str(value).strip()


def numbers(
    raw: list[Any], label: str, column: str, row_ids: np.ndarray, delimiter: str | None = None
) -> np.ndarray:
    """The cells of one numeric column as float64; a UserError names the first bad cell."""
    out = np.empty(len(raw), dtype=np.float64)
    for i, v in enumerate(raw):
        row = int(row_ids[i])
        if isinstance(v, bool):
            raise UserError(f"{label} row {row}, column '{column}': {v!r} is not a number")
        if isinstance(v, int | float | np.integer | np.floating):
            out[i] = float(v)
            continue
        text = text_of(v)
        if text == "":
            raise UserError(f"{label} row {row}, column '{column}': the value is empty")
        try:
            out[i] = parse_number(text, delimiter)
        except ValueError as exc:
            raise UserError(f"{label} row {row}, column '{column}': {exc}") from None
    return out


def sniff_delimiter(first_line: str) -> str:
    """``,``, ``;`` or tab: whichever splits the header line into the most fields (a tie,
    a one-column header included, is ``,``). Quotes are honoured, so a header cell
    ``"size, M"`` does not make a ``;`` file comma-separated."""
    best, best_n = ",", 1
    for delim in (",", ";", "\t"):
        n = len(next(csv.reader([first_line], delimiter=delim), []))
        if n > best_n:
            best, best_n = delim, n
    return best


def read_source(
    source: Any, name: str | None
) -> tuple[str, list[str], dict[str, list[Any]], str | None]:
    """-> (label, header, columns, delimiter) from a path, dict, list of dicts, or
    DataFrame-like (``delimiter`` is None for in-memory sources)."""
    if isinstance(source, str | Path):
        return _read_file(Path(source), name)
    label = name or type(source).__name__
    if hasattr(source, "to_dict") and not isinstance(source, Mapping):
        try:
            source = source.to_dict("list")  # pandas-style DataFrame
        except TypeError:
            raise UserError(f"{label}: to_dict('list') did not give columns") from None
    if isinstance(source, Mapping):
        header = [str(k) for k in source]
        check_header(header, label)
        cols = {str(k): list(np.asarray(v, dtype=object).ravel()) for k, v in source.items()}
        lengths = {len(v) for v in cols.values()}
        if len(lengths) > 1:
            sizes = ", ".join(f"{k}: {len(v)}" for k, v in cols.items())
            raise UserError(f"{label}: columns have different lengths ({sizes})")
        return label, header, cols, None
    if isinstance(source, Sequence) and all(isinstance(r, Mapping) for r in source):
        header = []
        for r in source:
            for key in r:
                if str(key) not in header:
                    header.append(str(key))
        cols = {h: [] for h in header}
        for i, r in enumerate(source, start=1):
            for h in header:
                if h not in r:
                    raise UserError(f"{label} row {i}: column '{h}' is missing")
                cols[h].append(r[h])
        return label, header, cols, None
    raise UserError(
        f"cannot read a table from {type(source).__name__}: give a CSV path, a dict of "
        "columns, a list of row dicts, or a DataFrame"
    )


def _read_file(path: Path, name: str | None) -> tuple[str, list[str], dict[str, list[Any]], str]:
    label = name or str(path)
    if not path.is_file():
        raise UserError(f"table file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise UserError(f"{label}: not a UTF-8 text file") from None
    lines_text = text.splitlines()
    first = next((ln for ln in lines_text if ln.strip()), "")
    if path.suffix.lower() in (".tsv", ".tab"):
        delim = "\t"
    else:
        delim = sniff_delimiter(first)
    reader = csv.reader(lines_text, delimiter=delim)
    lines = [r for r in reader if r and any(cell.strip() for cell in r)]
    if not lines:
        raise UserError(f"{label}: the file is empty")
    header = [h.strip() for h in lines[0]]
    check_header(header, label)
    cols: dict[str, list[Any]] = {h: [] for h in header}
    for i, row in enumerate(lines[1:], start=1):
        if len(row) != len(header):
            raise UserError(
                f"{label} row {i}: has {len(row)} fields but the header has {len(header)}"
            )
        for h, v in zip(header, row):
            cols[h].append(v)
    return label, header, cols, delim


def read_header(source: Any) -> list[str]:
    """The column names of a table source (for finding columns by name)."""
    return read_source(source, None)[1]


def check_header(header: list[str], label: str) -> None:
    """Every column named, and no name twice."""
    seen: set[str] = set()
    for i, h in enumerate(header, start=1):
        if not h:
            raise UserError(f"{label}: column {i} of the header has no name")
        if h in seen:
            raise UserError(f"{label}: column '{h}' appears twice in the header")
        seen.add(h)


def find_column(header: list[str], wanted: str, label: str, role: str) -> str:
    """The header name for ``wanted`` (exact, then ignoring case), or a UserError with a hint."""
    if wanted in header:
        return wanted
    folded = [h for h in header if h.lower() == wanted.lower()]
    if len(folded) == 1:
        return folded[0]
    close = difflib.get_close_matches(wanted, header, n=1, cutoff=0.6)
    hint = f"did you mean '{close[0]}'?" if close else f"columns are: {', '.join(header)}"
    raise UserError(f"{label}: no column '{wanted}' for {role}; {hint}")


def find_by_name(header: Sequence[str], candidates: Sequence[str]) -> str | None:
    """The first of ``candidates`` in ``header`` (exact, then ignoring case), or None."""
    for cand in candidates:
        if cand in header:
            return cand
        folded = [h for h in header if h.lower() == cand.lower()]
        if len(folded) == 1:
            return folded[0]
    return None


def detect_columns(header: Sequence[str], taken: Sequence[str] = ()) -> dict[str, str]:
    """Role -> column for the N, D, C columns found by name (:data:`CANDIDATES`); a column
    already used (``taken``: the loss, group, weight) is never picked."""
    free = [h for h in header if h not in taken]
    out = {}
    for role, names in CANDIDATES.items():
        found = find_by_name(free, names)
        if found is not None:
            out[role] = found
            free.remove(found)
    return out


def filter_rows(
    data: dict[str, list[Any]],
    header: list[str],
    where: Mapping[str, str] | Sequence[str],
    label: str,
    row_ids: np.ndarray,
) -> tuple[dict[str, list[Any]], np.ndarray]:
    """Only the rows whose columns equal the values of ``where`` (``COLUMN=VALUE`` items)."""
    if not isinstance(where, Mapping):
        pairs = {}
        for item in where:
            if "=" not in item:
                raise UserError(f"row filter {item!r} must look like COLUMN=VALUE")
            key, value = item.split("=", 1)
            pairs[key.strip()] = value.strip()
        where = pairs
    n = len(next(iter(data.values())))
    keep = np.ones(n, dtype=bool)
    for key, value in where.items():
        col = find_column(header, key, label, "a row filter")
        keep &= np.array([text_of(v) == str(value).strip() for v in data[col]])
    if not keep.any():
        conds = ", ".join(f"{k}={v}" for k, v in where.items())
        raise UserError(f"{label}: no rows match {conds}")
    return keep_rows(data, keep), row_ids[keep]


def keep_rows(data: dict[str, list[Any]], keep: np.ndarray) -> dict[str, list[Any]]:
    """The columns at the rows where the boolean mask ``keep`` is true."""
    return {k: [v for v, ok in zip(vals, keep) if ok] for k, vals in data.items()}


def invalid_cells(raw: list[Any], delimiter: str | None) -> list[tuple[int, str]]:
    """``(position, why)`` of every empty, NaN or infinite cell (a diverged run's loss);
    text that is no number at all is not listed (it stays an error)."""
    out = []
    for i, v in enumerate(raw):
        if isinstance(v, bool):
            continue
        if isinstance(v, int | float | np.integer | np.floating):
            if not math.isfinite(float(v)):
                out.append((i, f"{float(v)!r} is not finite"))
            continue
        text = text_of(v)
        if text == "":
            out.append((i, "the value is empty"))
            continue
        try:
            value = parse_number(text, delimiter)
        except ValueError:
            continue
        if not math.isfinite(value):
            out.append((i, f"{value!r} is not finite"))
    return out


def row_list(rows: Sequence[int], limit: int = 6) -> str:
    """``"rows 3, 7 and 9"``, abbreviated past ``limit`` (``"rows 3, 7, ... and 12 more"``)."""
    rows = [int(r) for r in rows]
    if len(rows) == 1:
        return f"row {rows[0]}"
    if len(rows) <= limit:
        return f"rows {', '.join(map(str, rows[:-1]))} and {rows[-1]}"
    return f"rows {', '.join(map(str, rows[:limit]))} and {len(rows) - limit} more"


def check_scales(scales: dict[str, float]) -> dict[str, float]:
    """The unit factors other than 1, each positive and finite."""
    for role, factor in scales.items():
        if not (isinstance(factor, int | float) and math.isfinite(factor) and factor > 0):
            raise UserError(
                f"--{role.lower()}-scale must be a positive number (e.g. 1e6 for a column in "
                f"millions), got {factor!r}"
            )
    return {role: float(f) for role, f in scales.items() if f != 1}


def drop_invalid(
    data: dict[str, list[Any]],
    loss_col: str | None,
    label: str,
    row_ids: np.ndarray,
    delim: str | None,
    skip: bool,
) -> tuple[dict[str, list[Any]], np.ndarray, tuple[int, ...]]:
    """Leave out (``skip``) the rows whose loss is empty, NaN or infinite, or refuse them."""
    bad = [] if loss_col is None else invalid_cells(data[loss_col], delim)
    if not bad:
        return data, row_ids, ()
    rows = tuple(int(row_ids[i]) for i, _ in bad)
    if not skip:
        many = (
            f"{len(rows)} rows have an empty, NaN or infinite loss: {row_list(rows)}; "
            if len(rows) > 1
            else ""
        )
        raise UserError(
            f"{label} row {rows[0]}, column '{loss_col}': {bad[0][1]} ({many}pass "
            "--skip-invalid, or skip_invalid=True, to leave out such rows, e.g. diverged runs)"
        )
    keep = np.ones(len(row_ids), dtype=bool)
    keep[[i for i, _ in bad]] = False
    if not keep.any():
        raise UserError(
            f"{label}: every row has an empty, NaN or infinite loss in column '{loss_col}'"
        )
    return keep_rows(data, keep), row_ids[keep], rows
