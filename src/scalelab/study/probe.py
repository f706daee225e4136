"""A short throughput probe: how many FLOP/s does this machine train a given width at?

Converts a wall-clock budget into FLOPs and gives every rung an estimated wall time. It
times a few real training steps (the trainer's own ``train_step``) of models at the
smallest, middle and largest width of the plan, on random tokens, in the plan's
precision and thread count, and records the achieved rate under the ``chinchilla`` FLOP
count (which includes the vocabulary head and attention that dominate small models).
Rates between probed widths are interpolated in log-log space.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from scalelab.study.plan import Rung


def probe_throughput(
    model_cfgs: list[Any],
    *,
    seq_len: int,
    batch_tokens: int,
    precision: str,
    threads: int,
    steps: int = 3,
    warmup: int = 2,
) -> dict[str, Any]:
    """Measure chinchilla-FLOP/s for each model config; returns {d_model: rate} and settings."""
    import torch

    from scalelab.models.accounting import flops_per_token
    from scalelab.models.build import build_model
    from scalelab.train.step import make_optimizer, train_step

    old_threads = torch.get_num_threads()
    if threads > 0:
        torch.set_num_threads(threads)
    rates: dict[int, float] = {}
    try:
        for cfg in model_cfgs:
            torch.manual_seed(0)
            model = build_model(cfg)
            opt = make_optimizer(model, lr=1e-4)
            rows = max(1, batch_tokens // seq_len)
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
            times = []
            for i in range(warmup + steps):
                t0 = time.perf_counter()
                train_step(model, [batch], opt, precision=precision)  # type: ignore[arg-type]
                if i >= warmup:
                    times.append(time.perf_counter() - t0)
            tokens_per_s = rows * seq_len / float(np.median(times))
            rates[int(cfg.d_model)] = tokens_per_s * flops_per_token(
                cfg, "chinchilla", seq_len=seq_len
            )
    finally:
        torch.set_num_threads(old_threads)
    return {
        "flops_per_second": {str(k): v for k, v in sorted(rates.items())},
        "precision": precision,
        "threads": threads,
        "convention": "chinchilla",
    }


def rate_at(d_model: int, probe: dict[str, Any]) -> float:
    """Chinchilla-FLOP/s at width ``d_model``, interpolated in log-log (clamped at the ends)."""
    table = sorted((int(k), float(v)) for k, v in probe["flops_per_second"].items())
    if len(table) == 1:
        return table[0][1]
    xs = np.log([t[0] for t in table])
    ys = np.log([t[1] for t in table])
    return float(math.exp(np.interp(math.log(d_model), xs, ys)))


def estimate_seconds(rung: Rung, probe: dict[str, Any]) -> float:
    return rung.flops["chinchilla"] / rate_at(rung.shape["d_model"], probe)
