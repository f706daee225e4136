"""Calibrated intervals: cluster bootstrap by compute level + rolling-origin model-form error."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from scalelab.errors import UserError
from scalelab.laws import bootstrap, fit_chinchilla, load_fit, prediction_intervals, save_fit
from scalelab.laws.calibration import (
    calibrated_allocation,
    calibrated_bootstrap,
    calibrated_exponents,
    compute_levels,
    rolling_origin,
)
from scalelab.laws.table import table_from_arrays

TRUE = {"E": 1.8, "A": 400.0, "B": 2000.0, "alpha": 0.34, "beta": 0.37}


def _quick(t):
    return fit_chinchilla(t)  # the fast exact fitter (vpnls)


def isoflop_table(seed: int, budgets, noise: float = 0.01, curve: float = 0.0, per: int = 7):
    """An IsoFLOP design: ``per`` sizes around each budget's optimum, log-normal noise.
    ``curve`` > 0 adds a term the Chinchilla form cannot express (its error then grows with
    distance: model-form error)."""
    rng = np.random.default_rng(seed)
    n, d, c = [], [], []
    for b in budgets:
        n_opt = 0.1 * math.sqrt(b / 6.0)
        for f in np.geomspace(0.25, 4.0, per):
            nn = n_opt * f
            n.append(nn)
            d.append(b / (6.0 * nn))
            c.append(b)
    n, d = np.array(n), np.array(d)
    loss = TRUE["E"] + TRUE["A"] * n ** -TRUE["alpha"] + TRUE["B"] * d ** -TRUE["beta"]
    loss = loss * np.exp(curve * (np.log10(6 * n * d) - 18.0) ** 2)
    loss = loss * np.exp(noise * rng.standard_normal(loss.size))
    return table_from_arrays(N=n, D=d, loss=loss, group=[f"{v:g}" for v in c])


BUDGETS = [1e18, 3e18, 1e19, 3e19, 1e20, 3e20]


def test_levels_from_a_budget_column_and_from_clusters_of_c():
    t = isoflop_table(0, BUDGETS)
    labels, levels, how = compute_levels(t)
    assert len(levels) == 6 and "group column" in how
    assert np.all(np.diff(levels) > 0)
    # without the group column, C clusters give the same six levels
    t2 = table_from_arrays(N=t.N, D=t.D, loss=t.loss)
    labels2, levels2, how2 = compute_levels(t2)
    assert np.array_equal(labels, labels2) and "snapped" in how2
    np.testing.assert_allclose(levels, levels2)


def test_rolling_origin_recovers_a_form_error_that_grows_with_distance():
    """Planted curvature the Chinchilla form lacks: the rolled-forward errors grow with
    distance, so the form error per decade is far above the exact-form case."""
    exact = rolling_origin(t := isoflop_table(1, BUDGETS), _quick(t), refit=_quick)
    t2 = isoflop_table(1, BUDGETS, curve=0.012)
    bent = rolling_origin(t2, _quick(t2), refit=_quick)
    assert bent.form_sd_per_decade > 2.5 * exact.form_sd_per_decade
    assert bent.bias_per_decade < 0  # the law cannot bend up: it under-predicts
    assert {p.train_levels for p in exact.points} == {2, 3, 4, 5}
    assert "rolling-origin validation" in exact.summary()


def _covers(seed: int, curve: float) -> tuple[bool, bool]:
    """Fit on five levels (1e18-1e20), predict a planted run at 1e21 (out of range): inside the
    calibrated / the i.i.d. 95% prediction interval?"""
    t = isoflop_table(seed, BUDGETS[:5], curve=curve)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = _quick(t)
        cal = fit.with_bootstrap(calibrated_bootstrap(t, fit, n=60, seed=seed, refit=_quick))
        iid = fit.with_bootstrap(bootstrap(t, fit, n=60, seed=seed, group=False))
    new = isoflop_table(10_000 + seed, [1e21], curve=curve, per=3).subset([1])
    out = []
    for f in (cal, iid):
        iv = prediction_intervals(f, N=new.N, D=new.D)
        out.append(bool(iv["pred_lo"][0] <= new.loss[0] <= iv["pred_hi"][0]))
    return out[0], out[1]


@pytest.mark.parametrize("curve", [0.0, 0.012])
def test_calibrated_interval_covers_a_planted_out_of_range_point_at_its_nominal_rate(curve):
    """Over 30 seeds the calibrated 95% interval covers the held-out run 85-100% of the
    time, with the exact form and with a form error the law cannot express; with the form
    error the i.i.d. interval falls well short."""
    hits = np.array([_covers(s, curve) for s in range(30)])
    cal, iid = hits[:, 0].mean(), hits[:, 1].mean()
    assert 0.85 <= cal <= 1.0, (cal, iid)
    if curve:
        assert iid < 0.7, (cal, iid)


def test_intervals_carry_three_terms_and_widen_with_distance():
    t = isoflop_table(3, BUDGETS[:5], curve=0.012)
    fit = _quick(t)
    boot = calibrated_bootstrap(t, fit, n=50, refit=_quick)
    f = fit.with_bootstrap(boot)
    n = np.array([3e9, 3e9, 3e9])
    iv = prediction_intervals(f, N=n, D=np.array([1e9, 1e10, 1e11]))
    assert np.all(np.diff(iv["distance"]) > 0) and iv["distance"][0] == 0.0
    assert np.all(np.diff(iv["sd_form"]) > 0)
    assert np.all(iv["pred_hi"] - iv["pred_lo"] > iv["hi"] - iv["lo"])
    assert boot.group.startswith("clusters of 'C level'") and boot.n_clusters == 5


def test_allocation_and_exponent_intervals_are_widened_by_the_cuts_spread():
    t = isoflop_table(4, BUDGETS, curve=0.012)
    fit = _quick(t)
    boot = calibrated_bootstrap(t, fit, n=50, refit=_quick)
    f = fit.with_bootstrap(boot)
    plain, wide = f.optimal([1e22]), calibrated_allocation(f, [1e22])
    for key in ("n_opt", "d_opt", "loss"):
        p, w = plain.intervals[key][0], wide.intervals[key][0]
        assert w.lo <= p.lo and w.hi >= p.hi and (w.hi - w.lo) > (p.hi - p.lo)
    a = calibrated_exponents(f)["a"]
    assert a.lo <= boot.intervals["a"].lo and a.hi >= boot.intervals["a"].hi


def test_a_calibrated_fit_round_trips_through_json(tmp_path):
    t = isoflop_table(5, BUDGETS[:4])
    fit = _quick(t)
    f = fit.with_bootstrap(calibrated_bootstrap(t, fit, n=20, refit=_quick))
    save_fit(f, tmp_path / "fit.json")
    back = load_fit(tmp_path / "fit.json")
    assert back.bootstrap.calibration == f.bootstrap.calibration
    a = prediction_intervals(f, N=[1e9], D=[1e11])
    b = prediction_intervals(back, N=[1e9], D=[1e11])
    np.testing.assert_allclose(a["pred_hi"], b["pred_hi"])


def test_too_few_levels_is_one_line():
    t = isoflop_table(6, BUDGETS[:2])
    with pytest.raises(UserError, match="at least 3 compute levels"):
        rolling_origin(t, _quick(t), refit=_quick)


def test_compare_ranks_the_planted_form_first_out_of_sample():
    """A planted Chinchilla law: out of sample it beats the one-variable forms, which the
    rolled-forward error shows; AIC/BIC appear only when the Huber fit is least squares."""
    from scalelab.laws.compare import compare_forms

    t = isoflop_table(7, BUDGETS, noise=0.003)
    fits = {"chinchilla": _quick, "kaplan_c": compare_fitter("kaplan_c")}
    res = compare_forms(t, fits)
    assert res.best().name == "chinchilla"
    by = {s.name: s for s in res.scores}
    assert by["chinchilla"].rolling_mape < 0.5 * by["kaplan_c"].rolling_mape
    assert by["chinchilla"].n_cuts == 4 and res.n_levels == 6
    for s in res.scores:
        resid = np.abs(np.asarray(fits[s.name](t).residuals))
        assert math.isfinite(s.aic) == bool(resid.max() <= 1e-3)
    assert "rolling-origin" in res.summary()


def compare_fitter(name):
    from scalelab.laws.compare import form_fitter

    return form_fitter(name)


def test_compare_cli_writes_json_and_rejects_unknown_forms(tmp_path, capsys):
    from scalelab.cli import main

    t = isoflop_table(8, BUDGETS[:4])
    path = tmp_path / "runs.csv"
    cols = t.to_columns()
    lines = ["N,D,loss,budget"] + [
        f"{n!r},{d!r},{y!r},{g}"
        for n, d, y, g in zip(cols["N"], cols["D"], cols["loss"], cols["group"])
    ]
    path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "cmp.json"
    rc = main(
        [
            "compare",
            str(path),
            "--group",
            "budget",
            "--forms",
            "kaplan_nd,kaplan_c",
            "--out",
            str(out),
        ]
    )
    assert rc == 0 and out.exists()
    assert "kaplan_nd" in capsys.readouterr().out
    assert load_fit(out).scores[0].n_cuts == 2
    assert main(["compare", str(path), "--forms", "nope"]) == 2
    assert "unknown law form 'nope'" in capsys.readouterr().err


def test_a_submodule_never_shadows_the_function_of_the_same_name():
    """``import scalelab.laws.bootstrap`` binds the module on the package; the lazy package
    keeps the exported function there (``from scalelab.laws import bootstrap``)."""
    import subprocess
    import sys

    code = (
        "import scalelab.laws.bootstrap\n"
        "from scalelab.laws import bootstrap\n"
        "assert callable(bootstrap) and bootstrap.__name__ == 'bootstrap', bootstrap\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_fit_validate_rolling_from_the_cli_then_predict_and_optimal(tmp_path, capsys):
    from scalelab.cli import main

    t = isoflop_table(9, BUDGETS[:5], curve=0.012)
    cols = t.to_columns()
    path = tmp_path / "runs.csv"
    rows = zip(cols["N"], cols["D"], cols["loss"], cols["group"])
    path.write_text(
        "N,D,loss,budget\n" + "".join(f"{n!r},{d!r},{y!r},{g}\n" for n, d, y, g in rows)
    )
    out = tmp_path / "fit.json"
    args = ["fit", str(path), "--group", "budget", "--validate", "rolling", "--bootstrap", "40"]
    assert main([*args, "--compute", "1e21", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "rolling-origin validation: 3 cuts over 5 compute levels" in text
    assert "model-form error" in text and "calibrated: levels resampled" in text
    fit = load_fit(out)
    assert fit.bootstrap.calibration.n_levels == 5
    assert main(["predict", str(out), "--n", "3e9", "--d", "1e11"]) == 0
    assert main(["optimal", str(out), "--compute", "1e21"]) == 0
    shown = capsys.readouterr().out
    wide = calibrated_allocation(fit, [1e21]).intervals["n_opt"][0]
    assert f"{wide.lo:.3g}" in shown  # optimal prints the calibrated interval
    assert main(["fit", str(path), "--form", "isoflop", "--validate", "rolling"]) == 2
