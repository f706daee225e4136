"""Learning-rate schedules as pure functions of the step.

Because the multiplier is a pure function of (step, total steps, config), the schedule's
"state" is just the step, which the checkpoint carries: a resumed run continues the same
curve exactly.
"""

from __future__ import annotations

import math
from typing import Literal

Schedule = Literal["cosine", "wsd", "linear", "constant"]
DecayShape = Literal["linear", "1-sqrt"]


def wsd_decay_start(total_steps: int, decay_fraction: float) -> int:
    """The first step of a ``wsd`` run's decay: its last ``decay_fraction`` of the steps
    (at least one). A WSD trunk saves the checkpoint a branch starts from at this step."""
    return total_steps - max(1, round(decay_fraction * total_steps))


def lr_multiplier(
    step: int,
    total_steps: int,
    *,
    schedule: Schedule = "cosine",
    warmup_steps: int = 0,
    min_lr_ratio: float = 0.1,
    decay_fraction: float = 0.2,
    decay_shape: DecayShape = "linear",
) -> float:
    """Multiplier of the peak learning rate for optimizer step ``step`` (0-based).

    - warmup: linear from 1/warmup to 1 over ``warmup_steps`` (every schedule);
    - ``cosine``: half-cosine from 1 down to ``min_lr_ratio`` at the last step
      (Loshchilov & Hutter 2017; Hoffmann et al. 2022 match the cycle to the run length
      and decay to 10% of the peak, our default);
    - ``wsd``: warmup-stable-decay — constant, then a linear decay to ``min_lr_ratio``
      over the final ``decay_fraction`` of the run (Hu et al. 2024, MiniCPM; Hägele et
      al. 2024 find a 20% cool-down matches cosine); ``decay_shape`` ``1-sqrt`` decays
      as 1 - sqrt(progress) instead, the cool-down Hägele et al. 2024 (arXiv:2405.18392,
      Sec. 3, Fig. 4) found better than linear;
    - ``linear``: linear decay from 1 to ``min_lr_ratio`` (BERT-style fine-tuning);
    - ``constant``: 1 after warmup.
    """
    if total_steps <= 0:
        return 1.0
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, max(0.0, (step - warmup_steps) / max(1, span - 1)))
    if schedule == "cosine":
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    if schedule == "linear":
        return 1.0 - (1.0 - min_lr_ratio) * progress
    if schedule == "wsd":
        decay_start = wsd_decay_start(total_steps, decay_fraction)
        if step < decay_start:
            return 1.0
        frac = min(1.0, (step - decay_start + 1) / (total_steps - decay_start))
        if decay_shape == "1-sqrt":
            frac = math.sqrt(frac)
        return 1.0 - (1.0 - min_lr_ratio) * frac
    raise ValueError(f"unknown schedule {schedule!r}")
