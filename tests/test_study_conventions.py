"""Allocation exponents under each N and C convention (``scalelab.study.conventions``).

A Chinchilla law is planted in terms of total N (a fixed embedding count on top of the
non-embedding N) with a synthetic Appendix-F-like FLOP count per token that is not
proportional to N; rows carry every column a study's results do. The table must recover
a = beta/(alpha+beta) for total N under 6 N_total D, the numerically computed truth under the
full count (by Approach 3 and by Approach 2 on levels iso under that count), and a larger a
with non-embedding N (Pearce & Song 2024); intervals must hold the truth; ladders get
Approach 3 only; missing columns fail single cells; the study fit stores the key, and the
report renders it, or skips it for an old summary.
"""

from __future__ import annotations

import html
import json
import math

import numpy as np
import pytest
from scipy.optimize import minimize_scalar
from tests.test_study_report_answer import _study

from scalelab.laws import chinchilla_loss
from scalelab.study.conventions import (
    APPENDIX_F,
    APPROACH2,
    APPROACH3,
    SIX_ND,
    ConventionTable,
    PerTokenCount,
    allocation_by_convention,
    local_slope,
    optimal_log_n,
)
from scalelab.study.fit import StudyFitConfig, describe_fit, fit_study
from scalelab.study.report.conventions_section import (
    HEADING,
    contrast_sentence,
    convention_lines,
    convention_rows,
    conventions_section,
)
from scalelab.study.report.html import Report
from scalelab.study.report.study_report import build_report
from scalelab.utils.io import atomic_write_json, read_json

LAW = {"E": 1.8, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
"""Hoffmann et al. 2022's eq. 10 law, here in terms of total N."""
A_TRUE = LAW["beta"] / (LAW["alpha"] + LAW["beta"])
EMB = 2e6
"""Embedding parameters (fixed): total N = non-embedding N + EMB."""
LEVELS = (1e15, 1e16, 1e17, 1e18)


def per_token(n_ne):
    """A synthetic full count per token: 6 N_total, a head as large as the embedding, and an
    attention-like term growing slower than N (so C is not a power law of N D)."""
    return 6 * (n_ne + EMB) + 6 * EMB + 3e3 * np.sqrt(n_ne)


def _true_opt(c: float) -> float:
    """Non-embedding N_opt under C = per_token(N) D, by scipy (independent of the module)."""
    res = minimize_scalar(
        lambda x: float(chinchilla_loss(math.exp(x) + EMB, c / per_token(math.exp(x)), LAW)),
        bounds=(math.log(1e3), math.log(1e12)),
        method="bounded",
        options={"xatol": 1e-10},
    )
    return math.exp(res.x)


def _truth_full(n_def: str) -> tuple[float, float]:
    """a and b under the full count: log-log slopes of the true optimum over the levels."""
    cs = np.geomspace(LEVELS[0], LEVELS[-1], 7)
    n = np.array([_true_opt(c) for c in cs])
    n_def_n = n if n_def == "non-embedding" else n + EMB
    lc = np.log(cs)
    return np.polyfit(lc, np.log(n_def_n), 1)[0], np.polyfit(lc, np.log(cs / per_token(n)), 1)[0]


def _row(rung: str, n: float, d: float, loss: float, budget: float | None) -> dict:
    nt = n + EMB
    return {
        "rung": rung, "N": n, "N_total": nt, "D": d, "C_6n_kaplan": 6 * n * d,
        "C_6n_total": 6 * nt * d, "C_chinchilla": per_token(n) * d, "budget": budget,
        "final_val_loss": loss,
    }  # fmt: skip


def isoflop_rows(noise: float = 0.003, seed: int = 0) -> list[dict]:
    """4 levels iso under the full count x 7 sizes centred on each level's optimum."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in LEVELS:
        n0 = _true_opt(c)
        for i, f in enumerate(np.geomspace(1 / 5, 5, 7)):
            n, d = n0 * f, c / per_token(n0 * f)
            loss = float(chinchilla_loss(n + EMB, d, LAW)) * math.exp(rng.normal(0, noise))
            rows.append(_row(f"c{c:.0e}-n{i}", n, d, loss, c))
    return rows


def ladder_rows(noise: float = 0.003, seed: int = 1) -> list[dict]:
    """A ladder: 7 sizes x 3 tokens per (total) parameter, no compute levels."""
    rng = np.random.default_rng(seed)
    rows = []
    for i, n in enumerate(np.geomspace(1e6, 1e8, 7)):
        for tpp in (5, 20, 80):
            d = tpp * (n + EMB)
            loss = float(chinchilla_loss(n + EMB, d, LAW)) * math.exp(rng.normal(0, noise))
            rows.append(_row(f"n{i}-t{tpp}", n, d, loss, None))
    return rows


@pytest.fixture(scope="module")
def iso() -> ConventionTable:
    return allocation_by_convention(
        isoflop_rows(), plan_convention="chinchilla", n_boot=200, seed=0
    )


def _inside(iv, value: float) -> bool:
    return iv is not None and iv[0] <= value <= iv[1]


def test_total_n_under_6nd_recovers_the_planted_exponents(iso):
    cell = iso.cell("total", SIX_ND)
    assert cell.error is None and cell.method == APPROACH3
    assert abs(cell.a - A_TRUE) < 0.01 and abs(cell.b - (1 - A_TRUE)) < 0.01
    assert _inside(cell.a_interval, A_TRUE) and _inside(cell.b_interval, 1 - A_TRUE)
    assert cell.resamples >= 150 and "β/(α+β)" in cell.how


def test_non_embedding_n_gives_a_larger_a(iso):
    """With the embeddings left out of N the small models look larger-exponent (Kaplan-like):
    a non-embedding a well above the total-N cell's whole interval (Pearce & Song 2024)."""
    total, ne = iso.cell("total", SIX_ND), iso.cell("non-embedding", SIX_ND)
    assert ne.error is None and ne.a > total.a_interval[1] + 0.05
    assert not _inside(ne.a_interval, A_TRUE)
    assert ne.a + ne.b == pytest.approx(1.0)


def test_the_full_count_matches_the_numerical_truth_by_both_approaches(iso):
    """Under C = f(N) D the truth (scipy's optimum of the planted law) is held by Approach 3's
    numerical local slope and by Approach 2 (the levels are iso under this count); a + b is
    not 1 because f is not proportional to N."""
    a_true, b_true = _truth_full("total")
    for method, tol in ((APPROACH3, 0.01), (APPROACH2, 0.015)):
        cell = iso.cell("total", APPENDIX_F, method)
        assert cell.error is None, cell.error
        assert abs(cell.a - a_true) < tol and abs(cell.b - b_true) < tol, (method, cell)
        assert _inside(cell.a_interval, a_true) and _inside(cell.b_interval, b_true)
    assert abs(a_true + b_true - 1) > 0.03
    assert abs(a_true - A_TRUE) > 0.03  # the full count moves a, so the cell tests something


def test_approach2_under_6nd_is_the_plan_frontier_in_other_units(iso):
    """Approach 2's vertices are optima of the plan's count (here the full count); placed at
    their own 6 N_total D they give neither the 6ND optimum's a nor the full count's."""
    a_full, _ = _truth_full("total")
    cell = iso.cell("total", SIX_ND, APPROACH2)
    assert cell.error is None and abs(cell.a - A_TRUE) > 0.03 and abs(cell.a - a_full) > 0.01
    assert any("iso only under chinchilla" in n for n in iso.notes)
    assert iso.levels == 4 and len(iso.cells) == 8


def test_the_numerical_optimum_reduces_to_the_closed_form_under_6nd():
    """f(N) = 6 N: the numerical local slope equals beta/(alpha+beta) (Hoffmann et al. eq. 4)."""
    rows = [{"N": n, "D": 1e9, "C_chinchilla": 6 * n * 1e9} for n in (1e6, 1e7, 1e8)]
    f = PerTokenCount.from_rows(rows, "N")
    assert f.slope == pytest.approx(1.0) and float(f(np.log(3e9))) == pytest.approx(np.log(1.8e10))
    log_c = np.linspace(np.log(1e17), np.log(1e20), 7)
    params = {k: np.array([v, v]) for k, v in LAW.items()}
    log_n = optimal_log_n(params, log_c, f)
    assert local_slope(log_c, log_n) == pytest.approx([A_TRUE, A_TRUE], abs=1e-4)
    far = optimal_log_n(LAW, np.array([np.log(1e40)]), f)  # beyond the search: nan, not an edge
    assert np.isnan(far).all()


def test_a_ladder_gets_approach3_only():
    res = allocation_by_convention(ladder_rows(), n_boot=100, seed=0)
    assert {c.method for c in res.cells} == {APPROACH3} and len(res.cells) == 4
    assert res.levels == 0 and any("Approach 3 only" in n for n in res.notes)
    cell = res.cell("total", SIX_ND)
    assert abs(cell.a - A_TRUE) < 0.02 and _inside(cell.a_interval, A_TRUE)
    assert res.cell("total", APPENDIX_F).error is None


def test_missing_columns_fail_single_cells():
    """An old study's rows without the full count, and rows without N_total: those cells say
    why, the others are fitted."""
    rows = [dict(r, C_chinchilla=None) for r in isoflop_rows()]
    res = allocation_by_convention(rows, n_boot=0)
    assert res.cell("non-embedding", SIX_ND).error is None
    for method in (APPROACH3, APPROACH2):
        err = res.cell("total", APPENDIX_F, method).error
        assert err and "C_chinchilla" in err
    assert res.cell("total", SIX_ND, APPROACH2).error is None
    rows = [{k: v for k, v in r.items() if k != "N_total"} for r in isoflop_rows()]
    res = allocation_by_convention(rows, n_boot=0)
    assert "no N_total" in res.cell("total", SIX_ND).error
    assert res.cell("non-embedding", APPENDIX_F).error is None
    assert res.cell("non-embedding", SIX_ND).a_interval is None  # n_boot 0: no intervals
    table = convention_rows(res.to_dict())
    failed = [r for r in table if r["N"] == "total"]
    assert failed and all(r["a (N_opt ∝ C^a) [95%]"] == "–" for r in failed)
    assert all("– (no N_total" in r["method"] for r in failed)


def test_a_failing_law_fails_its_cells_only(monkeypatch):
    import scalelab.study.conventions as conventions

    def boom(*args, **kw):
        raise ArithmeticError("the law ran away")

    monkeypatch.setattr(conventions, "_fit_law", boom)
    res = allocation_by_convention(isoflop_rows(), plan_convention="chinchilla", n_boot=0)
    a3 = [c for c in res.cells if c.method == APPROACH3]
    assert len(a3) == 4 and all(c.error == "the law ran away" and c.a is None for c in a3)
    assert all(c.error is None for c in res.cells if c.method == APPROACH2)
    assert contrast_sentence(res.to_dict()) == ""
    lines = convention_lines({"conventions": res.to_dict()})
    assert "– (the law ran away)" in lines[1]
    assert convention_lines({"conventions": {"error": "x", "cells": []}}) == [
        "allocation exponents by convention: not computed (x)"
    ]


def test_seeded_and_json_round_trip(iso):
    data = json.loads(json.dumps(iso.to_dict()))
    assert ConventionTable.from_dict(data) == iso
    again = allocation_by_convention(isoflop_rows(), plan_convention="chinchilla", n_boot=200)
    assert again.to_dict() == iso.to_dict()


def test_the_section_renders_and_an_old_summary_skips_it(iso):
    rep = Report("t")
    conventions_section(rep, {"chinchilla": {}})  # a summary written before the key
    assert rep.blocks == []
    conventions_section(rep, {"conventions": iso.to_dict()})
    md = rep.to_markdown()
    assert HEADING in md and "Pearce & Song 2024" in md and "iso only under chinchilla" in md
    assert len(convention_rows(iso.to_dict())) == 8
    assert "counting every parameter in N moves it to" in contrast_sentence(iso.to_dict())
    lines = convention_lines({"conventions": iso.to_dict()})
    assert len(lines) == 9 and "Approach 2" in lines[-1]
    assert convention_lines({}) == []


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    study = _study(tmp_path_factory.mktemp("conv") / "s", noise=0.003)
    summary = fit_study(study, StudyFitConfig(bootstrap=40, grid="small", frontier_band=None))
    return study, summary


def test_a_study_fit_stores_the_table_and_the_report_shows_it(fitted):
    study, summary = fitted
    conv = summary["conventions"]
    assert read_json(study.root / "fits" / "summary.json")["conventions"] == json.loads(
        json.dumps(conv)
    )
    table = ConventionTable.from_dict(conv)
    assert len(table.cells) == 8 and table.plan_convention == "6n_kaplan"
    # The Kaplan-convention cell is the main law's exponent (same rungs, same fit).
    assert table.cell("non-embedding", SIX_ND).a == pytest.approx(summary["chinchilla"]["a"])
    assert all(c.error is None for c in table.cells), [c.error for c in table.cells]
    assert "allocation exponents by convention" in describe_fit(summary, study)
    page = html.unescape(build_report(study)[0].read_text())
    assert f"<h2>{HEADING}</h2>" in page


def test_an_old_study_summary_renders_without_the_section(fitted):
    study, _ = fitted
    path = study.root / "fits" / "summary.json"
    old = read_json(path)
    old.pop("conventions")
    atomic_write_json(path, old)
    page = html.unescape(build_report(study)[0].read_text())
    assert HEADING not in page and "The answer" in page
    assert "allocation exponents by convention" not in describe_fit(old, study)
