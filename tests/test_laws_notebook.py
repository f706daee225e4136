"""Notebook views: ``_repr_html_`` of tables and fits, ``to_pandas`` round trips."""

from __future__ import annotations

import builtins
import html
import warnings

import numpy as np
import pytest

from scalelab.laws import (
    bootstrap,
    chinchilla_loss,
    fit_chinchilla,
    fit_isoflop,
    fit_power_law,
    load_fit,
    load_table,
    save_fit,
    small_grid,
)
from scalelab.laws.chinchilla import optimal_allocation

TRUE = {"E": 1.8, "A": 400.0, "B": 2000.0, "alpha": 0.34, "beta": 0.37}


@pytest.fixture(scope="module")
def table():
    rng = np.random.default_rng(0)
    rows = []
    for i, n in enumerate(np.geomspace(2e7, 2e9, 6)):
        for r in (5, 20, 80):
            loss = chinchilla_loss(n, n * r, TRUE) * np.exp(rng.normal(0, 0.003))
            rows.append({"model": f"m{i}", "params": n, "tokens": n * r, "loss": loss})
    return load_table(rows, n="params", d="tokens", group="model", name="ladder")


@pytest.fixture(scope="module")
def fit(table):
    f = fit_chinchilla(table, grid=small_grid())
    return f.with_bootstrap(bootstrap(table, f, n=20, seed=0))


def test_law_fit_html_shows_parameters_intervals_and_status(fit):
    text = fit._repr_html_()
    assert text.startswith("<div") and "dataclass" not in text and "theta" not in text
    for name, value in fit.params.items():
        iv = fit.bootstrap.intervals[name]
        assert f"<td>{name}</td><td>{value:.6g}</td>" in text
        assert f"[{iv.lo:.6g}, {iv.hi:.6g}]" in text
    assert "95% interval" in text and "optimiser: converged" in text
    assert f"{fit.n_points} points" in text and "20/20 resamples" in text
    assert html.escape(fit.formula) in text


def test_warnings_and_unbootstrapped_fits(table):
    small = load_table(
        {"N": table.N / 1e6, "D": table.D / 1e9, "loss": table.loss}, n="N", d="D"
    )  # a table in millions and billions
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f = fit_chinchilla(small, grid=small_grid())
    text = f._repr_html_()
    assert "interval" not in text and f"<td>{f.params['E']:.6g}</td>" in text
    assert "<li>warning: " in text and "--n-scale" in text
    alloc = f.optimal([1e20])
    a_text = alloc._repr_html_()
    assert f"{alloc.n_opt[0]:.6g}" in a_text and "<li>warning: " in a_text


def test_isoflop_envelope_and_bootstrap_html(tmp_path):
    rows = []
    for c in (1e18, 1e19, 1e20):
        n_opt = optimal_allocation(TRUE, np.array([c]), 6.0)["n_opt"][0]
        for n in n_opt * np.logspace(-0.6, 0.6, 7):
            rows.append({"N": n, "D": c / (6 * n), "loss": chinchilla_loss(n, c / (6 * n), TRUE)})
    iso = fit_isoflop(load_table(rows, n="N", d="D"))
    text = iso._repr_html_()
    assert "IsoFLOP (Approach 2)" in text and f"<td>{iso.a:.6g}</td>" in text
    assert f"<td>{iso.profiles[0].n_opt:.6g}</td>" in text and "21 runs" in text
    save_fit(iso, tmp_path / "iso.json")
    assert load_fit(tmp_path / "iso.json")._repr_html_() == text


def test_bootstrap_and_other_results_are_not_dumps(fit, table):
    text = fit.bootstrap._repr_html_()
    assert "bootstrap of chinchilla" in text and "20/20 resamples converged" in text
    assert f"{fit.bootstrap.intervals['alpha'].estimate:.6g}" in text
    assert repr(fit.bootstrap.samples["alpha"][3]) not in text  # the draws are not dumped
    assert len(text) < 3000
    power = fit_power_law(table, variable="N")
    assert f"<td>{power.params['alpha']:.6g}</td>" in power._repr_html_()
    diag = fit.diagnostics._repr_html_()  # no summary(): its plain fields, as a table
    assert "<td>converged</td><td>True</td>" in diag and "correlations" not in diag


def test_run_table_html(table):
    text = table._repr_html_()
    assert "RunTable: ladder" in text and f"{len(table)} rows" in text
    assert "N = params" in text and "D = tokens" in text
    assert f"<td>{table.N[0]:.6g}</td>" in text and "<th>group</th>" in text
    assert f"... {len(table) - 8} more rows" in text


def test_to_pandas_without_pandas_says_how_to_get_it(table, fit, monkeypatch):
    real_import = builtins.__import__

    def no_pandas(name, *args, **kwargs):
        if name == "pandas" or name.startswith("pandas."):
            raise ImportError("No module named 'pandas'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pandas)
    for obj in (table, fit):
        with pytest.raises(ImportError, match="pip install pandas"):
            obj.to_pandas()


def test_to_pandas_round_trips(table, fit):
    pytest.importorskip("pandas")
    df = table.to_pandas()
    assert list(df.index) == table.rows.tolist() and df.index.name == "row"
    assert df["N"].tolist() == table.N.tolist() and df["group"].tolist() == table.group.tolist()
    back = load_table(df, group="group")  # N, D, C, loss found by name
    for role in ("N", "D", "C", "loss"):
        assert getattr(back, role).tolist() == getattr(table, role).tolist()
    params = fit.to_pandas()
    assert params.index.name == "parameter"
    for name, value in fit.params.items():
        assert params.loc[name, "value"] == value
        assert params.loc[name, "lo"] == fit.bootstrap.intervals[name].lo
    alloc = fit.optimal([1e21, 1e22]).to_pandas()
    assert alloc["n_opt"].tolist() == list(fit.optimal([1e21, 1e22]).n_opt)
    boot = fit.bootstrap.to_pandas()
    assert boot.loc["beta", "hi"] == fit.bootstrap.intervals["beta"].hi
