"""Models: size registry and dial, construction, Hugging Face export, parameter and FLOP accounting.

Cheap to import (no torch): every name is loaded on first use.

>>> from scalelab.models import model_config, build_model, param_counts
>>> cfg = model_config("tiny", vocab_size=4096, max_seq_len=256)
>>> model = build_model(cfg)          # DecoderLM (llama flavour)
>>> param_counts(cfg).non_embedding
100672
"""

from __future__ import annotations

from scalelab.utils.lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(
        (
            "FLOP_CONVENTIONS",
            "ParamCounts",
            "canonical_convention",
            "chinchilla_breakdown",
            "flops_per_token",
            "measured_flops_per_token",
            "param_counts",
            "training_flops",
        ),
        "scalelab.models.accounting",
    ),
    **dict.fromkeys(("ModelConfig", "SHAPE_KEYS", "default_d_ff"), "scalelab.models.config"),
    **dict.fromkeys(
        ("SIZES", "Shape", "model_config", "resolve_size", "shape_for_params"),
        "scalelab.models.sizes",
    ),
    **dict.fromkeys(("build_model", "maybe_compile", "unwrap_model"), "scalelab.models.build"),
    "DecoderLM": "scalelab.models.decoder",
    "linear_cross_entropy": "scalelab.models.loss",
    "save_hf": "scalelab.models.hf",
    "load_hf": "scalelab.models.hf",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
