"""Paper-ready figures: an SVG beside every PNG with per-point hover titles, labelled axes,
1-2-5 log ticks without 5×10^0 labels, law names in legends, the rung table's order."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

from scalelab.laws import (  # noqa: E402
    chinchilla_loss,
    fit_chinchilla,
    fit_isoflop,
    fit_kaplan,
    load_table,
    plots,
    small_grid,
)
from scalelab.laws.svg import add_titles, attach_point_titles, figure_svg, point_titles  # noqa: E402

SVG = "{http://www.w3.org/2000/svg}"
TRUE = {"E": 1.8, "A": 400.0, "B": 2000.0, "alpha": 0.34, "beta": 0.37}


def _user_table():
    n = np.repeat(np.geomspace(2e7, 2e9, 5), 3)
    d = n * np.tile([5.0, 20.0, 80.0], 5)
    loss = chinchilla_loss(n, d, TRUE) * np.exp(np.random.default_rng(0).normal(0, 0.01, n.size))
    loss[0] *= 1.5  # dropped by the fit
    cols = {"Model Size": n.tolist(), "tokens": d.tolist(), "loss": loss.tolist()}
    return load_table(cols, n="Model Size", d="tokens")


@pytest.fixture(scope="module")
def fitted():
    table = _user_table()
    return table, fit_chinchilla(table, grid=small_grid(), drop_highest=1)


def _titled_points(svg: bytes) -> list[tuple[str, str]]:
    """(tag of the element holding the title, title text) for every titled point."""
    root = ET.fromstring(svg)
    out = []
    for g in root.iter(f"{SVG}g"):
        if g.get("id", "").startswith("scalelab-points-"):
            for el in g.iter():
                t = el.find(f"{SVG}title")
                if t is not None and el is not g:
                    out.append((el.tag.removeprefix(SVG), t.text))
    return out


def test_save_figure_writes_svg_beside_png_with_point_titles(tmp_path, fitted):
    table, fit = fitted
    png = plots.save_figure(plots.plot_loss_vs_n(table, fit), tmp_path / "f" / "loss_vs_n.png")
    svg_path = png.with_suffix(".svg")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and svg_path.is_file()
    assert sorted(p.name for p in png.parent.iterdir()) == ["loss_vs_n.png", "loss_vs_n.svg"]
    points = _titled_points(svg_path.read_bytes())
    # One title per run, each on its own marker element, in the table's row order.
    assert len(points) == len(table) and {tag for tag, _ in points} <= {"use", "path"}
    texts = [t for _, t in points]
    fitted_rows = [t for t in texts if t.endswith("(fitted)")]
    assert len(fitted_rows) == len(table) - 1
    assert fitted_rows[0].startswith("row 2: N = 2e7, D = 4e8, C = 4.8e16, ")
    assert f"loss = {table.loss[1]:.5g}" in fitted_rows[0]
    dropped = [t for t in texts if "not fitted" in t]
    assert dropped == [dropped[0]] and dropped[0].startswith("row 1: N = 2e7, D = 1e8")
    # The same figure gives the same SVG (no date, fixed ids).
    again = plots.save_figure(plots.plot_loss_vs_n(table, fit), tmp_path / "again.png")
    assert again.with_suffix(".svg").read_bytes() == svg_path.read_bytes()


def test_residual_and_isoflop_svgs_title_every_point(fitted):
    table, fit = fitted
    titles = point_titles(plots.render_figure(plots.plot_residuals(table, fit), "svg"))
    assert len(titles) == 2 * (len(table) - 1)  # against N and against C
    assert all("residual " in t and "%" in t for t in titles)
    rows = [
        {"N": n, "D": c / (6 * n), "loss": chinchilla_loss(n, c / (6 * n), TRUE)}
        for c in (1e18, 1e19, 1e20)
        for n in np.geomspace(1e7, 3e9, 7)
    ]
    iso_table = load_table(rows, n="N", d="D")
    iso = fit_isoflop(iso_table)
    titles = point_titles(plots.render_figure(plots.plot_isoflop(iso_table, iso), "svg"))
    assert len(titles) == 21 and titles[0].startswith("row 1: N = 1e7")
    assert "budget 1e18 FLOPs" in titles[0]


def test_titles_fall_back_to_the_group_when_counts_differ():
    from matplotlib.figure import Figure

    fig = Figure()
    ax = fig.add_subplot()
    attach_point_titles(ax.scatter([1, 2, 3], [1, 2, 3]), ["a", "b", "c"])
    svg = figure_svg(fig)
    assert sorted(t for _, t in _titled_points(svg)) == ["a", "b", "c"]
    root = ET.fromstring(svg)
    gid = next(g.get("id") for g in root.iter(f"{SVG}g") if g.get("id", "").startswith("scalelab"))
    # Two titles for three points: no point gets a wrong one; the group lists both.
    plain = figure_svg(Figure())
    assert add_titles(plain, {gid: ["x"]}).count(b"<title>") == 0  # no such group
    fig2 = Figure()
    attach_point_titles(fig2.add_subplot().scatter([1, 2, 3], [1, 2, 3]), ["a", "b"])
    root2 = ET.fromstring(figure_svg(fig2))
    group = next(g for g in root2.iter(f"{SVG}g") if g.get("id", "").startswith("scalelab"))
    assert group.find(f"{SVG}title").text == "a\nb"
    assert _titled_points(figure_svg(fig2)) == []
    # The artist's own gid survives rendering.
    assert fig2.axes[0].collections[0].get_gid() is None


def test_axis_labels_name_the_column_or_the_given_label(fitted):
    table, fit = fitted
    ax = plots.plot_loss_vs_n(table, fit).axes[0]
    assert ax.get_xlabel() == "Model Size (parameters)"
    ax = plots.plot_loss_vs_n(table, fit, n_label="non-embedding N").axes[0]
    assert ax.get_xlabel() == "non-embedding N (parameters)"
    fig = plots.plot_residuals(table, fit, n_label="non-embedding N")
    assert [a.get_xlabel() for a in fig.axes[:2]] == [
        "non-embedding N (parameters)",
        "C = 6·N·D (FLOPs)",  # derived by the table from C = 6 N D
    ]
    assert fig.axes[2].get_ylabel() == "tokens"  # the colorbar: the column says the unit
    opt = plots.plot_optimal(fit, n_label="non-embedding N")
    assert opt.axes[0].get_ylabel() == "optimal non-embedding N (parameters)"
    plain = load_table({"N": [1e7, 1e8], "D": [1e9, 2e9], "loss": [3.0, 2.5]}, n="N", d="D")
    assert plots.axis_label(plain, "N") == "N (parameters)"


def test_legends_show_law_names_not_class_names(fitted):
    table, fit = fitted
    legend = [t.get_text() for t in plots.plot_optimal(fit).axes[0].get_legend().get_texts()]
    assert legend == ["Chinchilla law (Approach 3)"]
    ax = plots.plot_loss_vs_n(table, fit).axes[0]
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert texts == [
        "fitted",
        "dropped as outlier (not fitted)",
        "Chinchilla law (Approach 3) at 5 values of D",
    ]
    assert ax.get_title() == "Chinchilla law (Approach 3): L = E + A/N^α + B/D^β"
    kaplan = fit_kaplan(table, variable="C")
    assert plots.law_name(kaplan) == "Kaplan power law in C"
    assert plots.law_label(kaplan) == "Kaplan power law in C: L = (C_c/C)^α_C"
    assert "Kaplan" in plots.plot_loss_vs_n(table, kaplan).axes[0].get_legend().get_texts()[-1].get_text()  # fmt: skip

    class Iso:
        kind = "isoflop"

    assert plots.law_name(Iso()) == "IsoFLOP parabolas (Approach 2)"
    assert all("Fit" not in t for t in texts + legend)


def test_number_labels_and_log_ticks():
    lab = plots.number_label
    assert [lab(v) for v in (1, 2, 5, 10, 20, 50, 0.05, 5000)] == [
        "1", "2", "5", "10", "20", "50", "0.05", "5000",
    ]  # fmt: skip
    assert [lab(v) for v in (1e4, 2e6, 5e9, 1e21, 2.5e-5, 9.9996e5)] == [
        "1e4", "2e6", "5e9", "1e21", "2.5e-5", "1e6",
    ]  # fmt: skip
    # Many decades: powers of ten labelled, 2..9 unlabelled.
    major, minor = plots.log_ticks(1.5e6, 3e9)
    assert major == [1e7, 1e8, 1e9] and 2e7 in minor and 5e8 in minor
    # Less than two decades: 1, 2 and 5 labelled.
    major, minor = plots.log_ticks(15.0, 900.0)
    assert major == [20.0, 50.0, 100.0, 200.0, 500.0] and 300.0 in minor
    # A short loss axis: round numbers inside it.
    major, _ = plots.log_ticks(2.1, 2.6)
    assert len(major) >= 3 and all(2.1 <= v <= 2.6 for v in major)
    major, _ = plots.log_ticks(2.0, 9.0)
    assert major == [2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]
    # Sixteen decades: every other power of ten labelled.
    major, _ = plots.log_ticks(1e6, 1e22)
    assert len(major) <= 9 and major[0] == 1e6


def test_rendered_tick_labels_are_plain(fitted):
    table, fit = fitted
    fig = plots.plot_loss_vs_n(table, fit)
    plots.render_figure(fig, "png", dpi=40)
    ax, cbar = fig.axes
    x = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    y = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    c = [t.get_text() for t in cbar.get_yticklabels() if t.get_text()]
    assert x == ["1e8", "1e9"] and c == ["1e8", "1e9", "1e10", "1e11"]
    assert "3" in y and "5" in y
    for label in x + y + c:
        assert "×" not in label and "$" not in label and "^" not in label
    assert not [t.get_text() for t in ax.get_yticklabels(minor=True) if t.get_text()]


def test_report_writes_svgs_and_links_them(tmp_path, fitted):
    from scalelab.study.report.html import Report

    table, fit = fitted
    rep = Report("r")
    rep.figure(plots.plot_loss_vs_n(table, fit), "loss_vs_n", "loss")
    rep.add_png(b"\x89PNG fake", "legacy")  # a PNG without SVG still works
    html_path, md_path = rep.write(tmp_path)
    figs = tmp_path / "figures"
    assert sorted(p.name for p in figs.iterdir()) == [
        "legacy.png",
        "loss_vs_n.png",
        "loss_vs_n.svg",
    ]
    html = html_path.read_text()
    assert "href='figures/loss_vs_n.svg'" in html and "data:image/png;base64," in html
    assert "legacy.svg" not in html
    assert "[SVG](figures/loss_vs_n.svg)" in md_path.read_text()
    assert len(point_titles((figs / "loss_vs_n.svg").read_bytes())) == len(table)


def _rows():
    """Study result rows of an isoflop plan (fitted rungs shuffled) and a holdout."""
    rows = []
    for i, c in enumerate((1e15, 1e16)):
        for j, n in enumerate((3e6, 1e6, 2e6)):
            d = c / (6 * n)
            rows.append({"rung": f"c{i}-n{j}", "role": "fit", "status": "completed", "budget": c, "N": n, "D": d, "C_6n_kaplan": c, "final_val_loss": float(chinchilla_loss(n, d, TRUE))})  # fmt: skip
    n, c = 4e6, 1e17
    rows.append({"rung": "holdout0", "role": "holdout", "status": "completed", "budget": c, "N": n, "D": c / (6 * n), "C_6n_kaplan": c, "final_val_loss": float(chinchilla_loss(n, c / (6 * n), TRUE))})  # fmt: skip
    return rows[::-1]


def test_rung_table_is_ordered_by_level_then_size():
    from scalelab.study.report.study_report import rung_order

    order = [r["rung"] for r in rung_order(_rows())]
    assert order == ["c0-n1", "c0-n2", "c0-n0", "c1-n1", "c1-n2", "c1-n0", "holdout0"]
    ladder = [dict(r, budget=None) for r in _rows() if r["role"] == "fit"]
    ns = [r["N"] for r in rung_order(ladder)]
    assert ns == sorted(ns)


def test_study_figures_title_rungs_and_mark_the_holdout(tmp_path, monkeypatch):
    from scalelab.study.report.html import Report
    from scalelab.study.report.study_report import _law_sections, plot_loss_vs

    render = plots.render_figure

    def svg_only(fig, fmt, **kw):  # rendering is slow; the PNGs are tested elsewhere
        return b"\x89PNG" if fmt == "png" else render(fig, fmt)

    rows = _rows()
    fit_rows = [r for r in rows if r["role"] == "fit"]
    table = load_table(
        {k: [r[k] for r in fit_rows] for k in ("N", "D", "final_val_loss")},
        n="N",
        d="D",
        loss="final_val_loss",
    )
    chin = fit_chinchilla(table, grid=small_grid())
    fig = plot_loss_vs(rows, chin, "C", "6n_kaplan")
    texts = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert texts[:2] == ["fitted rungs", "held out (not fitted)"]
    assert "Chinchilla law (Approach 3)" in texts[2]
    titles = point_titles(plots.render_figure(fig, "svg"))
    assert len(titles) == len(rows)
    assert any(t.startswith("rung holdout0: N = 4e6") and "held out" in t for t in titles)
    monkeypatch.setattr(plots, "render_figure", svg_only)
    rep = Report("s")
    _law_sections(rep, rows, rows, chin, None, {}, "6n_kaplan")
    rep.write(tmp_path)
    svg = (tmp_path / "figures" / "loss_vs_n.svg").read_bytes()
    titles = point_titles(svg)
    assert len(titles) == len(rows) and sum("rung holdout0" in t for t in titles) == 1
    assert all(t.startswith("rung c") or t.startswith("rung holdout0") for t in titles)
    for name in ("loss_vs_n", "loss_vs_d", "loss_vs_c", "residuals", "optimal"):
        assert (tmp_path / "figures" / f"{name}.svg").is_file()
    labels = {b.data.get("name"): b for b in rep.blocks if b.kind == "figure"}
    assert set(labels) >= {"loss_vs_n.png", "residuals.png"}


def test_downstream_points_are_titled():
    from scalelab.study.report.downstream_plots import plot_metric_vs_n

    pts = [
        {
            "rung": f"r{i}",
            "role": "fit",
            "N": n,
            "loss": 3.0 - i * 0.1,
            "test": 0.5 + 0.1 * i,
            "test_std": 0.01,
            "metric": "accuracy",
        }  # fmt: skip
        for i, n in enumerate((1e6, 3e6, 1e7))
    ]
    fig = plot_metric_vs_n("task", {"points": pts})
    titles = point_titles(plots.render_figure(fig, "svg"))
    assert titles == [
        f"rung r{i}: N = {plots.number_label(p['N'], 4)}, loss = {p['loss']:.5g}, "
        f"test accuracy = {p['test']:.4g} (fit)"
        for i, p in enumerate(pts)
    ]
    assert fig.axes[0].get_xlabel() == "non-embedding N (parameters)"


def test_rungs_a_band_left_out_are_drawn_as_not_fitted():
    rows = [r for r in _rows() if r["role"] == "fit"]
    cols = {k: [r[k] for r in rows] for k in ("N", "D", "final_val_loss")}
    table = load_table(cols, n="N", d="D", loss="final_val_loss")
    chin = fit_chinchilla(table, grid=small_grid())
    inside, outside = (
        table.subset(np.arange(len(table)) % 3 != 0),
        table.subset(np.arange(len(table)) % 3 == 0),
    )
    fig = plots.plot_loss_vs_n(
        inside, chin, excluded=outside, excluded_label="outside the band (not fitted)"
    )
    texts = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "outside the band (not fitted)" in texts
    titles = point_titles(plots.render_figure(fig, "svg"))
    assert sum("outside the band" in t for t in titles) == len(outside) > 0
    assert len(titles) == len(table)
