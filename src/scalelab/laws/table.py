"""The tidy run table every fit takes: N parameters, D tokens, C FLOPs, loss, groups.

:func:`load_table` builds a :class:`RunTable` from a CSV path, a dict of columns, a list of
row dicts, or any DataFrame-like object with ``.to_dict("list")`` (pandas is not a
dependency). Missing quantities are derived from a FLOP convention (``C = 6 N D`` by
default), and when all three are given their consistency is checked, so a table with
tokens in billions or FLOPs in PF-days fails loudly instead of producing a wrong law.
Every error names the source, the row (1-based, as in a spreadsheet's data rows) and the
column. Cells are read as researchers write them (``40M``, ``1.4B``, ``40,000,000``; ``,``,
``;`` or tab separated; see :mod:`.table_parse`), a table in other units is rescaled with
``n_scale``/``d_scale``/``c_scale``, and ``skip_invalid`` leaves out diverged runs. A
column of unique training tokens U (for data-constrained laws) is read when named or found.
"""

from __future__ import annotations

import dataclasses
import math
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from scalelab.errors import UserError
from scalelab.laws.table_parse import (
    check_scales,
    detect_columns,
    drop_invalid,
    filter_rows,
    find_by_name,
    find_column,
    numbers,
    parse_number,
    read_source,
    row_list,
    text_of,
)

ROLES = ("N", "D", "C", "U", "loss")
# Unique-token columns found by name (Muennighoff et al. 2023 write U_D), ignoring case.
U_CANDIDATES = ("U", "unique_tokens", "U_D", "unique", "n_unique_tokens", "unique_data")
# May be one value for all runs: one unique-data budget seen for more and more epochs already
# shows how repeated tokens lose value.
MAY_BE_CONSTANT = ("U",)


def flops_per_nd(convention: str) -> float | None:
    """The factor k of C = k N D for a table's convention; None for ``"none"``.

    The names are those of every scalelab command: ``6n_kaplan`` and ``6n_total`` both mean
    C = 6 N D (Kaplan et al. 2020, Eq. 2.1; which N -- non-embedding or total -- is the
    table's column); ``chinchilla`` (Hoffmann et al. 2022, Appendix F) needs the model's
    shape, so a table must give C itself. ``6nd``, ``8nd`` or any ``<k>nd`` (older
    spellings) set the factor directly.
    """
    text = str(convention).strip().lower()
    if text in ("none", "off", ""):
        return None
    if text in ("6n_kaplan", "6n_total", "6n", "kaplan"):
        return 6.0
    if text in ("chinchilla", "appendix_f"):
        raise UserError(
            "the chinchilla (Appendix F) FLOP count needs each model's shape; give C as a "
            "column (--c) or use --flops-convention 6n_kaplan"
        )
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*\*?\s*nd", text)
    if not match or float(match.group(1)) <= 0:
        raise UserError(
            f"flops convention {convention!r} is not understood; use 6n_kaplan (C = 6 N D), "
            "6n_total, a factor such as 8nd, or none"
        )
    return float(match.group(1))


@dataclasses.dataclass(frozen=True, eq=False)
class RunTable:
    """A validated table of runs (all arrays float64 ``[P]``, read-only).

    ``N``, ``D`` and ``C`` may be ``None`` when the table does not have them (a table of
    ``C, loss`` can still be fitted with ``L(C)``); ``loss`` is always present.
    """

    loss: np.ndarray
    """The fitted quantity (loss, or an error/metric for downstream fits), ``[P]``."""
    N: np.ndarray | None = None
    """Parameters per model, ``[P]``."""
    D: np.ndarray | None = None
    """Training tokens, ``[P]``."""
    C: np.ndarray | None = None
    """Training FLOPs, ``[P]``."""
    U: np.ndarray | None = None
    """Unique training tokens available to each run (D > U repeats data), ``[P]``."""
    group: np.ndarray | None = None
    """Cluster labels (object array of str): runs that share a model resample together."""
    weights: np.ndarray | None = None
    """Observation weights (non-negative), ``[P]``."""
    extra: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)
    """Other columns carried along (numeric where they parse as numbers)."""
    rows: np.ndarray | None = None
    """Row number of each point in the source (1-based data rows), for messages."""
    source: str = "table"
    """Where the table came from (for messages)."""
    columns: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """Role -> source column name (``{"N": "Model Size", ...}``), for messages."""
    flops_per_nd: float | None = 6.0
    """k in C = k N D used to derive or check columns (None: no convention)."""
    skipped_rows: tuple[int, ...] = ()
    """Source rows left out for an empty, NaN or infinite loss (``skip_invalid``)."""
    notes: tuple[str, ...] = ()
    """What loading did that the user should know (columns found by name, rows skipped,
    units rescaled), one line each; ``scalelab fit`` prints them."""

    def __post_init__(self) -> None:
        n = self.loss.shape[0]
        if self.rows is None:
            object.__setattr__(self, "rows", np.arange(1, n + 1))
        for name in ("loss", "N", "D", "C", "U", "weights", "rows"):
            arr = getattr(self, name)
            if arr is not None:
                arr.setflags(write=False)

    def __len__(self) -> int:
        return int(self.loss.shape[0])

    def column_name(self, role: str) -> str:
        return self.columns.get(role, role)

    def require(self, *roles: str, what: str = "this fit") -> None:
        """Raise :class:`UserError` unless the table has every quantity in ``roles``."""
        missing = [r for r in roles if getattr(self, r) is None]
        how = "give it, or C and a --flops-convention to derive it"
        if missing == ["U"]:  # unique training tokens
            how = f"name it with --u COLUMN, or call it {', '.join(U_CANDIDATES[:4])}"
        if missing:
            raise UserError(
                f"{self.source}: {what} needs {', '.join(missing)}, but the table has no "
                f"{'/'.join(missing)} column ({how})"
            )

    def require_points(self, k: int, what: str) -> None:
        """Raise unless there are more points than the ``k`` parameters of ``what``."""
        if len(self) <= k:
            raise UserError(
                f"{self.source}: {what} has {k} parameters but the table has only {len(self)} "
                f"point{'s' if len(self) != 1 else ''}; it needs at least {k + 1}"
            )

    def require_distinct(self, roles: Sequence[str], k: int, what: str) -> None:
        """Raise unless the points can identify a law with ``k`` parameters in ``roles``:
        each variable varies and there are more than ``k`` distinct points (10 copies of
        one run fit any law exactly, and the fit would report a meaningless optimum)."""
        arrays = [getattr(self, r) for r in roles]
        per_role = {r: int(np.unique(a).size) for r, a in zip(roles, arrays)}
        n_points = int(np.unique(np.stack(arrays, axis=1), axis=0).shape[0])
        vary = [r for r in roles if r not in MAY_BE_CONSTANT]
        if min(per_role[r] for r in vary) >= 2 and n_points > k:
            return
        counts = ", ".join(f"{n} distinct {self.column_name(r)}" for r, n in per_role.items())
        raise UserError(
            f"{self.source}: cannot identify {what}: too few distinct {'/'.join(roles)} values "
            f"({counts}, {n_points} distinct point{'s' if n_points != 1 else ''} in "
            f"{len(self)} rows); it has {k} parameters, so it needs each of {', '.join(vary)} "
            f"to vary and at least {k + 1} distinct points"
        )

    def subset(self, index: np.ndarray | Sequence[int]) -> RunTable:
        """The rows at ``index`` (integer positions or a boolean mask), as a new table."""
        idx = np.asarray(index)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)

        def take(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else np.array(a[idx])

        return dataclasses.replace(
            self,
            loss=np.array(self.loss[idx]),
            N=take(self.N),
            D=take(self.D),
            C=take(self.C),
            U=take(self.U),
            group=take(self.group),
            weights=take(self.weights),
            extra={k: np.array(v[idx]) for k, v in self.extra.items()},
            rows=np.array(self.rows[idx]),
        )

    def drop_highest(self, k: int) -> tuple[RunTable, tuple[int, ...]]:
        """Drop the ``k`` highest-loss points (Besiroglu et al. 2024 dropped 5).

        Returns the table and the source row numbers dropped.
        """
        if k <= 0:
            return self, ()
        if k >= len(self):
            raise UserError(f"{self.source}: cannot drop {k} of {len(self)} points")
        order = np.argsort(self.loss, kind="stable")
        keep = np.sort(order[: len(self) - k])
        dropped = tuple(int(r) for r in np.sort(self.rows[order[len(self) - k :]]))
        return self.subset(keep), dropped

    def without_rows(self, rows: Iterable[int]) -> RunTable:
        """The table without the given source row numbers (unknown numbers are ignored)."""
        drop = set(int(r) for r in rows)
        if not drop:
            return self
        return self.subset(np.array([int(r) not in drop for r in self.rows]))

    def to_columns(self) -> dict[str, list[Any]]:
        """Plain columns (for writing a CSV or building another table)."""
        out: dict[str, list[Any]] = {}
        for role in ROLES:
            arr = getattr(self, role)
            if arr is not None:
                out[role] = arr.tolist()
        if self.group is not None:
            out["group"] = self.group.tolist()
        if self.weights is not None:
            out["weight"] = self.weights.tolist()
        for k, v in self.extra.items():
            out[k] = v.tolist()
        return out

    def _repr_html_(self) -> str:
        from scalelab.laws.notebook import table_html

        return table_html(self)

    def to_pandas(self) -> Any:
        """The table as a pandas DataFrame (columns of :meth:`to_columns`, indexed by source
        row); ``load_table(df)`` reads it back. Needs pandas (``pip install pandas``)."""
        from scalelab.laws.notebook import frame

        return frame(self.to_columns(), index=[int(r) for r in self.rows], index_name="row")

    def ranges(self) -> dict[str, tuple[float, float]]:
        """Min and max of each quantity present (JSON-safe)."""
        out = {}
        for role in ROLES:
            arr = getattr(self, role)
            if arr is not None and arr.size:
                out[role] = (float(arr.min()), float(arr.max()))
        return out


# ====================================================================== loading


def load_table(
    source: Any,
    *,
    n: str | None = None,
    d: str | None = None,
    c: str | None = None,
    loss: str = "loss",
    u: str | None = None,
    group: str | None = None,
    weight: str | None = None,
    extra: Sequence[str] = (),
    where: Mapping[str, str] | Sequence[str] | None = None,
    flops_convention: str = "6n_kaplan",
    check_units: bool = True,
    unit_tolerance: float = 3.0,
    name: str | None = None,
    n_scale: float = 1.0,
    d_scale: float = 1.0,
    c_scale: float = 1.0,
    skip_invalid: bool = False,
    detect: bool = True,
) -> RunTable:
    """Build a validated :class:`RunTable`.

    ``n``, ``d``, ``c``, ``loss``, ``group``, ``weight`` name the source columns (matched
    exactly, then case-insensitively); when none of ``n``, ``d``, ``c`` is named (and
    ``detect``), the N, D and C columns are found by common names (``N``,
    ``N_non_embedding``, ``params``, ``D``, ``tokens``, ``C``, ``flops``, ...:
    :data:`.table_parse.CANDIDATES`), and :attr:`RunTable.notes` says which. Cells may read
    ``40M``, ``1.4B``, ``40,000,000`` (:func:`.table_parse.parse_number`). ``n_scale``,
    ``d_scale``, ``c_scale`` multiply the N, D, C columns (``n_scale=1e6``: N in millions).
    A row whose loss is empty, NaN or infinite (a diverged run) is an error, or left out
    with ``skip_invalid`` (with a warning naming the rows). With a FLOP convention
    ``C = k N D``, a missing one of N, D, C is derived from the other two; when all three
    are given, every row must have ``C / (k N D)`` within a factor ``unit_tolerance`` of 1,
    or the units are called inconsistent (``check_units=False`` or
    ``flops_convention="none"`` skips the check). ``where`` keeps only rows whose column
    equals a value (``{"experiment": "x"}`` or ``["experiment=x"]``). ``u`` names the column
    of unique tokens U (else one of :data:`U_CANDIDATES` if present; ``d_scale`` applies).
    """
    if isinstance(source, RunTable):
        return source
    label, header, data, delim, row_ids = _read(source, name, where)
    if unit_tolerance <= 1:
        raise UserError(f"unit_tolerance must be > 1, got {unit_tolerance}")
    scales = check_scales({"N": n_scale, "D": d_scale, "C": c_scale})
    k = flops_per_nd(flops_convention)
    notes: list[str] = []
    wanted = {"N": n, "D": d, "C": c, "U": u, "loss": loss}
    if detect and n is None and d is None and c is None:
        wanted.update(_detect(header, (loss, group, weight, u, *extra), notes))
    _find_unique(header, data, wanted, [group, weight, *extra], delim, notes, detect)
    found_cols = {
        r: find_column(header, col, label, r) for r, col in wanted.items() if col is not None
    }
    data, row_ids, skipped = drop_invalid(
        data, found_cols.get("loss"), label, row_ids, delim, skip_invalid
    )
    if skipped:
        notes.append(f"skipped {row_list(skipped)} with an empty, NaN or infinite loss")
        warnings.warn(f"{label}: {notes[-1]}", UserWarning, stacklevel=2)
    columns, values = _role_columns(found_cols, data, label, row_ids, delim)
    notes.extend(_rescale(values, columns, scales, label, row_ids))
    _derive(values, columns, k, label, check_units, unit_tolerance, row_ids)
    group_arr = None if group is None else _group_column(header, data, group, label, row_ids)
    weights = _weight_column(header, data, weight, label, row_ids, delim)
    extras = _extra_columns(header, data, extra, label, delim)
    return RunTable(
        loss=values["loss"],  # type: ignore[arg-type]
        **{role: values[role] for role in ("N", "D", "C", "U")},  # type: ignore[arg-type]
        group=group_arr,
        weights=weights,
        extra=extras,
        rows=row_ids,
        source=label,
        columns=columns,
        flops_per_nd=k,
        skipped_rows=skipped,
        notes=tuple(notes),
    )


def _read(
    source: Any, name: str | None, where: Mapping[str, str] | Sequence[str] | None
) -> tuple[str, list[str], dict[str, list[Any]], str | None, np.ndarray]:
    """(label, header, columns, delimiter, source row numbers) of the rows ``where`` keeps."""
    label, header, data, delim = read_source(source, name)
    if not header:
        raise UserError(f"{label}: the table has no columns")
    row_ids = np.arange(1, len(next(iter(data.values()), [])) + 1)  # source row numbers
    if where:
        data, row_ids = filter_rows(data, header, where, label, row_ids)
    if not data or not any(len(v) for v in data.values()):
        raise UserError(f"{label}: the table has no rows")
    return label, header, data, delim, row_ids


def _detect(header: list[str], taken: Sequence[str | None], notes: list[str]) -> dict[str, str]:
    """The N, D, C columns found by name (none of the columns already ``taken``), noted."""
    found = detect_columns(header, taken=[x for x in taken if x])
    if any(col != role for role, col in found.items()):  # "N is 'N'" says nothing
        named = ", ".join(f"{r} = '{col}'" for r, col in found.items())
        notes.append(f"columns found by name: {named} (choose others with --n/--d/--c)")
    return found


def _find_unique(
    header: list[str], data: dict, wanted: dict, taken: list, delim: Any, notes: list, detect: bool
) -> None:
    """With no U column named (``wanted["U"]``) and ``detect``: set it to a unique-tokens
    column found by name whose cells are all positive numbers (noted); a column of that
    name holding anything else is left alone."""
    if not detect or wanted["U"] is not None:
        return
    col = find_by_name([h for h in header if h not in [*taken, *wanted.values()]], U_CANDIDATES)
    try:
        ok = col is not None and all(0 < parse_number(text_of(v), delim) < math.inf for v in data[col])  # fmt: skip
    except ValueError:  # a cell that is not a number
        ok = False
    if ok:
        wanted["U"] = col
        if col != "U":
            notes.append(f"unique tokens U = '{col}' (found by name; choose another with --u)")


def _role_columns(
    found: dict[str, str],
    data: dict[str, list[Any]],
    label: str,
    row_ids: np.ndarray,
    delim: str | None,
) -> tuple[dict[str, str], dict[str, np.ndarray | None]]:
    """Per role (N, D, C, U, loss): its source column (``found``) and its positive numbers
    (None: not given)."""
    values = {r: numbers(data[col], label, col, row_ids, delim) for r, col in found.items()}
    for role, arr in values.items():
        _check_positive(arr, label, found[role], row_ids)
    return dict(found), {role: values.get(role) for role in ROLES}


def _rescale(
    values: dict[str, np.ndarray | None],
    columns: dict[str, str],
    scales: dict[str, float],
    label: str,
    row_ids: np.ndarray,
) -> list[str]:
    """Multiply the N, D, C columns by their unit factors; a note for each."""
    notes = []
    for role, factor in scales.items():
        arr = values[role]
        if arr is None:
            raise UserError(
                f"{label}: --{role.lower()}-scale is given but the table has no {role} column"
            )
        with np.errstate(over="ignore", under="ignore"):
            scaled = arr * factor
        _check_in_range(scaled, role, f"{columns[role]} * {factor:g}", label, row_ids)
        values[role] = scaled
        notes.append(f"{role} = '{columns[role]}' * {factor:g} (--{role.lower()}-scale)")
        if role == "D" and values["U"] is not None:  # unique tokens are tokens too
            values["U"] = values["U"] * factor
            notes.append(f"U = '{columns['U']}' * {factor:g} (--d-scale)")
    return notes


def _group_column(
    header: list[str], data: dict[str, list[Any]], group: str, label: str, row_ids: np.ndarray
) -> np.ndarray:
    """The group of every row, as text; an empty group is an error."""
    gname = find_column(header, group, label, "group")
    group_arr = np.array([text_of(v) for v in data[gname]], dtype=object)
    empty = [i for i, v in enumerate(group_arr) if v == ""]
    if empty:
        raise UserError(f"{label} row {row_ids[empty[0]]}, column '{gname}': the group is empty")
    return group_arr


def _weight_column(
    header: list[str],
    data: dict[str, list[Any]],
    weight: str | None,
    label: str,
    row_ids: np.ndarray,
    delim: str | None = None,
) -> np.ndarray | None:
    """The fit weight of every row: finite, non-negative and not all zero (None: no column)."""
    if weight is None:
        return None
    wname = find_column(header, weight, label, "weight")
    weights = numbers(data[wname], label, wname, row_ids, delim)
    bad = np.flatnonzero(~np.isfinite(weights) | (weights < 0))
    if bad.size:
        raise UserError(
            f"{label} row {row_ids[bad[0]]}, column '{wname}': weight {float(weights[bad[0]])!r} "
            "must be finite and non-negative"
        )
    if not weights.any():
        raise UserError(f"{label}, column '{wname}': all weights are zero")
    return weights


def _extra_columns(
    header: list[str],
    data: dict[str, list[Any]],
    extra: Sequence[str],
    label: str,
    delim: str | None = None,
) -> dict[str, np.ndarray]:
    """The ``extra`` columns under the names asked for: numbers if every value is one, else text."""
    extras: dict[str, np.ndarray] = {}
    for e in extra:
        ename = find_column(header, e, label, "extra")
        raw = data[ename]
        try:
            extras[e] = np.array([parse_number(text_of(v), delim) for v in raw], dtype=np.float64)
        except ValueError:
            extras[e] = np.array([text_of(v) for v in raw], dtype=object)
    return extras


def table_from_arrays(
    *,
    loss: Sequence[float] | np.ndarray,
    N: Sequence[float] | np.ndarray | None = None,  # noqa: N803 - the field's name
    D: Sequence[float] | np.ndarray | None = None,  # noqa: N803
    C: Sequence[float] | np.ndarray | None = None,  # noqa: N803
    U: Sequence[float] | np.ndarray | None = None,  # noqa: N803
    group: Sequence[Any] | None = None,
    weights: Sequence[float] | None = None,
    flops_convention: str = "6n_kaplan",
    check_units: bool = True,
    name: str = "arrays",
) -> RunTable:
    """Convenience: a validated table from arrays (same checks as :func:`load_table`)."""
    cols: dict[str, Any] = {"loss": list(np.asarray(loss, dtype=float))}
    kw: dict[str, Any] = {}
    for key, arr in (("N", N), ("D", D), ("C", C), ("U", U)):
        if arr is not None:
            cols[key] = list(np.asarray(arr, dtype=float))
            kw[key.lower()] = key
    if group is not None:
        cols["group"] = [str(g) for g in group]
        kw["group"] = "group"
    if weights is not None:
        cols["weight"] = list(np.asarray(weights, dtype=float))
        kw["weight"] = "weight"
    return load_table(
        cols,
        loss="loss",
        flops_convention=flops_convention,
        check_units=check_units,
        name=name,
        **kw,
    )


def _check_positive(arr: np.ndarray, label: str, column: str, row_ids: np.ndarray) -> None:
    bad = np.flatnonzero(~np.isfinite(arr) | (arr <= 0))
    if bad.size:
        i = int(bad[0])
        what = "not finite" if not np.isfinite(arr[i]) else "not positive"
        more = f" (and {bad.size - 1} more rows)" if bad.size > 1 else ""
        raise UserError(
            f"{label} row {row_ids[i]}, column '{column}': {float(arr[i])!r} is {what}{more}"
        )


def _derive(
    values: dict[str, np.ndarray | None],
    columns: dict[str, str],
    k: float | None,
    label: str,
    check_units: bool,
    tolerance: float,
    row_ids: np.ndarray,
) -> None:
    """Fill a missing one of N, D, C from C = k N D, or check the three agree."""
    n, d, c = values["N"], values["D"], values["C"]
    if k is None:
        return
    derived = derive_missing(values, k)
    if derived is not None:
        role, arr, formula = derived
        _check_in_range(arr, role, formula, label, row_ids)
        values[role] = arr
        columns[role] = formula
    elif n is not None and d is not None and c is not None and check_units:
        with np.errstate(over="ignore", under="ignore"):
            knd = k * n * d
            _check_in_range(knd, "C", f"{k:g}*N*D", label, row_ids)
            _check_units(c / knd, values, columns, k, label, tolerance, row_ids)


def derive_missing(
    arrs: Mapping[str, np.ndarray | None], k: float
) -> tuple[str, np.ndarray, str] | None:
    """The one of N, D, C missing from ``arrs`` (the other two given), by C = k N D:
    ``(role, values, formula)``; None when there is nothing to derive. Values out of the
    float range (N = D = 1e300 gives inf) are the caller's to report, so numpy does not
    warn about them."""
    n, d, c = arrs.get("N"), arrs.get("D"), arrs.get("C")
    with np.errstate(over="ignore", under="ignore"):
        if n is not None and d is not None and c is None:
            return "C", k * n * d, f"{k:g}*N*D"
        if n is not None and c is not None and d is None:
            return "D", c / (k * n), f"C/({k:g}*N)"
        if d is not None and c is not None and n is None:
            return "N", c / (k * d), f"C/({k:g}*D)"
    return None


def _check_in_range(
    arr: np.ndarray, role: str, formula: str, label: str, row_ids: np.ndarray
) -> None:
    """A quantity derived through C = k N D must stay a positive finite float."""
    bad = np.flatnonzero(~np.isfinite(arr) | (arr <= 0))
    if bad.size:
        i = int(bad[0])
        raise UserError(
            f"{label} row {row_ids[i]}: values out of range: {role} = {formula} gives "
            f"{float(arr[i])!r}, beyond the floating-point range (check the units)"
        )


def _check_units(
    ratio: np.ndarray,
    values: dict[str, np.ndarray | None],
    columns: dict[str, str],
    k: float,
    label: str,
    tolerance: float,
    row_ids: np.ndarray,
) -> None:
    """Every row's C / (k N D) within a factor ``tolerance`` of 1, or the units are mixed."""
    bad = np.flatnonzero((ratio > tolerance) | (ratio < 1.0 / tolerance))
    if bad.size:
        n, d, c = values["N"], values["D"], values["C"]
        i = int(bad[0])
        raise UserError(
            f"{label} row {row_ids[i]}: inconsistent units: {columns['C']} = {c[i]:.4g} but "
            f"{k:g} * {columns['N']} * {columns['D']} = {k * n[i] * d[i]:.4g} "
            f"({ratio[i]:.3g}x; {bad.size} rows off by more than {tolerance:g}x); check "
            "that N is in parameters, D in tokens and C in FLOPs, or pass "
            "--flops-convention none"
        )
