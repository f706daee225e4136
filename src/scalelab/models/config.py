"""The model config: one keyword-only dataclass for every architecture scalelab builds.

Importing this module is cheap (no torch), so stage configs can nest a
:class:`ModelConfig` and ``scalelab --help`` stays fast.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Literal

from scalelab.config import Config
from scalelab.errors import UserError

Arch = Literal["llama", "gpt2", "bert"]
ARCHS: tuple[str, ...] = ("llama", "gpt2", "bert")
SHAPE_KEYS: tuple[str, ...] = ("n_layer", "d_model", "n_head", "d_ff")
"""The fields that make a model's shape (a :class:`~scalelab.models.sizes.Shape`)."""


def ffn_multiple(d_model: int) -> int:
    """Granularity of the feed-forward width: a power of two near d_model/8, in [4, 64].

    Coarse enough for good kernel shapes (multiples of 64 from d_model 512 up, as in
    the Llama reference code's ``multiple_of``, which used 256 at 7B+), fine enough that
    the size dial can hit a parameter target within ~3% (one step changes the
    non-embedding count by about ffn_multiple/(4 d_model) <= 1/32).
    """
    m = 1
    while m * 2 <= max(d_model // 8, 1):
        m *= 2
    return max(4, min(64, m))


def default_d_ff(arch: str, d_model: int) -> int:
    """Feed-forward width when ``d_ff`` is not given.

    llama: SwiGLU at 8/3 d_model rounded up to :func:`ffn_multiple` (Shazeer 2020 keeps
    the parameter count of a 4 d_model GELU MLP with three matrices instead of two;
    Touvron et al. 2023 round the same way). gpt2 and bert: 4 d_model (Vaswani et al.
    2017; Radford et al. 2019; Devlin et al. 2019).
    """
    if arch == "llama":
        m = ffn_multiple(d_model)
        return -(-8 * d_model // (3 * m)) * m
    return 4 * d_model


@dataclasses.dataclass(kw_only=True)
class ModelConfig(Config):
    """Shape and flavour of a Transformer; :func:`scalelab.models.build_model` builds it."""

    arch: Arch = "llama"
    """Architecture: llama (decoder: RMSNorm, SwiGLU, rotary positions, no biases,
    pre-norm), gpt2 (decoder: LayerNorm, 4x GELU MLP, learned positions, biases) or bert
    (encoder trained with masked-LM + next-sentence prediction)."""
    n_layer: int = 2
    """Number of Transformer blocks."""
    d_model: int = 64
    """Width of the residual stream."""
    n_head: int = 2
    """Attention heads; d_model must be a multiple of it (head dim = d_model / n_head)."""
    d_ff: int | None = None
    """Feed-forward width; none = 8/3 d_model rounded up (llama SwiGLU) or 4 d_model."""
    vocab_size: int = 4096
    """Vocabulary size (the trainer sets it from the tokenizer)."""
    max_seq_len: int = 256
    """Longest sequence: size of the learned position table (gpt2, bert) or rotary cache."""
    tie_embeddings: bool = True
    """Share the token embedding with the output head (LM head / masked-LM decoder)."""
    norm_eps: float = 1e-5
    """Epsilon of RMSNorm / LayerNorm."""
    rope_theta: float = 10000.0
    """Base of the rotary frequencies (llama; Su et al. 2021)."""
    dropout: float = 0.0
    """Dropout on embeddings, attention probabilities and residual branches (0 for pretraining)."""
    init_std: float = 0.02
    """Std of the normal init of weight matrices; residual output projections get
    init_std / sqrt(2 n_layer) (GPT-2, Radford et al. 2019)."""

    def validate(self) -> None:
        if self.arch not in ARCHS:
            raise UserError(f"model.arch: {self.arch!r} is not one of {', '.join(ARCHS)}")
        for name in ("n_layer", "d_model", "n_head", "vocab_size", "max_seq_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise UserError(f"model.{name} must be a positive integer, got {value!r}")
        if self.d_model % self.n_head:
            raise UserError(
                f"model.d_model ({self.d_model}) must be a multiple of model.n_head ({self.n_head})"
            )
        if self.arch == "llama" and self.head_dim % 2:
            raise UserError(
                f"model: rotary positions need an even head dim, got d_model/n_head = {self.head_dim}"
            )
        if self.d_ff is not None and (not isinstance(self.d_ff, int) or self.d_ff < 1):
            raise UserError(f"model.d_ff must be a positive integer or none, got {self.d_ff!r}")
        if self.vocab_size < 2:
            raise UserError(f"model.vocab_size must be at least 2, got {self.vocab_size}")
        if not 0.0 <= self.dropout < 1.0:
            raise UserError(f"model.dropout must be in [0, 1), got {self.dropout}")
        for name in ("norm_eps", "rope_theta", "init_std"):
            if not getattr(self, name) > 0:
                raise UserError(f"model.{name} must be positive, got {getattr(self, name)}")

    # ------------------------------------------------------------------ derived
    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    @property
    def ffn_dim(self) -> int:
        """The feed-forward width actually used (``d_ff`` or the arch's default)."""
        return self.d_ff if self.d_ff is not None else default_d_ff(self.arch, self.d_model)

    @property
    def ffn_matrices(self) -> int:
        """Weight matrices in the MLP: 3 for SwiGLU (gate, up, down), else 2."""
        return 3 if self.arch == "llama" else 2

    @property
    def is_decoder(self) -> bool:
        return self.arch != "bert"

    @classmethod
    def from_shape(cls, shape: Any, **fields: Any) -> ModelConfig:
        """A config of ``shape`` (a ``Shape`` or a mapping with the :data:`SHAPE_KEYS`; a
        missing or empty ``d_ff`` is the architecture's default); other fields as keywords."""
        if isinstance(shape, Mapping):
            values = {k: shape.get(k) for k in SHAPE_KEYS}
        else:
            values = {k: getattr(shape, k) for k in SHAPE_KEYS}
        return cls(**values, **fields)

    def shape(self) -> dict[str, int]:
        """The shape as a plain dict (``d_ff`` resolved), as summaries and plans record it."""
        return {**{k: getattr(self, k) for k in SHAPE_KEYS}, "d_ff": self.ffn_dim}

    def resolved(self) -> ModelConfig:
        """A copy with ``d_ff`` filled in, so a saved config shows the real shape."""
        return self.replace(d_ff=self.ffn_dim)
