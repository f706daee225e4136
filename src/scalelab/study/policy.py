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
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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
