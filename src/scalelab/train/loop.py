"""Kept for old imports: the training loop now lives in :mod:`scalelab.train.trainer`.

``from scalelab.train.loop import OptimConfig, RuntimeConfig, TrainJob, run`` keeps
working; the configs come from :mod:`scalelab.train.config`. ``TrainJob`` has the new
shape (``evaluation=Evaluation(...)``, ``io=ModelIO(...)``, ``tokens_per_step`` /
``examples_per_step``); the old keywords (``unit``, ``per_step``, ``evaluate``,
``eval_every``, ...) are gone. New code should use ``Trainer(job).fit()``.
"""

from __future__ import annotations

from typing import Any

from scalelab.train.config import OptimConfig, RuntimeConfig
from scalelab.train.trainer import BatchSource, Evaluation, ModelIO, Trainer, TrainJob

__all__ = [
    "BatchSource",
    "Evaluation",
    "ModelIO",
    "OptimConfig",
    "RuntimeConfig",
    "TrainJob",
    "Trainer",
    "run",
]


def run(job: TrainJob) -> dict[str, Any]:
    """Train (or resume) ``job`` to completion; return the final summary dict."""
    return Trainer(job).fit()
