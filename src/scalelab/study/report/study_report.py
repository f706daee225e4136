"""The study report: ``STUDY/report.html`` (self-contained) and ``STUDY/report.md``.

Sections: headline (with a warning when the law is not identified), the answer (the
compute-optimal N, D, tokens per parameter and loss with 95% intervals at the study's compute
levels and at 10x and 100x the largest, :mod:`scalelab.study.answer`), plan and rungs, loss
curves, loss against N / D / C with the fitted law and its bands, IsoFLOP profiles,
compute-optimal N and D against C, the fitted laws with intervals beside the published
Chinchilla fits, the exponents under each N and C convention (:mod:`.conventions_section`),
residuals, the extrapolation check on the held-out rung(s), per-source
validation losses, and (when present) the downstream section. In every figure the rungs the
law was not fitted to (held out, or outside a frontier band) are drawn hollow (dashed or
dotted curves) and named in the legend; only the fits' own warnings reach the page.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from scalelab.errors import UserError
from scalelab.study.report.calibration_section import calibration_section
from scalelab.study.report.forms_section import forms_headline
from scalelab.study.report.html import Report, fmt
from scalelab.study.report.policy_section import policy_section
from scalelab.study.study import Study

N_LABEL = "non-embedding N"
"""The study's N is always the non-embedding parameter count (Kaplan et al. 2020, Sec. 2.1)."""
N_AXIS = f"{N_LABEL} (parameters)"
EXCLUDED = "outside the frontier band (not fitted)"
"""What the figures call a fit rung the saved law left out (``fits.chinchilla.rungs``)."""


def fit_role(r: dict[str, Any], used: set[str] | None) -> str:
    """``fit`` (a point of the saved law), ``excluded`` (a fit rung it left out) or
    ``holdout``; every fit rung counts as fitted when ``used`` is empty or None."""
    if r["role"] == "holdout":
        return "holdout"
    return "fit" if not used or r["rung"] in used else "excluded"


def _figure(ncols: int = 1, width: float = 6.4, height: float = 4.4):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height), layout="constrained")
    return fig, [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]


def _lognorm(values: list[float]):
    from matplotlib.colors import LogNorm

    lo, hi = min(values), max(values)
    return LogNorm(vmin=lo, vmax=hi * 1.0001 if hi > lo else lo * 1.01)


def plot_curves(study: Study, rows: list[dict[str, Any]], used: set[str] | None = None):
    """Validation loss against tokens for every rung, coloured by N (dashed: held out;
    dotted: left out of the fit)."""
    import matplotlib

    fig, (ax,) = _figure()
    done = [r for r in rows if json.loads(r["curve"])]
    if not done:
        return None
    norm = _lognorm([r["N"] for r in done])
    cmap = matplotlib.colormaps["viridis"]
    for r in done:
        pts = np.array(json.loads(r["curve"]), dtype=float)
        pts = pts[pts[:, 0] > 0]
        ax.plot(
            pts[:, 0],
            pts[:, 1],
            color=cmap(norm(r["N"])),
            lw=1.2,
            ls={"fit": "-", "holdout": "--", "excluded": ":"}[fit_role(r, used)],
        )
    fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=N_AXIS)
    ax.plot([], [], color="0.35", lw=1.2, label="fitted rungs")
    roles = {fit_role(r, used) for r in done}
    if "excluded" in roles:
        ax.plot([], [], color="0.35", lw=1.2, ls=":", label=EXCLUDED)
    if "holdout" in roles:
        ax.plot([], [], color="0.35", lw=1.2, ls="--", label="held out (not fitted)")
    ax.legend(fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("tokens D")
    ax.set_ylabel("validation loss")
    ax.set_title("validation loss curves (dashed: held out; dotted: not fitted)", fontsize=10)
    return fig


def rung_title(r: dict[str, Any], conv: str, used: set[str] | None = None) -> str:
    """The hover line of a rung's point in the SVG figures."""
    from scalelab.laws.plots import number_label as num

    role = {"fit": "fitted", "holdout": "held out, not fitted", "excluded": EXCLUDED}[
        fit_role(r, used)
    ]
    c = r.get(f"C_{conv}")
    return (
        f"rung {r['rung']}: N = {num(r['N'], 4)}, D = {num(r['D'], 4)}"
        + (f", C = {num(c, 4)}" if c else "")
        + f", loss = {num(r['final_val_loss'], 5)} ({role})"
    )


def plot_loss_vs(
    rows: list[dict[str, Any]], chin: Any, var: str, conv: str, used: set[str] | None = None
):
    """Loss against D or C; the law's compute-optimal frontier on the C panel. Rungs the law
    was not fitted to are hollow: held out (stars) and ``excluded`` (circles)."""
    import matplotlib

    from scalelab.laws.calibration import calibrated_allocation
    from scalelab.laws.plots import hollow, law_name, legend
    from scalelab.laws.svg import attach_point_titles
    from scalelab.study.answer import allocation_law

    fig, (ax,) = _figure()
    key = {"D": "D", "C": f"C_{conv}"}[var]
    done = [r for r in rows if r["status"] == "completed" and r["final_val_loss"] is not None]
    norm = _lognorm([r["N"] for r in done])
    cmap = matplotlib.colormaps["viridis"]
    for role, marker, size, label in (
        ("fit", "o", 22, "fitted rungs"),
        ("holdout", "*", 90, "held out (not fitted)"),
        ("excluded", "o", 24, EXCLUDED),
    ):
        sel = [r for r in done if fit_role(r, used) == role]
        if sel:
            colors = [cmap(norm(r["N"])) for r in sel]
            style = {"c": colors} if role == "fit" else hollow(colors)
            pts = ax.scatter([r[key] for r in sel], [r["final_val_loss"] for r in sel], marker=marker, s=size, zorder=3, label=label, **style)  # fmt: skip
            attach_point_titles(pts, [rung_title(r, conv, used) for r in sel])
    alloc = None
    if chin is not None and var == "C":
        cs = np.geomspace(min(r[key] for r in done) / 2, max(r[key] for r in done) * 4, 80)
        try:
            alloc = calibrated_allocation(allocation_law(chin), cs)
        except UserError:  # no finite optimum (an exponent <= 0): the text says why
            alloc = None
    if alloc is not None:
        ax.plot(cs, alloc.loss, color="k", lw=1.2, label=f"{law_name(chin)} at the compute-optimal N, D")  # fmt: skip
        ivs = alloc.intervals.get("loss")
        if ivs:
            ax.fill_between(cs, [i.lo for i in ivs], [i.hi for i in ivs], color="k", alpha=0.12, label=f"{ivs[0].level:.0%} interval")  # fmt: skip
    elif chin is not None:
        for n in sorted({r["N"] for r in done})[:: max(1, len({r["N"] for r in done}) // 5)]:
            ds = np.geomspace(min(r["D"] for r in done) / 2, max(r["D"] for r in done) * 2, 60)
            ax.plot(ds, chin.predict(N=np.full_like(ds, n), D=ds), color=cmap(norm(n)), lw=0.9)
        ax.plot([], [], color="0.35", lw=0.9, label=f"{law_name(chin)} at several N")
    legend(ax, fontsize=8)
    fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=N_AXIS)
    ax.set_xscale("log")
    ax.set_xlabel({"D": "tokens D", "C": f"compute C ({conv} FLOPs)"}[var])
    ax.set_ylabel("final validation loss")
    ax.set_title(f"loss against {var} (hollow: not fitted)", fontsize=10)
    return fig


def plot_sources(rows: list[dict[str, Any]], used: set[str] | None = None):
    """Final validation loss per source against N (hollow: rungs the law was not fitted to)."""
    from scalelab.laws.plots import hollow, number_label
    from scalelab.laws.svg import attach_point_titles

    done = [r for r in rows if r["status"] == "completed"]
    sources = sorted({k.split("/", 1)[1] for r in done for k in r if k.startswith("val_loss/")})
    if not sources:
        return None
    fig, (ax,) = _figure()
    for i, s in enumerate(sources):
        for fitted in (True, False):
            pts = sorted(
                (r["N"], r[f"val_loss/{s}"], r["rung"])
                for r in done
                if r.get(f"val_loss/{s}") is not None and (fit_role(r, used) == "fit") == fitted
            )
            if not pts:
                continue
            style = {"color": f"C{i}", "label": s} if fitted else hollow(f"C{i}")
            note = "" if fitted else " (not fitted)"
            pts_ = ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=16, **style)
            attach_point_titles(pts_, [f"rung {p[2]}: N = {number_label(p[0], 4)}, {s} loss = {number_label(p[1], 5)}{note}" for p in pts])  # fmt: skip
    if any(fit_role(r, used) != "fit" for r in done):
        ax.scatter([], [], s=16, label="hollow: not fitted", **hollow())
    ax.set_xscale("log")
    ax.set_xlabel(N_AXIS)
    ax.set_ylabel("final validation loss")
    ax.legend(fontsize=8)
    ax.set_title("validation loss by source", fontsize=10)
    return fig


def plot_holdout(checks: list[dict[str, Any]]):
    fig, (ax,) = _figure(width=5.0, height=3.6)
    for i, c in enumerate(checks):
        ax.scatter([i], [c["actual"]], marker="*", s=90, facecolors="none", edgecolors="k", zorder=3, label="measured (held out, not fitted)" if i == 0 else None)  # fmt: skip
        lo, hi = c.get("pred_lo"), c.get("pred_hi")
        if lo is not None:
            ax.errorbar([i], [c["estimate"]], yerr=[[c["estimate"] - lo], [hi - c["estimate"]]], fmt="o", color="C3", capsize=4, label="predicted (95% PI)" if i == 0 else None)  # fmt: skip
        else:
            ax.scatter([i], [c["estimate"]], color="C3", label="predicted" if i == 0 else None)
    ax.set_xticks(range(len(checks)), [c["rung"] for c in checks])
    ax.set_ylabel("validation loss")
    ax.legend(fontsize=8)
    ax.set_title("held-out rung: law fitted without it vs measured", fontsize=10)
    return fig


def build_report(study: Study) -> tuple[Path, Path]:
    """Render the report of ``study`` (whatever is finished so far)."""
    from scalelab.laws import load_fit
    from scalelab.study.fit import load_fit_summary

    rows = study.result_rows()
    plan = study.plan
    conv = plan.flops_convention
    fits = load_fit_summary(study) or {}
    fits_dir = study.root / "fits"
    chin = (
        load_fit(fits_dir / "chinchilla.json") if (fits_dir / "chinchilla.json").is_file() else None
    )
    iso = load_fit(fits_dir / "isoflop.json") if (fits_dir / "isoflop.json").is_file() else None
    # A WSD trunk is not a point (its branches are): listed in the plan, never plotted.
    points = [r for r in rows if r["role"] != "trunk"]
    done = [r for r in points if r["status"] == "completed"]

    rep = Report(
        f"Scaling study: {study.root.name}",
        subtitle=f"{plan.design} design, {plan.base.arch} models",
    )
    used = study.fitted_rungs(rows)
    _headline(rep, study, rows, done, conv, chin, fits)
    if chin is not None and done:
        from scalelab.study.answer import answer_section

        answer_section(rep, study, chin, used)
    _plan_section(rep, study, rows, conv, used)
    policy_section(rep, study)
    if chin is not None and done:
        _law_sections(rep, points, done, chin, iso, fits, conv, used=used)

    fig = plot_sources(points, used)
    if fig is not None:
        rep.heading("Validation loss by source")
        rep.figure(
            fig, "sources", "Final validation loss of every rung on each source of the corpus."
        )

    from scalelab.study.report.downstream import add_downstream_section
    from scalelab.study.report.zeroshot import render_zeroshot

    add_downstream_section(rep, study)
    render_zeroshot(rep, study)
    return rep.write(study.root)


def _headline(
    rep: Report,
    study: Study,
    rows: list[dict[str, Any]],
    done: list[dict[str, Any]],
    conv: str,
    chin: Any,
    fits: dict[str, Any],
) -> None:
    """The headline: what was trained, the fitted law and how well it extrapolated."""
    rep.heading("Headline")
    total_c = sum(r[f"C_{conv}"] or 0 for r in done)
    wall = sum(r["wall_time_s"] or 0 for r in done)
    summaries = (study.rung_summary(r) for r in study.rungs)
    dataset = next((s["dataset"] for s in summaries if s and s.get("dataset")), None)
    rep.paragraph(
        f"{len(done)} of {len(rows)} rungs trained ({total_c:.3g} FLOPs under the {conv} convention, "
        f"{wall / 60:.1f} min of training summed over rungs). Non-embedding N spans "
        f"{fmt(min((r['N'] for r in rows), default=0))} to {fmt(max((r['N'] for r in rows), default=0))}; "
        f"dataset {dataset or 'not prepared yet'}."
    )
    repetition = study.repetition_note()
    if repetition:
        rep.paragraph(repetition, style="warn")
    if chin is not None:
        from scalelab.study.answer import exponent_intervals, identification_warning, interval_text

        p, ivs = chin.params, exponent_intervals(chin)
        a, b = (f"{v:.3f}" + (f" {interval_text(ivs[k])}" if k in ivs else "") for k, v in zip("ab", chin.exponents))  # fmt: skip
        rep.paragraph(
            f"Approach 3 law: L(N, D) = {p['E']:.3f} + {p['A']:.4g}/N^{p['alpha']:.3f} + {p['B']:.4g}/D^{p['beta']:.3f} "
            f"(fitted on {fits.get('n_fit')} rungs{_band_text(fits)}; compute-optimal N ∝ C^a, a = {a}; "
            f"D ∝ C^b, b = {b}" + ("; 95% intervals)." if ivs else ")."),
            style="note",
        )
        warning = identification_warning(chin)
        if warning:
            rep.paragraph(warning, style="warn")
    for c in fits.get("holdout", []):
        interval = (
            f" (95% prediction interval {c['pred_lo']:.4f}–{c['pred_hi']:.4f})"
            if "pred_lo" in c
            else ""
        )
        rep.paragraph(
            f"Extrapolation check: held-out rung {c['rung']} ({c['extrapolation_decades']:.2f} decades of compute "
            f"beyond the fitted rungs) measured {c['actual']:.4f}; the law predicted {c['estimate']:.4f}{interval}: "
            f"error {100 * c['rel_error']:+.2f}%."
            + (
                f" Fitted on every rung, the law predicts {c['estimate_all']:.4f} "
                f"(error {100 * c['rel_error_all']:+.2f}%)."
                if "estimate_all" in c
                else ""
            ),
            style="note" if abs(c["rel_error"]) < 0.03 else "warn",
        )
    forms_headline(rep, fits)
    if chin is None:
        rep.paragraph(
            "No fit yet: run `scalelab study fit` once enough rungs have finished.", style="warn"
        )


def _plan_section(
    rep: Report, study: Study, rows: list[dict[str, Any]], conv: str, used: set[str] | None
) -> None:
    """Every rung of the plan as a table, then the loss curves."""
    rep.heading("Plan and rungs")
    levels = any(r.get("budget") for r in rows if r["role"] == "fit")
    rep.table(
        [
            {
                "rung": r["rung"],
                "role": r["role"],
                "status": r["status"],
                **({f"level C ({conv})": r.get("budget")} if levels else {}),
                "N": r["N"],
                "layers×width": f"{r['n_layer']}×{r['d_model']}",
                "D (tokens)": r["D"],
                "D/N": r["D"] / r["N"] if r["N"] else None,
                f"C ({conv})": r[f"C_{conv}"],
                "lr": r["lr"],
                "batch": r["batch_tokens"],
                "final loss": r["final_val_loss"],
                "time (s)": r["wall_time_s"],
                "tok/s": r["tokens_per_s"],
                **({"MFU": r.get("mfu")} if any(x.get("mfu") for x in rows) else {}),
            }
            for r in rung_order(rows)
        ],
        caption="Every rung of the plan, by compute level then size (held-out rungs last); "
        "N counts non-embedding parameters (Kaplan et al. 2020).",
    )
    fig = plot_curves(study, rows, used)
    if fig is not None:
        rep.figure(fig, "curves", "Validation loss during training (intermediate evaluations).")


def rung_order(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rungs by compute level (an isoflop plan's budget; ladders and grids have none),
    then by size N, then by tokens D; held-out rungs last."""
    return sorted(
        rows,
        key=lambda r: (
            r["role"] == "holdout",
            r.get("budget") or 0.0,
            r["N"] or 0,
            r["D"] or 0,
            str(r["rung"]),
        ),
    )


def _rung_table(rows: list[dict[str, Any]]) -> Any:
    """The rungs as a RunTable (N, D, final loss; the rung id carried for hover titles)."""
    from scalelab.laws import load_table

    cols = {k: [r[k] for r in rows] for k in ("N", "D", "final_val_loss", "rung")}
    return load_table(
        cols,
        n="N",
        d="D",
        loss="final_val_loss",
        extra=["rung"],
        flops_convention="6n_kaplan",
        check_units=False,
    )


def _law_sections(
    rep: Report,
    rows: list[dict[str, Any]],
    done: list[dict[str, Any]],
    chin: Any,
    iso: Any,
    fits: dict[str, Any],
    conv: str,
    used: set[str] | None = None,
) -> None:
    """Loss against N, D and C, the allocation, the fitted laws and the extrapolation check.
    ``used``: the rung ids the saved fit used (default: every fit rung)."""
    from scalelab.laws.plots import plot_loss_vs_n, plot_residuals
    from scalelab.study.answer import fit_notes, identification_warning, law_rows
    from scalelab.study.report.conventions_section import conventions_section

    fit_rows = [r for r in done if r["role"] == "fit"]
    # The points of the saved fit (a frontier band fits only some of the fit rungs).
    used = used or {r["rung"] for r in fit_rows}
    table = _rung_table([r for r in fit_rows if r["rung"] in used])
    outside = [r for r in fit_rows if r["rung"] not in used]
    held = [r for r in done if r["role"] == "holdout" and r["final_val_loss"] is not None]
    not_fitted = {
        "held_out": _rung_table(held) if held else None,
        "excluded": _rung_table(outside) if outside else None,
        "excluded_label": EXCLUDED,
    }
    rep.heading("Loss against N, D and C")
    rep.figure(
        plot_loss_vs_n(table, chin, n_label=N_LABEL, **not_fitted),
        "loss_vs_n",
        "Loss against non-embedding N, coloured by D, with the fitted law at several D "
        "(hollow: rungs the fit did not use; hollow stars: held-out rungs).",
    )
    rep.figure(
        plot_loss_vs(rows, chin, "D", conv, used),
        "loss_vs_d",
        "Loss against tokens, with the law at several N (hollow: not fitted).",
    )
    rep.figure(
        plot_loss_vs(rows, chin, "C", conv, used),
        "loss_vs_c",
        "Loss against compute; the line is the law along its compute-optimal frontier "
        "(band: the answer table's 95% interval; hollow: not fitted).",
    )
    _allocation_section(rep, fit_rows, chin, iso, conv)
    rep.heading("Fitted laws")
    warning = identification_warning(chin)
    if warning:
        rep.paragraph(warning, style="warn")
    rep.table(
        law_rows(chin, fits),
        caption="Approach 3 parameters with bootstrap 95% intervals ("
        + ("compute levels resampled" if fits.get("calibration") else "runs resampled")
        + "), beside the published Chinchilla laws: Besiroglu et al. 2024 (arXiv:2404.10102, "
        "Table 1), Hoffmann et al. 2022 (arXiv:2203.15556, eq. 10 and Table 2). Those count "
        "total parameters and MassiveText tokens, this study non-embedding N and its own "
        "tokenizer: E, A and B are not comparable across studies, the exponents are.",
    )
    rep.table(
        _approach_rows(chin, fits),
        caption="Compute-optimal exponents by approach (Hoffmann et al. 2022 found a ≈ b ≈ 0.5).",
    )
    conventions_section(rep, fits)  # the exponents under each N and C convention
    rep.figure(
        plot_residuals(table, chin, n_label=N_LABEL, **not_fitted),
        "residuals",
        "Residuals of the Approach 3 fit (hollow: rungs it was not fitted to; for a held-out "
        "rung the residual is the law's prediction error).",
    )
    if fits.get("holdout"):
        _holdout_section(rep, fits["holdout"])
    if fits.get("calibration"):
        calibration_section(rep, fits["calibration"])
    notes = fits.get("chinchilla", {}).get("warnings", []) + fits.get("isoflop", {}).get(
        "warnings", []
    )
    for n in fit_notes(notes):
        rep.paragraph(n, style="warn")


_OPTIMAL_CAPTION = (
    "N_opt and D_opt against compute from the Approach 3 law (bands: the answer table's 95% "
    "intervals), IsoFLOP minima as points (hollow: not fitted, not bracketed)."
)


def _allocation_section(
    rep: Report, fit_rows: list[dict[str, Any]], chin: Any, iso: Any, conv: str
) -> None:
    """Compute-optimal N and D against C, and the IsoFLOP profiles when there is that fit."""
    from scalelab.laws import load_table
    from scalelab.laws.plots import plot_isoflop, plot_optimal
    from scalelab.study.answer import allocation_law

    rep.heading("Compute-optimal allocation")
    try:
        fig = plot_optimal(allocation_law(chin), isoflop=iso, n_label=N_LABEL)
    except UserError as exc:  # an exponent <= 0: the law has no finite optimum
        rep.paragraph(f"The Approach 3 law gives no allocation: {exc}.", style="warn")
    else:
        rep.figure(fig, "optimal", _OPTIMAL_CAPTION)
    if iso is None:
        return
    iso_cols = {k: [r[k] for r in fit_rows] for k in ("N", "D", "final_val_loss", "budget", "rung")}
    iso_cols["C"] = [r[f"C_{conv}"] for r in fit_rows]
    iso_table = load_table(
        iso_cols,
        n="N",
        d="D",
        c="C",
        loss="final_val_loss",
        extra=["budget", "rung"],
        flops_convention="none",
    )
    rep.figure(
        plot_isoflop(iso_table, iso, n_label=N_LABEL),
        "isoflop",
        "IsoFLOP profiles (Approach 2): parabolas in log N per compute level and their minima.",
    )


def _approach_rows(chin: Any, fits: dict[str, Any]) -> list[dict[str, Any]]:
    """The compute-optimal exponents a and b of each approach that was fitted."""
    approaches = [
        {
            "approach": "3 (parametric)",
            "a (N_opt ∝ C^a)": chin.exponents[0],
            "b (D_opt ∝ C^b)": chin.exponents[1],
        }
    ]
    for name, key in (("2 (IsoFLOP)", "isoflop"), ("1 (envelope)", "envelope")):
        if "a" in fits.get(key, {}):
            approaches.append(
                {
                    "approach": name,
                    "a (N_opt ∝ C^a)": fits[key]["a"],
                    "b (D_opt ∝ C^b)": fits[key]["b"],
                }
            )
    return approaches


def _holdout_section(rep: Report, checks: list[dict[str, Any]]) -> None:
    """The held-out rung(s): measured against predicted, as a table and a figure."""
    rep.heading("Extrapolation check")
    rep.table(
        [
            {
                "rung": c["rung"],
                "N": c["N"],
                "D": c["D"],
                "C": c["C"],
                "decades beyond": c["extrapolation_decades"],
                "measured": c["actual"],
                "predicted": c["estimate"],
                "PI low": c.get("pred_lo"),
                "PI high": c.get("pred_hi"),
                "error %": 100 * c["rel_error"],
                "error % (every rung)": 100 * c["rel_error_all"] if "rel_error_all" in c else None,
            }
            for c in checks
        ]
    )
    rep.figure(
        plot_holdout(checks),
        "holdout",
        "The held-out rung(s): prediction of the law fitted without them, and the measurement.",
    )


def _band_text(fits: dict[str, Any]) -> str:
    chin = fits.get("chinchilla", {})
    if not chin.get("excluded"):
        return ""
    return (
        f" within {100 * chin['frontier_band']:.0f}% of the best loss at their compute level; "
        f"left out: {', '.join(chin['excluded'])}"
    )
