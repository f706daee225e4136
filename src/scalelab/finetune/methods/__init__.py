"""Fine-tuning methods: full, LoRA, AdaLoRA, prefix and prompt tuning (PEFT), bottleneck adapters.

:func:`apply_method` turns a Hugging Face ``...ForTokenClassification`` /
``...ForSequenceClassification`` model into a :class:`TaskModel` (see
:mod:`~scalelab.finetune.methods.base`) whose ``forward(**batch)`` returns ``{"loss",
"logits"}`` with the logits aligned with the input tokens whatever the method.

One module per method, each a small settings config (its section of :class:`MethodConfig`)
and a :class:`FinetuneMethod` subclass registered under the method's name:
:mod:`.full`, :mod:`.lora`, :mod:`.adalora`, :mod:`.prefix`, :mod:`.prompt`,
:mod:`.adapter` (the adapters themselves in :mod:`.bottleneck`; what the PEFT methods share
in :mod:`.peft_common`). Reloading saved models is :mod:`.io`. Modules import downwards
only: base <- the methods <- config <- io <- this package.

Adding a method: a module with a ``@register("name")`` subclass of :class:`FinetuneMethod`
(and, for settings, a Config section). Built in, it also gets a name in ``Method``, a
section field in :class:`MethodConfig` and an import in :mod:`.config`; registered from
outside it works through the Python API (``MethodConfig(method="name")``, saving and
reloading) but not as a CLI choice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from scalelab.errors import UserError
from scalelab.finetune.methods.adalora import AdaLoraSettings
from scalelab.finetune.methods.adapter import AdapterSettings, load_adapters
from scalelab.finetune.methods.base import (
    REGISTRY,
    FinetuneMethod,
    TaskKind,
    TaskModel,
    WrapContext,
    head_module_names,
    in_modules,
    last_token_pooling,
    register,
)
from scalelab.finetune.methods.config import METHODS, Method, MethodConfig
from scalelab.finetune.methods.io import load_base_model, load_task_model
from scalelab.finetune.methods.lora import LORA_TARGETS, LoraSettings, default_lora_targets
from scalelab.finetune.methods.peft_common import PeftMethod
from scalelab.finetune.methods.prefix import PrefixSettings, check_prefix_support
from scalelab.finetune.methods.prompt import PromptSettings


def apply_method(
    model: nn.Module,
    cfg: MethodConfig,
    *,
    task_kind: TaskKind,
    total_steps: int,
    base_model_path: str | Path | None = None,
) -> TaskModel:
    """Wrap a transformers token/sequence-classification model with ``cfg.method``.

    ``total_steps`` is the number of optimizer steps of the run (AdaLoRA's budget
    schedule). ``base_model_path`` is where the base checkpoint lives, recorded by
    :meth:`TaskModel.save`; by default the directory the model was loaded from.
    The model is modified in place.
    """
    _check_task_kind(model, task_kind)
    if task_kind == "classification":
        model.config.problem_type = "single_label_classification"
        if last_token_pooling(model) and model.config.pad_token_id is None:
            raise UserError(
                f"{type(model).__name__} pools at the last non-padding token but its config "
                "has no pad_token_id; set model.config.pad_token_id to the tokenizer's pad id"
            )
    if base_model_path is None:
        name = getattr(model, "name_or_path", "") or ""
        base_model_path = name if name and Path(name).is_dir() else None
    base_model_path = str(Path(base_model_path).resolve()) if base_model_path else None
    head = head_module_names(model)
    extra = _new_weight_modules(model, head)
    impl = cfg.build()
    ctx = WrapContext(task_kind=task_kind, total_steps=total_steps, trained=head + extra)
    return TaskModel(
        impl.wrap(model, ctx),
        method_config=cfg,
        impl=impl,
        task_kind=task_kind,
        base_model_path=base_model_path,
        head_modules=head,
        extra_modules=extra,
    )


def peft_config_for(
    model: nn.Module,
    cfg: MethodConfig,
    *,
    task_kind: TaskKind,
    total_steps: int,
    modules_to_save: tuple[str, ...],
) -> Any:
    """The PEFT config for a PEFT method (lora, adalora, prefix, prompt)."""
    impl = cfg.build()
    if not isinstance(impl, PeftMethod):
        raise ValueError(f"not a PEFT method: {cfg.method}")
    ctx = WrapContext(task_kind=task_kind, total_steps=total_steps, trained=modules_to_save)
    return impl.peft_config(model, ctx)


def _new_weight_modules(model: nn.Module, head: tuple[str, ...]) -> tuple[str, ...]:
    """Backbone modules whose weights the checkpoint did not provide (randomly initialised
    at load time, e.g. a missing pooler): they train and are saved with the head, or a
    reload would initialise them differently. Known from :func:`load_base_model`."""
    missing = getattr(model, "scalelab_new_weights", None) or ()
    modules = []
    for key in missing:
        module = key.rsplit(".", 1)[0]
        if not in_modules(key, head) and module not in modules:
            modules.append(module)
    return tuple(modules)


def _check_task_kind(model: nn.Module, task_kind: str) -> None:
    want = {"ner": "ForTokenClassification", "classification": "ForSequenceClassification"}
    if task_kind not in want:
        raise ValueError(f"task_kind must be 'ner' or 'classification', got {task_kind!r}")
    if not type(model).__name__.endswith(want[task_kind]):
        raise ValueError(
            f"task_kind '{task_kind}' needs a ...{want[task_kind]} model, got {type(model).__name__}"
        )


__all__ = [
    "LORA_TARGETS",
    "METHODS",
    "REGISTRY",
    "AdaLoraSettings",
    "AdapterSettings",
    "FinetuneMethod",
    "LoraSettings",
    "Method",
    "MethodConfig",
    "PrefixSettings",
    "PromptSettings",
    "TaskModel",
    "WrapContext",
    "apply_method",
    "check_prefix_support",
    "default_lora_targets",
    "head_module_names",
    "load_adapters",
    "load_base_model",
    "load_task_model",
    "peft_config_for",
    "register",
]
