"""Label curves across a study's rungs and the fine-tuning law of Zhang et al. (2024) fitted
over them, by ``labelcurve --study`` and by the study's downstream step (a tiny study)."""

from __future__ import annotations

import pytest

from scalelab.cli import main
from scalelab.laws.fits import LawFit
from scalelab.laws.results import load_fit
from scalelab.study.study import Study
from scalelab.utils.io import read_json

CURVE = ["--task", "movie-sentiment", "--methods", "full", "--fractions", "0.25,0.5,1",
         "--min-steps", "4", "--finetune.task.max-examples", "60", "--finetune.epochs", "1",
         "--finetune.max-length", "32", "--finetune.batch-size", "8", "--law-bootstrap", "100",
         "--in-process"]  # fmt: skip


@pytest.fixture(scope="module")
def small_study(tmp_path_factory, tiny_bpe_dataset):
    """Three tiny rungs (no holdout rung): the smallest ladder a law across sizes allows."""
    out = tmp_path_factory.mktemp("study") / "s"
    plan = [
        "plan", "--design", "grid", "--sizes", "2e3,6e3,1.5e4", "--tokens", "2048",
        "--min-tokens", "1024", "--holdout", "0", "--base.dataset", str(tiny_bpe_dataset),
        "--base.seq-len", "32", "--base.eval-tokens", "1024", "--policy.rule", "fixed",
        "--policy.batch-tokens", "128", "--out", str(out),
    ]  # fmt: skip
    assert main(plan) == 0
    assert main(["study", "run", str(out), "--in-process", "--no-progress"]) == 0
    return out


def test_label_curve_across_rungs_fits_the_finetune_law(small_study, capsys):
    out = small_study / "downstream" / "labelcurve-sentiment"
    assert main(["labelcurve", str(out), "--study", str(small_study), *CURVE]) == 0
    text = capsys.readouterr().out
    assert "fine-tuning law (Zhang et al. 2024), full, test cross-entropy" in text
    assert "held out r02" in text and "saved: finetune_law__full.json" in text
    data = read_json(out / "labelcurve.json")
    assert [e["rung"] for e in data["rungs"]] == ["r00", "r01", "r02"]
    pts = data["rungs"][0]["methods"]["full"]["points"]
    assert [p["n_labels"] for p in pts] == [15, 30, 60] and all(p["loss"] > 0 for p in pts)
    law = data["finetune_law"]["full"]
    assert law["response"] == "loss" and law["n_points"] == 9 and law["n_rungs"] == 3
    assert set(law["params"]) == {"A", "alpha", "beta", "E"}
    assert "percentile bootstrap over points" in law["interval"]
    assert law["holdout"]["rung"] == "r02" and len(law["holdout"]["points"]) == 3
    # the law on disk: a LawFit that `scalelab predict` reads (D = labelled examples)
    fit = load_fit(out / "finetune_law__full.json")
    assert isinstance(fit, LawFit) and fit.form == "finetune_law" and fit.bootstrap is not None
    assert fit.params["alpha"] == pytest.approx(law["params"]["alpha"]["estimate"])
    assert main(["predict", str(out / "finetune_law__full.json"), "--n", "3e4", "--d", "60"]) == 0
    assert "finetune_law" in capsys.readouterr().out
    html = (out / "report.html").read_text()
    assert "Fine-tuning law across rungs" in html and "Held out r02" in html

    # The study's downstream step refits every curve across rungs, into STUDY/fits/.
    from scalelab.study.downstream import describe_label_laws, fit_downstream

    study = Study.load(small_study)
    res = fit_downstream(study, n_boot=50)
    again = res["finetune_law"]["labelcurve-sentiment/full"]
    assert again["params"] == law["params"]  # the curve's own response and resamples
    assert (small_study / "fits" / "finetune_law__labelcurve-sentiment__full.json").is_file()
    assert any("labelcurve-sentiment/full" in line for line in describe_label_laws(res))
    assert main(["report", str(small_study)]) == 0
    assert "Fine-tuning law across rungs" in (small_study / "report.html").read_text()

    # The error rate instead of the loss: no training, a refit of the same runs.
    assert main(["labelcurve", str(out), "--study", str(small_study), *CURVE,
                 "--law-response", "error"]) == 0  # fmt: skip
    law = read_json(out / "labelcurve.json")["finetune_law"]["full"]
    assert law["response"] == "error" and "1 - F1 or 1 - accuracy" in law["response_label"]
    assert "label curve:" not in capsys.readouterr().err  # nothing was fine-tuned again

    # One rung: too few points, a one-line message and no crash.
    assert (
        main(["labelcurve", str(out), "--study", str(small_study), *CURVE, "--rungs", "r00"]) == 0
    )
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("fine-tuning law")]
    assert len(lines) == 1 and "not fitted: " in lines[0] and "1 model size" in lines[0]
    assert "error" in read_json(out / "labelcurve.json")["finetune_law"]["full"]
    assert not (out / "finetune_law__full.json").exists()  # no stale law from 3 rungs


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--finetune.model", "somewhere"], "not both"),
        (["--rungs", "r09"], "no rung r09"),
    ],
)
def test_label_curve_study_bad_input_is_one_line(small_study, capsys, extra, message):
    assert main(["labelcurve", "x", "--study", str(small_study), *CURVE, *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_rungs_need_a_study(tmp_path, capsys):
    assert main(["labelcurve", str(tmp_path / "x"), "--model", str(tmp_path), "--task",
                 "wiki-topics", "--rungs", "r00"]) == 2  # fmt: skip
    assert "--rungs picks rungs of a --study" in capsys.readouterr().err


def test_study_step_reports_an_edited_curve_in_one_line(small_study):
    from scalelab.study.downstream import describe_label_laws, fit_label_laws

    bad = small_study / "downstream" / "labelcurve-edited"
    bad.mkdir(parents=True)
    (bad / "labelcurve.json").write_text('{"rungs": [{"methods": {"full": {"points": [{}]}}}]}')
    try:
        laws = fit_label_laws(Study.load(small_study))
    finally:
        (bad / "labelcurve.json").unlink()
        bad.rmdir()
    assert "is malformed" in laws["labelcurve-edited"]["error"]
    lines = [ln for ln in describe_label_laws({"finetune_law": laws}) if "edited" in ln]
    assert len(lines) == 1 and "not fitted" in lines[0]
