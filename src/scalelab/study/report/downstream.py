"""The downstream section of the study report (filled by `scalelab study finetune`)."""

from __future__ import annotations

from scalelab.study.report.html import Report
from scalelab.study.study import Study


def add_downstream_section(rep: Report, study: Study) -> None:
    """Add downstream results if the study has any (``STUDY/downstream/``)."""
    root = study.root / "downstream"
    if not root.is_dir():
        return
    from scalelab.study.report.downstream_plots import render_downstream

    render_downstream(rep, study)
