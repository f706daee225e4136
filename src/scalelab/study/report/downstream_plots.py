"""Downstream section of the study report: metric per rung with the fitted curves and the
held-out prediction, the ladder's sigmoid, robustness, and label-efficiency curves."""

from __future__ import annotations

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
        data = read_json(path)
        rep.heading(f"Label efficiency: {data.get('task', path.parent.name)}", level=3)
        rep.figure(
            plot_label_curve(data),
            f"labelcurve_{Path(path).parent.name}",
            "Metric against the number of labelled examples, per method, with power-law fits.",
        )
        rep.table(
            label_curve_rows(data),
            caption="Power law of the error against labels; labels needed to reach the target metric.",
        )
