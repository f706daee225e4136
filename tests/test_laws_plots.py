"""Plot functions return Figures (no pyplot state) and write PNGs."""

from __future__ import annotations

import numpy as np

from scalelab.laws import (
    bootstrap,
    chinchilla_loss,
    extrapolation_check,
    fit_chinchilla,
    fit_isoflop,
    fit_kaplan,
    load_table,
    plots,
    small_grid,
    table_from_arrays,
)

TRUE = {"E": 1.8, "A": 400.0, "B": 2000.0, "alpha": 0.34, "beta": 0.37}
PNG = b"\x89PNG\r\n\x1a\n"


def _ladder():
    N = np.repeat(np.geomspace(2e7, 2e9, 5), 3)
    D = N * np.tile([5.0, 20.0, 80.0], 5)
    loss = chinchilla_loss(N, D, TRUE)
    loss[0] *= 1.5  # an outlier, dropped by the fit and drawn hollow
    return table_from_arrays(N=N, D=D, loss=loss)


def test_law_plots_write_pngs(tmp_path):
    import matplotlib.pyplot as plt  # only to check that no pyplot figure is left behind

    before = plt.get_fignums()
    table = _ladder()
    fit = fit_chinchilla(table, grid=small_grid(), drop_highest=1)
    fit = fit.with_bootstrap(bootstrap(table, fit, n=30, seed=0))
    figs = {
        "loss.png": plots.plot_loss_vs_n(table, fit),
        "resid.png": plots.plot_residuals(table, fit),
        "opt.png": plots.plot_optimal(fit),
        "extra.png": plots.plot_extrapolation(extrapolation_check(table, lambda t: fit_chinchilla(t, grid=small_grid()), by="N")),
        "kaplan.png": plots.plot_loss_vs_n(table, fit_kaplan(table, variable="N")),
    }  # fmt: skip
    for name, fig in figs.items():
        path = plots.save_figure(fig, tmp_path / "sub" / name)
        assert path.read_bytes()[:8] == PNG and path.stat().st_size > 5000
    assert plt.get_fignums() == before
    # The bootstrap band is drawn: the optimal-allocation axes hold a filled region.
    assert any(c.__class__.__name__ in ("PolyCollection", "FillBetweenPolyCollection") for c in figs["opt.png"].axes[0].collections)  # fmt: skip


def test_isoflop_plot(tmp_path):
    rows = []
    for c in (1e18, 1e19, 1e20):
        for n in np.geomspace(1e7, 3e9, 7):
            rows.append({"N": n, "D": c / (6 * n), "loss": chinchilla_loss(n, c / (6 * n), TRUE)})
    table = load_table(rows, n="N", d="D")
    iso = fit_isoflop(table)
    fig = plots.plot_isoflop(table, iso)
    assert plots.save_figure(fig, tmp_path / "iso.png").read_bytes()[:8] == PNG
    fig2 = plots.plot_optimal(iso)
    assert len(fig2.axes) == 2
