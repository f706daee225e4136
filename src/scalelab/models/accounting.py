"""Parameter counts by group and training FLOPs per token under named conventions.

Every number here is computed in exactly one place and from the config alone (no model
needed), so a plan, a run's ``summary.json`` and a fitted law all agree. The one
exception, :func:`measured_flops_per_token`, runs a real forward and backward pass under
``torch.utils.flop_counter.FlopCounterMode`` as an independent check.

Parameter groups (``embedding + non_embedding + head == total``, equal to the built
model's ``sum(p.numel())``):

- ``embedding``: token embedding, plus the learned position table (gpt2, bert) and BERT's
  token-type table. Lookup tables only.
- ``non_embedding``: Transformer blocks, final norm (decoders) or embedding LayerNorm
  (bert). This is Kaplan et al. (2020)'s N: "excluding all vocabulary and positional
  embeddings".
- ``head``: what maps the last hidden state to outputs beyond the tied embedding: the
  untied LM head (0 when tied), and for bert the pooler, masked-LM transform and bias,
  next-sentence classifier (and the untied decoder).

FLOP conventions (training = forward + backward, per token, one sequence of ``seq_len``):

- ``6n_kaplan``: 6 x non-embedding N (Kaplan et al. 2020, Section 2.1: C = 6ND with N
  excluding embeddings; attention's context-dependent term dropped).
- ``6n_total``: 6 x total N (the "6ND" of most compute-optimal tables).
- ``chinchilla``: Hoffmann et al. 2022, Appendix F: embeddings (counted as a one-hot
  matmul, 2 V d), per layer the Q/K/V projections, attention logits (full T x T, no
  causal discount), softmax (3 H T^2), softmax @ values, output projection and the dense
  block, then the final logits; backward = 2 x forward. Adapted: the dense block counts
  ``ffn_matrices`` matrices (3 for SwiGLU: gate, up, down; the paper's 2 otherwise), and
  for bert the masked-LM transform (2 d^2) is added to the logits term. Norms, biases,
  activations and rotary embeddings are ignored, as in the paper.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from scalelab.errors import UserError
from scalelab.models.config import ModelConfig

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn


@dataclasses.dataclass(frozen=True)
class ParamCounts:
    """Parameter counts of a model by group (see the module docstring)."""

    embedding: int
    non_embedding: int
    head: int
    tied: bool

    @property
    def total(self) -> int:
        return self.embedding + self.non_embedding + self.head

    def to_dict(self) -> dict[str, Any]:
        return {
            "embedding": self.embedding,
            "non_embedding": self.non_embedding,
            "head": self.head,
            "total": self.total,
            "tied": self.tied,
        }


def param_counts(cfg: ModelConfig) -> ParamCounts:
    """Exact parameter counts of the model :func:`~scalelab.models.build_model` builds."""
    d, f, v, t, n = cfg.d_model, cfg.ffn_dim, cfg.vocab_size, cfg.max_seq_len, cfg.n_layer
    untied_head = 0 if cfg.tie_embeddings else v * d
    if cfg.arch == "llama":
        # Per block: Q, K, V, O (d x d, no bias); gate, up, down (d x f); two RMSNorm gains.
        block = 4 * d * d + 3 * d * f + 2 * d
        return ParamCounts(
            embedding=v * d, non_embedding=n * block + d, head=untied_head, tied=cfg.tie_embeddings
        )
    if cfg.arch == "gpt2":
        # Per block: fused QKV (d x 3d + 3d), output proj (d x d + d), fc (d x f + f),
        # proj (f x d + d), two LayerNorms (gain + bias).
        block = (3 * d * d + 3 * d) + (d * d + d) + (d * f + f) + (f * d + d) + 4 * d
        return ParamCounts(
            embedding=v * d + t * d,
            non_embedding=n * block + 2 * d,  # + final LayerNorm
            head=untied_head,
            tied=cfg.tie_embeddings,
        )
    # bert (Hugging Face BertForPreTraining): Q, K, V, O with biases, two LayerNorms,
    # intermediate (d x f + f) and output (f x d + d) per block; the embedding LayerNorm.
    block = 4 * (d * d + d) + (d * f + f) + (f * d + d) + 4 * d
    head = (
        (d * d + d)  # pooler (tanh dense over [CLS])
        + (d * d + d + 2 * d)  # masked-LM transform: dense + LayerNorm
        + v  # masked-LM decoder bias
        + (2 * d + 2)  # next-sentence classifier
        + untied_head
    )
    return ParamCounts(
        embedding=v * d + t * d + 2 * d,  # tokens, positions, 2 token types
        non_embedding=n * block + 2 * d,
        head=head,
        tied=cfg.tie_embeddings,
    )


# ====================================================================== FLOPs


def chinchilla_forward_flops(
    *,
    n_layer: int,
    d_model: int,
    n_head: int,
    head_dim: int,
    d_ff: int,
    vocab_size: int,
    seq_len: int,
    ffn_matrices: int = 2,
    head_extra: int = 0,
) -> dict[str, float]:
    """Forward FLOPs of ONE sequence by term, Hoffmann et al. 2022 Appendix F.

    ``head_extra`` adds 2 x seq_len x head_extra to the logits term (bert's masked-LM
    transform, head_extra = d^2). Returns the terms and their ``total``.
    """
    t, d, inner = seq_len, d_model, head_dim * n_head
    terms = {
        "embeddings": 2.0 * t * vocab_size * d,
        "qkv": n_layer * 2.0 * 3 * t * d * inner,
        "attn_logits": n_layer * 2.0 * t * t * inner,
        "softmax": n_layer * 3.0 * n_head * t * t,
        "attn_reduce": n_layer * 2.0 * t * t * inner,
        "attn_out": n_layer * 2.0 * t * inner * d,
        "dense": n_layer * 2.0 * t * ffn_matrices * d * d_ff,
        "logits": 2.0 * t * d * vocab_size + 2.0 * t * head_extra,
    }
    terms["total"] = sum(terms.values())
    return terms


def chinchilla_breakdown(cfg: ModelConfig, seq_len: int | None = None) -> dict[str, float]:
    """Appendix F forward FLOPs per sequence by term for ``cfg`` (see the module docstring)."""
    return chinchilla_forward_flops(
        n_layer=cfg.n_layer,
        d_model=cfg.d_model,
        n_head=cfg.n_head,
        head_dim=cfg.head_dim,
        d_ff=cfg.ffn_dim,
        vocab_size=cfg.vocab_size,
        seq_len=_seq_len(cfg, seq_len),
        ffn_matrices=cfg.ffn_matrices,
        head_extra=0 if cfg.is_decoder else cfg.d_model * cfg.d_model,
    )


def _seq_len(cfg: ModelConfig, seq_len: int | None) -> int:
    seq_len = cfg.max_seq_len if seq_len is None else seq_len
    if seq_len < 1:
        raise UserError(f"seq_len must be positive, got {seq_len}")
    return seq_len


def _flops_6n_kaplan(cfg: ModelConfig, seq_len: int) -> float:
    return 6.0 * param_counts(cfg).non_embedding


def _flops_6n_total(cfg: ModelConfig, seq_len: int) -> float:
    return 6.0 * param_counts(cfg).total


def _flops_chinchilla(cfg: ModelConfig, seq_len: int) -> float:
    # Backward = 2 x forward (Appendix F), so training = 3 x forward.
    return 3.0 * chinchilla_breakdown(cfg, seq_len)["total"] / seq_len


FLOP_CONVENTIONS: dict[str, Callable[[ModelConfig, int], float]] = {
    "6n_kaplan": _flops_6n_kaplan,
    "6n_total": _flops_6n_total,
    "chinchilla": _flops_chinchilla,
}
"""Training FLOPs per token by convention name (the ``measured`` count is separate)."""

CONVENTION_ALIASES: dict[str, str] = {
    "6nd": "6n_kaplan",  # the spelling `scalelab fit` used before 0.2 (C = 6 N D)
    "6n": "6n_kaplan",
    "kaplan": "6n_kaplan",
    "appendix_f": "chinchilla",
}
"""Other accepted spellings of the conventions (every command takes the same names)."""


def canonical_convention(name: str) -> str:
    """The convention's canonical name (``6nd`` -> ``6n_kaplan``); UserError if unknown."""
    key = str(name).strip().lower()
    key = CONVENTION_ALIASES.get(key, key)
    if key not in FLOP_CONVENTIONS:
        known = ", ".join([*FLOP_CONVENTIONS, *CONVENTION_ALIASES])
        raise UserError(f"unknown FLOP convention {name!r}; known: {known}")
    return key


def flops_per_token(
    cfg: ModelConfig, convention: str = "chinchilla", *, seq_len: int | None = None
) -> float:
    """Training (forward + backward) FLOPs per token under a named convention."""
    fn = FLOP_CONVENTIONS[canonical_convention(convention)]
    return fn(cfg, _seq_len(cfg, seq_len))


def training_flops(cfg: ModelConfig, tokens: float, seq_len: int | None = None) -> dict[str, float]:
    """Total training FLOPs for ``tokens`` tokens under every formula convention."""
    if tokens < 0:
        raise UserError(f"tokens must be non-negative, got {tokens}")
    return {
        name: flops_per_token(cfg, name, seq_len=seq_len) * float(tokens)
        for name in FLOP_CONVENTIONS
    }


def measured_flops_per_token(
    model: nn.Module, seq_len: int, batch: int = 1, *, vocab_size: int | None = None
) -> float:
    """Matmul FLOPs per token of one real forward + backward, by ``FlopCounterMode``.

    Counts matrix multiplies and attention (full T x T, like Appendix F) but not the
    embedding lookup, softmax, norms or elementwise work; torch counts the attention
    backward as 2.5 x its forward (scores are recomputed). Gradients left on the model
    are cleared afterwards. Runs on the model's device, in its dtype, without autocast.
    """
    import torch
    from torch.utils.flop_counter import (
        FlopCounterMode,
        sdpa_backward_flop_count,
        sdpa_flop_count,
    )

    cfg = getattr(model, "config", None)
    if vocab_size is None:
        vocab_size = getattr(cfg, "vocab_size", None)
    if vocab_size is None:
        raise UserError("measured_flops_per_token: pass vocab_size for this model")
    device = next(model.parameters()).device
    gen = torch.Generator(device="cpu").manual_seed(0)
    ids = torch.randint(0, vocab_size, (batch, seq_len), generator=gen).to(device)
    batch_inputs: dict[str, torch.Tensor] = {"input_ids": ids, "labels": ids.clone()}
    if getattr(cfg, "model_type", None) == "bert" or getattr(cfg, "arch", None) == "bert":
        batch_inputs["token_type_ids"] = torch.zeros_like(ids)
        batch_inputs["attention_mask"] = torch.ones_like(ids)
        batch_inputs["next_sentence_label"] = torch.zeros(batch, dtype=torch.long, device=device)

    # torch's table lacks the CPU flash-attention kernels; count them like the CUDA ones.
    def fwd(q, k, v, *args, out_shape=None, **kwargs):
        return sdpa_flop_count(q, k, v)

    def bwd(grad_out, q, k, v, *args, out_shape=None, **kwargs):
        return sdpa_backward_flop_count(grad_out, q, k, v)

    aten = torch.ops.aten
    mapping = {}
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):
        mapping[aten._scaled_dot_product_flash_attention_for_cpu] = fwd
        mapping[aten._scaled_dot_product_flash_attention_for_cpu_backward] = bwd
    counter = FlopCounterMode(display=False, custom_mapping=mapping)
    was_training = model.training
    model.train()
    try:
        with counter:
            out = model(**batch_inputs)
            out["loss"].backward()
    finally:
        model.train(was_training)
        model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / (batch * seq_len)
