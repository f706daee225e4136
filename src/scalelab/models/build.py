"""Model construction and the compile helper the trainer calls."""

from __future__ import annotations

import torch
from torch import nn

from scalelab.models.config import ModelConfig


def build_model(cfg: ModelConfig) -> nn.Module:
    """A freshly initialised model for ``cfg``, on CPU in fp32; nothing is downloaded.

    Initialisation draws from torch's global RNG, so ``torch.manual_seed(seed)`` before
    the call makes it reproducible. Decoders (llama, gpt2) are
    :class:`~scalelab.models.decoder.DecoderLM`; bert is a Hugging Face
    ``BertForPreTraining`` subclass (:mod:`scalelab.models.encoder`).
    """
    if cfg.is_decoder:
        from scalelab.models.decoder import DecoderLM

        return DecoderLM(cfg)
    from scalelab.models.encoder import build_bert

    return build_bert(cfg)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module inside DDP (``.module``) and ``torch.compile`` (``._orig_mod``) wrappers."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


def maybe_compile(model: nn.Module, enabled: bool = True) -> nn.Module:
    """Compile ``model`` for training with ``torch.compile``, in place; returns it.

    For :class:`~scalelab.models.decoder.DecoderLM` the body (embedding, blocks, final
    norm) becomes one graph and the chunked vocabulary loss runs its per-chunk
    softmax/gradient through Inductor (its matmuls and loop stay eager; see
    :meth:`~scalelab.models.decoder.DecoderLM.compile_for_training`). For BERT only the
    encoder is compiled: the masked-LM head works on a data-dependent number of masked
    positions, which would recompile at every batch. Parameter names do not change, so
    the state dict, optimizer state and checkpoints are the same as uncompiled.
    Call it before wrapping in DDP.
    """
    if not enabled:
        return model
    from scalelab.models.decoder import DecoderLM

    if isinstance(model, DecoderLM):
        model.compile_for_training()
    else:
        from scalelab.models.encoder import BertPretrainingModel  # imports transformers

        if isinstance(model, BertPretrainingModel):
            model.bert.compile(dynamic=False)
        else:
            model.compile(dynamic=False)
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
    return model
