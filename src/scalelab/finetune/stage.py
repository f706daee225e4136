"""The fine-tuning stage's module name in scalelab 0.1; it is :mod:`scalelab.finetune.finetune`.

Kept so that 0.1 code (``from scalelab.finetune.stage import FinetuneConfig, finetune``)
still runs.
"""

from scalelab.finetune.finetune import (  # noqa: F401
    DEFAULT_LR,
    FinetuneConfig,
    finetune,
    finetune_optim,
    gold_of,
    headline,
    metric_name,
    resolve_model_dir,
    score,
    train_job,
)
