"""The decoder LM scalelab trains: a lean single-file module, exported to Hugging Face.

Two flavours from one :class:`~scalelab.models.config.ModelConfig`:

- ``llama`` (default): pre-norm RMSNorm, rotary positions (Su et al. 2021, in Hugging
  Face's split-halves convention), SwiGLU MLP (Shazeer 2020), no biases. Exports to
  ``LlamaForCausalLM``.
- ``gpt2``: pre-norm LayerNorm with biases, learned positions, 4x GELU (tanh) MLP.
  Exports to ``GPT2LMHeadModel``.

Why our own module instead of the Transformers classes: on this CPU (the project's
measurements) a ``LlamaForCausalLM`` built from config trained at ~0.8x a minimal
nanoGPT-style model and ``GPT2LMHeadModel`` at 0.4-0.66x, while this module matches or
beats that reference (``bench/pretrain_throughput.py``). The lean module fuses Q/K/V into one matmul and
gate/up into another, applies rotary to q and k in one pass, and computes the loss with
:func:`~scalelab.models.loss.linear_cross_entropy` (no fp32 logits; a third of the step
at small widths). Weights are laid out so that export is a rename/split (``hf.py``).

Forward contract (what the trainer calls): ``model(input_ids, labels=None)`` with
``input_ids`` [B, T] and ``labels`` [B, T] ALREADY shifted by the data pipeline
(``labels[b, t]`` is the target at position t; -100 = no loss) returns ``{"loss"}``
(mean over labelled positions), or ``{"logits"}`` [B, T, V] when ``labels`` is None.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from scalelab.models.config import ModelConfig
from scalelab.models.loss import linear_cross_entropy


def rope_tables(head_dim: int, max_seq_len: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the rotary angles, each [max_seq_len, head_dim / 2], fp32.

    Frequencies theta^(-2i/head_dim) as in Hugging Face's default rotary embedding, so
    exported checkpoints give identical logits.
    """
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    angles = torch.outer(torch.arange(max_seq_len, dtype=torch.float32), inv_freq)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` [..., T, head_dim] by position; cos/sin [T, head_dim / 2].

    Split-halves convention (``rotate_half``): the first half of each head pairs with the
    second half, as in Hugging Face Llama (not interleaved pairs as in the paper).
    """
    half = x.shape[-1] // 2
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)  # broadcast over the leading dims
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


class Attention(nn.Module):
    """Causal multi-head self-attention with one fused Q/K/V projection and SDPA."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        bias = cfg.arch == "gpt2"
        self.n_head, self.head_dim = cfg.n_head, cfg.head_dim
        self.rotary = cfg.arch == "llama"
        self.dropout = cfg.dropout
        # Rows of qkv.weight: [q heads | k heads | v heads], each head_dim rows per head.
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=bias)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=bias)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor | None, sin: torch.Tensor | None
    ) -> torch.Tensor:
        b, t, d = x.shape
        qkv = self.qkv(x).view(b, t, 3, self.n_head, self.head_dim)  # [B, T, 3, H, hd]
        # Attention wants [B, H, T, hd]. Rotary writes q and k in that layout directly
        # (one pass over both); v stays a strided view.
        qk = qkv[:, :, :2].permute(2, 0, 3, 1, 4)  # [2, B, H, T, hd] view
        if self.rotary:
            qk = apply_rope(qk, cos, sin)
        q, k = qk.unbind(0)
        v = qkv[:, :, 2].transpose(1, 2)
        dropout = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class MLP(nn.Module):
    """SwiGLU (llama: fused gate|up matrix) or GELU-tanh (gpt2) feed-forward block."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.gated = cfg.arch == "llama"
        bias = cfg.arch == "gpt2"
        f = cfg.ffn_dim
        # llama: rows [gate (f) | up (f)] of one matrix, so one matmul feeds both.
        self.fc = nn.Linear(cfg.d_model, 2 * f if self.gated else f, bias=bias)
        self.proj = nn.Linear(f, cfg.d_model, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)  # [B, T, 2f] or [B, T, f]
        if self.gated:
            gate, up = h.chunk(2, dim=-1)
            h = F.silu(gate) * up
        else:
            h = F.gelu(h, approximate="tanh")
        return self.proj(h)


def _norm(cfg: ModelConfig) -> nn.Module:
    if cfg.arch == "llama":
        return nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
    return nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)


class Block(nn.Module):
    """Pre-norm residual block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.norm1 = _norm(cfg)
        self.attn = Attention(cfg)
        self.norm2 = _norm(cfg)
        self.mlp = MLP(cfg)
        self.drop = nn.Dropout(cfg.dropout) if cfg.dropout > 0 else nn.Identity()

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor | None = None, sin: torch.Tensor | None = None
    ) -> torch.Tensor:
        x = x + self.drop(self.attn(self.norm1(x), cos, sin))
        return x + self.drop(self.mlp(self.norm2(x)))


class DecoderLM(nn.Module):
    """Decoder-only language model (llama or gpt2 flavour); see the module docstring."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        if not cfg.is_decoder:
            raise ValueError(f"DecoderLM needs a decoder arch, got {cfg.arch}")
        self.config = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.wpe = nn.Embedding(cfg.max_seq_len, cfg.d_model) if cfg.arch == "gpt2" else None
        self.drop = nn.Dropout(cfg.dropout) if cfg.dropout > 0 else nn.Identity()
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.norm_f = _norm(cfg)
        self.lm_head = (
            None if cfg.tie_embeddings else nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        )
        if cfg.arch == "llama":
            cos, sin = rope_tables(cfg.head_dim, cfg.max_seq_len, cfg.rope_theta)
            # Not saved: derived from the config (and HF recomputes them the same way).
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        else:
            self.rope_cos = self.rope_sin = None
        # Recompute each block in the backward pass instead of storing its activations
        # (set from --runtime.activation-checkpointing; not part of the config or weights).
        self.activation_checkpointing = False
        # Set by compile_for_training (scalelab.models.maybe_compile).
        self.compiled_loss = False
        self._compiled_body = None
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """GPT-2 / nanoGPT init: N(0, init_std) weights, residual projections scaled by
        1/sqrt(2 n_layer) (Radford et al. 2019), zero biases, unit norm gains."""
        std = self.config.init_std
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=std)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm | nn.RMSNorm):
                nn.init.ones_(module.weight)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
        residual_std = std / math.sqrt(2 * self.config.n_layer)
        for block in self.blocks:
            nn.init.normal_(block.attn.proj.weight, mean=0.0, std=residual_std)
            nn.init.normal_(block.mlp.proj.weight, mean=0.0, std=residual_std)

    @property
    def head_weight(self) -> torch.Tensor:
        """[V, d] output projection (the token embedding when tied)."""
        return self.wte.weight if self.lm_head is None else self.lm_head.weight

    def hidden_states(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Final-norm hidden states [B, T, d] for ``input_ids`` [B, T]."""
        t = input_ids.shape[1]
        if t > self.config.max_seq_len:
            raise ValueError(f"sequence length {t} exceeds max_seq_len {self.config.max_seq_len}")
        body = self._compiled_body if self._compiled_body is not None else self._body
        return body(input_ids)

    def _body(self, input_ids: torch.Tensor) -> torch.Tensor:
        t = input_ids.shape[1]
        x = self.wte(input_ids)  # [B, T, d] fp32 residual stream (autocast keeps it fp32)
        if self.wpe is not None:
            x = x + self.wpe.weight[:t]
        x = self.drop(x)
        cos = self.rope_cos[:t] if self.rope_cos is not None else None
        sin = self.rope_sin[:t] if self.rope_sin is not None else None
        remat = self.activation_checkpointing and torch.is_grad_enabled()
        for block in self.blocks:
            if remat:  # non-reentrant: works with autocast, DDP, FSDP2 and torch.compile
                x = checkpoint(block, x, cos, sin, use_reentrant=False)
            else:
                x = block(x, cos, sin)
        return self.norm_f(x)

    def compile_for_training(self) -> None:
        """Compile the embedding-to-final-norm body as one graph and run the loss's
        softmax through Inductor; parameter names (state dict) stay as they are."""
        self._compiled_body = torch.compile(self._body, dynamic=False)
        self.compiled_loss = True

    def forward(
        self, input_ids: torch.Tensor, labels: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        h = self.hidden_states(input_ids)
        if labels is None:
            return {"logits": F.linear(h, self.head_weight)}  # [B, T, V]
        d = h.shape[-1]
        loss = linear_cross_entropy(
            h.reshape(-1, d), self.head_weight, labels.reshape(-1), compiled=self.compiled_loss
        )
        return {"loss": loss}
