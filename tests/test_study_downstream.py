"""Downstream scaling on a tiny study: fine-tune every rung, fit, predict the held-out rung;
a tiny label curve; robustness on perturbed test sets."""

from __future__ import annotations

import pytest

from scalelab.cli import main
from scalelab.study.study import Study
from scalelab.utils.io import read_json

FT = ["--task.max-examples", "60", "--epochs", "1", "--max-length", "32", "--batch-size", "8",
      "--precision", "fp32", "--in-process"]  # fmt: skip


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory, tiny_bpe_dataset):
    out = tmp_path_factory.mktemp("study") / "s"
    plan = [
        "plan", "--design", "grid", "--sizes", "2e3,6e3,1.5e4", "--tokens", "2048,4096",
        "--min-tokens", "1024", "--base.dataset", str(tiny_bpe_dataset), "--base.seq-len", "32",
        "--base.eval-tokens", "1024", "--policy.rule", "fixed", "--policy.batch-tokens", "128",
        "--out", str(out),
    ]  # fmt: skip
    assert main(plan) == 0
    assert main(["study", "run", str(out), "--in-process", "--no-progress"]) == 0
    return out


def test_study_finetune_fits_and_predicts_holdout(tiny_study, capsys):
    args = ["study", "finetune", str(tiny_study), "--task", "wiki-topics", "--method", "full", *FT,
            "--perturb", "casing,typos"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "downstream wiki-topics__full, held out holdout0: ladder predicted" in out
    study = Study.load(tiny_study)
    header = (tiny_study / "results.csv").read_text().splitlines()[0]
    assert (
        "wiki-topics__full/test_accuracy" in header
        and "wiki-topics__full/dev_accuracy_std" in header
    )
    res = read_json(tiny_study / "fits" / "summary.json")["downstream"]["wiki-topics__full"]
    assert len(res["points"]) == 7 and res["chance"] == pytest.approx(1 / 11)
    assert {"ladder_estimate", "ladder_lo", "ladder_hi", "actual"} <= set(res["holdout"][0])
    rob = read_json(
        study.root / "downstream" / "wiki-topics__full" / "r00" / "seed0" / "robustness.json"
    )
    assert [r["perturbation"] for r in rob["robustness"]["rows"]] == ["lower", "upper", "typos"]
    html = (tiny_study / "report.html").read_text()
    assert "Downstream" in html and "Robustness" in html
    # A second call finds every run finished and trains nothing.
    before = read_json(
        study.root / "downstream" / "wiki-topics__full" / "r00" / "seed0" / "summary.json"
    )
    assert main(args) == 0
    after = read_json(
        study.root / "downstream" / "wiki-topics__full" / "r00" / "seed0" / "summary.json"
    )
    assert after["wall_time_s"] == before["wall_time_s"]


def test_label_curve(tiny_study, tmp_path, capsys):
    model = tiny_study / "rungs" / "r05"
    out = tmp_path / "lc"
    args = ["labelcurve", str(out), "--model", str(model), "--task", "movie-sentiment",
            "--methods", "full,lora", "--fractions", "0.25,0.5,1", "--min-steps", "4", "--target", "0.6",
            "--task.max-examples", "60", "--epochs", "1", "--max-length", "32", "--batch-size", "8",
            "--in-process"]  # fmt: skip
    assert main(args) == 0
    data = read_json(out / "labelcurve.json")
    assert set(data["methods"]) == {"full", "lora"} and data["metric"] == "accuracy"
    pts = data["methods"]["full"]["points"]
    assert [p["n_labels"] for p in pts] == [
        15,
        30,
        60,
    ]  # nested subsets of the 60 training examples
    assert (out / "report.html").is_file()
    assert "full:" in capsys.readouterr().out


def test_label_curve_needs_three_fractions(tmp_path, capsys):
    assert main(["labelcurve", str(tmp_path / "x"), "--model", str(tmp_path), "--task", "wiki-topics",
                 "--fractions", "0.5,1"]) == 2  # fmt: skip
    assert "at least 3 distinct fractions" in capsys.readouterr().err
