"""Zero-shot section of the study report (filled by ``scalelab study eval``).

Per task: a table of every scored rung (accuracy, length-normalised accuracy and the gold
answer's bits per byte, each with its standard error), and a figure of accuracy and bpb
against N with, when the downstream ladder was fitted (Bhagia et al. 2024), its
predictions at each rung's (N, D) and the sigmoid from bpb to accuracy.
"""

from __future__ import annotations

from typing import Any

from scalelab.study.report.html import Report
from scalelab.study.study import Study


def _figure(ncols: int, width: float = 4.6, height: float = 3.8):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height), layout="constrained")
    return fig, [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]


def _metric(res: dict[str, Any], name: str) -> tuple[float, float]:
    m = res["metrics"].get(name) or {}
    value, se = m.get("value"), m.get("stderr")
    return (
        float(value) if value is not None else float("nan"),
        float(se) if se is not None else 0.0,
    )


def _table_rows(per_rung: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for res in per_rung:
        row: dict[str, Any] = {
            "rung": res["rung"],
            "role": res.get("role"),
            "N": res["N"],
            "D": res["D"],
        }
        for name in ("acc", "acc_norm", "bpb"):
            value, se = _metric(res, name)
            row[name] = value
            row[f"{name} se"] = se
        rows.append(row)
    return rows


def _errorbars(ax: Any, per_rung: list[dict[str, Any]], name: str, **kw: Any) -> None:
    for role, color, marker in (("fit", kw.pop("color", "C0"), "o"), ("holdout", "k", "*")):
        sel = [r for r in per_rung if r.get("role", "fit") == role]
        if not sel:
            continue
        vals = [_metric(r, name) for r in sel]
        ax.errorbar(
            [r["N"] for r in sel], [v for v, _ in vals], yerr=[s for _, s in vals], fmt=marker,
            color=color, ms=5 if marker == "o" else 9, capsize=2,
            label=f"{kw.get('label', name)} ({'held out' if role == 'holdout' else 'rungs'})",
        )  # fmt: skip


def plot_task(key: str, per_rung: list[dict[str, Any]], info: dict[str, Any], fit: Any) -> Any:
    """Accuracy and bpb against N (and accuracy against bpb when the ladder is fitted)."""
    import numpy as np

    fig, axes = _figure(3 if fit is not None else 2)
    acc_ax, bpb_ax = axes[0], axes[1]
    _errorbars(acc_ax, per_rung, "acc", color="C0", label="acc")
    _errorbars(acc_ax, per_rung, "acc_norm", color="C2", label="acc_norm")
    _errorbars(bpb_ax, per_rung, "bpb", color="C1", label="gold bpb")
    chance = info.get("chance", per_rung[0].get("chance"))
    if chance:
        acc_ax.axhline(chance, color="gray", lw=0.8, ls=":", label="chance")
    if fit is not None:
        n = np.array([r["N"] for r in per_rung], float)
        d = np.array([r["D"] for r in per_rung], float)
        acc_ax.scatter(
            n, fit.predict(n, d), marker="x", color="C3", zorder=4, label="ladder at (N, D)"
        )
        bpb_ax.scatter(
            n, fit.predict_loss(n, d), marker="x", color="C3", zorder=4, label="step 1 at (N, D)"
        )
        ax = axes[2]
        bpb = np.array([_metric(r, "bpb")[0] for r in per_rung])
        acc = np.array([_metric(r, "acc")[0] for r in per_rung])
        ax.scatter(bpb, acc, color="C0", s=18, label="rungs")
        pad = 0.1 * max(float(np.ptp(bpb)), 0.05)
        grid = np.linspace(float(bpb.min()) - pad, float(bpb.max()) + pad, 100)
        ax.plot(grid, fit.sigmoid.predict(grid), color="C3", lw=1.0, label="step 2 sigmoid")
        ax.set_xlabel("gold bits per byte")
        ax.set_ylabel("accuracy")
        ax.legend(fontsize=7)
    for ax, label in ((acc_ax, "accuracy"), (bpb_ax, "gold bits per byte")):
        ax.set_xscale("log")
        ax.set_xlabel("N (non-embedding parameters)")
        ax.set_ylabel(label)
        ax.legend(fontsize=7)
    fig.suptitle(f"zero-shot {key}", fontsize=10)
    return fig


def _ladder_text(key: str, info: dict[str, Any]) -> str:
    if "error" in info:
        return f"Ladder not fitted for {key}: {info['error']}."
    p = info.get("params", {})
    text = (
        f"Ladder (Bhagia et al. 2024) fitted on {info.get('n_fit')} rungs: step 1, gold bpb = "
        f"E + A/N^alpha + B/D^beta (alpha {p.get('loss.alpha', float('nan')):.3g}, beta "
        f"{p.get('loss.beta', float('nan')):.3g}); step 2, accuracy = a / (1 + exp(-k (bpb - L0))) + "
        f"chance (a {p.get('sigmoid.a', float('nan')):.3g}, k {p.get('sigmoid.k', float('nan')):.3g}, "
        f"L0 {p.get('sigmoid.L0', float('nan')):.3g})."
    )
    for h in info.get("holdout", []):
        text += (
            f" Held out {h['rung']}: accuracy {h['acc']:.4f}, predicted {h['predicted_acc']:.4f}"
            f" (error {h['predicted_acc'] - h['acc']:+.4f})."
        )
    return text


def render_zeroshot(rep: Report, study: Study) -> None:
    """Add the zero-shot section when the study has results (``STUDY/zeroshot/``)."""
    from scalelab.study.zeroshot import ZEROSHOT, load_results, load_summary

    results = load_results(study)
    if not results:
        return
    from scalelab.laws import load_fit

    summary = load_summary(study).get("tasks", {})
    rep.heading("Zero-shot evaluation")
    rep.paragraph(
        "Each rung's final model scored without fine-tuning: every choice by the summed "
        "log-likelihood of its tokens after the context. acc: the most likely choice is right; "
        "acc_norm: the same with log-likelihoods divided by each choice's length in characters; "
        "bpb: bits per UTF-8 byte of the gold answer. Standard errors: binomial for the "
        "accuracies, of the mean for bpb (`scalelab study eval`)."
    )
    for key, per_rung in results.items():
        info = summary.get(key, {})
        ladder = study.root / ZEROSHOT / f"ladder_{key}.json"
        fit = load_fit(ladder) if "error" not in info and ladder.is_file() else None
        rep.heading(
            f"{key} ({per_rung[0]['n']} examples, chance {per_rung[0]['chance']:.3f})", level=3
        )
        for note in per_rung[0].get("notes") or []:
            rep.paragraph(note, style="note")
        rep.table(_table_rows(per_rung), caption=f"Zero-shot {key} per rung.")
        rep.figure(
            plot_task(key, per_rung, info, fit),
            f"zeroshot_{key}",
            f"Zero-shot {key}: accuracy and gold bits per byte against N"
            + (", with the ladder's predictions and its sigmoid." if fit is not None else "."),
        )
        if info:
            rep.paragraph(_ladder_text(key, info), style=None if fit is not None else "warn")
            for w in info.get("warnings", ()):
                rep.paragraph(f"Ladder for {key}: {w}.", style="warn")
