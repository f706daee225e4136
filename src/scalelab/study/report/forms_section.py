"""The report's comparison of law forms: additive (Chinchilla) against the Kaplan et al.
2020 law with an N x D interaction, ranked by rolling-origin extrapolation on the fitted
rungs (``scalelab.study.forms_fit``), and the interaction law's own held-out check."""

from __future__ import annotations

from typing import Any

from scalelab.study.report.html import Report


def forms_headline(rep: Report, fits: dict[str, Any]) -> None:
    """One call-out under the headline: which form extrapolates better on the fitted rungs
    and what the interaction law predicted for each held-out rung."""
    from scalelab.study.forms_fit import INTERACTION

    kap = fits.get(INTERACTION) or {}
    scores = (fits.get("compare") or {}).get("scores") or []
    if not kap or "error" in kap or not scores:
        return
    ranked = ", ".join(f"{s['form']} {100 * s['rolling_mape']:.2f}%" for s in scores)
    iv = kap.get("a_interval")
    a = f"{kap['a']:.3f}" + (f" [{iv[0]:.3f}, {iv[1]:.3f}]" if iv else "")
    checks = "; ".join(
        f"held-out {h['rung']} predicted {h['estimate']:.4f}"
        + (f" ({h['pred_lo']:.4f}–{h['pred_hi']:.4f})" if "pred_lo" in h else "")
        + f", measured {h['actual']:.4f}: error {100 * h['rel_error']:+.2f}%"
        for h in kap.get("holdout", [])
    )
    rep.paragraph(
        f"Preferred law: {fits.get('preferred')}. Rolling-origin extrapolation on the fitted "
        f"rungs only (fit on the smallest compute levels, predict each larger one; mean "
        f"|error|): {ranked}. The Kaplan et al. 2020 law L = [(N_c/N)^(α_N/α_D) + "
        f"D_c/D]^α_D lets the gain from N grow with D, which the additive law cannot; its "
        f"compute-optimal N ∝ C^a with a = α_D/(α_N+α_D) = {a}"
        + (f"; {checks}." if checks else "."),
        style="note",
    )
