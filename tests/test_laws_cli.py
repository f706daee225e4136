"""`scalelab fit / predict / optimal / plot` end to end on a small CSV."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from scalelab.cli import main
from scalelab.laws import chinchilla_loss, load_fit

TRUE = {"E": 1.8, "A": 400.0, "B": 2000.0, "alpha": 0.34, "beta": 0.37}


@pytest.fixture()
def runs_csv(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "runs.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["model", "params", "tokens", "val_loss"])
        for n in np.geomspace(2e7, 2e9, 6):
            for r in (5, 20, 80):
                loss = chinchilla_loss(n, n * r, TRUE) * np.exp(rng.normal(0, 0.003))
                w.writerow([f"m{n:.0e}", n, n * r, loss])
    return path


def test_fit_predict_optimal_plot(runs_csv, tmp_path, capsys):
    out = tmp_path / "fit.json"
    args = ["fit", str(runs_csv), "--n", "params", "--d", "tokens", "--loss", "val_loss"]
    args += ["--group", "model", "--grid", "small", "--bootstrap", "40", "--seed", "1"]
    assert main(args + ["--compute", "1e20", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "chinchilla fit" in text and "compute-optimal allocation" in text and "wrote" in text
    fit = load_fit(out)
    assert fit.params["alpha"] == pytest.approx(0.34, abs=0.05)
    assert fit.bootstrap is not None and fit.bootstrap.n == 40
    assert json.loads(out.read_text())["table_spec"]["loss"] == "val_loss"

    assert main(["predict", str(out), "--n", "1e9,2e9", "--d", "2e10"]) == 0
    text = capsys.readouterr().out
    assert text.count("N=") == 2 and "new run [" in text

    assert main(["optimal", str(out), "--compute", "1e21,1e22"]) == 0
    text = capsys.readouterr().out
    assert "tokens/param" in text and "N [" in text

    args = ["plot", str(out), "--out", str(tmp_path / "plots"), "--n-label", "non-embedding N"]
    assert main(args) == 0
    assert capsys.readouterr().out.count(".svg") == 3
    for name in ("loss_vs_n.png", "residuals.png", "optimal.png"):
        assert (tmp_path / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        svg = (tmp_path / "plots" / name).with_suffix(".svg").read_text()
        assert "<svg" in svg and "non-embedding N" in svg


def test_other_forms_from_the_cli(runs_csv, tmp_path, capsys):
    assert main(["fit", str(runs_csv), "--n", "params", "--d", "tokens", "--loss", "val_loss", "--form", "kaplan_n"]) == 0  # fmt: skip
    assert "kaplan_n fit" in capsys.readouterr().out
    args = [
        "fit",
        str(runs_csv),
        "--n",
        "params",
        "--d",
        "tokens",
        "--loss",
        "val_loss",
        "--form",
        "custom",
    ]
    args += ["--expression", "E + A/N**alpha + B/D**beta"]
    args += ["--param", "E=1:3,A=10:1e4,alpha=0.1:0.8,B=10:1e4,beta=0.1:0.8"]
    assert main(args) == 0
    assert "custom fit" in capsys.readouterr().out


def test_isoflop_from_the_cli(tmp_path, capsys):
    path = tmp_path / "iso.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["N", "D", "budget", "loss"])
        for c in (1e18, 1e19, 1e20):
            for n in np.geomspace(1e7, 3e9, 9):
                d = c / (6 * n)
                w.writerow([n, d, c, chinchilla_loss(n, d, TRUE)])
    out = tmp_path / "iso.json"
    assert main(["fit", str(path), "--n", "N", "--d", "D", "--form", "isoflop", "--budget", "budget", "--bootstrap", "20", "--out", str(out)]) == 0  # fmt: skip
    text = capsys.readouterr().out
    assert "IsoFLOP" in text and "bootstrap: " in text
    assert main(["optimal", str(out), "--compute", "1e21"]) == 0
    assert "N [" in capsys.readouterr().out  # intervals from the bootstrap
    assert main(["plot", str(out), "--out", str(tmp_path / "p")]) == 0
    assert (tmp_path / "p" / "isoflop.png").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--n", "parms", "--d", "tokens", "--loss", "val_loss"], "no column 'parms' for N; did you mean 'params'?"),
        (["--n", "params", "--d", "tokens"], "no column 'loss' for loss"),
        (["--n", "params", "--d", "tokens", "--loss", "val_loss", "--form", "custom"], "--form custom needs --expression"),
        (["--n", "params", "--d", "tokens", "--loss", "val_loss", "--form", "custom", "--expression", "A/N^a", "--param", "A=1:2,a=0:1"], "write \\*\\*"),
        (["--n", "params", "--d", "tokens", "--loss", "val_loss", "--delta", "0"], "--delta must be positive"),
    ],
)  # fmt: skip
def test_bad_input_exits_2_with_one_line(runs_csv, capsys, argv, message):
    assert main(["fit", str(runs_csv), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("scalelab: error:") and "\n" not in err
    assert __import__("re").search(message, err), err


def test_predict_on_something_that_is_not_a_fit(tmp_path, capsys, monkeypatch):
    import scalelab.cli.finetune as ft_cli

    other = tmp_path / "run_dir"
    other.mkdir()
    # A file that is neither a fit JSON nor a run directory: a one-line error naming it.
    junk = tmp_path / "junk.txt"
    junk.write_text("not json")
    assert main(["predict", str(junk), "--n", "1e9"]) == 2
    err = capsys.readouterr().err
    assert f"{junk} is neither a fit JSON" in err and err.count("\n") == 1
    # A directory is the old spelling of `scalelab infer`: it goes there, with a note.
    seen = {}
    monkeypatch.setattr(
        ft_cli, "run_infer", lambda args: seen.setdefault("path", args.run_dir) and 0
    )
    assert main(["predict", str(other), "--input", "-"]) == 0
    assert seen["path"] == other
    assert "deprecated; use `scalelab infer RUN_DIR`" in capsys.readouterr().err
    assert main(["optimal", str(tmp_path / "missing.json"), "--compute", "1e20"]) == 2
    assert "fit file not found" in capsys.readouterr().err


def test_fit_options_from_a_config_file(runs_csv, tmp_path, capsys):
    # The table is the positional argument; everything else may come from --config.
    cfg = tmp_path / "fit.yaml"
    cfg.write_text("n: params\nd: tokens\nloss: val_loss\ngrid: small\nflops_convention: 6nd\n")
    out = tmp_path / "fit.json"
    assert main(["fit", str(runs_csv), "--config", str(cfg), "--out", str(out)]) == 0
    assert load_fit(out).params["alpha"] == pytest.approx(0.34, abs=0.05)
    assert json.loads(out.read_text())["table_spec"]["flops_convention"] == "6nd"
    capsys.readouterr()
    cfg.write_bytes(bytes(range(256)))  # not a text file: one line, exit 2
    assert main(["fit", str(runs_csv), "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "not a text file" in err and err.count("\n") == 1
