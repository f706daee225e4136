"""Downstream scaling on a tiny study: fine-tune every rung, fit, predict the held-out rung;
a tiny label curve; robustness on perturbed test sets."""

from __future__ import annotations

import pytest

from scalelab.cli import main
from scalelab.finetune.finetune import FinetuneConfig
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
    assert "wiki-topics__full" not in header
    tidy = (tiny_study / "downstream.csv").read_text().splitlines()
    assert tidy[0] == "rung,N_non_embedding,task,method,split,metric,value,std,n_seeds"
    assert len(tidy) == 1 + 7 * 2 and ",wiki-topics,full,dev,accuracy," in tidy[1]
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


def test_label_curve(tiny_study, tmp_path, capsys, monkeypatch):
    import scalelab.cli

    def no_cli(argv):  # the in-process executor calls the stage, never the CLI
        raise AssertionError(f"cli.main called in-process with {argv}")

    monkeypatch.setattr(scalelab.cli, "main", no_cli)
    model = tiny_study / "rungs" / "r05"
    out = tmp_path / "lc"
    # The 0.2 spellings: the fine-tuning settings nest under --finetune.
    args = ["labelcurve", str(out), "--finetune.model", str(model), "--task", "movie-sentiment",
            "--methods", "full,lora", "--fractions", "0.25,0.5,1", "--min-steps", "4", "--target", "0.6",
            "--finetune.task.max-examples", "60", "--finetune.epochs", "1", "--finetune.max-length", "32",
            "--finetune.batch-size", "8", "--finetune.method.lora.r", "4", "--in-process"]  # fmt: skip
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
    run = out / "lora" / "frac0.5" / "seed0"
    cfg = FinetuneConfig.load(run / "config.yaml")
    assert cfg.method.method == "lora" and cfg.method.lora.r == 4 and cfg.train_fraction == 0.5
    assert cfg.optim.lr is None  # by method: the label curve keeps the stage's defaults
    summary = read_json(run / "summary.json")
    assert summary["lr"] == 5e-4 and summary["tokens"] > 0 and summary["tokens_per_s"] > 0


def test_label_curve_needs_three_fractions(tmp_path, capsys):
    assert main(["labelcurve", str(tmp_path / "x"), "--model", str(tmp_path), "--task", "wiki-topics",
                 "--fractions", "0.5,1"]) == 2  # fmt: skip
    assert "at least 3 distinct fractions" in capsys.readouterr().err
