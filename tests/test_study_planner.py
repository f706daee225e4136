"""The planner never strands the user: a budget too small for the design names the smallest
one that works (in the user's unit, and planning at it succeeds), and a plan from
--budget-hours is the same plan every time on the same machine (cached best-of-k probe)."""

from __future__ import annotations

import json
import math
import re

import pytest

from scalelab.cli import main
from scalelab.errors import UserError
from scalelab.models.accounting import flops_per_token
from scalelab.models.sizes import MIN_TARGET
from scalelab.study import probe as probe_mod
from scalelab.study.plan import (
    PlanConfig,
    make_plan,
    min_budget_flops,
    plan_rungs,
    round_sig,
    workable_budget_flops,
)

TOO_SMALL_H = re.compile(
    r"^scalelab: error: a (\S+) h budget is too small for the (\w+) design on this machine: "
    r"the smallest workable budget is (\S+) h \((\S+) FLOPs, chinchilla\); raise --budget-hours"
)
TOO_SMALL_C = re.compile(
    r"^scalelab: error: a (\S+) FLOPs budget is too small for the (\w+) design: "
    r"the smallest workable budget is (\S+) FLOPs \(chinchilla\); raise --budget-flops"
)


def _rate(d_model: int) -> float:
    """The fake machine: chinchilla-FLOP/s proportional to width (exact under log-log
    interpolation, so estimates can be recomputed here independently)."""
    return 1e10 * d_model


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    """Every test's probe cache lives in its tmp_path (nothing is written outside)."""
    path = tmp_path / "cache"
    monkeypatch.setenv("SCALELAB_CACHE_DIR", str(path))
    return path


def _fake_timing(monkeypatch, *, busier: float):
    calls = []

    def time_steps(cfg, *, rows, seq_len, precision, device):
        calls.append(cfg.d_model)
        best = rows * seq_len * flops_per_token(cfg, "chinchilla", seq_len=seq_len)
        best /= _rate(cfg.d_model)
        best *= (1 + busier) ** len(calls)  # the machine gets busier call by call
        return [best * 2, best, best * 3, best * 1.5]

    monkeypatch.setattr(probe_mod, "_time_steps", time_steps)
    return calls


@pytest.fixture
def fake_timing(monkeypatch):
    """Replace the timed training steps by the fake machine (its best block exact, the
    others slower); returns the list of measured widths."""
    return _fake_timing(monkeypatch, busier=0.0)


@pytest.fixture
def busy_timing(monkeypatch):
    """The fake machine, 10% slower at every measurement: only a cache gives the same plan."""
    return _fake_timing(monkeypatch, busier=0.1)


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "expected an error"
    return err[-1]


# ---------------------------------------------------------------- the smallest budget


@pytest.mark.parametrize(
    "design",
    [{}, {"n_budgets": 2, "sizes_per_budget": 3, "size_spread": 4.0, "aspect_ratio": 32.0}],
    ids=["default", "small-design"],
)
def test_min_budget_puts_the_smallest_rung_at_the_dial_floor(design):
    cfg = PlanConfig(budget_flops=1e14, **design)
    m = min_budget_flops(cfg, 512)
    rungs = plan_rungs(cfg, vocab_size=512, budget_flops=m)
    smallest = min(r.n_target for r in rungs)
    # The design's smallest rung sits at the dial's lower end (up to the steps of the
    # prior's bisection across the dial's discrete shapes: several percent at 1e3).
    assert MIN_TARGET <= smallest < 1.1 * MIN_TARGET
    with pytest.raises(UserError, match=r"too small for the isoflop design"):
        plan_rungs(cfg, vocab_size=512, budget_flops=m / (1 + 1e-6))
    # Fewer levels and sizes need less: the hint of the message holds.
    fewer = cfg.replace(n_budgets=1, sizes_per_budget=2)
    assert min_budget_flops(fewer, 512) < m


def test_round_sig_is_exact_and_on_the_right_side():
    for x in (4.2999e12, 3.1e14, 0.8134, 7.0, 9.96e-3, 123456.0):
        up, down = round_sig(x, 2, up=True), round_sig(x, 3, up=False)
        assert up >= x >= down
        assert float(f"{up:.2g}") == up and float(f"{down:.3g}") == down
    assert round_sig(4.2999e12, 2, up=True) == 4.3e12
    assert round_sig(3.1e14, 2, up=True) == 3.1e14  # already round: unchanged


def test_too_small_flops_budget_names_a_minimum_that_works(capsys):
    assert main(["plan", "--budget-flops", "1e10", "--dry-run"]) == 2
    line = _error_line(capsys)
    match = TOO_SMALL_C.match(line)
    assert match, line
    given, design, floor = match.groups()
    assert (given, design) == ("1e10", "isoflop")
    floor_c = float(floor)
    assert floor_c == workable_budget_flops(PlanConfig(budget_flops=1e14), 8192)
    assert floor_c >= min_budget_flops(PlanConfig(budget_flops=1e14), 8192)
    assert main(["plan", "--budget-flops", floor, "--dry-run"]) == 0  # exactly the minimum
    assert "16 rungs" in capsys.readouterr().out
    assert main(["plan", "--budget-flops", str(floor_c * 1.01), "--dry-run"]) == 0
    # Below the exact minimum (reported / 1.1 is: it is rounded up to 2 digits) fails.
    assert main(["plan", "--budget-flops", str(floor_c / 1.1), "--dry-run"]) == 2
    assert TOO_SMALL_C.match(_error_line(capsys)).group(3) == floor


def test_too_small_ladder_budget_names_its_fitted_compute(capsys):
    args = ["plan", "--design", "ladder", "--n-min", "2e4", "--n-max", "2e5", "--n-sizes", "3"]
    assert main([*args, "--budget-flops", "1e9", "--dry-run"]) == 2
    match = TOO_SMALL_C.match(_error_line(capsys))
    assert match and match.group(2) == "ladder"
    cfg = PlanConfig(design="ladder", n_min=2e4, n_max=2e5, n_sizes=3)
    fitted = sum(r.flops["chinchilla"] for r in plan_rungs(cfg, vocab_size=8192) if r.role == "fit")
    assert float(match.group(3)) == round_sig(fitted, 2, up=True)
    assert main([*args, "--budget-flops", match.group(3), "--dry-run"]) == 0


# ---------------------------------------------------------------- hours


def _expected_min_hours(cfg: PlanConfig, vocab: int, workers: int) -> float:
    floor = workable_budget_flops(cfg, vocab)
    rungs = plan_rungs(cfg, vocab_size=vocab, budget_flops=floor)
    seconds = sum(r.flops["chinchilla"] / _rate(r.shape["d_model"]) for r in rungs)
    return round_sig(seconds / workers / 3600, 2, up=True)


def test_too_small_hours_budget_answers_in_hours(fake_timing, capsys):
    plan = ["plan", "--workers", "1", "--dry-run", "--budget-hours"]
    assert main([*plan, "0.01"]) == 2
    line = _error_line(capsys)
    match = TOO_SMALL_H.match(line)
    assert match, line
    given, design, hours, flops = match.groups()
    assert (given, design) == ("0.01", "isoflop")
    cfg = PlanConfig(budget_hours=1.0)
    assert float(hours) == _expected_min_hours(cfg, 8192, workers=1)
    assert float(flops) == workable_budget_flops(cfg, 8192)
    assert main([*plan, hours]) == 0  # exactly the reported minimum works
    out = capsys.readouterr().out
    assert f"--budget-hours {hours} = " in out
    assert main([*plan, str(float(hours) * 1.05)]) == 0
    capsys.readouterr()
    assert main([*plan, str(float(hours) / 1.1)]) == 2
    assert TOO_SMALL_H.match(_error_line(capsys)).group(3) == hours


def test_same_hours_give_the_same_plan_from_the_cached_probe(busy_timing, cache_dir, capsys):
    cfg = PlanConfig(budget_hours=1.0)
    first, facts1 = make_plan(cfg, probe=False, workers=1)
    measured = len(busy_timing)
    assert measured >= 3  # smallest, middle and largest width at least
    second, facts2 = make_plan(cfg, probe=False, workers=1)
    assert len(busy_timing) == measured  # nothing timed again: every width from the cache
    assert [r.to_dict() for r in second] == [r.to_dict() for r in first]
    assert facts2["budget_flops"] == facts1["budget_flops"]
    # The estimate fills the hours (the search's 0.1% plus rounding to 3 digits).
    total = sum(r.est_seconds for r in first)
    assert 0.95 * 3600 < total <= 3600 * 1.0001
    # The cache: $SCALELAB_CACHE_DIR/probe.json, one entry per probed shape, keyed by machine.
    path = cache_dir / "probe.json"
    assert facts1["probe"]["cache"] == str(path)
    data = json.loads(path.read_text())
    assert data["version"] == 1 and len(data["entries"]) == measured
    entry = next(iter(data["entries"].values()))
    assert {"host", "cpu", "cpus", "torch", "device", "precision", "shape", "seq_len"} <= set(
        entry["key"]
    )
    assert entry["key"]["device"] == "cpu" and entry["key"]["precision"] == "bf16"
    from scalelab.models.config import ModelConfig

    key, times = entry["key"], entry["seconds_per_step"]
    n_layer, d, n_head, d_ff = key["shape"]
    model = ModelConfig(
        arch=key["arch"], n_layer=n_layer, d_model=d, n_head=n_head, d_ff=d_ff,
        vocab_size=key["vocab_size"], max_seq_len=key["seq_len"],
    )  # fmt: skip
    work = (
        key["rows"] * key["seq_len"] * flops_per_token(model, "chinchilla", seq_len=key["seq_len"])
    )
    assert entry["flops_per_second"] == pytest.approx(work / min(times), rel=1e-12)
    assert min(times) < sorted(times)[len(times) // 2]  # the best block, not the median
    # Planning again on the busier machine, re-measured, gives a smaller budget: the cache
    # is what kept the second plan equal to the first.
    third, facts3 = make_plan(cfg.replace(reprobe=True), probe=False, workers=1)
    assert len(busy_timing) > measured and facts3["budget_flops"] < facts1["budget_flops"]


def test_the_hours_become_flops_that_reproduce_the_plan(fake_timing, capsys):
    assert main(["plan", "--workers", "1", "--budget-hours", "1", "--dry-run"]) == 0
    out = capsys.readouterr().out
    match = re.search(r"^--budget-hours 1 = (\S+) FLOPs \(chinchilla\) on this machine", out, re.M)
    assert match, out
    assert f"--budget-flops {match.group(1)} plans the same rungs anywhere" in out
    from_hours, facts = make_plan(PlanConfig(budget_hours=1.0), probe=False, workers=1)
    assert facts["budget_flops"] == float(match.group(1))
    from_flops, _ = make_plan(
        PlanConfig(budget_flops=float(match.group(1))), probe=False, workers=1
    )
    strip = [{**r.to_dict(), "est_seconds": None} for r in from_hours]
    assert strip == [r.to_dict() for r in from_flops]


def test_reprobe_measures_again_and_is_not_stored_in_the_study(busy_timing, cache_dir, tmp_path):
    plan = ["plan", "--workers", "1", "--budget-hours", "1"]
    assert main([*plan, "--dry-run"]) == 0
    measured = len(busy_timing)
    before = json.loads((cache_dir / "probe.json").read_text())["entries"]
    out = tmp_path / "study"
    assert main([*plan, "--reprobe", "--out", str(out)]) == 0
    assert len(busy_timing) > measured  # measured again
    after = json.loads((cache_dir / "probe.json").read_text())["entries"]
    key = next(iter(before))
    assert after[key]["seconds_per_step"] != before[key]["seconds_per_step"]
    assert "reprobe: false" in (out / "study.yaml").read_text()
    assert main([*plan, "--out", str(out)]) == 0  # the same study, reprobe or not


def test_ladder_hours_pay_for_the_whole_study(fake_timing, capsys):
    args = ["plan", "--design", "ladder", "--n-min", "2e4", "--n-max", "2e5", "--n-sizes", "3"]
    args += ["--workers", "1", "--dry-run", "--budget-hours"]
    assert main([*args, "1e-4"]) == 2
    match = TOO_SMALL_H.match(_error_line(capsys))
    assert match and match.group(2) == "ladder"
    cfg = PlanConfig(design="ladder", n_min=2e4, n_max=2e5, n_sizes=3)
    rungs = plan_rungs(cfg, vocab_size=8192)  # holdout included: the hours pay for it
    seconds = sum(r.flops["chinchilla"] / _rate(r.shape["d_model"]) for r in rungs)
    assert float(match.group(3)) == round_sig(seconds / 3600, 2, up=True)
    assert main([*args, match.group(3)]) == 0


# ---------------------------------------------------------------- the probe itself


def test_probe_takes_the_best_block_and_caches_it(cache_dir, monkeypatch):
    from scalelab.models.config import ModelConfig

    cfg = ModelConfig(arch="llama", n_layer=1, d_model=16, n_head=2, vocab_size=64, max_seq_len=16)
    kw = {"seq_len": 16, "batch_tokens": 32, "precision": "fp32", "threads": 1}
    first = probe_mod.probe_throughput([cfg], **kw)  # real timed steps of a tiny model
    entry = next(iter(json.loads((cache_dir / "probe.json").read_text())["entries"].values()))
    times = entry["seconds_per_step"]
    assert len(times) == probe_mod.PROBE_REPEATS and min(times) > 0
    # One thread on a CPU: blocks timed by CPU time too (load that lasts does not count).
    assert entry["key"]["timing"][-1] == "cpu+wall" and "cpu+wall clock" in first["statistic"]
    work = 32 * flops_per_token(cfg, "chinchilla", seq_len=16)
    assert first["flops_per_second"]["16"] == pytest.approx(work / min(times), rel=1e-12)

    def no_timing(*a, **k):
        raise AssertionError("the cached probe was measured again")

    monkeypatch.setattr(probe_mod, "_time_steps", no_timing)
    assert probe_mod.probe_throughput([cfg], **kw) == first
    monkeypatch.setattr(probe_mod, "_time_steps", lambda *a, **k: [0.5, 0.25, 2.0])
    again = probe_mod.probe_throughput([cfg], **kw, reprobe=True)
    assert again["flops_per_second"]["16"] == pytest.approx(work / 0.25)
    # A different shape or setting is a different entry.
    probe_mod.probe_throughput([cfg], **{**kw, "precision": "bf16"})
    assert len(json.loads((cache_dir / "probe.json").read_text())["entries"]) == 2


def test_cache_location(monkeypatch, tmp_path):
    monkeypatch.setenv("SCALELAB_CACHE_DIR", str(tmp_path / "mine"))
    assert probe_mod.cache_path() == tmp_path / "mine" / "probe.json"
    monkeypatch.delenv("SCALELAB_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert probe_mod.cache_path() == tmp_path / "xdg" / "scalelab" / "probe.json"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert probe_mod.cache_path() == tmp_path / "home" / ".cache" / "scalelab" / "probe.json"


def test_an_unreadable_cache_is_measured_again(cache_dir, fake_timing, capsys):
    cache_dir.mkdir(parents=True)
    (cache_dir / "probe.json").write_text("{not json")
    rungs, facts = make_plan(PlanConfig(budget_hours=1.0), probe=False, workers=1)
    assert fake_timing and "ignoring the unreadable probe cache" in capsys.readouterr().err
    assert json.loads((cache_dir / "probe.json").read_text())["version"] == 1
    assert math.isfinite(facts["budget_flops"])


def test_a_model_too_large_for_memory_is_not_probed(fake_timing, monkeypatch, capsys):
    from scalelab.models.config import ModelConfig

    cfg = PlanConfig(budget_flops=1e15)
    rungs = plan_rungs(cfg, vocab_size=8192)
    widths = sorted({r.shape["d_model"] for r in rungs})

    def bytes_of(w):
        shape = next(r.shape for r in rungs if r.shape["d_model"] == w)
        model = ModelConfig.from_shape(shape, arch="llama", vocab_size=8192, max_seq_len=256)
        rows = min(r.batch_tokens for r in rungs) // 256
        return probe_mod.probe_bytes(model, rows, 256)

    # Room (a quarter of the memory) for every width but the largest.
    room = (bytes_of(widths[-1]) + bytes_of(widths[len(widths) // 2])) / 2
    monkeypatch.setattr(probe_mod, "_memory_bytes", lambda device: 4 * room)
    probe = probe_mod.probe_rungs(cfg, rungs, 8192, 1)
    assert widths[-1] not in fake_timing and widths[0] in fake_timing
    assert f"width {widths[-1]} is too large to probe here" in capsys.readouterr().err
    assert probe_mod.rate_at(widths[-1], probe) == probe_mod.rate_at(max(fake_timing), probe)
    monkeypatch.setattr(probe_mod, "_memory_bytes", lambda device: 1.0)
    with pytest.raises(UserError, match="too large to probe on this machine"):
        probe_mod.probe_rungs(cfg, rungs, 8192, 1)


def test_the_plan_shows_epochs_of_a_prepared_corpus_and_flags_repetition(tiny_bpe_dataset, capsys):
    from scalelab.data.prepare import open_dataset

    train = open_dataset(tiny_bpe_dataset).manifest["splits"]["train"]["tokens"]
    argv = [
        "plan",
        "--base.dataset",
        str(tiny_bpe_dataset),
        "--dry-run",
        "--flops-convention",
        "6n_kaplan",
        "--budget-flops",
    ]
    assert main([*argv, "1e12"]) == 2  # above one epoch: refused unless --max-epochs allows it
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "epochs of the" in err[0] and "--max-epochs" in err[0]
    assert main([*argv, "1e12", "--max-epochs", "25"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert "epochs" in lines[0]
    rows = [line.split() for line in lines[2:] if line.startswith(("c", "holdout"))]
    for row in rows:  # epochs = D / training tokens of the corpus
        assert float(row[-2]) == pytest.approx(int(row[4].replace(",", "")) / train, abs=0.006)
    over = sum(int(row[4].replace(",", "")) > train for row in rows)
    assert over > 0 and "note: Data repetition (allowed by max_epochs 25)" in out
    assert f"{over} rung(s) train more than one epoch" in out
