"""Downstream section of the study report: metric per rung with the fitted curves and the
held-out prediction, the ladder's sigmoid, robustness, and label-efficiency curves (of one
model, or of every rung with the fine-tuning law of Zhang et al. 2024 across them)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from scalelab.laws.svg import attach_point_titles
from scalelab.study.report.html import Report
from scalelab.study.study import Study
from scalelab.utils.io import read_json


def _figure(width: float = 6.4, height: float = 4.4):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.add_subplot(1, 1, 1)


def _point_title(p: dict[str, Any]) -> str:
    """The hover line of a fine-tuned rung's point in the SVG figures."""
    from scalelab.laws.plots import number_label as num

    return (
        f"rung {p['rung']}: N = {num(p['N'], 4)}, loss = {num(p['loss'], 5)}, "
        f"test {p.get('metric', 'metric')} = {num(p['test'], 4)} ({p['role']})"
    )


def plot_metric_vs_n(key: str, res: dict[str, Any]):
    pts = res["points"]
    metric = pts[0]["metric"] if pts else "metric"
    fig, ax = _figure()
    fit_pts = [p for p in pts if p["role"] == "fit"]
    bars = ax.errorbar([p["N"] for p in fit_pts], [p["test"] for p in fit_pts], yerr=[p["test_std"] for p in fit_pts], fmt="o", color="C0", ms=4, capsize=2, label="fitted rungs (test)")  # fmt: skip
    attach_point_titles(bars.lines[0], [_point_title(p) for p in fit_pts])
    pl = res.get("power_law", {}).get("params")
    if pl and fit_pts:
        lo = min(p["N"] for p in pts) / 1.5
        hi = max(p["N"] for p in pts) * 1.5
        xs = np.geomspace(lo, hi, 80)
        ceiling = res["power_law"].get("ceiling", 1.0)
        ax.plot(
            xs,
            ceiling - (pl["E"] + pl["A"] * xs ** -pl["alpha"]),
            color="C0",
            lw=1.0,
            label="power law in N: 1 - metric = E + A·N^-α",
        )
    for h in res.get("holdout", []):
        ax.scatter(
            [h["N"]],
            [h["actual"]],
            marker="*",
            s=140,
            color="k",
            zorder=4,
            label=f"held out {h['rung']} (not fitted; measured)",
        )
        if "ladder_estimate" in h:
            est = h["ladder_estimate"]
            ax.errorbar([h["N"] * 1.05], [est], yerr=[[est - h["ladder_lo"]], [h["ladder_hi"] - est]], fmt="D", color="C3", capsize=4, label="ladder prediction")  # fmt: skip
    if res.get("chance"):
        ax.axhline(res["chance"], color="gray", lw=0.8, ls=":", label="chance")
    ys = [p["test"] for p in pts] + [res.get("chance") or 0.0]
    ax.set_ylim(max(0.0, min(ys) - 0.1), min(1.0, max(ys) + 0.1))  # a diverging fit stays off-scale
    ax.set_xscale("log")
    ax.set_xlabel("non-embedding N (parameters)")
    ax.set_ylabel(f"test {metric}")
    ax.legend(fontsize=7)
    ax.set_title(f"{key}: {metric} against size", fontsize=10)
    return fig


def plot_metric_vs_loss(key: str, res: dict[str, Any]):
    pts = res["points"]
    lad = res.get("ladder", {}).get("params")
    fig, ax = _figure()
    for role, color, label in (
        ("fit", "C0", "fitted rungs"),
        ("holdout", "k", "held out (not fitted)"),
    ):
        sel = [p for p in pts if p["role"] == role]
        if sel:
            pts_ = ax.scatter([p["loss"] for p in sel], [p["test"] for p in sel], color=color, s=18, label=label)  # fmt: skip
            attach_point_titles(pts_, [_point_title(p) for p in sel])
    ax.legend(fontsize=7)
    if lad:
        ls = np.linspace(min(p["loss"] for p in pts) - 0.2, max(p["loss"] for p in pts) + 0.2, 100)
        a, k, l0 = (lad["sigmoid." + n] for n in ("a", "k", "L0"))
        b = lad.get("sigmoid.b", res.get("chance", 0.0))  # b is fixed at chance when given
        ax.plot(
            ls,
            a / (1 + np.exp(-k * (ls - l0))) + b,
            color="C3",
            lw=1.0,
            label="ladder sigmoid: metric = a / (1 + exp(-k (L - L0))) + b",
        )
        ax.legend(fontsize=7)
    ax.set_xlabel("pretraining validation loss")
    ax.set_ylabel("test metric")
    ax.invert_xaxis()
    ax.set_title(f"{key}: step 2 of the ladder (Bhagia et al. 2024)", fontsize=10)
    return fig


def plot_label_curve(data: dict[str, Any]):
    fig, ax = _figure()
    for i, (method, res) in enumerate(sorted(data["methods"].items())):
        pts = res["points"]
        ax.errorbar([p["n_labels"] for p in pts], [p["metric"] for p in pts], yerr=[p["std"] for p in pts], fmt="o", ms=4, capsize=2, color=f"C{i}", label=method)  # fmt: skip
        law = res.get("law")
        if law:
            xs = np.geomspace(
                min(p["n_labels"] for p in pts), max(p["n_labels"] for p in pts) * 3, 80
            )
            ax.plot(
                xs,
                law["ceiling"] - (law["E"] + law["A"] * xs ** -law["alpha"]),
                color=f"C{i}",
                lw=1.0,
            )
    if data.get("target") is not None:
        ax.axhline(data["target"], color="gray", lw=0.8, ls=":", label=f"target {data['target']}")
    ax.set_xscale("log")
    ax.set_xlabel("labelled training examples")
    ax.set_ylabel(data.get("metric", "metric"))
    ax.legend(fontsize=8)
    ax.set_title(f"label efficiency: {data.get('task', '')}", fontsize=10)
    return fig


def label_curve_rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for method, res in sorted(data["methods"].items()):
        need = res.get("labels_needed")
        row = {"method": method, "points": len(res["points"])}
        law = res.get("law")
        if law:
            row.update(E=law["E"], A=law["A"], alpha=law["alpha"])
        if need:
            row.update(
                {"labels needed": need["estimate"], "95% low": need["lo"], "95% high": need["hi"]}
            )
        rows.append(row)
    return rows


def render_downstream(rep: Report, study: Study) -> None:
    from scalelab.study.downstream import downstream_keys, robustness_rows
    from scalelab.study.fit import load_fit_summary

    summary = (load_fit_summary(study) or {}).get("downstream", {})
    keys = downstream_keys(study)
    curves = sorted((study.root / "downstream").glob("labelcurve*/labelcurve.json"))
    if not keys and not curves:
        return
    rep.heading("Downstream")
    for key in keys:
        rep.heading(key.replace("__", " / "), level=3)
        res = summary.get(key)
        if res is None:
            rep.paragraph("Fine-tuned, not fitted yet: run `scalelab study fit`.", style="warn")
            continue
        rep.table(
            [
                {
                    "rung": p["rung"],
                    "role": p["role"],
                    "N": p["N"],
                    "val loss": p["loss"],
                    f"dev {p['metric']}": p["dev"],
                    f"test {p['metric']}": p["test"],
                    "± (seeds)": p["test_std"],
                    "seeds": p["seeds"],
                }
                for p in res["points"]
            ],
            caption="Fine-tuned metric per rung (mean and standard deviation over seeds).",
        )
        if "error" in res:
            rep.paragraph(res["error"], style="warn")
            continue
        for w in res.get("ladder", {}).get("warnings", ()):
            rep.paragraph(f"Ladder: {w}.", style="warn")
        for h in res.get("holdout", []):
            if "ladder_estimate" in h:
                rep.paragraph(
                    f"Held-out rung {h['rung']}: the ladder fitted without it predicted {h['ladder_estimate']:.4f} "
                    f"({h.get('ladder_level', 0.9):.0%} interval {h['ladder_lo']:.4f}–{h['ladder_hi']:.4f}); it measured "
                    f"{h['actual']:.4f} (error {h['ladder_error']:+.4f}"
                    + (
                        f"; the power law in N predicted {h['power_law_estimate']:.4f}"
                        if "power_law_estimate" in h
                        else ""
                    )
                    + ").",
                    style="note",
                )
        rep.figure(
            plot_metric_vs_n(key, res),
            f"downstream_{key}_n",
            "Test metric against size, the power-law fit and the held-out prediction.",
        )
        if res.get("ladder", {}).get("params"):
            rep.figure(
                plot_metric_vs_loss(key, res),
                f"downstream_{key}_loss",
                "The metric as a sigmoid of the pretraining validation loss.",
            )
        rob = robustness_rows(study, key)
        if rob:
            rep.table(
                rob,
                caption="Robustness: the metric on clean test data and its drop under each perturbation.",
            )
    for path in curves:
        render_label_curve(rep, read_json(path), Path(path).parent.name)


def render_label_curve(rep: Report, data: dict[str, Any], name: str, *, level: int = 3) -> None:
    """One ``labelcurve.json``: a model's curves, or (``--study``) every rung's points and
    the fine-tuning law across rungs per method."""
    if "rungs" in data:
        _render_study_curve(rep, data, name, level)
        return
    rep.heading(f"Label efficiency: {data.get('task', name)}", level=level)
    rep.figure(
        plot_label_curve(data),
        f"labelcurve_{name}",
        "Metric against the number of labelled examples, per method, with power-law fits.",
    )
    rep.table(
        label_curve_rows(data),
        caption="Power law of the error against labels; labels needed to reach the target metric.",
    )


# ====================================================================== the law across rungs


def _finite(value: Any) -> bool:
    """A finite number (a saved summary writes nan as None and inf as text)."""
    return isinstance(value, int | float) and math.isfinite(value)


def _law_curve(params: dict[str, float], n: float, xs: np.ndarray) -> np.ndarray:
    """``A / (N^alpha D_f^beta) + E`` at one N over label counts ``xs`` (Zhang et al. 2024, Eq. 1)."""
    return params["A"] * n ** -params["alpha"] * xs ** -params["beta"] + params["E"]


def plot_finetune_law(data: dict[str, Any], method: str):
    """The fitted response against labelled examples, one colour per rung, the law's curve
    at each rung's N; the largest rung's points as predicted by the fit without it."""
    law = data["finetune_law"][method]
    resp = law["response"]
    pts = law.get("points", [])
    fig, ax = _figure()
    rungs = sorted({(p["N"], p["rung"]) for p in pts})
    hold = law.get("holdout", {})
    xs_all = [p["D_f"] for p in pts] or [1.0]
    xs = np.geomspace(min(xs_all) / 1.5, max(xs_all) * 1.5, 80)
    est = {k: v["estimate"] for k, v in law.get("params", {}).items()}
    for i, (n, rung) in enumerate(rungs):
        sel = [p for p in pts if p["rung"] == rung]
        held = hold.get("rung") == rung
        dots = ax.scatter([p["D_f"] for p in sel], [p[resp] for p in sel], s=22, color=f"C{i}", marker="*" if held else "o", zorder=3, label=f"{rung} (N = {n:.3g})" + (", held out" if held else ""))  # fmt: skip
        attach_point_titles(dots, [f"rung {rung}: N = {n:.4g}, D_f = {p['D_f']:.0f}, {resp} = {p[resp]:.4g}" for p in sel])  # fmt: skip
        if est and all(map(_finite, est.values())):
            ax.plot(xs, _law_curve(est, n, xs), color=f"C{i}", lw=1.0)
        if held and all(map(_finite, hold.get("params", {"A": None}).values())):
            ax.plot(xs, _law_curve(hold["params"], n, xs), color=f"C{i}", lw=1.0, ls="--", label=f"fit without {rung}, predicting it")  # fmt: skip
            q = hold["points"]
            lo = [max(p["predicted"] - p["lo"], 0.0) if _finite(p["lo"]) else 0.0 for p in q]
            hi = [max(p["hi"] - p["predicted"], 0.0) if _finite(p["hi"]) else 0.0 for p in q]
            ax.errorbar([p["D_f"] * 1.05 for p in q], [p["predicted"] for p in q], yerr=[lo, hi], fmt="D", ms=3, color="k", capsize=2, label="prediction (law interval)")  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("labelled training examples D_f")
    ax.set_ylabel(law.get("response_label", resp))
    ax.legend(fontsize=7)
    ax.set_title(f"{data.get('task', '')} / {method}: L = A / (N^α D_f^β) + E", fontsize=10)
    return fig


def finetune_law_rows(law: dict[str, Any]) -> list[dict[str, Any]]:
    """The law's parameters: estimate, bootstrap interval, Gauss-Newton standard error."""
    return [
        {
            "parameter": k,
            "estimate": v["estimate"],
            "95% low": v["lo"],
            "95% high": v["hi"],
            "Gauss-Newton se": v["se_gauss_newton"],
        }
        for k, v in law.get("params", {}).items()
    ]


def _render_study_curve(rep: Report, data: dict[str, Any], name: str, level: int) -> None:
    rep.heading(f"Fine-tuning law across rungs: {data.get('task', name)}", level=level)
    rep.paragraph(
        "Every rung fine-tuned on nested subsets of the training split; per method, the "
        "multiplicative law of Zhang et al. (2024, arXiv 2402.17193, Eq. 1) "
        "L(N, D_f) = A / (N^α · D_f^β) + E fitted across rungs (N: non-embedding "
        "parameters, D_f: labelled examples), and the largest rung predicted by the fit "
        "without it (their held-out check)."
    )
    for method, law in data.get("finetune_law", {}).items():
        rep.heading(
            f"{method}: {law.get('response_label', law.get('response', ''))}", level=level + 1
        )
        if "error" in law:
            rep.paragraph(law["error"], style="warn")
            continue
        rep.figure(
            plot_finetune_law(data, method),
            f"finetune_law_{name}_{method}",
            "The fitted response against labelled examples per rung, with the law at each rung's N.",
        )
        rep.table(finetune_law_rows(law), caption=f"Intervals: {law['interval']}.")
        rep.paragraph(
            f"{law['n_points']} points on {law['n_rungs']} rungs; rmse(log) {law['rmse_log']:.4g}, "
            f"mean |deviation| {law['mad']:.4g} (Zhang et al.'s Δe); optimiser "
            f"{'converged' if law['converged'] else 'NOT converged'}, "
            f"{law['starts_in_best_basin']} starts in the best basin.",
            style="note" if law["converged"] else "warn",
        )
        for w in law.get("warnings", ()):
            rep.paragraph(f"Fit: {w}.", style="warn")
        _render_holdout(rep, law.get("holdout", {}))
    rep.table(
        [
            {
                "rung": e["rung"],
                "N": e["N"],
                "method": m,
                "labels": p["n_labels"],
                f"test {data.get('metric', 'metric')}": p["metric"],
                "test loss": p.get("loss"),
                "seeds": p["seeds"],
            }  # fmt: skip
            for e in data["rungs"]
            for m, r in e["methods"].items()
            for p in r["points"]
        ],
        caption="Every point (mean over seeds).",
    )


def _render_holdout(rep: Report, hold: dict[str, Any]) -> None:
    if "points" not in hold:
        if hold.get("note"):
            rep.paragraph(f"No extrapolation check: {hold['note']}.", style="warn")
        return
    rep.paragraph(
        f"Held out {hold['rung']} (N = {hold['N']:.4g}; the fit saw N ≤ {hold['fit_N_max']:.4g}, "
        f"{hold['n_fit']} points): mean |deviation| {hold['mad']:.4g} (Δh), mean |relative error| "
        f"{100 * hold['mean_abs_rel_error']:.1f}%.",
        style="note",
    )
    rep.table(
        [
            {
                "D_f": p["D_f"],
                "measured": p["actual"],
                "predicted": p["predicted"],
                f"{hold.get('level', 0.95):.0%} low": p["lo"],
                f"{hold.get('level', 0.95):.0%} high": p["hi"],
                "new run low": p["pred_lo"],
                "new run high": p["pred_hi"],
                "rel. error": p["rel_error"],
            }  # fmt: skip
            for p in hold["points"]
        ],
        caption="The largest rung predicted by the law fitted without it (law interval and new-run interval from that fit's bootstrap).",
    )
