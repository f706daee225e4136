"""Task metrics from per-choice log-likelihoods, each with a standard error.

- ``acc``: the choice with the largest summed log-likelihood is the gold one.
- ``acc_norm``: the same after dividing each choice's log-likelihood by its length in
  *characters* (``len(choice)`` of the choice as the task gives it), lm-evaluation-
  harness's ``acc_norm`` (Gao et al. 2021); it removes the bias towards short choices.
- ``bpb``: bits per byte of the gold continuation,
  ``-sum log p(gold tokens) / (ln 2 * UTF-8 bytes of the gold continuation)``, per example
  and then averaged over examples (the continuation as scored: with any whitespace moved
  to it from the end of the context). The downstream ladder's task loss (Bhagia et al.
  2024, step 1, where it is the gold answer's loss).

Standard errors: binomial, ``sqrt(p (1 - p) / n)``, for the accuracies; the standard error
of the mean, ``std(ddof=1) / sqrt(n)``, for bpb. Ties go to the first choice.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

METRICS = ("acc", "acc_norm", "bpb")


def _argmax(values: Sequence[float]) -> int:
    return max(range(len(values)), key=lambda k: (values[k], -k))


def binomial_stderr(p: float, n: int) -> float:
    return math.sqrt(p * (1.0 - p) / n) if n else math.nan


def mean_stderr(values: Sequence[float]) -> tuple[float, float]:
    n = len(values)
    if not n:
        return math.nan, math.nan
    mean = sum(values) / n
    if n < 2:
        return mean, math.nan
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)


def bits_per_byte(loglik: float, text: str) -> float:
    """``-loglik / (ln 2 * UTF-8 bytes of text)`` (``loglik`` in nats)."""
    return -loglik / (math.log(2) * len(text.encode("utf-8")))


def per_example(
    examples: Sequence[Any], lls: Sequence[Sequence[float]], gold_texts: Sequence[str]
) -> list[dict[str, Any]]:
    """Per example: its log-likelihoods, predictions (raw and normalised) and gold bpb."""
    out = []
    for ex, ll, text in zip(examples, lls, gold_texts, strict=True):
        norm = [v / len(c) for v, c in zip(ll, ex.choices, strict=True)]
        out.append(
            {
                "id": ex.id,
                "gold": ex.gold,
                "pred": _argmax(ll),
                "pred_norm": _argmax(norm),
                "loglik": list(ll),
                "bpb": bits_per_byte(ll[ex.gold], text),
            }
        )
    return out


def summarise(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """``{metric: {"value", "stderr"}}`` over the per-example rows."""
    n = len(rows)
    acc = sum(r["pred"] == r["gold"] for r in rows) / n if n else math.nan
    acc_norm = sum(r["pred_norm"] == r["gold"] for r in rows) / n if n else math.nan
    bpb, bpb_se = mean_stderr([r["bpb"] for r in rows])
    return {
        "acc": {"value": acc, "stderr": binomial_stderr(acc, n)},
        "acc_norm": {"value": acc_norm, "stderr": binomial_stderr(acc_norm, n)},
        "bpb": {"value": bpb, "stderr": bpb_se},
    }
