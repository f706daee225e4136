"""Prompt tuning (Lester et al. 2021) through PEFT: learned input embeddings before the text.

PEFT prepends the virtual tokens to the hidden states, so the model's outputs are
``P`` positions longer than the input; this method keeps the logits aligned with the input:

* NER: the labels ``[B, T]`` are padded with -100 for the virtual positions before the
  forward and those positions are dropped from the logits ``[B, P+T, C]`` afterwards.
* classification with last-token pooling (Llama/GPT-2): PEFT passes embeddings, so the
  model cannot find the padding; the method pools at the last real token itself.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterator
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from scalelab.config import Config
from scalelab.finetune.methods.base import (
    TaskModel,
    WrapContext,
    at_least_one,
    last_token_pooling,
    register,
)
from scalelab.finetune.methods.peft_common import PeftMethod, task_type


@dataclasses.dataclass(kw_only=True)
class PromptSettings(Config):
    """Prompt tuning's settings."""

    num_virtual_tokens: int = 20
    """Virtual tokens of the prompt (they use up positions of the window)."""

    init: Literal["vocab", "random"] = "vocab"
    """Prompt tuning start: embeddings of random vocabulary tokens (Lester et al. 2021 §3.2
    found this beats random init) or random vectors."""

    def validate(self) -> None:
        at_least_one("prompt.num_virtual_tokens", self.num_virtual_tokens)


@register("prompt")
class Prompt(PeftMethod):
    """Trained virtual-token embeddings before the input; the head trains in full."""

    sections = ("prompt",)
    prompt_learning = True
    trains = ("prompt_encoder.",)

    def __init__(self, *, prompt: PromptSettings) -> None:
        self.prompt = prompt
        self._pools_itself = False
        self._full_logits: torch.Tensor | None = None

    @property
    def reserved_positions(self) -> int:
        return self.prompt.num_virtual_tokens

    @property
    def prepended_positions(self) -> int:
        return self.prompt.num_virtual_tokens

    def peft_config(self, model: nn.Module, ctx: WrapContext) -> Any:
        import peft

        init = peft.PromptTuningInit.SAMPLE_VOCAB if self.prompt.init == "vocab" else "RANDOM"
        return peft.PromptTuningConfig(
            task_type=task_type(ctx.task_kind),
            num_virtual_tokens=self.prompt.num_virtual_tokens,
            prompt_tuning_init=init,
            modules_to_save=list(ctx.trained),
        )

    def attach(self, task_model: TaskModel) -> None:
        hf = task_model.hf_model
        self._pools_itself = task_model.task_kind == "classification" and last_token_pooling(hf)
        if self._pools_itself:
            # [B, P+T, C] per-position scores, pooled in forward() at the last real token.
            head = hf.get_submodule(task_model.head_modules[-1])
            head.register_forward_hook(self._keep_full_logits)

    def forward(
        self, task_model: TaskModel, inputs: dict[str, Any], labels: torch.Tensor | None
    ) -> dict[str, torch.Tensor]:
        if self._pools_itself:
            return self._last_token_forward(task_model, inputs, labels)
        n_virtual = self.prompt.num_virtual_tokens
        ner = task_model.task_kind == "ner"
        if labels is not None and ner:
            # labels [B, T] -> [B, P+T]: virtual positions are ignored by the loss.
            pad = labels.new_full((labels.shape[0], n_virtual), -100)
            labels = torch.cat([pad, labels], dim=1)
        out = task_model.model(**inputs, labels=labels, return_dict=True)
        logits = out.logits[:, n_virtual:] if ner else out.logits  # [B, P+T, C] -> [B, T, C]
        result = {"logits": logits}
        if labels is not None:
            result["loss"] = out.loss
        return result

    def _last_token_forward(
        self, task_model: TaskModel, inputs: dict[str, Any], labels: torch.Tensor | None
    ) -> dict[str, torch.Tensor]:
        """Prompt tuning + last-token pooling: pool the score at the last real token.

        The model sees ``inputs_embeds`` [B, P+T, d] and cannot find the padding itself
        (it would read the last position, a pad token for the shorter rows).
        """
        self._full_logits = None
        # The model's own pooling warns that it cannot see padding in embeddings; it is
        # replaced below, so that warning is silenced.
        with _quiet_logger(type(task_model.hf_model).forward.__module__):
            task_model.model(**inputs, return_dict=True)
        full = self._full_logits  # [B, P+T, C]
        self._full_logits = None
        mask = inputs.get("attention_mask")
        batch, length = inputs["input_ids"].shape
        if mask is None:
            last = torch.full((batch,), length - 1, device=full.device)
        else:
            # Rightmost real token, whether the batch is padded on the left or the right.
            positions = torch.arange(length, device=mask.device)
            last = (positions * (mask != 0)).argmax(dim=1)
        n_virtual = self.prompt.num_virtual_tokens
        pooled = full[torch.arange(batch, device=full.device), n_virtual + last]
        result = {"logits": pooled}  # [B, C]
        if labels is not None:
            result["loss"] = F.cross_entropy(pooled.float(), labels)
        return result

    def _keep_full_logits(self, _module: nn.Module, _args: Any, output: torch.Tensor) -> None:
        self._full_logits = output


@contextlib.contextmanager
def _quiet_logger(name: str) -> Iterator[None]:
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
