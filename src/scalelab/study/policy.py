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

Data repetition is policy too: :data:`MAX_EPOCHS` and :func:`repetition_error` decide
whether a plan may train a rung on more than one epoch of its training split.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from scalelab.config import Config
from scalelab.errors import UserError

# DeepSeek LLM (2024), Eq. (1).
_DEEPSEEK_LR = (0.3118, -0.1250)
_DEEPSEEK_BATCH = (0.2920, 0.3271)


@dataclass(kw_only=True)
class HyperPolicy(Config):
    """How each rung's learning rate and batch size follow from its compute budget."""

    rule: str = "deepseek"
    """deepseek (lr and batch as power laws of compute, DeepSeek LLM 2024 Eq. 1) or fixed."""
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

    def validate(self) -> None:
        if self.rule not in ("deepseek", "fixed"):
            raise UserError(f"hyperparameter rule must be deepseek or fixed, got {self.rule!r}")
        if self.lr_range[0] > self.lr_range[1] or self.batch_range[0] > self.batch_range[1]:
            raise UserError("lr_range and batch_range must be (low, high)")

    def learning_rate(self, compute: float) -> float:
        if self.rule == "fixed":
            return self.lr
        a, b = _DEEPSEEK_LR
        return float(min(max(a * compute**b, self.lr_range[0]), self.lr_range[1]))

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
