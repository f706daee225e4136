"""Prefix tuning (Li & Liang 2021) through PEFT: learned keys/values before every layer's.

The prefix reaches the attention as cached keys/values, so the model must take
``past_key_values``; one that does not fails here with a UserError naming the methods
that work, rather than deep inside a forward pass. The outputs keep the input's length,
but the prefix occupies the first positions, so it shrinks the window.
"""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from typing import Any

from torch import nn

from scalelab.config import Config
from scalelab.errors import UserError
from scalelab.finetune.methods.base import WrapContext, at_least_one, register
from scalelab.finetune.methods.peft_common import PeftMethod, task_type


@dataclasses.dataclass(kw_only=True)
class PrefixSettings(Config):
    """Prefix tuning's settings."""

    num_virtual_tokens: int = 20
    """Virtual tokens of the prefix (they use up positions of the window)."""

    projection: bool = False
    """Reparametrise the prefix through a 2-layer MLP (Li & Liang 2021 §4.3)."""

    def validate(self) -> None:
        at_least_one("prefix.num_virtual_tokens", self.num_virtual_tokens)


@register("prefix")
class Prefix(PeftMethod):
    """A trained prefix of keys/values per layer; the head trains in full."""

    sections = ("prefix",)
    prompt_learning = True
    trains = ("prompt_encoder.",)

    def __init__(self, *, prefix: PrefixSettings) -> None:
        self.prefix = prefix

    @property
    def reserved_positions(self) -> int:
        return self.prefix.num_virtual_tokens

    def peft_config(self, model: nn.Module, ctx: WrapContext) -> Any:
        import peft

        check_prefix_support(model)
        return peft.PrefixTuningConfig(
            task_type=task_type(ctx.task_kind),
            num_virtual_tokens=self.prefix.num_virtual_tokens,
            prefix_projection=self.prefix.projection,
            modules_to_save=list(ctx.trained),
        )

    def load_weights(
        self,
        base: nn.Module,
        directory: Path,
        meta: dict[str, Any],
        *,
        trained: tuple[str, ...],
        trainable: bool,
    ) -> nn.Module:
        if trainable and self.prefix.projection:
            raise UserError(
                f"{directory}: prefix tuning with prefix.projection saves only the projected "
                "prefix, so training cannot continue from it; load it for evaluation only"
            )
        return super().load_weights(base, directory, meta, trained=trained, trainable=trainable)


def check_prefix_support(model: nn.Module) -> None:
    """UserError unless the model (or its backbone) takes ``past_key_values``.

    Prefix tuning hands the learned prefix to the attention as cached keys/values; a model
    without a key/value cache has nowhere to put it.
    """
    if _takes_past(model):
        return
    prefix = getattr(model, "base_model_prefix", "")
    backbone = getattr(model, prefix, None) if prefix else None
    if backbone is not None and _takes_past(backbone):
        return
    raise UserError(
        f"method 'prefix' needs a model that takes past_key_values (a key/value cache) and "
        f"{type(model).__name__} does not; use --method lora, adalora, prompt, adapter or full"
    )


def _takes_past(module: nn.Module) -> bool:
    try:
        return "past_key_values" in inspect.signature(module.forward).parameters
    except (TypeError, ValueError):
        return False
