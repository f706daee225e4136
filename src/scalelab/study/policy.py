"""Hyperparameter policy: learning rate and batch size as functions of compute.

Kept apart from the model and the trainer (DESIGN convention 5); every constant cites its
source. The default follows DeepSeek-AI (2024), "DeepSeek LLM: Scaling Open-Source
Language Models with Longtermism", Sec. 3.1, Eq. (1), who fit the near-optimal learning
rate and batch size of AdamW with a warmup-stable-decay schedule across 1e17-2e19 FLOPs:

    eta_opt = 0.3118 * C ** -0.1250        B_opt = 0.2920 * C ** 0.3271   (B in tokens)

with C = M * D where M is non-embedding FLOPs per token including attention. Extrapolated
down to the 1e11-1e15 FLOPs of CPU ladders these give learning rates of ~3e-3-1e-2 and
batches of ~1k-30k tokens, in line with what small GPT-style models are trained with
(nanoGPT's "baby" configs use 1e-3 at 16k-token batches for ~10M parameters). We clip
both to a safe range and round the batch to whole sequences; users can override either.

The ``fitted`` rule replaces that extrapolation by a law measured at the study's own scale:
``lr = lr_coef * x ** lr_exponent`` with x the rung's non-embedding N or its compute,
fitted by ``scalelab study sweep`` (:mod:`scalelab.study.sweep`) to the optima of a small
learning-rate sweep, as DeepSeek-AI (2024, Sec. 3.1) fit eta_opt(C) to the near-optimal
learning rates of their sweeps and Porian et al. (2024, "Resolving Discrepancies in
Compute-Optimal Scaling of Language Models", arXiv:2406.19146, the hyperparameter
laws of their secondary result) fit the optimal learning rate as a power law of N. The
batch keeps DeepSeek's law under every rule but ``fixed``.

Data repetition is policy too: :data:`MAX_EPOCHS` and :func:`repetition_error` decide
whether a plan may train a rung on more than one epoch of its training split.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from scalelab.config import Config
from scalelab.errors import UserError

# DeepSeek LLM (2024), Eq. (1).
_DEEPSEEK_LR = (0.3118, -0.1250)
_DEEPSEEK_BATCH = (0.2920, 0.3271)
#: The learning-rate rules of :class:`HyperPolicy`.
RULES = ("deepseek", "fitted", "fixed")


#: Relative tolerance of :meth:`HyperPolicy.at_clip` (a learning rate read back from a
#: YAML file or rounded for display still counts as sitting at the boundary).
_CLIP_RTOL = 1e-6


@dataclass(kw_only=True)
class HyperPolicy(Config):
    """How each rung's learning rate and batch size follow from its compute budget (or size)."""

    rule: str = "deepseek"
    """deepseek (lr and batch as power laws of compute, DeepSeek LLM 2024 Eq. 1), fitted (lr = lr_coef * x ** lr_exponent from `scalelab study sweep`; batch as deepseek) or fixed."""
    lr: float = 3e-3
    """Learning rate used by the fixed rule."""
    batch_tokens: int = 4096
    """Batch (tokens per step) used by the fixed rule."""
    lr_range: tuple[float, float] = (1e-4, 1e-2)
    """Clip the policy's learning rate into this range."""
    batch_range: tuple[int, int] = (2048, 1_048_576)
    """Clip the policy's batch (tokens) into this range."""
    min_steps: int = 60
    """Shrink the batch so that every rung takes at least this many optimizer steps."""
    lr_coef: float | None = None
    """fitted rule: c of lr = c * x ** p, the power law fitted to a sweep's optima (DeepSeek LLM 2024 Sec. 3.1; Porian et al. 2024, arXiv:2406.19146)."""
    lr_exponent: float | None = None
    """fitted rule: the exponent p of lr = c * x ** p."""
    lr_basis: Literal["N", "C"] = "N"
    """fitted rule: x is the rung's non-embedding parameter count N, or its compute C (6 N D, FLOPs)."""

    def validate(self) -> None:
        if self.rule not in RULES:
            raise UserError(
                f"hyperparameter rule must be {', '.join(RULES[:-1])} or {RULES[-1]}, got {self.rule!r}"
            )
        if self.lr_range[0] > self.lr_range[1] or self.batch_range[0] > self.batch_range[1]:
            raise UserError("lr_range and batch_range must be (low, high)")
        if self.lr_basis not in ("N", "C"):
            raise UserError(f"lr_basis must be N or C, got {self.lr_basis!r}")
        if self.rule == "fitted":
            coef, exp = self.lr_coef, self.lr_exponent
            if coef is None or exp is None:
                raise UserError(
                    "the fitted rule needs --policy.lr-coef and --policy.lr-exponent "
                    "(`scalelab study sweep` prints them)"
                )
            if not (coef > 0 and math.isfinite(coef) and math.isfinite(exp)):
                raise UserError(
                    f"lr_coef must be positive and finite and lr_exponent finite, got {coef}, {exp}"
                )

    def raw_learning_rate(self, compute: float, *, n: float | None = None) -> float:
        """The rule's learning rate before clipping (the fixed rule's ``lr``).

        ``compute`` is the rung's training compute (6 N D, non-embedding N: the convention
        of DeepSeek's Eq. 1, whose M excludes the embeddings); ``n`` its non-embedding
        parameter count, needed by the fitted rule with ``lr_basis`` N.
        """
        if self.rule == "fixed":
            return self.lr
        if self.rule == "fitted":
            x = compute if self.lr_basis == "C" else n
            if x is None:
                raise UserError("the fitted rule with lr_basis N needs the rung's non-embedding N")
            if not x > 0:
                raise UserError(f"the fitted rule needs a positive {self.lr_basis}, got {x}")
            return float(self.lr_coef * float(x) ** self.lr_exponent)  # type: ignore[operator]
        a, b = _DEEPSEEK_LR
        return float(a * compute**b)

    def learning_rate(self, compute: float, *, n: float | None = None) -> float:
        """The rung's learning rate: the rule's, clipped to ``lr_range`` (except fixed)."""
        raw = self.raw_learning_rate(compute, n=n)
        if self.rule == "fixed":
            return raw
        return float(min(max(raw, self.lr_range[0]), self.lr_range[1]))

    def at_clip(self, lr: float) -> Literal["low", "high"] | None:
        """Whether ``lr`` (a rung's planned learning rate) sits at a boundary of ``lr_range``:
        ``"low"``, ``"high"`` or None (inside it; always None under the fixed rule, which
        does not clip)."""
        if self.rule == "fixed":
            return None
        lo, hi = self.lr_range
        if lr <= lo * (1 + _CLIP_RTOL):
            return "low"
        if lr >= hi * (1 - _CLIP_RTOL):
            return "high"
        return None

    def batch(self, compute: float, tokens: int, seq_len: int) -> int:
        """Tokens per step, a multiple of ``seq_len`` (rounded to a power-of-two count of sequences)."""
        if self.rule == "fixed":
            raw = float(self.batch_tokens)
        else:
            a, b = _DEEPSEEK_BATCH
            raw = min(max(a * compute**b, self.batch_range[0]), self.batch_range[1])
        raw = min(raw, max(seq_len, tokens / max(self.min_steps, 1)))
        seqs = 2 ** max(0, round(math.log2(max(raw / seq_len, 1))))
        return int(seqs * seq_len)


# ====================================================================== data repetition

#: Epochs of the training split a rung may train on unless the plan allows more. One
#: epoch: the Chinchilla law fitted to a study assumes unique data. Muennighoff et al.
#: (2023, "Scaling Data-Constrained Language Models", arXiv:2305.16264, abstract) find
#: that up to 4 epochs change the loss negligibly against unique data, and their law
#: (``--form data_constrained``) models the decay beyond; allowing that is the user's call.
MAX_EPOCHS = 1.0


def epochs(tokens: float, unique_tokens: float) -> float:
    """Passes over the training split that ``tokens`` training tokens make."""
    return float(tokens) / float(unique_tokens)


def repetition_error(
    rungs: list[Any], unique_tokens: int, max_epochs: float, *, what: str = "the plan"
) -> UserError | None:
    """The one-line refusal of the rung with the most epochs above ``max_epochs``, or None.

    ``rungs`` need ``id`` and ``tokens``; ``unique_tokens`` is the training split's size.
    """
    worst = max(rungs, key=lambda r: r.tokens, default=None)
    if worst is None or epochs(worst.tokens, unique_tokens) <= max_epochs:
        return None
    over = sum(epochs(r.tokens, unique_tokens) > max_epochs for r in rungs)
    top = epochs(worst.tokens, unique_tokens)
    return UserError(
        f"rung {worst.id} of {what} trains {top:.2f} epochs of the {unique_tokens:,} training "
        f"tokens ({over} rung(s) above max_epochs {max_epochs:g}): its loss would also measure "
        "repetition; bring more data, lower the budget, or allow it with scalelab plan "
        f"--max-epochs {math.ceil(top * 100) / 100:g}"
    )


def repetition_note(rungs: list[Any], unique_tokens: int, max_epochs: float | None) -> str | None:
    """A sentence for plans and reports whose rungs repeat data, else None (``max_epochs``
    None: a study planned before the limit existed)."""
    over = [r for r in rungs if epochs(r.tokens, unique_tokens) > 1.0]
    if not over:
        return None
    top = max(epochs(r.tokens, unique_tokens) for r in over)
    allowed = (
        "not checked: planned before scalelab limited epochs"
        if max_epochs is None
        else f"allowed by max_epochs {max_epochs:g}"
    )
    return (
        f"Data repetition ({allowed}): {len(over)} rung(s) train more "
        f"than one epoch of the {unique_tokens:,} training tokens (up to {top:.2f}); their "
        "losses also measure repetition (Muennighoff et al. 2023, arXiv:2305.16264), which "
        "`scalelab fit results.csv --form data_constrained` models."
    )
