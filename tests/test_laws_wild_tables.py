"""Tables as researchers have them: 40M / 1.4B cells, thousands separators, ; and tab
delimiters, tables in millions and billions, diverged runs, columns found by name."""

from __future__ import annotations

import csv
import dataclasses

import numpy as np
import pytest

from scalelab.cli import main
from scalelab.errors import UserError
from scalelab.laws import chinchilla_loss, fit_chinchilla, load_table, small_grid
from scalelab.laws.chinchilla import optimal_allocation
from scalelab.laws.results import optimiser_status
from scalelab.laws.table_parse import parse_number, sniff_delimiter

TRUE = {"E": 1.8, "A": 400.0, "B": 2000.0, "alpha": 0.34, "beta": 0.37}
N_MILLIONS = (20, 50, 125, 350, 760, 1300, 2700)
RATIOS = (5, 20, 80)


def runs() -> list[tuple[float, float, float]]:
    """(N, D, loss) of 21 runs of a planted Chinchilla law; N and D are whole numbers."""
    rng = np.random.default_rng(0)
    out = []
    for n in N_MILLIONS:
        for r in RATIOS:
            big_n, big_d = n * 1e6, n * 1e6 * r
            loss = float(chinchilla_loss(big_n, big_d, TRUE) * np.exp(rng.normal(0, 0.003)))
            out.append((big_n, big_d, loss))
    return out


def human(x: float) -> str:
    """``2e7`` -> ``20M``, ``6.08e10`` -> ``60.8B`` (the way model cards write sizes)."""
    for suffix, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if x >= scale:
            return f"{x / scale:g}{suffix}"
    return f"{x:g}"


def write(path, header, rows, delimiter=","):
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh, delimiter=delimiter)
        w.writerow(header)
        w.writerows(rows)
    return path


@pytest.fixture()
def clean(tmp_path):
    return write(tmp_path / "clean.csv", ["params", "tokens", "loss"], [(repr(n), repr(d), repr(y)) for n, d, y in runs()])  # fmt: skip


WILD = {
    "suffixes.csv": (",", lambda v: human(v)),
    "thousands.csv": (",", lambda v: f"{int(v):,}"),  # quoted by the csv writer
    "underscores.csv": (",", lambda v: f"{int(v):_}"),
    "semicolons.csv": (";", lambda v: f"{int(v):,}"),  # 40,000,000 is unambiguous anywhere
    "tabs.csv": ("\t", lambda v: f"{v:.4e}"),
    "tabs.tsv": ("\t", lambda v: human(v)),
}


@pytest.mark.parametrize("name", sorted(WILD))
def test_wild_cells_parse_exactly(tmp_path, clean, name):
    delim, fmt = WILD[name]
    rows = [(fmt(n), fmt(d), repr(y)) for n, d, y in runs()]
    path = write(tmp_path / name, ["params", "tokens", "loss"], rows, delimiter=delim)
    want = load_table(clean, n="params", d="tokens")
    got = load_table(path, n="params", d="tokens")
    assert got.N.tolist() == want.N.tolist()
    assert got.D.tolist() == want.D.tolist()
    assert got.loss.tolist() == want.loss.tolist()


def test_wild_table_fits_the_same_law(tmp_path, clean, capsys):
    rows = [(human(n), human(d), repr(y)) for n, d, y in runs()]
    wild = write(tmp_path / "wild.csv", ["params", "tokens", "loss"], rows, delimiter=";")
    assert "20M;100M;" in wild.read_text() and "60.8B" in wild.read_text()
    outs = []
    for path in (clean, wild):
        assert main(["fit", str(path), "--n", "params", "--d", "tokens", "--grid", "small"]) == 0
        outs.append(capsys.readouterr().out)
    same = [line for line in outs[0].splitlines() if "=" in line and "fit:" not in line]
    assert same and all(line in outs[1] for line in same if "optimiser" not in line)


@pytest.mark.parametrize(
    "text, delimiter, value",
    [
        ("40M", ",", 4e7), ("1.4B", ",", 1.4e9), ("2.5e9", ",", 2.5e9), ("7k", ",", 7e3),
        ("1.2T", ",", 1.2e12), ("125m", None, 1.25e8), ("6.9b", ",", 6.9e9), ("3G", ",", 3e9),
        ("40,000,000", ",", 4e7), ("40,000,000", ";", 4e7), ("1,500", ",", 1500.0),
        ("1,500", None, 1500.0), ("1,500.25", ";", 1500.25), ("40_000_000", ",", 4e7),
        ("-3k", ",", -3000.0), ("1.5 M", ",", 1.5e6),
    ],
)  # fmt: skip
def test_parse_number(text, delimiter, value):
    assert parse_number(text, delimiter) == value


@pytest.mark.parametrize(
    "text, delimiter, message",
    [
        ("1,5", ",", r"'1,5' is not a number \(a decimal comma\? write 1\.5"),
        ("1,5", ";", r"'1,5' is not a number"),
        ("0,500", ",", "decimal comma"),
        ("1,500", ";", r"'1,500' is ambiguous .* write 1500 or 1\.500"),
        ("1,500", "\t", "ambiguous"),
        ("1,50,000", ",", "not a number"),
        ("12 M params", ",", "not a number"),
        ("1e3k", ",", "not a number"),
    ],
)
def test_ambiguous_or_bad_cells_are_refused(text, delimiter, message):
    with pytest.raises(ValueError, match=message):
        parse_number(text, delimiter)


def test_a_decimal_comma_is_one_line_naming_row_and_column(tmp_path, capsys):
    path = tmp_path / "eu.csv"
    path.write_text("params;tokens;loss\n1e8;2e9;3.1\n2e8;4e9;2,9\n")
    with pytest.raises(UserError, match=r"eu\.csv row 2, column 'loss': '2,9' is not a number"):
        load_table(path, n="params", d="tokens")
    path.write_text("params;tokens;loss\n1e8;2,000;3.1\n")
    assert main(["fit", str(path), "--n", "params", "--d", "tokens"]) == 2
    err = capsys.readouterr().err
    assert "row 1, column 'tokens': '2,000' is ambiguous" in err and err.count("\n") == 1
    # In a comma-separated file the cell had to be quoted: a thousands separator.
    path.write_text('params,tokens,loss\n1e8,"2,000",3.1\n')
    assert load_table(path, n="params", d="tokens").D.tolist() == [2000.0]


def test_sniffed_delimiters():
    assert sniff_delimiter("N;D;loss") == ";"
    assert sniff_delimiter("N\tD\tloss") == "\t"
    assert sniff_delimiter("N,D,loss") == ","
    assert sniff_delimiter('"size, M";tokens;loss') == ";"
    assert sniff_delimiter("loss") == ","


def test_dict_sources_read_suffixes_too():
    t = load_table({"N": ["40M", "1.4B"], "D": ["1T", "2,000,000,000"], "loss": [3.0, 2.5]})
    assert t.N.tolist() == [4e7, 1.4e9] and t.D.tolist() == [1e12, 2e9]


# ====================================================================== units


def _millions_table(tmp_path):
    rows = [(f"{n / 1e6:g}", f"{d / 1e9:g}", repr(y)) for n, d, y in runs()]
    return write(tmp_path / "mb.csv", ["params_M", "tokens_B", "loss"], rows)


def test_units_warning_fires_and_the_scales_fix_it(tmp_path, clean, capsys):
    path = _millions_table(tmp_path)
    base = ["fit", str(path), "--n", "params_M", "--d", "tokens_B", "--grid", "small"]
    assert main([*base, "--compute", "1e21"]) == 0
    text = capsys.readouterr().out
    assert "tokens per parameter at the table's median compute" in text  # the fit's own
    assert "tokens per parameter at C = 1e+21" in text  # the allocation's
    assert "--n-scale/--d-scale" in text
    assert main([*base, "--compute", "1e21", "--n-scale", "1e6", "--d-scale", "1e9"]) == 0
    scaled = capsys.readouterr().out
    assert "tokens per parameter" not in scaled and "--n-scale)" in scaled
    # Rescaled, it is the clean table and the same law.
    table = load_table(path, n="params_M", d="tokens_B", n_scale=1e6, d_scale=1e9)
    want = load_table(clean, n="params", d="tokens")
    np.testing.assert_allclose(table.N, want.N, rtol=1e-15)
    np.testing.assert_allclose(table.D, want.D, rtol=1e-15)
    fit, ref = (fit_chinchilla(t, grid=small_grid()) for t in (table, want))
    for k, v in ref.params.items():
        assert fit.params[k] == pytest.approx(v, rel=1e-6)
    assert not any("tokens per parameter" in w for w in fit.diagnostics.warnings)
    assert not fit.optimal([1e21]).warnings
    ratio = fit.optimal([1e21]).tokens_per_param[0]
    exact = optimal_allocation(fit.params, np.array([1e21]), 6.0)["tokens_per_param"][0]
    assert ratio == pytest.approx(exact, rel=1e-9)


def test_units_warning_is_in_the_api_results(tmp_path):
    table = load_table(_millions_table(tmp_path), n="params_M", d="tokens_B")
    with pytest.warns(UserWarning, match="tokens per parameter"):
        fit = fit_chinchilla(table, grid=small_grid())
    assert any("other units" in w for w in fit.diagnostics.warnings)
    alloc = fit.optimal([1e20])
    assert alloc.tokens_per_param[0] < 1 and "--n-scale" in alloc.warnings[0]
    assert type(alloc).from_dict(alloc.to_dict()).warnings == alloc.warnings


def test_bad_scales_are_refused(tmp_path, clean):
    with pytest.raises(UserError, match="--n-scale must be a positive number"):
        load_table(clean, n="params", d="tokens", n_scale=0)
    with pytest.raises(UserError, match="--c-scale is given but the table has no C column"):
        load_table(clean, n="params", d="tokens", c_scale=1e18, flops_convention="none")


# ====================================================================== diverged runs


def _with_diverged(tmp_path):
    rows = [(repr(n), repr(d), repr(y)) for n, d, y in runs()]
    for pos, bad in ((2, ""), (6, "nan"), (9, "inf")):
        rows.insert(pos, ("1e8", "2e9", bad))
    return write(tmp_path / "diverged.csv", ["params", "tokens", "loss"], rows)


def test_diverged_runs_are_an_error_that_suggests_skip_invalid(tmp_path, capsys):
    path = _with_diverged(tmp_path)
    with pytest.raises(UserError) as err:
        load_table(path, n="params", d="tokens")
    msg = str(err.value)
    assert msg.startswith(f"{path} row 3, column 'loss': the value is empty")
    assert "3 rows have an empty, NaN or infinite loss: rows 3, 7 and 10" in msg
    assert "--skip-invalid" in msg and "\n" not in msg
    assert main(["fit", str(path), "--n", "params", "--d", "tokens"]) == 2
    err_text = capsys.readouterr().err
    assert "--skip-invalid" in err_text and err_text.count("\n") == 1


def test_skip_invalid_drops_and_names_them(tmp_path, clean, capsys):
    path = _with_diverged(tmp_path)
    with pytest.warns(UserWarning, match=r"skipped rows 3, 7 and 10"):
        t = load_table(path, n="params", d="tokens", skip_invalid=True)
    assert t.skipped_rows == (3, 7, 10) and len(t) == 21 and 3 not in t.rows.tolist()
    assert t.loss.tolist() == load_table(clean, n="params", d="tokens").loss.tolist()
    args = ["--n", "params", "--d", "tokens", "--grid", "small"]
    assert main(["fit", str(path), *args, "--skip-invalid"]) == 0
    text = capsys.readouterr().out
    assert "note: skipped rows 3, 7 and 10 with an empty, NaN or infinite loss" in text
    assert main(["fit", str(clean), *args]) == 0
    alpha = [ln for ln in capsys.readouterr().out.splitlines() if "alpha =" in ln]
    assert alpha[0] in text
    many = [("1e8", "2e9", "nan")] * 9 + [("1e8", "2e9", "3.0")]
    path = write(tmp_path / "many.csv", ["params", "tokens", "loss"], many)
    with pytest.raises(UserError, match=r"rows 1, 2, 3, 4, 5, 6 and 3 more"):
        load_table(path, n="params", d="tokens")


# ====================================================================== status line


def test_status_line_has_no_empty_parenthesis(tmp_path, clean):
    assert optimiser_status(True, "ABNORMAL: ") == (
        "converged (scipy's line search could not lower the objective further)"
    )
    assert optimiser_status(False, "") == "NOT CONVERGED"
    assert optimiser_status(True, "CONVERGENCE: NORM OF PROJECTED GRADIENT <= PGTOL") == (
        "converged (CONVERGENCE: NORM OF PROJECTED GRADIENT <= PGTOL)"
    )
    rows = [(repr(6 * n * d), repr(y)) for n, d, y in runs()]
    table = load_table(write(tmp_path / "c.csv", ["C", "loss"], rows))
    assert table.N is None and table.C is not None  # a C-only table
    from scalelab.laws import fit_power_law

    fit = fit_power_law(table, variable="C")
    for message in ("ABNORMAL: ", "", "ABNORMAL"):
        diag = dataclasses.replace(fit.diagnostics, message=message)
        line = next(
            ln for ln in dataclasses.replace(fit, diagnostics=diag).summary().splitlines()
            if "optimiser:" in ln
        )  # fmt: skip
        assert "()" not in line and ": )" not in line and "( " not in line
        assert line.startswith("  optimiser: converged")


# ====================================================================== columns by name


def _study_results(tmp_path, n_name="N_non_embedding"):
    rows = []
    for c in (1e18, 1e19, 1e20):
        n_opt = optimal_allocation(TRUE, np.array([c]), 6.0)["n_opt"][0]
        for n in n_opt * np.logspace(-0.6, 0.6, 7):
            d = c / (6 * n)
            rows.append((f"r{len(rows)}", "completed", repr(c), repr(float(n)), repr(float(d)), repr(float(chinchilla_loss(n, d, TRUE)))))  # fmt: skip
    header = ["rung", "status", "budget_flops", n_name, "D", "final_val_loss"]
    return write(tmp_path / "results.csv", header, rows)


def test_study_column_names_are_found(tmp_path, capsys):
    path = _study_results(tmp_path)
    t = load_table(path, loss="final_val_loss")
    assert t.columns["N"] == "N_non_embedding" and t.columns["D"] == "D"
    assert any("N = 'N_non_embedding'" in note for note in t.notes)
    found = ["fit", str(path), "--loss", "final_val_loss", "--form", "isoflop"]
    named = [*found, "--n", "N_non_embedding", "--d", "D", "--budget", "budget_flops"]
    assert main(found) == 0
    text = capsys.readouterr().out
    assert "IsoFLOP budgets from column 'budget_flops'" in text
    assert main(named) == 0
    text_named = capsys.readouterr().out
    laws = [ln for ln in text_named.splitlines() if "_opt = " in ln]
    assert len(laws) == 2 and all(ln in text for ln in laws)
    old = load_table(_study_results(tmp_path, n_name="N"), loss="final_val_loss")
    assert old.columns["N"] == "N" and old.N.tolist() == t.N.tolist()


def test_named_columns_turn_detection_off(tmp_path):
    path = _study_results(tmp_path)
    t = load_table(path, n="N_non_embedding", loss="final_val_loss", flops_convention="none")
    assert t.D is None and t.notes == ()
