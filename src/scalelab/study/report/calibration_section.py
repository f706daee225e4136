"""The report's calibration section: rolling-origin extrapolation, cut by cut."""

from __future__ import annotations

import math
from typing import Any

from scalelab.study.report.html import Report


def calibration_section(rep: Report, cal: dict[str, Any]) -> None:
    """Rolling-origin calibration: each cut's law predicting every larger compute level."""
    rep.heading("Calibration: rolling-origin extrapolation")
    cov = cal.get("coverage")
    rep.paragraph(
        "Fit on the smallest compute levels, predict each larger one, for every cut. The "
        f"model-form error, {cal['form_sd_per_decade']:.4f} in log-loss per decade of "
        "extrapolation, is part of every prediction interval in this report, with the "
        "bootstrap over compute levels and the run-to-run noise "
        f"({cal['noise_sd']:.4f})."
        + (
            f" Nested 95% intervals (noise and form error from earlier cuts only) covered "
            f"{cov:.0%} of the rolled-forward rungs."
            if isinstance(cov, float) and math.isfinite(cov)
            else ""
        )
    )
    rep.table(
        [
            {
                "levels fitted": p["train_levels"],
                "cut C": p["cut"],
                "predicted level C": p["level"],
                "decades beyond": p["decades"],
                "rungs": p["runs"],
                "mean error %": 100 * p["mean_error"],
                "mean |error| %": 100 * p["mean_abs_error"],
                "covered %": (
                    100 * p["covered"]
                    if isinstance(p["covered"], float) and math.isfinite(p["covered"])
                    else None
                ),
            }
            for p in cal["points"]
        ]
    )
