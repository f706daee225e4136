"""Bottleneck adapters (Houlsby et al. 2019; Pfeiffer et al. 2020) as a fine-tuning method.

The adapters themselves are in :mod:`~scalelab.finetune.methods.bottleneck`. What trains:
the adapters, the task head and, by default, every normalisation layer. Saved in a
``save_pretrained``-style pair beside task_model.json:

* ``adapters_config.json``: what the directory holds (``format``
  ``scalelab.bottleneck_adapters``, method, scalelab version), the base checkpoint
  (absolute and relative to the directory), the model class and task kind, the label
  maps, the adapters' placement, width, activation and wrapped modules, and which
  modules besides the adapters are stored (head, new backbone weights, norms);
* ``adapters.safetensors``: only those weights.

:func:`~scalelab.finetune.methods.load_task_model` rebuilds the whole task model;
:func:`load_adapters` puts the adapters on a transformers model the caller loaded. PEFT
has no bottleneck adapters, so nothing outside scalelab reads them. Directories of
scalelab 0.1 / 0.2 (no adapters_config.json; the spec in task_model.json) load as before.
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
    read_json_object,
    register,
    relative_path,
)
from scalelab.finetune.methods.bottleneck import (
    AdapterSpec,
    adapter_trainable_names,
    add_bottleneck_adapters,
    mark_adapter_trainable,
)

ADAPTER_WEIGHTS = "adapters.safetensors"
ADAPTER_CONFIG = "adapters_config.json"
ADAPTER_FORMAT = "scalelab.bottleneck_adapters"
ADAPTER_FORMAT_VERSION = 1


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
        return {
            "adapter": self.spec.to_dict(),
            "adapter_weights": ADAPTER_WEIGHTS,
            "adapter_config": ADAPTER_CONFIG,
        }

    def finish_save(self, task_model: TaskModel, directory: Path, location: Path) -> None:
        from scalelab.utils.env import package_version
        from scalelab.utils.io import atomic_write_json

        config = task_model.config
        base = task_model.base_model_path
        atomic_write_json(
            directory / ADAPTER_CONFIG,
            {
                "format": ADAPTER_FORMAT,
                "format_version": ADAPTER_FORMAT_VERSION,
                "method": self.name,
                "scalelab_version": package_version("scalelab"),
                "model_class": task_model.model_class,
                "model_type": getattr(config, "model_type", None),
                "task_kind": task_model.task_kind,
                "base_model_path": base,
                "base_model_relpath": relative_path(base, location) if base else None,
                "num_labels": int(config.num_labels),
                "id2label": {str(k): v for k, v in config.id2label.items()},
                "label2id": {str(k): int(v) for k, v in config.label2id.items()},
                **self.spec.to_dict(),
                "train_norms": self.adapter.train_norms,
                "head_modules": list(task_model.head_modules),
                "extra_modules": list(task_model.extra_modules),
                "weights": ADAPTER_WEIGHTS,
            },
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
        saved = read_adapter_config(directory) if (directory / ADAPTER_CONFIG).is_file() else None
        spec = AdapterSpec.from_dict(saved if saved is not None else meta["adapter"])
        weights = saved["weights"] if saved is not None else meta.get("adapter_weights")
        self.spec = spec
        put_adapters(
            base,
            spec,
            directory / (weights or ADAPTER_WEIGHTS),
            trained=trained,
            train_norms=self.adapter.train_norms,
        )
        if trainable:
            self.mark_trainable(base, trained)
        else:
            base.requires_grad_(False)
        return base


def read_adapter_config(directory: str | Path) -> dict[str, Any]:
    """``adapters_config.json`` of a saved adapter model, checked; UserError otherwise."""
    path = Path(directory) / ADAPTER_CONFIG
    if not path.is_file():
        raise UserError(f"{directory} holds no bottleneck adapters (no {ADAPTER_CONFIG})")
    keys = ("placement", "bottleneck", "activation", "layout", "modules", "weights")
    data = read_json_object(path, ("format", "format_version", *keys))
    try:
        version = int(data["format_version"])
        ok = data["format"] == ADAPTER_FORMAT and version <= ADAPTER_FORMAT_VERSION
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise UserError(f"{path}: not bottleneck adapters this scalelab version can read")
    return data


def load_adapters(model: nn.Module, directory: str | Path, *, trainable: bool = False) -> nn.Module:
    """Put the bottleneck adapters saved in ``directory`` on ``model`` (in place; returned).

    ``model`` is the base checkpoint loaded as the saved model class with the saved
    label count (``adapters_config.json`` says which); the adapters, the trained head and
    norms are loaded into it, frozen unless ``trainable``. The forward is then the
    transformers model's own (``model(**batch).logits``).
    """
    directory = Path(directory)
    saved = read_adapter_config(directory)
    where = directory / ADAPTER_CONFIG
    if saved.get("model_class") and type(model).__name__ != saved["model_class"]:
        raise UserError(f"{where}: saved for {saved['model_class']}, got {type(model).__name__}")
    labels = getattr(model.config, "num_labels", None)
    if saved.get("num_labels") is not None and labels != saved["num_labels"]:
        raise UserError(
            f"{where}: saved with {saved['num_labels']} labels, the model has {labels}; load "
            "the base with num_labels, id2label and label2id from that file"
        )
    try:
        trained = (*saved.get("head_modules", ()), *saved.get("extra_modules", ()))
        norms = bool(saved.get("train_norms", True))
        spec = AdapterSpec.from_dict(saved)
        put_adapters(model, spec, directory / saved["weights"], trained=trained, train_norms=norms)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UserError(f"{where}: malformed ({exc!r})") from None
    if trainable:
        mark_adapter_trainable(model, head_modules=trained, train_norms=norms)
    else:
        model.requires_grad_(False)
    return model


def put_adapters(
    model: nn.Module,
    spec: AdapterSpec,
    path: Path,
    *,
    trained: tuple[str, ...],
    train_norms: bool,
) -> None:
    """Add ``spec``'s adapters to ``model`` and load the weights in ``path`` (adapters,
    ``trained`` modules and, with ``train_norms``, the norms); UserError if they do not fit."""
    from safetensors.torch import load_file

    if not path.is_file():
        raise UserError(f"adapter weights missing: {path}")
    add_bottleneck_adapters(
        model,
        placement=spec.placement,
        bottleneck=spec.bottleneck,
        activation=spec.activation,
        modules=spec.modules,
    )
    state = load_file(str(path))
    expected = set(adapter_trainable_names(model, head_modules=trained, train_norms=train_norms))
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - expected)
    if missing or unexpected:
        what = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise UserError(f"{path}: adapter weights do not fit the model ({what})")
    with torch.no_grad():
        params = dict(model.named_parameters())
        for name, value in state.items():
            params[name].copy_(value)
