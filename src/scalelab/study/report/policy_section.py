"""The report's learning-rate policy: rungs at a clip boundary, and the sweep it was fitted to."""

from __future__ import annotations

from pathlib import Path

from scalelab.study.report.html import Report
from scalelab.study.study import Study


def policy_section(rep: Report, study: Study) -> None:
    """Rungs whose learning rate sits at a clip boundary of the policy (a warning), and the
    learning-rate sweep the policy was fitted to, when the study records one
    (the plan's ``sweep``)."""
    from scalelab.study.report.sweep_plots import clip_flags, plot_sweep

    points = [r for r in study.rungs if r.role != "trunk"]
    flags = clip_flags(points, study.plan.policy)
    if flags:
        shown = "; ".join(flags[:4]) + ("; ..." if len(flags) > 4 else "")
        rep.paragraph(
            f"{len(flags)} of {len(points)} rungs train at a clip boundary of the "
            f"learning-rate policy ({study.plan.policy.rule}): {shown}. Their rate is the "
            "range's, not the rule's; `scalelab study sweep` measures the optimum.",
            style="warn",
        )
    where = sweep_file(study.plan.sweep)
    if where is None:
        return
    from scalelab.study.sweep import SweepResult

    result = SweepResult.load(Path(where))
    rep.heading("Learning-rate sweep")
    rep.figure(
        plot_sweep(result, points, study.plan.policy),
        "sweep",
        f"The sweep the policy was fitted to ({study.plan.sweep}): loss against learning rate per size "
        "(parabola vertices; hollow: not used), and lr_opt against N with this study's rungs.",
    )


def sweep_file(where: str) -> Path | None:
    """The sweep.json a plan names (``builtin:NAME``: shipped with scalelab), if it exists."""
    if where.startswith("builtin:"):
        path = (
            Path(__file__).resolve().parents[1] / f"{where.removeprefix('builtin:')}_lr_sweep.json"
        )
    else:
        path = Path(where)
    return path if where and path.is_file() else None
