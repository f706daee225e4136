"""The study's law forms: the Kaplan et al. 2020 law with an N x D interaction beside the
Chinchilla law, ranked by rolling-origin extrapolation on the fitted rungs only."""

from __future__ import annotations

import pytest
from tests.test_study_report_answer import _study, planted_study

from scalelab.study.fit import StudyFitConfig, describe_fit, fit_study
from scalelab.study.plan import PlanConfig
from scalelab.study.study import Study
from scalelab.utils.io import read_json

KAPLAN = {"N_c": 3e8, "D_c": 4e9, "alpha_N": 0.09, "alpha_D": 0.15}


def _kaplan(n: float, d: float) -> float:
    """Kaplan et al. 2020, Eq. 1.5."""
    p = KAPLAN
    return ((p["N_c"] / n) ** (p["alpha_N"] / p["alpha_D"]) + p["D_c"] / d) ** p["alpha_D"]


def _kaplan_study(root, seed: int = 0) -> Study:
    """A grid of 5 sizes x 4 token counts (and one held-out rung at the next size up)
    whose losses follow :data:`KAPLAN` with 0.3% log-normal noise."""
    plan = PlanConfig(
        design="grid", sizes=(5e3, 1.5e4, 4.5e4, 1.35e5, 4e5), tokens=(3e5, 1e6, 3e6, 1e7),
        holdout_n=1.2e6, holdout_d=1e7, flops_convention="6n_kaplan", min_tokens=1,
    )  # fmt: skip
    return planted_study(root, plan, _kaplan, 0.003, seed)


def test_an_interaction_law_is_preferred_and_recovered(tmp_path):
    study = _kaplan_study(tmp_path / "k")
    summary = fit_study(study, StudyFitConfig(bootstrap=100, grid="small"))
    kap = summary["kaplan_nd"]
    truth = KAPLAN["alpha_D"] / (KAPLAN["alpha_N"] + KAPLAN["alpha_D"])
    assert kap["a"] == pytest.approx(truth, abs=0.03)
    lo, hi = kap["a_interval"]
    assert lo <= truth <= hi and hi - lo < 0.2
    assert summary["preferred"] == "kaplan_nd"
    scores = {s["form"]: s["rolling_mape"] for s in summary["compare"]["scores"]}
    assert scores["kaplan_nd"] < scores["chinchilla"]
    (held,) = kap["holdout"]
    assert abs(held["rel_error"]) < 0.01 and held["pred_lo"] <= held["actual"] <= held["pred_hi"]
    assert (study.root / "fits" / "kaplan_nd.json").is_file()
    text = describe_fit(summary, study)
    assert "Kaplan L(N, D)" in text and "preferred: kaplan_nd" in text


def test_an_additive_law_is_preferred_when_it_holds(tmp_path):
    study = _study(tmp_path / "c", noise=0.002)  # planted Chinchilla law (report tests)
    summary = fit_study(study, StudyFitConfig(bootstrap=0, grid="small"))
    assert summary["preferred"] == "chinchilla"
    assert read_json(study.root / "fits" / "summary.json")["preferred"] == "chinchilla"
