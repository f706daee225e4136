"""Models: size registry and dial, construction, Hugging Face export, parameter and FLOP accounting.

Cheap to import (no torch): the torch-dependent names are loaded on first use.

>>> from scalelab.models import model_config, build_model, param_counts
>>> cfg = model_config("tiny", vocab_size=4096, max_seq_len=256)
>>> model = build_model(cfg)          # DecoderLM (llama flavour)
>>> param_counts(cfg).non_embedding
100672
"""

from __future__ import annotations

import importlib
from typing import Any

from scalelab.models.accounting import (
    FLOP_CONVENTIONS,
    ParamCounts,
    chinchilla_breakdown,
    flops_per_token,
    measured_flops_per_token,
    param_counts,
    training_flops,
)
from scalelab.models.config import ModelConfig, default_d_ff
from scalelab.models.sizes import SIZES, Shape, model_config, resolve_size, shape_for_params

_LAZY = {
    "build_model": "scalelab.models.build",
    "maybe_compile": "scalelab.models.build",
    "unwrap_model": "scalelab.models.build",
    "DecoderLM": "scalelab.models.decoder",
    "linear_cross_entropy": "scalelab.models.loss",
    "save_hf": "scalelab.models.hf",
    "load_hf": "scalelab.models.hf",
}

__all__ = [
    "FLOP_CONVENTIONS",
    "SIZES",
    "ModelConfig",
    "ParamCounts",
    "Shape",
    "chinchilla_breakdown",
    "default_d_ff",
    "flops_per_token",
    "measured_flops_per_token",
    "model_config",
    "param_counts",
    "resolve_size",
    "shape_for_params",
    "training_flops",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'scalelab.models' has no attribute {name!r}")
