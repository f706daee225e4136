"""Bottleneck adapters (Houlsby et al. 2019; Pfeiffer et al. 2020) as a fine-tuning method.

The adapters themselves are in :mod:`~scalelab.finetune.methods.bottleneck`. What trains:
the adapters, the task head and, by default, every normalisation layer. Saved as
``adapters.safetensors`` (only those weights) with the placement, sizes and wrapped
modules in task_model.json.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from scalelab.config import Config
from scalelab.errors import UserError
from scalelab.finetune.methods.base import (
    FinetuneMethod,
    TaskModel,
    WrapContext,
    at_least_one,
    register,
)
from scalelab.finetune.methods.bottleneck import (
    AdapterSpec,
    adapter_trainable_names,
    add_bottleneck_adapters,
    mark_adapter_trainable,
)

ADAPTER_WEIGHTS = "adapters.safetensors"


@dataclasses.dataclass(kw_only=True)
class AdapterSettings(Config):
    """Bottleneck adapters' settings."""

    placement: Literal["houlsby", "pfeiffer"] = "houlsby"
    """houlsby: adapters after the attention and the feed-forward output projections;
    pfeiffer: only after the feed-forward output projection."""

    size: int | None = None
    """Adapter bottleneck width m; empty = hidden size / adapter.reduction."""

    reduction: int = 16
    """Hidden size / bottleneck width when adapter.size is empty (Pfeiffer et al. 2020)."""

    activation: Literal["relu", "gelu", "swish", "tanh"] = "relu"
    """Non-linearity inside the adapters."""

    train_norms: bool = True
    """Also train the layer norms with adapters (Houlsby et al. 2019 §2.1 do)."""

    def validate(self) -> None:
        at_least_one("adapter.size", self.size)
        at_least_one("adapter.reduction", self.reduction)


@register("adapter")
class Adapter(FinetuneMethod):
    """Zero-initialised bottleneck adapters after the block's output projections."""

    sections = ("adapter",)

    def __init__(self, *, adapter: AdapterSettings) -> None:
        self.adapter = adapter
        self.spec: AdapterSpec | None = None  # where the adapters went (wrap / load_weights)

    def wrap(self, model: nn.Module, ctx: WrapContext) -> nn.Module:
        cfg = self.adapter
        self.spec = add_bottleneck_adapters(
            model,
            placement=cfg.placement,
            bottleneck=cfg.size,
            reduction_factor=cfg.reduction,
            activation=cfg.activation,
        )
        self.mark_trainable(model, ctx.trained)
        return model

    def mark_trainable(self, model: nn.Module, trained: tuple[str, ...]) -> None:
        mark_adapter_trainable(model, head_modules=trained, train_norms=self.adapter.train_norms)

    def save_weights(self, task_model: TaskModel, directory: Path) -> dict[str, Any]:
        from safetensors.torch import save_file

        model = task_model.model
        names = adapter_trainable_names(
            model,
            head_modules=task_model.head_modules + task_model.extra_modules,
            train_norms=self.adapter.train_norms,
        )
        params = dict(model.named_parameters())
        # safetensors refuses shared or strided storage: give each tensor its own copy.
        state = {name: params[name].detach().to("cpu").contiguous().clone() for name in names}
        save_file(state, str(directory / ADAPTER_WEIGHTS), metadata={"format": "pt"})
        return {"adapter": self.spec.to_dict(), "adapter_weights": ADAPTER_WEIGHTS}

    def load_weights(
        self,
        base: nn.Module,
        directory: Path,
        meta: dict[str, Any],
        *,
        trained: tuple[str, ...],
        trainable: bool,
    ) -> nn.Module:
        spec = AdapterSpec.from_dict(meta["adapter"])
        add_bottleneck_adapters(
            base,
            placement=spec.placement,
            bottleneck=spec.bottleneck,
            activation=spec.activation,
            modules=spec.modules,
        )
        self.spec = spec
        path = directory / meta.get("adapter_weights", ADAPTER_WEIGHTS)
        self._load_state(base, path, trained)
        if trainable:
            self.mark_trainable(base, trained)
        else:
            base.requires_grad_(False)
        return base

    def _load_state(self, model: nn.Module, path: Path, trained: tuple[str, ...]) -> None:
        from safetensors.torch import load_file

        if not path.is_file():
            raise UserError(f"adapter weights missing: {path}")
        state = load_file(str(path))
        expected = set(
            adapter_trainable_names(
                model, head_modules=trained, train_norms=self.adapter.train_norms
            )
        )
        missing = sorted(expected - set(state))
        unexpected = sorted(set(state) - expected)
        if missing or unexpected:
            what = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
            raise UserError(f"{path}: adapter weights do not fit the model ({what})")
        with torch.no_grad():
            params = dict(model.named_parameters())
            for name, value in state.items():
                params[name].copy_(value)
