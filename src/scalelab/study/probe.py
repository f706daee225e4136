"""A short throughput probe: how many FLOP/s does this machine train a given width at?

Converts a wall-clock budget into FLOPs and gives every rung an estimated wall time. It
times a few real training steps (the trainer's own ``train_step``) of models at the
smallest, middle and largest width of a plan, on random tokens, in the plan's device,
precision and thread count, and records the achieved rate under the ``chinchilla`` FLOP
count (which includes the vocabulary head and attention that dominate small models).
Rates between probed widths are interpolated in log-log space.

The statistic is the best of several short timed repeats, and every measurement is
cached per machine and shape (:func:`cache_path`), so that the same ``--budget-hours``
give the same plan every time on this machine, however busy it is at the later plans;
``--reprobe`` (``plan.reprobe``) measures again and replaces the cached values.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from scalelab.errors import UserError
from scalelab.study.plan import (
    PlanConfig,
    Rung,
    plan_rungs,
    round_sig,
    too_small,
    workable_budget_flops,
)

CACHE_ENV = "SCALELAB_CACHE_DIR"
CACHE_FILE = "probe.json"
CACHE_VERSION = 1

# Timing: ``warmup`` untimed steps, then ``repeats`` timed blocks of ``steps`` steps each.
# The rate is taken from the FASTEST block, not the median. Everything else running on the
# machine (other processes, the OS, a page fault, the allocator) can only add time to a
# block, never remove it, so the noise is one-sided and the minimum is the estimate least
# contaminated by it: the machine's unloaded speed for this shape, which is stable from one
# plan to the next. The median follows the load of the moment (on a 2-core machine shared
# with other jobs the old median-of-3 probe, and with it the planned budget, swung by 2x).
# Many short blocks (single steps) give the minimum more chances to catch a quiet moment.
# Load that lasts (more runnable threads than cores) leaves no quiet moment, so a
# single-threaded CPU probe times each block by the process's CPU time as well and keeps
# the smaller: CPU time does not count the slices the scheduler gave to others (measured
# here at load 4 on 2 cores: wall time 2.6x the idle figure). It still counts cache and
# memory contention, and with several threads it would also drop their waits, so wider
# probes (and GPUs, timed after a synchronize) use the wall clock alone. The plan then
# assumes the study's runs get the machine to themselves, as its workers x threads do.
PROBE_WARMUP, PROBE_STEPS, PROBE_REPEATS = 2, 1, 8


def cache_dir() -> Path:
    """Where the probe cache lives: ``$SCALELAB_CACHE_DIR``, else ``$XDG_CACHE_HOME/scalelab``,
    else ``~/.cache/scalelab`` (the XDG base-directory default)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "scalelab"


def cache_path() -> Path:
    """The probe cache file (JSON: one entry per machine x shape x settings)."""
    return cache_dir() / CACHE_FILE


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _device_name(device: Any) -> str:
    import torch

    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return str(device.type)


def machine_key(device: Any) -> dict[str, Any]:
    """What identifies this machine's speed: host, CPU, torch and scalelab versions, device."""
    import torch

    from scalelab import __version__

    return {
        "host": platform.node(),
        "cpu": _cpu_model(),
        "cpus": _cpu_count(),
        "torch": torch.__version__,
        "scalelab": __version__,
        "device": _device_name(device),
    }


def _entry_key(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]


def _read_cache(path: Path) -> dict[str, Any]:
    """The cache's entries; an absent or unreadable file is an empty cache (and is rewritten)."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("version") == CACHE_VERSION and isinstance(data.get("entries"), dict):
            return data["entries"]
    except (OSError, ValueError, AttributeError):
        pass
    print(f"scalelab: note: ignoring the unreadable probe cache {path}", file=sys.stderr)
    return {}


def _write_cache(path: Path, entries: dict[str, Any]) -> None:
    from scalelab.utils.io import atomic_write_json

    try:
        atomic_write_json(path, {"version": CACHE_VERSION, "entries": entries})
    except OSError as exc:  # planning must not fail because the cache cannot be written
        print(f"scalelab: note: could not write the probe cache {path}: {exc}", file=sys.stderr)


def _clock(device: Any) -> str:
    """How blocks are timed (above): ``cpu+wall`` for a one-thread CPU probe, else ``wall``."""
    import torch

    return "cpu+wall" if device.type == "cpu" and torch.get_num_threads() == 1 else "wall"


def _time_steps(cfg: Any, *, rows: int, seq_len: int, precision: str, device: Any) -> list[float]:
    """Seconds per step of each timed block (after the warmup)."""
    import torch

    from scalelab.models.build import build_model
    from scalelab.train.step import make_optimizer, train_step

    torch.manual_seed(0)
    model = build_model(cfg).to(device)
    opt = make_optimizer(model, lr=1e-4)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, cfg.vocab_size, (rows, seq_len), generator=gen)
    batch = {"input_ids": ids, "labels": ids}
    if cfg.arch == "bert":
        batch = {
            **batch,
            "token_type_ids": torch.zeros_like(ids),
            "attention_mask": torch.ones_like(ids),
            "next_sentence_label": torch.zeros(rows, dtype=torch.long),
        }
    batch = {k: v.to(device) for k, v in batch.items()}

    cpu_clock = _clock(device) == "cpu+wall"

    def steps(n: int) -> float:
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(n):
            train_step(model, [batch], opt, precision=precision, device=device)  # type: ignore[arg-type]
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        return (min(wall, cpu) if cpu_clock else wall) / n

    steps(PROBE_WARMUP)
    return [steps(PROBE_STEPS) for _ in range(PROBE_REPEATS)]


def _measure(cfg: Any, key: dict[str, Any], *, device: Any) -> dict[str, Any]:
    """A cache entry: the timed blocks of ``cfg`` and its rate at the best one."""
    from scalelab.models.accounting import flops_per_token

    rows, seq_len = key["rows"], key["seq_len"]
    times = _time_steps(cfg, rows=rows, seq_len=seq_len, precision=key["precision"], device=device)
    per_token = flops_per_token(cfg, "chinchilla", seq_len=seq_len)
    return {
        "key": key,
        "flops_per_second": rows * seq_len * per_token / min(times),
        "seconds_per_step": times,
        "measured_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def probe_throughput(
    model_cfgs: list[Any],
    *,
    seq_len: int,
    batch_tokens: int,
    precision: str,
    threads: int,
    device: str = "cpu",
    cache: bool = True,
    reprobe: bool = False,
) -> dict[str, Any]:
    """Chinchilla-FLOP/s for each model config: ``{"flops_per_second": {d_model: rate}, ...}``.

    Each rate is the best of ``PROBE_REPEATS`` timed blocks (see above); with ``cache`` a
    value measured before on this machine for the same shape and settings is reused,
    unless ``reprobe``, which measures again and replaces it.
    """
    import torch

    from scalelab.train.distributed import resolve_device

    dev = resolve_device(device)
    rows = max(1, batch_tokens // seq_len)
    machine = machine_key(dev)
    path = cache_path()
    entries = _read_cache(path) if cache else {}
    rates: dict[int, float] = {}
    measured = 0
    old_threads = torch.get_num_threads()
    if threads > 0:
        torch.set_num_threads(threads)
    try:
        clock = _clock(dev)
        for cfg in model_cfgs:
            key = {
                **machine,
                "precision": precision,
                "threads": threads,
                "arch": cfg.arch,
                "shape": [cfg.n_layer, cfg.d_model, cfg.n_head, cfg.d_ff],
                "vocab_size": cfg.vocab_size,
                "seq_len": seq_len,
                "rows": rows,
                "timing": [PROBE_WARMUP, PROBE_STEPS, PROBE_REPEATS, clock],
            }
            name = _entry_key(key)
            if reprobe or name not in entries:
                print(f"probing training throughput at width {cfg.d_model} ...", file=sys.stderr)
                entries[name] = _measure(cfg, key, device=dev)
                measured += 1
            rates.setdefault(int(cfg.d_model), float(entries[name]["flops_per_second"]))
    finally:
        torch.set_num_threads(old_threads)
    if cache and measured:
        _write_cache(path, entries)
    if cache and measured < len(model_cfgs):
        print(
            f"throughput at {len(model_cfgs) - measured} width(s) from the probe cache {path} "
            "(--reprobe measures again)",
            file=sys.stderr,
        )
    return {
        "flops_per_second": {str(k): v for k, v in sorted(rates.items())},
        "precision": precision,
        "threads": threads,
        "device": machine["device"],
        "convention": "chinchilla",
        "statistic": f"best of {PROBE_REPEATS} blocks of {PROBE_STEPS} step(s), {clock} clock",
        "cache": str(path) if cache else None,
    }


def _memory_bytes(device: str) -> float:
    """Memory of the device the probe runs on (the GPU's, or this machine's RAM)."""
    import torch

    from scalelab.train.distributed import resolve_device

    dev = resolve_device(device)
    if dev.type == "cuda":
        return float(torch.cuda.get_device_properties(dev).total_memory)
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, OSError, ValueError):  # pragma: no cover - not POSIX
        return 8.0 * 2**30


def probe_bytes(cfg: Any, rows: int, seq_len: int) -> float:
    """A rough upper estimate of a probe step's memory: fp32 weights, gradients and AdamW's
    two moments (16 bytes a parameter), the logits with their softmax and gradient, and
    ~70 d_model bytes a token a layer of activations (fp32 doubling of the ~34 d bytes of
    Korthikanti et al. 2022, Sec. 4.1) plus the attention scores."""
    from scalelab.models.accounting import param_counts

    tokens = rows * seq_len
    per_layer = 70 * cfg.d_model + 5 * cfg.n_head * seq_len
    return 16.0 * param_counts(cfg).total + 4.0 * tokens * (
        3 * cfg.vocab_size + per_layer * cfg.n_layer
    )


def probe_rungs(
    plan: PlanConfig,
    rungs: list[Rung],
    vocab: int,
    threads: int,
    have: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The probe of a plan's smallest, middle and largest width, added to ``have`` (whose
    widths are not measured again); ``have`` itself when it has them all already.

    A width whose probe would need more than a quarter of the device's memory
    (:func:`probe_bytes`) is not measured: its rate is the widest measured one's.
    """
    from scalelab.models.config import ModelConfig

    widths = sorted({r.shape["d_model"] for r in rungs})
    pick = sorted({widths[0], widths[len(widths) // 2], widths[-1]})
    known = set(map(int, (have or {}).get("flops_per_second", {})))
    batch, seq = min(r.batch_tokens for r in rungs), plan.base.seq_len
    room = 0.25 * _memory_bytes(plan.base.runtime.device)
    cfgs = []
    for w in (w for w in pick if w not in known):
        shape = next(r.shape for r in rungs if r.shape["d_model"] == w)
        cfg = ModelConfig.from_shape(shape, arch=plan.base.arch, vocab_size=vocab, max_seq_len=seq)
        if probe_bytes(cfg, max(1, batch // seq), seq) <= room:
            cfgs.append(cfg)
        else:
            print(
                f"width {w} is too large to probe here: its rate is extrapolated", file=sys.stderr
            )
    if not cfgs:
        if have is not None:
            return have
        raise UserError(
            "every model of this plan is too large to probe on this machine; give --budget-flops"
        )
    new = probe_throughput(
        cfgs,
        seq_len=seq,
        batch_tokens=batch,
        precision=plan.base.runtime.precision,
        threads=threads,
        device=plan.base.runtime.device,
        reprobe=plan.reprobe,
    )
    if have is not None:
        new["flops_per_second"] = {
            str(k): v
            for k, v in sorted(
                {int(k): v for d in (have, new) for k, v in d["flops_per_second"].items()}.items()
            )
        }
    return new


# ====================================================================== hours -> FLOPs


def _seconds(rungs: list[Rung], probe: dict[str, Any]) -> float:
    """Estimated training time of all ``rungs`` (a wall-clock budget pays for the holdouts too)."""
    return sum(estimate_seconds(r, probe) for r in rungs)


def _search_hours(
    plan: PlanConfig, vocab: int, probe: dict[str, Any], target_s: float, floor: float
) -> float:
    """An isoflop budget >= ``floor`` where the estimated time reaches ``target_s``, by
    bisection in log budget (to 0.1%), rounded down to 3 significant digits (exactly what
    the plan prints). The time is not strictly monotone in the budget (a larger budget moves
    rungs to wider, more efficient shapes); the bisection finds one crossing, always the
    same one for the same probe."""

    def fits(budget: float) -> bool:
        rungs = plan_rungs(plan, vocab_size=vocab, budget_flops=budget)
        return _seconds(rungs, probe) <= target_s

    lo = floor
    if not fits(lo):  # an earlier probe vouched for the floor; later widths moved it a little
        return floor
    hi = 2 * lo
    for _ in range(200):
        if hi > 1e300 or not fits(hi):
            break
        lo, hi = hi, 2 * hi
    while hi / lo > 1.001:
        mid = lo * math.sqrt(hi / lo)
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return max(round_sig(lo, 3, up=False), floor)


def budget_for_hours(
    plan: PlanConfig, vocab: int, *, workers: int, threads: int
) -> tuple[float, dict[str, Any]]:
    """The FLOPs (plan convention) that ``plan.budget_hours`` buys on this machine, and the probe.

    The probe measures the widths of the plan at the design's smallest workable budget
    first (so the reported minimum does not depend on the hours asked for), then those of
    the plan found, and the search runs again with both. Every measurement is cached, so
    the same hours give the same budget on the same machine.
    """
    target_s = float(plan.budget_hours or 0) * 3600 * workers
    floor = workable_budget_flops(plan, vocab)
    at_floor = plan_rungs(plan, vocab_size=vocab, budget_flops=floor)
    probe = probe_rungs(plan, at_floor, vocab, threads)
    need = _seconds(at_floor, probe)
    if need > target_s * (1 + 1e-9):
        hours = round_sig(need / workers / 3600, 2, up=True)
        raise too_small(plan, floor_flops=floor, floor_hours=hours)
    if plan.design != "isoflop":
        # Fixed rungs, and a FLOP budget that pays for the fitted ones only: the FLOPs that
        # fit in the hours at this design's rate, its holdout's time charged as well.
        spent = sum(r.cost(plan.flops_convention) for r in at_floor if r.role != "holdout")
        return max(round_sig(target_s * spent / need, 3, up=False), floor), probe
    budget = _search_hours(plan, vocab, probe, target_s, floor)
    found = plan_rungs(plan, vocab_size=vocab, budget_flops=budget)
    wider = probe_rungs(plan, found, vocab, threads, have=probe)
    if wider is not probe:
        probe = wider
        budget = _search_hours(plan, vocab, probe, target_s, floor)
    return budget, probe


def rate_at(d_model: int, probe: dict[str, Any]) -> float:
    """Chinchilla-FLOP/s at width ``d_model``, interpolated in log-log (clamped at the ends)."""
    table = sorted((int(k), float(v)) for k, v in probe["flops_per_second"].items())
    if len(table) == 1:
        return table[0][1]
    xs = np.log([t[0] for t in table])
    ys = np.log([t[1] for t in table])
    return float(math.exp(np.interp(math.log(d_model), xs, ys)))


def estimate_seconds(rung: Rung, probe: dict[str, Any]) -> float:
    """Estimated wall time of ``rung`` (seconds) at the probed rate of its width (a WSD
    branch: its cool-down only)."""
    return rung.cost("chinchilla") / rate_at(rung.shape["d_model"], probe)
