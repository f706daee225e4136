"""A study's tables without training: results.csv (file names, in_fit), curves.csv,
downstream.csv, the data dictionary, the notebook helpers.

The rungs' run directories are written the way the trainer writes them (summary.json,
metrics.jsonl through scalelab.utils.io), with losses from a known law."""

from __future__ import annotations

import csv
import math
import statistics
import sys

import pytest

from scalelab.cli import main
from scalelab.study.plan import PlanConfig, plan_rungs
from scalelab.study.study import (
    CURVE_COLUMNS,
    DATA_DICTIONARY,
    DOWNSTREAM_COLUMNS,
    FILE_NAMES,
    RESULT_COLUMNS,
    Study,
    data_dictionary_markdown,
    documented,
)
from scalelab.utils.io import append_jsonl, atomic_write_json, read_json, read_jsonl

SOURCES = ("shakespeare", "wikipedia")
PENDING, FAILED = "c0-n0", "c1-n0"
DOWNSTREAM = {"c2-n2": [(0.61, 0.58), (0.65, 0.60), (0.70, 0.66)], "c2-n3": [(0.72, 0.69)]}


def _law(n: float, d: float) -> float:
    return 2.0 + 60 / n**0.3 + 90 / d**0.3


def _fake_rung(study: Study, rung, status: str) -> None:
    """summary.json and metrics.jsonl as the pretraining stage leaves them."""
    run = study.rung_dir(rung)
    run.mkdir(parents=True)
    final = _law(rung.N, rung.tokens)
    evals = []
    for i, frac in enumerate((0.25, 0.5, 1.0)):
        step = round(frac * rung.tokens / rung.batch_tokens)
        tokens = step * rung.batch_tokens
        append_jsonl(
            run / "metrics.jsonl", {"type": "train", "step": step, "tokens": tokens, "loss": 9.0}
        )
        loss = final if frac == 1.0 else final * (1 + 0.5 / (i + 1))
        ev = {"type": "eval", "step": step, "tokens": tokens, "val_loss": loss}
        ev.update({f"val_loss/{s}": loss + 0.1 * k for k, s in enumerate(SOURCES)})
        append_jsonl(run / "metrics.jsonl", ev)
        evals.append(ev)
        if i == 0:  # a diverged evaluation (NaN, which the log writes as null): not a point
            append_jsonl(run / "metrics.jsonl", {**ev, "val_loss": math.nan})
    tokens = evals[-1]["tokens"]
    summary = {
        "status": status, "step": evals[-1]["step"], "total_steps": evals[-1]["step"],
        "tokens": tokens, "flops": {k: v / rung.tokens * tokens for k, v in rung.flops.items()},
        "wall_time_s": 1.5, "tokens_per_s": tokens / 1.5, "final_val_loss": final,
        "best_val_loss": final, "last_eval": {k: v for k, v in evals[-1].items() if k.startswith("val_loss")},
        "shape": rung.shape, "params": rung.params, "N": rung.N,
    }  # fmt: skip
    atomic_write_json(run / "summary.json", summary)


def _fake_finetune(study: Study) -> None:
    for rid, seeds in DOWNSTREAM.items():
        for k, (dev, test) in enumerate(seeds):
            d = study.root / "downstream" / "wiki-topics__lora" / rid / f"seed{k}"
            d.mkdir(parents=True)
            atomic_write_json(
                d / "summary.json",
                {"status": "completed", "dev": {"accuracy": dev}, "test": {"accuracy": test}},
            )


def _make_study(root) -> Study:
    plan = PlanConfig(
        design="isoflop", budget_flops=1e13, n_budgets=3, sizes_per_budget=4, min_tokens=1,
        flops_convention="6n_kaplan",
    )  # fmt: skip
    plan = plan.replace(base=plan.base.replace(dataset=root / "no-dataset"))
    root.mkdir(parents=True)
    study = Study.create(root, plan, plan_rungs(plan, vocab_size=512), {"vocab_size": 512})
    for rung in study.rungs:
        if rung.id != PENDING:
            _fake_rung(study, rung, "failed" if rung.id == FAILED else "completed")
    _fake_finetune(study)
    return study


def _read(path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


def _expected_in_fit(study: Study) -> set[str]:
    """What study.fit's Approach 3 uses with ``--frontier-band 0.05`` (:data:`FIT`; the
    default since 0.3.0 is every rung): completed fit rungs within 5% of their level's best."""
    done = [
        (r.id, r.budget, _law(r.N, r.tokens))
        for r in study.rungs
        if r.role == "fit" and r.id not in (PENDING, FAILED)
    ]
    best = {b: min(loss for _, bb, loss in done if bb == b) for _, b, _ in done}
    return {rid for rid, b, loss in done if loss <= 1.05 * best[b]}


FIT = ["--bootstrap", "0", "--grid", "small", "--frontier-band", "0.05"]


def _no_report(mp: pytest.MonkeyPatch) -> list[Study]:
    """Skip rendering the report (its plots take seconds; tests/test_study_report_html.py
    and the end-to-end study cover it); returns the studies it was asked for."""
    calls: list[Study] = []

    def build_report(study):
        calls.append(study)
        return study.root / "report.html", study.root / "report.md"

    mp.setattr("scalelab.study.report.study_report.build_report", build_report)
    return calls


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A study fitted with ``scalelab study fit``."""
    root = tmp_path_factory.mktemp("study") / "s"
    study = _make_study(root)
    with pytest.MonkeyPatch.context() as mp:
        calls = _no_report(mp)
        assert main(["study", "fit", str(root), *FIT]) == 0
    assert len(calls) == 1
    return study


def test_results_csv_header_and_values(fitted):
    header, rows = _read(fitted.root / "results.csv")
    assert header == RESULT_COLUMNS + [f"val_loss/{s}" for s in SOURCES]
    assert "curve" not in header and not any("__" in c for c in header)
    by_id = {r["rung"]: r for r in rows}
    assert list(by_id) == [r.id for r in fitted.rungs]
    for rung in fitted.rungs:
        row = by_id[rung.id]
        assert int(row["N_non_embedding"]) == rung.N == rung.params["non_embedding"]
        assert int(row["N_total"]) == rung.params["total"]
        assert row["budget_convention"] == "6n_kaplan"
        assert float(row["budget_flops"]) == pytest.approx(rung.budget)
        assert row["role"] == rung.role
    done = by_id["c2-n2"]
    assert done["status"] == "completed"
    assert float(done["final_val_loss"]) == pytest.approx(_law(124704, 1720320), rel=1e-12)
    assert float(done["val_loss/wikipedia"]) == pytest.approx(float(done["final_val_loss"]) + 0.1)
    assert by_id[PENDING]["status"] == "pending" and by_id[PENDING]["final_val_loss"] == ""
    assert by_id[FAILED]["status"] == "failed"
    # In memory, the short keys stay (the fits and the report read them).
    mem = {r["rung"]: r for r in fitted.result_rows()}
    assert mem["c2-n2"]["N"] == int(done["N_non_embedding"]) and "curve" in mem["c2-n2"]
    assert mem["c2-n2"]["wiki-topics__lora/test_accuracy"] == pytest.approx(0.6133333333)
    assert set(FILE_NAMES.values()) <= set(header) and not set(FILE_NAMES) & set(header)


def test_in_fit_marks_exactly_the_rungs_of_the_fit(fitted):
    from scalelab.laws import fit_chinchilla, load_fit, load_table, small_grid

    _, rows = _read(fitted.root / "results.csv")
    marked = {r["rung"] for r in rows if r["in_fit"] == "true"}
    assert {r["in_fit"] for r in rows} == {"true", "false"}
    expected = _expected_in_fit(fitted)
    assert marked == expected
    n_fit_role = sum(r.role == "fit" for r in fitted.rungs)
    assert 6 <= len(expected) < n_fit_role - 2  # the band left completed rungs out
    summary = read_json(fitted.root / "fits" / "summary.json")
    assert set(summary["chinchilla"]["rungs"]) == marked and summary["n_fit"] == len(marked)
    # The saved law is the law of exactly these rows of results.csv.
    used = [r for r in rows if r["in_fit"] == "true"]
    table = load_table(
        {"N": [float(r["N_non_embedding"]) for r in used], "D": [float(r["D"]) for r in used],
         "loss": [float(r["final_val_loss"]) for r in used]},
        n="N", d="D", loss="loss",
    )  # fmt: skip
    refit = fit_chinchilla(table, grid=small_grid())
    saved = load_fit(fitted.root / "fits" / "chinchilla.json")
    for k, v in saved.params.items():
        assert refit.params[k] == pytest.approx(v, rel=1e-6)


def test_curves_csv_holds_the_evaluations(fitted):
    header, rows = _read(fitted.root / "curves.csv")
    assert header == CURVE_COLUMNS + [f"val_loss/{s}" for s in SOURCES]
    expected = []
    for rung in fitted.rungs:
        for r in read_jsonl(fitted.rung_dir(rung) / "metrics.jsonl"):
            if r["type"] == "eval" and r["val_loss"] is not None:
                expected.append([rung.id, r["step"], r["tokens"], r["val_loss"]] + [r[f"val_loss/{s}"] for s in SOURCES])  # fmt: skip
    got = [
        [r["rung"], int(r["step"]), int(r["tokens"])] + [float(r[c]) for c in header[3:]]
        for r in rows
    ]
    assert got == expected and len(got) == 3 * (len(fitted.rungs) - 1)
    # The in-memory curve (Approach 1, the report) is the same points.
    mem = {r["rung"]: r["curve"] for r in fitted.result_rows()}
    assert read_json_str(mem["c1-n2"]) == [[r[2], r[3]] for r in expected if r[0] == "c1-n2"]
    assert fitted.curve_records()[0] == {k: (float(v) if "loss" in k else v) for k, v in zip(header, expected[0], strict=True)}  # fmt: skip


def read_json_str(text: str):
    import json

    return json.loads(text)


def test_downstream_csv_is_tidy(fitted):
    header, rows = _read(fitted.root / "downstream.csv")
    assert header == DOWNSTREAM_COLUMNS
    got = {(r["rung"], r["split"]): r for r in rows}
    assert len(rows) == 4 and set(got) == {(k, s) for k in DOWNSTREAM for s in ("dev", "test")}
    n = {r.id: r.N for r in fitted.rungs}
    for (rid, split), r in got.items():
        values = [seed[0 if split == "dev" else 1] for seed in DOWNSTREAM[rid]]
        assert (r["task"], r["method"], r["metric"]) == ("wiki-topics", "lora", "accuracy")
        assert int(r["N_non_embedding"]) == n[rid] and int(r["n_seeds"]) == len(values)
        assert float(r["value"]) == pytest.approx(statistics.mean(values))
        if len(values) > 1:
            assert float(r["std"]) == pytest.approx(statistics.stdev(values))
        else:
            assert r["std"] == ""  # one seed: no spread


def test_every_written_column_is_documented(fitted):
    from scalelab.study.zeroshot import CSV_COLUMNS as ZEROSHOT_COLUMNS  # tests/test_zeroshot.py

    for name in ("results.csv", "curves.csv", "downstream.csv"):
        header, _ = _read(fitted.root / name)
        undocumented = [c for c in header if not documented(name, c)]
        assert not undocumented, f"{name}: {undocumented}"
    base = {"results.csv": RESULT_COLUMNS, "curves.csv": CURVE_COLUMNS}
    base["downstream.csv"] = DOWNSTREAM_COLUMNS
    base["zeroshot.csv"] = ZEROSHOT_COLUMNS
    for name, columns in DATA_DICTIONARY.items():  # and nothing documented is never written
        assert [c.name for c in columns if "<" not in c.name] == base[name]
        assert all(c.unit and c.meaning for c in columns)
    assert not documented("results.csv", "curve") and not documented("results.csv", "N")
    assert not documented("results.csv", "wiki-topics__lora/dev_accuracy")
    md = data_dictionary_markdown()
    assert "| `N_non_embedding` | parameters |" in md and md.count("|---|---|---|") == 4
    rows = [line for line in md.splitlines() if line.startswith("|")]
    assert len(rows) == 2 * 4 + sum(map(len, DATA_DICTIONARY.values()))
    assert all(line.count("|") == 4 for line in rows)  # no "|" inside a cell


def test_fits_are_not_redone_and_old_summaries_still_mark(fitted, monkeypatch, capsys):
    import scalelab.study.fit as fit_mod

    before = (fitted.root / "results.csv").read_text()

    def refit(*a, **k):
        raise AssertionError("refitted although nothing changed")

    monkeypatch.setattr(fit_mod, "fit_study", refit)
    _no_report(monkeypatch)
    fit_mod.fit_and_report(fitted, fit_mod.StudyFitConfig(bootstrap=0, grid="small"))
    assert (fitted.root / "results.csv").read_text() == before
    # A summary written before the rung list existed: the selection is rebuilt from it.
    path = fitted.root / "fits" / "summary.json"
    summary = read_json(path)
    try:
        del summary["chinchilla"]["rungs"]
        atomic_write_json(path, summary)
        fitted.write_results()
        assert (fitted.root / "results.csv").read_text() == before
        atomic_write_json(path, {**summary, "n_fit": 99})  # cannot be rebuilt: unknown
        fitted.write_results()
        assert {r["in_fit"] for r in _read(fitted.root / "results.csv")[1]} == {""}
    finally:
        summary["chinchilla"]["rungs"] = sorted(_expected_in_fit(fitted))
        atomic_write_json(path, summary)
        fitted.write_results()


def test_study_run_leaves_in_fit_right(tmp_path, monkeypatch):
    from scalelab.study.fit import StudyFitConfig
    from scalelab.study.run import RunConfig, run_and_fit

    study = _make_study(tmp_path / "s")
    assert not (study.root / "fits").exists()
    study.write_results()
    assert {r["in_fit"] for r in _read(study.root / "results.csv")[1]} == {"false"}
    calls = _no_report(monkeypatch)
    cfg = RunConfig(only=("no-such-rung",), progress=False)  # trains nothing, then fits
    assert (
        run_and_fit(study, cfg, StudyFitConfig(bootstrap=0, grid="small", frontier_band=0.05)) == 1
    )  # c1-n0
    _, rows = _read(study.root / "results.csv")
    assert {r["rung"] for r in rows if r["in_fit"] == "true"} == _expected_in_fit(study)
    assert len(calls) == 1 and (study.root / "fits" / "chinchilla.json").is_file()


def test_notebook_html_and_frames(fitted, tmp_path, monkeypatch):
    page = fitted._repr_html_()
    assert str(fitted.root) in page and "isoflop design" in page
    assert "11 completed, 1 failed, 1 pending" in page
    p = read_json(fitted.root / "fits" / "summary.json")["chinchilla"]["params"]
    assert f"L(N, D) = {p['E']:.4f} + " in page and "<td>c2-n2</td>" in page
    assert page.count("<tr>") == 1 + 12 and "1 more rung" in page
    bare = Study.create(tmp_path / "b", fitted.plan, fitted.rungs[:2], {})
    assert "No fit yet" in bare._repr_html_() and "2 pending" in bare._repr_html_()

    monkeypatch.setitem(sys.modules, "pandas", None)  # as if pandas were not installed
    with pytest.raises(ImportError, match="pip install pandas"):
        fitted.to_pandas()
    monkeypatch.undo()
    pd = pytest.importorskip("pandas")
    df = fitted.to_pandas()
    assert list(df.columns) == _read(fitted.root / "results.csv")[0]
    assert len(df) == len(fitted.rungs)
    assert set(df.loc[df["in_fit"] == True, "rung"]) == _expected_in_fit(fitted)  # noqa: E712
    from_file = pd.read_csv(fitted.root / "results.csv")
    assert list(from_file.columns) == list(df.columns)
    assert from_file["in_fit"].dtype == bool
    assert from_file["final_val_loss"].tolist() == pytest.approx(df["final_val_loss"].tolist(), nan_ok=True)  # fmt: skip
    curves = fitted.curves_to_pandas()
    assert list(curves.columns) == _read(fitted.root / "curves.csv")[0]
    assert len(curves) == len(_read(fitted.root / "curves.csv")[1])
    assert list(fitted.downstream_to_pandas().columns) == DOWNSTREAM_COLUMNS


def test_the_readme_holds_the_data_dictionary():
    """The README's "Study tables" are generated from DATA_DICTIONARY: they must not drift."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert data_dictionary_markdown().strip() in readme
