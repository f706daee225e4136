"""The study report answers the question: how large a model, on how many tokens, what loss.

Studies are written without training (the rungs' summary.json and metrics.jsonl as the
trainer leaves them) with losses from a planted Chinchilla law, fitted by ``fit_study`` and
rendered by ``build_report``: the answer table (study levels, 10x and 100x marked
extrapolation, intervals), the warning for a law the rungs do not identify (and none for a
planted well-identified one), the published laws beside ours, no numpy warnings in the
page, and fitted points told apart from not-fitted ones in the figures.
"""

from __future__ import annotations

import html
import math
import re

import numpy as np
import pytest

from scalelab.laws import chinchilla_loss, load_fit, plots, prediction_intervals
from scalelab.study import answer
from scalelab.study.fit import StudyFitConfig, fit_study
from scalelab.study.plan import PlanConfig, plan_rungs
from scalelab.study.report.study_report import build_report, plot_loss_vs
from scalelab.study.study import Study
from scalelab.utils.io import append_jsonl, atomic_write_json, read_json

LAW = {"E": 2.0, "A": 60.0, "B": 90.0, "alpha": 0.3, "beta": 0.3}
NOISE = "overflow encountered in square"


def _write_rung(study: Study, rung, loss: float) -> None:
    """summary.json and metrics.jsonl of a completed rung, as the pretraining stage leaves them."""
    run = study.rung_dir(rung)
    run.mkdir(parents=True)
    step = max(1, round(rung.tokens / rung.batch_tokens))
    tokens = step * rung.batch_tokens
    ev = {"type": "eval", "step": step, "tokens": tokens, "val_loss": loss}
    append_jsonl(run / "metrics.jsonl", {"type": "train", "step": step, "tokens": tokens, "loss": 9.0})  # fmt: skip
    append_jsonl(run / "metrics.jsonl", ev)
    summary = {
        "status": "completed", "step": step, "total_steps": step, "tokens": tokens,
        "flops": {k: v / rung.tokens * tokens for k, v in rung.flops.items()},
        "wall_time_s": 1.0, "tokens_per_s": float(tokens), "final_val_loss": loss,
        "best_val_loss": loss, "last_eval": {"val_loss": loss}, "shape": rung.shape,
        "params": rung.params, "N": rung.N,
    }  # fmt: skip
    atomic_write_json(run / "summary.json", summary)


def _study(root, noise: float, seed: int = 0, budgets: int = 4) -> Study:
    """An IsoFLOP study (``budgets`` levels x 4 sizes, one held-out rung) whose losses follow
    :data:`LAW` with multiplicative log-normal noise ``noise``."""
    plan = PlanConfig(
        design="isoflop", budget_flops=1e13, n_budgets=budgets, sizes_per_budget=4, min_tokens=1,
        flops_convention="6n_kaplan",
    )  # fmt: skip
    return planted_study(root, plan, lambda n, d: float(chinchilla_loss(n, d, LAW)), noise, seed)


def planted_study(root, plan: PlanConfig, law, noise: float, seed: int = 0) -> Study:
    """The study of ``plan`` (no dataset) whose completed rungs' losses are ``law(N, D)``
    times log-normal noise ``noise``."""
    plan = plan.replace(base=plan.base.replace(dataset=root / "no-dataset"))
    root.mkdir(parents=True)
    study = Study.create(root, plan, plan_rungs(plan, vocab_size=512), {"vocab_size": 512})
    rng = np.random.default_rng(seed)
    for rung in study.rungs:
        step = max(1, round(rung.tokens / rung.batch_tokens))
        d = step * rung.batch_tokens
        _write_rung(study, rung, law(rung.N, d) * math.exp(rng.normal(0.0, noise)))
    return study


def _fit(study: Study, boot: int = 60, band: float | None = None) -> dict:
    cfg = StudyFitConfig(bootstrap=boot, grid="small", frontier_band=band)
    return fit_study(study, cfg)


def _page(study: Study) -> str:
    html_path, _ = build_report(study)
    return html.unescape(html_path.read_text())


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A planted law with 0.3% noise, every rung fitted, calibrated intervals: identified."""
    study = _study(tmp_path_factory.mktemp("good") / "s", noise=0.003)
    summary = _fit(study)
    return study, summary, _page(study)


@pytest.fixture(scope="module")
def poor(tmp_path_factory):
    """The same rungs fitted within a 5% frontier band (a selection on the outcome that drops
    the off-optimum rungs): E's interval reaches zero, the law is not identified. Its fit
    summary also carries numpy's warnings, as study.fit records every warning caught."""
    study = _study(tmp_path_factory.mktemp("poor") / "s", noise=0.003)
    summary = _fit(study, band=0.05)
    path = study.root / "fits" / "summary.json"
    data = read_json(path)
    data["chinchilla"]["warnings"] = [NOISE, "invalid value encountered in log", *data["chinchilla"]["warnings"], "chinchilla fit: a planted note"]  # fmt: skip
    data["isoflop"]["warnings"] = ["budget 1e13: a bare note", "IsoFLOP: budget 1e13: a bare note", "divide by zero encountered in divide"]  # fmt: skip
    atomic_write_json(path, data)
    return study, summary, _page(study)


def _headings(page: str) -> list[str]:
    return re.findall(r"<h2>(.*?)</h2>", page)


def test_the_answer_table_comes_first_with_extrapolation_and_intervals(good):
    study, summary, page = good
    heads = _headings(page)
    assert heads[:3] == ["Headline", "The answer: compute-optimal N, D and loss", "Plan and rungs"]
    table = page.split("<h2>The answer")[1].split("</table>")[0]
    assert table.count("<tr>") == 1 + 4 + 2  # header, 4 study levels, 10x and 100x
    assert table.count("study level") == 4
    assert "extrapolation (10x the largest level)" in table
    assert "extrapolation (100x the largest level)" in table
    assert "calibrated 95% intervals" in table
    assert len(re.findall(r"<td>\[[^\]]+, [^\]]+\]</td>", table)) == 4 * 6  # every interval


def test_the_answer_recovers_the_planted_allocation(good):
    """At every budget, up to 100x beyond the rungs, the 95% intervals hold the planted law's
    own compute-optimal N, D, D/N and loss; extrapolating further widens them."""
    from scalelab.laws.calibration import calibrated_allocation
    from scalelab.laws.chinchilla import optimal_allocation

    study, summary, _ = good
    fit = load_fit(study.root / "fits" / "chinchilla.json")
    rows = answer.study_answer(study, fit, set(summary["chinchilla"]["rungs"]))
    budgets = sorted({r.budget for r in study.rungs if r.role == "fit"})
    cs = [r["compute"] for r in rows]
    assert cs == pytest.approx(budgets + [10 * budgets[-1], 100 * budgets[-1]])
    truth = optimal_allocation(LAW, np.array(cs), 6.0)
    for i, r in enumerate(rows):
        for key in ("n_opt", "d_opt", "tokens_per_param", "loss"):
            iv = r[f"{key}_iv"]
            assert iv.lo < r[key] < iv.hi and iv.lo < truth[key][i] < iv.hi, (key, r["where"])
    widths = [math.log(r["n_opt_iv"].hi / r["n_opt_iv"].lo) for r in rows]
    assert widths[-1] > widths[-2] > widths[3]
    # The calibrated intervals (compute levels resampled + form error), not the plain ones.
    assert fit.bootstrap.calibration is not None
    cal, plain = calibrated_allocation(fit, cs), fit.optimal(cs)
    assert [r["loss_iv"] for r in rows] == list(cal.intervals["loss"])
    assert cal.intervals["loss"][-1].hi - cal.intervals["loss"][-1].lo > plain.intervals["loss"][-1].hi - plain.intervals["loss"][-1].lo  # fmt: skip


def test_no_bootstrap_no_intervals_and_terminal_lines(good, tmp_path):
    study, summary, _ = good
    fit = load_fit(study.root / "fits" / "chinchilla.json")
    bare = answer.answer_rows(fit.with_bootstrap(None), [1e11, 1e12])
    assert len(bare) == 4 and all(r["n_opt_iv"] is None for r in bare)
    assert answer.answer_table(bare)[0]["N_opt 95%"] == "–"
    lines = answer.answer_lines(summary, study)
    assert lines[0].startswith("  compute-optimal (C = 6ND FLOPs")
    assert len(lines) == 1 + 6 and lines[-1].endswith("<- extrapolation (100x the largest level)")
    assert re.search(r"N [0-9.e+]+ \[[0-9.e+]+, [0-9.e+]+\]", lines[1])
    assert not any("not identified" in line for line in lines)


def test_answer_budgets_of_each_design():
    rows = [
        {"budget": b, "N": n, "D": b / (6 * n) * f}
        for b in (1e12, 1e13)
        for n, f in ((1e4, 1.0), (3e4, 1.2), (1e5, 1.4))
    ]
    # The plan's budgets when it counts C = 6 N D ...
    assert answer.answer_budgets(rows, "6n_kaplan", 6.0) == [1e12, 1e13]
    # ... else each level at the median 6 N D of its rungs (the law allocates under 6 N D).
    for conv in ("chinchilla", "6n_total"):  # 6n_total counts every parameter
        assert answer.answer_budgets(rows, conv, 6.0) == pytest.approx([1.2e12, 1.2e13])
    # A grid or ladder: four budgets log-spaced over its rungs' 6 N D.
    grid = [{"budget": None, "N": n, "D": d} for n in (1e4, 1e5) for d in (1e6, 1e8)]
    assert answer.answer_budgets(grid, "6n_kaplan", 6.0) == pytest.approx(np.geomspace(6e10, 6e13, 4))  # fmt: skip


def test_the_warning_appears_when_the_law_is_not_identified(good, poor):
    _, _, good_page = good
    study, summary, page = poor
    fit = load_fit(study.root / "fits" / "chinchilla.json")
    problems = answer.identification_problems(fit)
    assert any(p.startswith("E [") for p in problems)
    assert f"<p class='warn'>{answer.NOT_IDENTIFIED}" in page
    head = page.split("<h2>The answer")[0]  # prominent: in the headline
    assert answer.NOT_IDENTIFIED in head
    assert answer.NOT_IDENTIFIED not in good_page
    lines = answer.answer_lines(summary, study)
    assert lines[-1].startswith(f"  warning: {answer.NOT_IDENTIFIED}")


def test_the_identification_tests(good):
    """Intervals beyond a decade or reaching zero, a near-unit correlation between two
    parameters (not log A with alpha: that one is near 1 in every Chinchilla fit)."""
    import dataclasses

    from scalelab.laws.results import Interval

    study, _, _ = good
    fit = load_fit(study.root / "fits" / "chinchilla.json")
    assert answer.identification_problems(fit) == []
    corr = fit.diagnostics.correlations
    assert abs(corr["a"]["alpha"]) > 0.99  # structural, and the law is identified

    def with_corr(p, q, r):
        c = {k: dict(v) for k, v in corr.items()}
        c[p][q] = c[q][p] = r
        return dataclasses.replace(fit, diagnostics=dataclasses.replace(fit.diagnostics, correlations=c))  # fmt: skip

    assert answer.identification_problems(with_corr("e", "beta", 0.995)) == [
        "log E and beta correlated +0.995"
    ]
    assert answer.identification_problems(with_corr("alpha", "beta", -0.98)) == []
    ivs = dict(fit.bootstrap.intervals)
    ivs["alpha"] = Interval(estimate=1.0, lo=0.21, hi=2.33)
    wide = fit.with_bootstrap(dataclasses.replace(fit.bootstrap, intervals=ivs))
    assert answer.identification_problems(wide) == ["alpha [0.21, 2.33] spans 1.0 decades"]
    assert answer.identification_warning(wide).startswith(answer.NOT_IDENTIFIED)


def test_published_laws_beside_ours(good):
    import importlib.util
    from pathlib import Path

    _, _, page = good
    law = page.split("<h2>Fitted laws</h2>")[1].split("</table>")[0]
    assert "<th>Besiroglu et al. 2024</th>" in law and "<th>Hoffmann et al. 2022</th>" in law
    for text in ("477.8", "2143", "1.817", "0.3473", "0.3672", "406.4", "410.7", "1.69", "0.46"):
        assert f"<td>{text}</td>" in law, text
    assert "arXiv:2404.10102" in law and "arXiv:2203.15556" in law
    # The numbers the repository's reference bench checks.
    path = Path(__file__).resolve().parents[1] / "bench" / "laws_reference.py"
    spec = importlib.util.spec_from_file_location("laws_reference", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    ours = answer.PUBLISHED["Besiroglu et al. 2024"]
    assert {k: ours[k] for k in bench.PUBLISHED} == bench.PUBLISHED
    # Every parameter and both exponents with an interval.
    rows = re.findall(r"<tr><td>(\w+)</td><td>[^<]+</td><td>([^<]+)</td><td>([^<]+)</td>", law)
    assert [r[0] for r in rows] == ["E", "A", "B", "alpha", "beta", "a", "b"]
    assert all(lo != "–" and hi != "–" for _, lo, hi in rows)


def test_only_the_fits_own_warnings_reach_the_page(poor):
    _, _, page = poor
    for noise in (NOISE, "invalid value encountered", "divide by zero", "RuntimeWarning"):
        assert noise not in page
    assert "chinchilla fit: a planted note" in page
    assert page.count("budget 1e13: a bare note") == 1  # the fit's own, prefixed, once
    assert answer.fit_notes(["x fit: a", NOISE, "x fit: a", "Approach 1: b", "calibrated intervals skipped: c"]) == [  # fmt: skip
        "x fit: a", "Approach 1: b", "calibrated intervals skipped: c",
    ]  # fmt: skip


def _tables(study: Study, summary: dict):
    from scalelab.study.report.study_report import _rung_table

    rows = study.result_rows()
    used = set(summary["chinchilla"]["rungs"])
    done = [r for r in rows if r["status"] == "completed"]
    fit = [r for r in done if r["role"] == "fit"]
    parts = (
        [r for r in fit if r["rung"] in used],
        [r for r in fit if r["rung"] not in used],
        [r for r in done if r["role"] == "holdout"],
    )
    return rows, used, [_rung_table(p) for p in parts]


def _legend(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_residuals_tell_fitted_from_not_fitted(poor):
    study, summary, _ = poor
    _, _, (table, excluded, held) = _tables(study, summary)
    assert len(excluded) > 0 and len(held) == 1
    fit = load_fit(study.root / "fits" / "chinchilla.json")
    fig = plots.plot_residuals(table, fit, held_out=held, excluded=excluded, excluded_label="left out")  # fmt: skip
    ax = fig.axes[0]
    assert _legend(ax) == ["fitted", "left out", "held out (not fitted)"]
    fitted_pts, left_pts, held_pts = ax.collections[:3]
    assert len(fitted_pts.get_facecolor()) and len(fitted_pts.get_offsets()) == len(table)
    assert len(left_pts.get_facecolor()) == 0 and len(held_pts.get_facecolor()) == 0  # hollow
    from scalelab.laws.svg import point_titles

    svg_titles = point_titles(plots.render_figure(fig, "svg"))
    assert len(svg_titles) == 2 * (len(table) + len(excluded) + len(held))
    assert sum(t.endswith("(fitted)") is False and "left out" in t for t in svg_titles) == 2 * len(excluded)  # fmt: skip
    assert sum("held out, not fitted" in t for t in svg_titles) == 2
    # The held-out rung's residual is the law's prediction error.
    hold = summary["holdout"][0]
    assert held_pts.get_offsets()[0][1] == pytest.approx(100 * hold["rel_error"], rel=1e-6)


def test_every_study_figure_marks_not_fitted_rungs_hollow(poor):
    from scalelab.study.report.study_report import EXCLUDED, plot_curves, plot_holdout, plot_sources

    study, summary, _ = poor
    rows, used, (table, excluded, held) = _tables(study, summary)
    fit = load_fit(study.root / "fits" / "chinchilla.json")
    for var in ("D", "C"):
        ax = plot_loss_vs(rows, fit, var, "6n_kaplan", used).axes[0]
        assert _legend(ax)[:3] == ["fitted rungs", "held out (not fitted)", EXCLUDED]
        fitted_pts, held_pts, left_pts = ax.collections[:3]
        assert len(fitted_pts.get_facecolor()) and len(fitted_pts.get_offsets()) == len(table)
        assert len(held_pts.get_facecolor()) == 0 and len(left_pts.get_facecolor()) == 0
        assert len(left_pts.get_offsets()) == len(excluded)
    ax = plots.plot_loss_vs_n(table, fit, held_out=held, excluded=excluded, excluded_label=EXCLUDED).axes[0]  # fmt: skip
    assert EXCLUDED in _legend(ax) and "held out (not fitted)" in _legend(ax)
    assert [len(c.get_facecolor()) > 0 for c in ax.collections[:3]] == [True, False, False]
    ax = plot_curves(study, rows, used).axes[0]
    assert _legend(ax) == ["fitted rungs", EXCLUDED, "held out (not fitted)"]
    assert sorted({line.get_linestyle() for line in ax.lines if len(line.get_xdata())}) == ["-", "--", ":"]  # fmt: skip
    with_sources = [dict(r, **{"val_loss/web": r["final_val_loss"]}) for r in rows]
    ax = plot_sources(with_sources, used).axes[0]
    assert _legend(ax) == ["web", "hollow: not fitted"]
    filled, empty = ax.collections[:2]
    assert len(filled.get_offsets()) == len(table) and len(filled.get_facecolor())
    assert len(empty.get_offsets()) == len(excluded) + len(held) and not len(empty.get_facecolor())
    ax = plot_holdout(summary["holdout"]).axes[0]
    assert _legend(ax)[0] == "measured (held out, not fitted)"
    assert len(ax.collections[0].get_facecolor()) == 0


def test_a_study_under_the_appendix_f_count_fits_and_reports(tmp_path):
    """Plans under a convention that is not C = k N D (Hoffmann et al. 2022 Appendix F) fit,
    with calibrated intervals measured in decades of N D, and report the answer."""
    plan = PlanConfig(
        design="isoflop", budget_flops=1e13, n_budgets=4, sizes_per_budget=4, min_tokens=1,
        flops_convention="chinchilla",
    )  # fmt: skip
    root = tmp_path / "s"
    plan = plan.replace(base=plan.base.replace(dataset=root / "no-dataset"))
    root.mkdir()
    study = Study.create(root, plan, plan_rungs(plan, vocab_size=512), {"vocab_size": 512})
    rng = np.random.default_rng(0)
    for rung in study.rungs:
        d = max(1, round(rung.tokens / rung.batch_tokens)) * rung.batch_tokens
        _write_rung(
            study, rung, float(chinchilla_loss(rung.N, d, LAW)) * math.exp(rng.normal(0, 0.003))
        )
    summary = fit_study(study, StudyFitConfig(bootstrap=40, grid="small", frontier_band=None))
    assert summary["flops_convention"] == "chinchilla" and "calibration" in summary
    held = summary["holdout"][0]
    assert held["pred_lo"] < held["estimate"] < held["pred_hi"]
    chin = load_fit(study.root / "fits" / "chinchilla.json")
    iv = prediction_intervals(chin, N=[held["N"]], D=[held["D"]])
    assert iv["distance"][0] > 0 and iv["sd_form"][0] > 0  # decades of N D beyond the top level
    assert "The answer" in _page(study)
