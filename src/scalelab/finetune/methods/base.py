"""The method interface, the registry, and :class:`TaskModel`, the wrapper the loop trains.

A fine-tuning method only decides which parameters train and how the model is wrapped
(the README's Architecture section); every method then runs in the one training loop. A method is a
:class:`FinetuneMethod` subclass registered under its name::

    @register("bitfit")
    class BitFit(FinetuneMethod):
        saves_full_model = True

        def mark_trainable(self, model, trained):
            for name, param in model.named_parameters():
                param.requires_grad_(name.endswith(".bias") or in_modules(name, trained))

and :class:`TaskModel` calls its hooks (wrapping, forward adjustments, per-step updates,
merging, saving) instead of asking which method it holds.

:class:`TaskModel` ``forward(**batch)`` returns ``{"loss", "logits"}`` with the logits
aligned with the input tokens whatever the method: ``[B, T, C]`` for NER with
``input_ids`` ``[B, T]``, ``[B, C]`` for classification. The task head (``classifier`` /
``score``, and any backbone weight that the checkpoint did not provide, such as a missing
BERT pooler) always trains and is saved with the method.

This module imports nothing else of the package: the method modules import it, and
:mod:`~scalelab.finetune.methods.io` (reloading) and the package sit on top of those.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar, Literal, Self, TypeVar

import torch
from torch import nn

from scalelab.errors import UserError

TaskKind = Literal["ner", "classification"]

TASK_MODEL_FILE = "task_model.json"
FORMAT = "scalelab.task_model"
# Still 1: the method config is now written nested (a section per method) where it was
# flat (``lora_r`` ...); reading maps the flat names (MethodConfig.renamed), so both load.
# 2 (scalelab 0.2): method_config nested by method; version-1 files (flat) still load.
FORMAT_VERSION = 2


# ====================================================================== the registry

REGISTRY: dict[str, type[FinetuneMethod]] = {}
"""Method name -> its class; filled by :func:`register` when the method modules load."""

M = TypeVar("M", bound="type[FinetuneMethod]")


def register(name: str) -> Callable[[M], M]:
    """Class decorator: make the method class usable as ``MethodConfig(method=name)``."""

    def add(cls: M) -> M:
        known = REGISTRY.get(name)
        if known is not None and known is not cls:
            raise ValueError(f"fine-tuning method '{name}' is already registered ({known})")
        cls.name = name
        REGISTRY[name] = cls
        return cls

    return add


def method_class(name: str) -> type[FinetuneMethod]:
    """The class registered as ``name``; a UserError naming the known ones otherwise."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise UserError(
            f"unknown fine-tuning method '{name}'; known: {', '.join(REGISTRY)}"
        ) from None


@dataclasses.dataclass(frozen=True)
class WrapContext:
    """What a method needs to know to wrap a model."""

    task_kind: TaskKind
    total_steps: int
    """Optimizer steps of the run (AdaLoRA's budget schedule)."""
    trained: tuple[str, ...]
    """Modules that train in full whatever the method: the task head and any backbone
    weight the checkpoint did not provide."""


# ====================================================================== the interface


class FinetuneMethod:
    """One fine-tuning method: which parameters train and how the model is wrapped.

    The defaults are those of a method that changes nothing but ``requires_grad`` (full
    fine-tuning); a subclass overrides what it does differently. One instance serves one
    :class:`TaskModel` and may keep state for it (AdaLoRA's gradients, the adapter spec).
    """

    name: ClassVar[str] = ""
    """Set by :func:`register`."""

    sections: ClassVar[tuple[str, ...]] = ()
    """The MethodConfig sections the method reads, passed to ``__init__`` by name."""

    saves_full_model: ClassVar[bool] = False
    """Saved in full Hugging Face format (no base checkpoint needed to reload); otherwise
    the method saves only what it changed (:meth:`save_weights`)."""

    can_merge: ClassVar[bool] = False
    """Whether :meth:`merge` can fold the method into plain base weights."""

    @classmethod
    def from_config(cls, cfg: Any) -> Self:
        """The method for a MethodConfig ``cfg`` (its :attr:`sections` as arguments)."""
        return cls(**{section: getattr(cfg, section) for section in cls.sections})

    # ------------------------------------------------------------------ building
    def wrap(self, model: nn.Module, ctx: WrapContext) -> nn.Module:
        """Wrap the transformers ``model`` (in place where possible), set what trains."""
        self.mark_trainable(model, ctx.trained)
        return model

    def mark_trainable(self, model: nn.Module, trained: tuple[str, ...]) -> None:
        """Set ``requires_grad`` on the (wrapped) model: the method's parameters and every
        parameter under ``trained``. Also used when a saved model is reloaded to train."""
        raise NotImplementedError(f"{type(self).__name__} does not define mark_trainable")

    def attach(self, task_model: TaskModel) -> None:
        """Set up per-model state once the :class:`TaskModel` exists (hooks, say)."""

    @property
    def reserved_positions(self) -> int:
        """Positions of the model's window the method uses up (virtual tokens)."""
        return 0

    @property
    def prepended_positions(self) -> int:
        """Positions the method prepends to the model's outputs (dropped by :meth:`forward`)."""
        return 0

    # ------------------------------------------------------------------ training
    def forward(
        self, task_model: TaskModel, inputs: dict[str, Any], labels: torch.Tensor | None
    ) -> dict[str, torch.Tensor]:
        """``{"logits", "loss" (with labels)}`` for ``inputs``, logits aligned with them."""
        return hf_forward(task_model.model, inputs, labels)

    def on_step_end(self, task_model: TaskModel, step: int) -> None:
        """Runs after every optimizer step (``step`` = optimizer steps done, 1-based)."""

    def rank_pattern(self, task_model: TaskModel) -> dict[str, list[bool]] | None:
        """The current rank mask per adapted matrix, for methods that prune ranks."""
        return None

    def merge(self, model: nn.Module) -> nn.Module:
        """The wrapped ``model`` as a plain transformers model computing the same function."""
        raise NotImplementedError(f"{type(self).__name__} cannot merge")

    # ------------------------------------------------------------------ saving
    def save_weights(self, task_model: TaskModel, directory: Path) -> dict[str, Any]:
        """Write what the method changed into ``directory``; returns entries for the
        task_model.json (unless :attr:`saves_full_model`)."""
        raise NotImplementedError(f"{type(self).__name__} does not define save_weights")

    def finish_save(self, task_model: TaskModel, directory: Path, location: Path) -> None:
        """Runs after :meth:`save_weights` (and for every method): ``directory`` is still
        its temporary name, ``location`` where it will live; write what names paths
        (PEFT's base model path, say). Nothing by default."""

    def load_weights(
        self,
        base: nn.Module,
        directory: Path,
        meta: dict[str, Any],
        *,
        trained: tuple[str, ...],
        trainable: bool,
    ) -> nn.Module:
        """Put the weights :meth:`save_weights` wrote on a freshly loaded ``base`` model;
        frozen, or marked trainable as :meth:`wrap` does when ``trainable``."""
        raise NotImplementedError(f"{type(self).__name__} does not define load_weights")


def hf_forward(
    model: nn.Module, inputs: dict[str, Any], labels: torch.Tensor | None
) -> dict[str, torch.Tensor]:
    """A transformers classifier's forward as ``{"logits", "loss" (with labels)}``."""
    out = model(**inputs, labels=labels, return_dict=True)
    result = {"logits": out.logits}
    if labels is not None:
        result["loss"] = out.loss
    return result


# ====================================================================== the wrapper


class TaskModel(nn.Module):
    """A task model under one fine-tuning method, with one calling convention for the loop.

    ``forward(input_ids, attention_mask=None, token_type_ids=None, labels=None)`` returns
    ``{"loss": scalar (if labels), "logits": [B, T, C] (ner) or [B, C] (classification)}``.
    Built by :func:`~scalelab.finetune.methods.apply_method` or reloaded by
    :func:`~scalelab.finetune.methods.load_task_model`.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        method_config: Any,
        impl: FinetuneMethod,
        task_kind: TaskKind,
        base_model_path: str | None,
        head_modules: tuple[str, ...],
        extra_modules: tuple[str, ...] = (),
        merged: bool = False,
    ) -> None:
        super().__init__()
        self.model = model
        self.method_config = method_config
        self.impl = impl  # the method's implementation: TaskModel dispatches to its hooks
        self.method: str = method_config.method
        self.task_kind = task_kind
        self.base_model_path = base_model_path
        self.head_modules = head_modules
        self.extra_modules = extra_modules
        self.merged = merged
        hf = self.hf_model
        self.model_class = type(hf).__name__
        self._takes_token_types = "token_type_ids" in inspect.signature(hf.forward).parameters
        if not merged:  # a merged model is a plain transformers model: no method hooks
            impl.attach(self)

    # ------------------------------------------------------------------ properties
    @property
    def hf_model(self) -> nn.Module:
        """The underlying transformers model (inside PEFT's wrappers when there are any)."""
        model = self.model
        return model.get_base_model() if hasattr(model, "get_base_model") else model

    @property
    def config(self) -> Any:
        """The transformers config (num_labels, id2label, label2id ...)."""
        return self.hf_model.config

    @property
    def num_virtual_tokens(self) -> int:
        """Positions prepended to the model's outputs (prompt tuning's virtual tokens; prefix
        tuning puts them in the keys/values only, so the outputs keep the input's length)."""
        return 0 if self.merged else self.impl.prepended_positions

    @property
    def max_input_tokens(self) -> int | None:
        """Longest ``input_ids`` the model takes: position table minus the virtual tokens.

        Prefix tuning also shifts the positions of the real tokens by the prefix length (the
        prefix occupies the first cache positions), so both prompt methods shrink the window.
        """
        limit = getattr(self.config, "max_position_embeddings", None)
        if limit is None:
            return None
        return int(limit) - self.impl.reserved_positions

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> dict[str, torch.Tensor]:
        inputs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None and self._takes_token_types:
            inputs["token_type_ids"] = token_type_ids
        inputs.update(kwargs)
        if self.merged:
            return hf_forward(self.model, inputs, labels)
        return self.impl.forward(self, inputs, labels)

    def on_step_end(self, step: int) -> None:
        """Call after every optimizer step (``step`` = optimizer steps done, 1-based).

        AdaLoRA: updates the importance scores and re-allocates the rank budget. A no-op
        for the other built-in methods.
        """
        if not self.merged:
            self.impl.on_step_end(self, step)

    def rank_pattern(self) -> dict[str, list[bool]] | None:
        """AdaLoRA's current rank mask per adapted matrix (None before the first pruning,
        and for every other method)."""
        return None if self.merged else self.impl.rank_pattern(self)

    # ------------------------------------------------------------------ accounting
    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def total_parameters(self) -> int:
        """Every parameter the method's model holds, once (PEFT's frozen copy of a trained
        head, ``original_module``, is not counted: it is not part of the trained model)."""
        return sum(
            p.numel() for n, p in self.named_parameters() if ".original_module." not in f".{n}"
        )

    def trainable_percent(self) -> float:
        total = self.total_parameters()
        return 100.0 * self.trainable_parameters() / total if total else 0.0

    def parameter_report(self) -> dict[str, Any]:
        """Trainable parameters (count, % of total), split into the head and the rest."""
        head = 0
        for name, param in self.named_parameters():
            if param.requires_grad and in_modules(name, self.head_modules + self.extra_modules):
                head += param.numel()
        trainable = self.trainable_parameters()
        return {
            "method": self.method,
            "trainable": trainable,
            "total": self.total_parameters(),
            "percent": round(self.trainable_percent(), 4),
            "head": head,
            "method_params": trainable - head,
        }

    # ------------------------------------------------------------------ merge / save
    def merge(self) -> TaskModel:
        """Fold the LoRA/AdaLoRA update into the base weights (in place; returns self).

        The result is a plain transformers model that computes the same function and is
        saved in full Hugging Face format.
        """
        if not self.impl.can_merge:
            names = [name for name, cls in REGISTRY.items() if cls.can_merge]
            raise UserError(f"merge is only meaningful for {_and(names)}, not '{self.method}'")
        if not self.merged:
            self.model = self.impl.merge(self.model)
            self.merged = True
        return self

    def save(self, directory: str | Path, *, location: str | Path | None = None) -> Path:
        """Write the model to ``directory`` (replaced as a whole, atomically); returns it.

        ``location`` is where the directory will live when the caller renames it into
        place afterwards (default: ``directory``); the paths recorded in it (the base
        model's, relative where possible) are written for that place. The layout is
        described in :mod:`scalelab.finetune.methods.io`, which reads it.
        """
        from scalelab.utils.io import atomic_dir, atomic_write_json

        directory = Path(directory)
        location = Path(location) if location is not None else directory
        stores_full = self.impl.saves_full_model or self.merged
        if not stores_full and not self.base_model_path:
            raise ValueError(
                f"cannot save a '{self.method}' model without the base checkpoint path: load "
                "the base with load_base_model() or pass base_model_path to apply_method()"
            )
        meta = self._describe(stores_full, location)
        with atomic_dir(directory) as tmp:
            if stores_full:
                with quiet_transformers():
                    self.model.save_pretrained(str(tmp))
            else:
                meta.update(self.impl.save_weights(self, tmp))
                self.impl.finish_save(self, tmp, location)
            atomic_write_json(tmp / TASK_MODEL_FILE, meta)
        return directory

    def _describe(self, stores_full: bool, location: Path) -> dict[str, Any]:
        """The task_model.json entries every method writes."""
        from scalelab.utils.env import versions

        config = self.config
        base = None if stores_full else self.base_model_path
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "method": self.method,
            "merged": self.merged,
            "task_kind": self.task_kind,
            "model_class": self.model_class,
            "model_type": getattr(config, "model_type", None),
            "base_model_path": base,
            # The same base relative to the saved directory (found again after the two
            # move together); the absolute path is tried first.
            "base_model_relpath": relative_path(base, location) if base else None,
            "num_labels": int(config.num_labels),
            "id2label": {str(k): v for k, v in config.id2label.items()},
            "label2id": {str(k): int(v) for k, v in config.label2id.items()},
            "num_virtual_tokens": self.num_virtual_tokens,
            "head_modules": list(self.head_modules),
            "extra_modules": list(self.extra_modules),
            "method_config": self.method_config.to_dict(),
            # The adapter method's spec (save_weights replaces it); null for the others.
            "adapter": None,
            "parameters": self.parameter_report(),
            "versions": versions(),
        }


# ====================================================================== helpers


def head_module_names(model: nn.Module) -> tuple[str, ...]:
    """Top-level modules outside the backbone that hold parameters: the task head."""
    backbone = getattr(model, "base_model_prefix", "")
    names = tuple(
        name
        for name, child in model.named_children()
        if name != backbone and any(True for _ in child.parameters())
    )
    if not names:
        raise ValueError(f"{type(model).__name__} has no task head outside '{backbone}'")
    return names


def in_modules(param_name: str, modules: tuple[str, ...]) -> bool:
    """Whether ``param_name`` lies under one of ``modules`` (also inside PEFT wrappers)."""
    dotted = f".{param_name}"
    return any(f".{m}." in dotted for m in modules)


def last_token_pooling(model: nn.Module) -> bool:
    """Decoder classifiers (Llama, GPT-2 ...) score every position and read the last real
    token; encoders pool the first token. The decoders' head is called ``score``."""
    return type(model).__name__.endswith("ForSequenceClassification") and hasattr(model, "score")


def read_json_object(path: Path, keys: tuple[str, ...] = ()) -> dict[str, Any]:
    """The JSON object in ``path`` holding every key of ``keys``; a one-line
    :class:`UserError` naming the file when it is not JSON, not an object or lacks one."""
    from scalelab.utils.io import read_json

    try:
        data = read_json(path)
    except (OSError, UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise UserError(f"{path}: not a readable JSON file ({exc})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object, got {type(data).__name__}")
    require_keys(data, keys, path)
    return data


def require_keys(data: dict[str, Any], keys: tuple[str, ...], path: Path) -> None:
    """A one-line :class:`UserError` naming ``path`` unless ``data`` holds every key."""
    missing = [k for k in keys if k not in data]
    if missing:
        raise UserError(f"{path}: missing key(s) {', '.join(missing)}")


def relative_path(target: str | Path, directory: str | Path) -> str:
    """``target`` relative to ``directory`` (both made absolute first), '/'-separated;
    ``target`` as given when no relative path exists (another drive on Windows)."""
    try:
        rel = os.path.relpath(os.path.abspath(target), os.path.abspath(directory))
    except ValueError:
        return str(target)
    return Path(rel).as_posix()


def at_least_one(name: str, value: int | None) -> None:
    """UserError unless ``value`` is empty or at least 1 (a config check)."""
    if value is not None and value < 1:
        raise UserError(f"{name} must be at least 1, got {value}")


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """No load reports or progress bars from transformers inside (restored afterwards)."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _and(names: list[str]) -> str:
    return " and ".join(names) if len(names) < 3 else ", ".join(names[:-1]) + " and " + names[-1]
