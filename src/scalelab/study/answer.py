"""The study's answer: how large a model to train, on how many tokens, and what loss it reaches.

From the saved Approach 3 law (``fits/chinchilla.json``) this gives the compute-optimal
N_opt, D_opt, tokens per parameter and loss, each with its 95% interval, at the study's own
compute levels and at 10x and 100x the largest one (extrapolation). The intervals are the
calibrated ones when the bootstrap is calibrated (compute levels resampled plus the
rolling-origin model-form error, :func:`~scalelab.laws.calibration.calibrated_allocation`),
the plain bootstrap's otherwise, and none without a bootstrap. It also says when the law is
not identified by the rungs (:func:`identification_problems`), sets the law beside the
published Chinchilla fits (:data:`PUBLISHED`), and keeps the fits' own notes out of the
floating-point noise the fit recorded (:func:`fit_notes`).

The report (:mod:`scalelab.study.report.study_report`) and ``scalelab study fit``'s terminal
summary (:func:`answer_lines`) both show these rows.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from scalelab.errors import UserError

EXTRAPOLATION_FACTORS = (10.0, 100.0)
"""The answer table's extrapolated budgets, as multiples of the largest compute level."""

LAW_K = 6.0
"""C = 6 N D: the convention under which the law's compute-optimal allocation is solved
(Kaplan et al. 2020, Eq. 2.1; Hoffmann et al. 2022, Sec. 3.3 and eq. 4)."""

NOT_IDENTIFIED = (
    "The law is not identified by these rungs: quote the allocation exponents with their "
    "intervals, not the law's constants."
)

SPAN_LIMIT = 10.0
"""An interval with hi/lo above this (more than a decade) leaves its parameter unidentified."""
CORRELATION_LIMIT = 0.99
"""|correlation| above this between two parameters: they trade off along a ridge."""
STRUCTURAL_PAIRS = frozenset({frozenset({"a", "alpha"}), frozenset({"b", "beta"})})
"""Pairs left out of the correlation test: log A with alpha and log B with beta correlate
near 1 in every Chinchilla fit, because log N and log D are far from zero where A and B are
defined (measured on the 240 points of Besiroglu et al. 2024: +0.9991 and +0.9992, with
alpha and beta known to +-0.02). Their intervals are tested instead."""

PUBLISHED: dict[str, dict[str, float]] = {
    "Besiroglu et al. 2024": {
        "E": 1.8172,
        "A": 477.8,
        "B": 2143.0,
        "alpha": 0.3473,
        "beta": 0.3672,
        "a": 0.3672 / (0.3473 + 0.3672),
        "b": 0.3473 / (0.3473 + 0.3672),
    },
    "Hoffmann et al. 2022": {
        "E": 1.69,
        "A": 406.4,
        "B": 410.7,
        "alpha": 0.34,
        "beta": 0.28,
        "a": 0.46,
        "b": 0.54,
    },
}
"""Published Chinchilla laws (total parameters N, MassiveText tokens D, nats). Besiroglu,
Erdil, Barnett and You 2024, "Chinchilla Scaling: A replication attempt" (arXiv:2404.10102,
Table 1): their refit of Hoffmann et al.'s Approach 3 on the 240 points of Fig. 4, the
numbers ``bench/laws_reference.py`` reproduces (a, b derived: a = beta/(alpha+beta)).
Hoffmann et al. 2022, "Training Compute-Optimal Large Language Models" (arXiv:2203.15556):
eq. 10 for E, A, B, alpha, beta and Table 2 (Approach 3) for a and b."""

_FIT_NOTE = re.compile(r"^(?:\w+ fit|IsoFLOP|Approach [123]|calibrated intervals skipped): ")
"""The prefixes of the fits' own warnings: FitWarning (``chinchilla fit: ...``),
IsoFLOPWarning (``IsoFLOP: ...``, ``Approach 1: ...``) and study.fit's note when the
calibrated bootstrap could not run."""


def fit_notes(messages: Iterable[str]) -> list[str]:
    """The fits' own notes among the warnings a fit recorded, each once and in order; numpy's
    floating-point warnings (``overflow encountered in square``) and other library noise
    caught during the fit are dropped."""
    return [m for m in dict.fromkeys(str(m) for m in messages) if _FIT_NOTE.match(m)]


def allocation_law(fit: Any) -> Any:
    """``fit`` able to allocate compute: a law fitted without a C = k N D convention (a plan
    under the Appendix F count) is allocated under C = 6 N D (:data:`LAW_K`)."""
    import dataclasses

    return fit if fit.flops_per_nd is not None else dataclasses.replace(fit, flops_per_nd=LAW_K)


def answer_budgets(rows: Sequence[dict[str, Any]], conv: str, k: float) -> list[float]:
    """The study's compute levels, under C = k N D with the study's (non-embedding) N, from
    the fitted ``rows``: the plan's budgets when the plan counts that way (``6n_kaplan``),
    else the median k N D of each level's rungs (``6n_total`` counts all parameters, the
    Appendix F count has no single k); a design without levels (a ladder, a grid) gets four
    budgets log-spaced over its rungs."""
    if not rows:
        return []
    budgets = sorted({float(r["budget"]) for r in rows if r.get("budget")})
    if budgets and len(budgets) == len({r.get("budget") for r in rows}):
        if conv == "6n_kaplan" and k == LAW_K:
            return budgets
        return [
            float(np.median([k * r["N"] * r["D"] for r in rows if float(r["budget"] or 0) == b]))
            for b in budgets
        ]
    cs = sorted(k * float(r["N"]) * float(r["D"]) for r in rows)
    return sorted({float(c) for c in np.geomspace(cs[0], cs[-1], min(4, len(set(cs))))})


def answer_rows(
    fit: Any, levels: Sequence[float], *, level: float = 0.95, label: str = "study level"
) -> list[dict[str, Any]]:
    """The compute-optimal allocation at ``levels`` and at 10x and 100x the largest: one dict
    per budget with ``compute``, ``where`` (``label``, or "extrapolation (10x the largest
    level)"), ``n_opt``, ``d_opt``, ``tokens_per_param``, ``loss`` and, per quantity, its
    :class:`~scalelab.laws.results.Interval` under ``<key>_iv`` (None without a bootstrap).
    Raises UserError when the law has no finite optimum (an exponent <= 0)."""
    from scalelab.laws.calibration import calibrated_allocation

    if not levels:
        return []
    top = max(levels)
    cs = [float(c) for c in levels] + [top * f for f in EXTRAPOLATION_FACTORS]
    where = [label] * len(levels) + [
        f"extrapolation ({f:g}x the largest level)" for f in EXTRAPOLATION_FACTORS
    ]
    alloc = calibrated_allocation(allocation_law(fit), cs, level=level)
    keys = ("n_opt", "d_opt", "tokens_per_param", "loss")
    out = []
    for i, c in enumerate(alloc.compute):
        row: dict[str, Any] = {"compute": c, "where": where[i]}
        for key in keys:
            row[key] = getattr(alloc, key)[i]
            ivs = alloc.intervals.get(key)
            row[f"{key}_iv"] = ivs[i] if ivs else None
        out.append(row)
    return out


def number(value: float, digits: int = 3) -> str:
    """A short number: ``5.26e4``, ``0.774``, ``6.819`` (the figures' tick style)."""
    from scalelab.laws.plots import number_label

    return number_label(float(value), digits)


def interval_text(iv: Any, digits: int = 3) -> str:
    """``[lo, hi]`` of an interval (``–`` when there is none)."""
    if iv is None or not (math.isfinite(iv.lo) and math.isfinite(iv.hi)):
        return "–"
    return f"[{number(iv.lo, digits)}, {number(iv.hi, digits)}]"


def answer_table(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The answer rows as report table rows (value and 95% interval side by side)."""
    names = {"n_opt": "N_opt", "d_opt": "D_opt", "tokens_per_param": "D/N", "loss": "loss"}
    out = []
    for r in rows:
        rec: dict[str, Any] = {"C = 6ND (FLOPs)": number(r["compute"]), "budget": r["where"]}
        for key, name in names.items():
            rec[name] = number(r[key], 4 if key == "loss" else 3)
            rec[f"{name} 95%"] = interval_text(r[f"{key}_iv"], 4 if key == "loss" else 3)
        out.append(rec)
    return out


def exponent_intervals(fit: Any) -> dict[str, Any]:
    """95% intervals of the allocation exponents a and b: calibrated (widened by their spread
    over the rolled-forward cuts) when the bootstrap is, else the bootstrap's own."""
    from scalelab.laws.calibration import calibrated_exponents

    boot = fit.bootstrap
    plain = dict(getattr(boot, "intervals", {}) or {}) if boot is not None else {}
    out = {k: plain[k] for k in ("a", "b") if k in plain}
    out.update(calibrated_exponents(fit))
    return out


_THETA_LABEL = {"a": "log A", "b": "log B", "e": "log E"}


def identification_problems(fit: Any) -> list[str]:
    """Why the rungs do not pin the law's constants down (empty when they do): a parameter
    whose bootstrap 95% interval spans more than a decade (:data:`SPAN_LIMIT`) or reaches
    zero, two parameters correlated beyond :data:`CORRELATION_LIMIT` at the optimum (but see
    :data:`STRUCTURAL_PAIRS`), and the fit's own ``not identified`` caution."""
    out = []
    boot = fit.bootstrap
    intervals = getattr(boot, "intervals", {}) if boot is not None else {}
    for name in ("E", "A", "B", "alpha", "beta"):
        iv = intervals.get(name)
        if iv is None or math.isnan(iv.lo) or math.isnan(iv.hi):
            continue
        text = f"{name} {interval_text(iv)}"
        if iv.lo <= 0 or not math.isfinite(iv.hi):
            out.append(f"{text} reaches zero or infinity")
        elif iv.hi / iv.lo > SPAN_LIMIT:
            out.append(f"{text} spans {math.log10(iv.hi / iv.lo):.1f} decades")
    corr = getattr(fit.diagnostics, "correlations", {}) or {}
    names = list(corr)
    for i, p in enumerate(names):
        for q in names[i + 1 :]:
            r = corr[p].get(q, 0.0)
            if frozenset({p, q}) in STRUCTURAL_PAIRS or not abs(r) > CORRELATION_LIMIT:
                continue
            out.append(f"{_THETA_LABEL.get(p, p)} and {_THETA_LABEL.get(q, q)} correlated {r:+.3f}")
    if "not identified" in getattr(fit.diagnostics, "cautions", ()):
        out.append("only two distinct sizes or token counts fitted")
    return out


def identification_warning(fit: Any) -> str | None:
    """:data:`NOT_IDENTIFIED` with its reasons, or None for an identified law."""
    problems = identification_problems(fit)
    if not problems:
        return None
    return f"{NOT_IDENTIFIED} ({'; '.join(problems)})"


def law_rows(fit: Any, fits: dict[str, Any]) -> list[dict[str, Any]]:
    """E, A, B, alpha, beta and the exponents a, b with their 95% intervals, beside the
    published Chinchilla laws (:data:`PUBLISHED`)."""
    boot = fit.bootstrap
    intervals = dict(getattr(boot, "intervals", {}) or {}) if boot is not None else {}
    intervals.update(exponent_intervals(fit))
    a, b = fit.exponents
    values = {**fit.params, "a": fits.get("chinchilla", {}).get("a", a)}
    values["b"] = fits.get("chinchilla", {}).get("b", b)
    out = []
    for name in ("E", "A", "B", "alpha", "beta", "a", "b"):
        iv = intervals.get(name)
        row = {
            "parameter": name,
            "this study": values[name],
            "95% low": getattr(iv, "lo", None),
            "95% high": getattr(iv, "hi", None),
        }
        row.update({paper: law[name] for paper, law in PUBLISHED.items()})
        out.append(row)
    return out


def fitted_rows(rows: Sequence[dict[str, Any]], used: set[str] | None) -> list[dict[str, Any]]:
    """The completed fit rungs the saved law used (every completed fit rung when ``used`` is
    empty or None: before a fit, or an old summary that does not say)."""
    done = [
        r
        for r in rows
        if r["role"] == "fit" and r["status"] == "completed" and r["final_val_loss"] is not None
    ]
    return [r for r in done if r["rung"] in used] if used else done


def study_answer(study: Any, fit: Any, used: set[str] | None = None) -> list[dict[str, Any]]:
    """:func:`answer_rows` at ``study``'s compute levels (of the rungs in ``used``)."""
    law = allocation_law(fit)
    rows = fitted_rows(study.result_rows(), used)
    levels = answer_budgets(rows, study.plan.flops_convention, law.flops_per_nd)
    label = "study level" if any(r.get("budget") for r in rows) else "fitted range"
    return answer_rows(fit, levels, label=label)


def answer_section(rep: Any, study: Any, chin: Any, used: set[str] | None = None) -> None:
    """The report's answer section (a :class:`~scalelab.study.report.html.Report`): the
    compute-optimal allocation at the study's levels and beyond, as :func:`answer_table`."""
    rep.heading("The answer: compute-optimal N, D and loss")
    try:
        rows = study_answer(study, chin, used)
    except UserError as exc:
        rep.paragraph(f"No compute-optimal allocation: {exc}", style="warn")
        return
    boot = chin.bootstrap
    if getattr(boot, "calibration", None) is not None:
        how = "calibrated 95% intervals (compute levels resampled, plus the rolling-origin model-form error)"  # fmt: skip
    elif boot is not None:
        how = "bootstrap 95% intervals (runs resampled)"
    else:
        how = "no intervals (fitted without a bootstrap: run `scalelab study fit --bootstrap 400`)"
    conv = study.plan.flops_convention
    note = (
        ""
        if conv == "6n_kaplan"
        else f" The plan counts compute under {conv}; the law allocates under C = 6 N D "
        "(non-embedding N), so each level is shown at the median 6 N D of its rungs."
    )
    rep.table(
        answer_table(rows),
        caption="How large a model to train, on how many tokens, and what loss it will reach: "
        "the Approach 3 law's compute-optimal non-embedding N, tokens D, tokens per parameter "
        f"and loss, with {how}, at the study's compute levels and at 10x and 100x the largest "
        "(extrapolation: beyond every fitted rung, trust it less)." + note,
        digits=3,
    )


def answer_lines(summary: dict[str, Any], study: Any) -> list[str]:
    """The answer table and the identification warning as terminal lines (what ``scalelab
    study fit`` prints under the law); nothing before a fit."""
    from scalelab.laws import load_fit

    path = study.root / "fits" / "chinchilla.json"
    if not path.is_file():
        return []
    fit = load_fit(path)
    used = set(summary.get("chinchilla", {}).get("rungs") or ())
    try:
        rows = study_answer(study, fit, used)
    except UserError as exc:
        return [f"  no compute-optimal allocation: {exc}"]
    lines = ["  compute-optimal (C = 6ND FLOPs; N_opt, D_opt, D/N, loss with 95% intervals):"]
    for r in rows:
        parts = [
            f"{name} {number(r[key], 4 if key == 'loss' else 3)} {interval_text(r[key + '_iv'], 4 if key == 'loss' else 3)}"
            for key, name in (
                ("n_opt", "N"),
                ("d_opt", "D"),
                ("tokens_per_param", "D/N"),
                ("loss", "loss"),
            )
        ]
        tag = f"  <- {r['where']}" if r["where"].startswith("extrapolation") else ""
        lines.append(f"    C {number(r['compute'])}: {', '.join(parts)}{tag}")
    warning = identification_warning(fit)
    if warning:
        lines.append(f"  warning: {warning}")
    return lines
