from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from scalelab.study.report.html import Report, fmt  # noqa: E402


def test_report_is_self_contained(tmp_path):
    r = Report("Study <x>", subtitle="demo")
    r.heading("Rungs")
    r.paragraph("a & b", style="note")
    r.table([{"N": 12345, "loss": 3.14159265, "status": None}], caption="rungs")
    fig, ax = plt.subplots()
    ax.plot([1, 2], [3, 4])
    r.figure(fig, "curve", "loss curve")
    html_path, md_path = r.write(tmp_path)
    html = html_path.read_text()
    assert "data:image/png;base64," in html and "<script" not in html and "http" not in html
    assert (
        "Study &lt;x&gt;" in html and "a &amp; b" in html and "12,345" in html and "3.142" in html
    )
    md = md_path.read_text()
    assert "![loss curve](figures/curve.png)" in md and "| N | loss | status |" in md
    assert (tmp_path / "figures" / "curve.png").read_bytes()[:4] == b"\x89PNG"


def test_fmt():
    assert fmt(1.5e21) == "1.500e+21" and fmt(0.5) == "0.5" and fmt(float("nan")) == "–"
    assert fmt(True) == "yes" and fmt(None) == "–" and fmt(1000) == "1,000"
