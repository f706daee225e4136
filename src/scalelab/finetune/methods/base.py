"""Fine-tuning methods: full, LoRA, AdaLoRA, prefix and prompt tuning (PEFT), bottleneck adapters.

A method only decides which parameters train and how the model is wrapped (DESIGN.md,
convention 7); every method then runs in the one training loop. :func:`apply_method`
turns a Hugging Face ``...ForTokenClassification`` / ``...ForSequenceClassification``
model into a :class:`TaskModel` whose ``forward(**batch)`` returns ``{"loss", "logits"}``
with the logits aligned with the input tokens whatever the method:

* NER: ``logits`` is ``[B, T, C]`` for ``input_ids`` ``[B, T]`` — for prompt tuning the
  virtual tokens are prepended inside the model, so the labels are padded with -100 for
  them before the forward and their positions are dropped from the logits afterwards.
* classification: ``logits`` is ``[B, C]``.

The task head (``classifier`` / ``score``, and any backbone weight that the checkpoint did
not provide, such as a missing BERT pooler) always trains and is saved with the method.

PEFT pitfalls handled here: AdaLoRA gets ``total_step`` from ``total_steps`` and needs
``update_and_allocate(step)`` after every optimizer step *with the gradients still
present* — :meth:`TaskModel.on_step_end` keeps its own copy of the last gradients so the
loop may call it after ``zero_grad``; prompt tuning for token classification (label
padding, above); prompt tuning with last-token pooling (Llama/GPT-2 sequence
classification) pools at the last real token itself, since PEFT passes embeddings and the
model cannot find the padding; prefix tuning needs a model that takes ``past_key_values``
and otherwise fails here with a :class:`UserError` naming the methods that work.

Saving and reloading live in :mod:`scalelab.finetune.methods_io`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from scalelab.config import Config
from scalelab.errors import UserError
from scalelab.finetune.adapters import (
    AdapterSpec,
    add_bottleneck_adapters,
    mark_adapter_trainable,
)
from scalelab.finetune.methods_peft import (
    LORA_TARGETS,
    apply_peft,
    check_prefix_support,
    default_lora_targets,
    peft_config_for,
)

Method = Literal["full", "lora", "adalora", "prefix", "prompt", "adapter"]
TaskKind = Literal["ner", "classification"]
METHODS: tuple[str, ...] = ("full", "lora", "adalora", "prefix", "prompt", "adapter")


@dataclasses.dataclass(kw_only=True)
class MethodConfig(Config):
    """How the pretrained model is fine-tuned: which parameters train and how it is wrapped."""

    method: Method = "full"
    """full: every weight trains; lora / adalora / prefix / prompt: through PEFT; adapter:
    in-house bottleneck adapters. The task head always trains."""

    lora_r: int = 8
    """LoRA rank r (lora only; AdaLoRA uses adalora_init_r / adalora_target_r)."""

    lora_alpha: float = 16.0
    """LoRA scaling numerator: the update is (alpha / r) * B A (Hu et al. 2021)."""

    lora_dropout: float = 0.05
    """Dropout on the LoRA branch input (lora and adalora)."""

    lora_target_modules: tuple[str, ...] = ()
    """Module-name suffixes LoRA/AdaLoRA adapt; empty = every linear map in the blocks
    (BERT: query,key,value,output.dense,intermediate.dense; Llama: q/k/v/o_proj,
    gate/up/down_proj; GPT-2: c_attn,c_proj,c_fc)."""

    adalora_init_r: int = 12
    """AdaLoRA starting rank per matrix; 1.5x the target as in Zhang et al. 2023 (§4)."""

    adalora_target_r: int = 8
    """AdaLoRA average rank per matrix after budget pruning."""

    adalora_tinit: int | None = None
    """Steps at full budget before pruning starts; empty = 10% of the total steps."""

    adalora_tfinal: int | None = None
    """Steps at the final budget at the end of training; empty = 20% of the total steps."""

    adalora_delta_t: int | None = None
    """Steps between budget re-allocations; empty = 1% of the total steps (at least 1)."""

    adalora_beta1: float = 0.85
    """EMA coefficient of the sensitivity (Zhang et al. 2023, Eq. 9; PEFT's default)."""

    adalora_beta2: float = 0.85
    """EMA coefficient of the uncertainty (Zhang et al. 2023, Eq. 10)."""

    adalora_orth_reg_weight: float = 0.5
    """Weight of the orthogonality regulariser on P and Q (PEFT's default)."""

    num_virtual_tokens: int = 20
    """Virtual tokens for prefix and prompt tuning (they use up positions of the window)."""

    prefix_projection: bool = False
    """Prefix tuning: reparametrise the prefix through a 2-layer MLP (Li & Liang 2021 §4.3)."""

    prompt_init: Literal["vocab", "random"] = "vocab"
    """Prompt tuning start: embeddings of random vocabulary tokens (Lester et al. 2021 §3.2
    found this beats random init) or random vectors."""

    adapter_placement: Literal["houlsby", "pfeiffer"] = "houlsby"
    """houlsby: adapters after the attention and the feed-forward output projections;
    pfeiffer: only after the feed-forward output projection."""

    adapter_size: int | None = None
    """Adapter bottleneck width m; empty = hidden size / adapter_reduction."""

    adapter_reduction: int = 16
    """Hidden size / bottleneck width when adapter_size is empty (Pfeiffer et al. 2020)."""

    adapter_activation: Literal["relu", "gelu", "swish", "tanh"] = "relu"
    """Non-linearity inside the adapters."""

    adapter_train_norms: bool = True
    """Also train the layer norms with adapters (Houlsby et al. 2019 §2.1 do)."""

    def validate(self) -> None:
        def positive(name: str) -> None:
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UserError(f"{name} must be at least 1, got {value}")

        for name in ("lora_r", "adalora_init_r", "adalora_target_r", "num_virtual_tokens"):
            positive(name)
        for name in ("adalora_delta_t", "adapter_size", "adapter_reduction"):
            positive(name)
        if self.lora_alpha <= 0:
            raise UserError(f"lora_alpha must be positive, got {self.lora_alpha}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise UserError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if self.adalora_target_r > self.adalora_init_r:
            raise UserError(
                f"adalora_target_r ({self.adalora_target_r}) must not exceed "
                f"adalora_init_r ({self.adalora_init_r})"
            )
        for name in ("adalora_tinit", "adalora_tfinal"):
            if getattr(self, name) is not None and getattr(self, name) < 0:
                raise UserError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("adalora_beta1", "adalora_beta2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise UserError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.adalora_orth_reg_weight < 0:
            raise UserError("adalora_orth_reg_weight must be >= 0")

    def adalora_schedule(self, total_steps: int) -> tuple[int, int, int]:
        """``(tinit, tfinal, deltaT)`` for ``total_steps``; UserError if no pruning phase is left."""
        tinit = self.adalora_tinit if self.adalora_tinit is not None else total_steps // 10
        tfinal = self.adalora_tfinal if self.adalora_tfinal is not None else total_steps // 5
        delta = self.adalora_delta_t or max(1, total_steps // 100)
        if tinit >= total_steps - tfinal:
            raise UserError(
                f"adalora: {total_steps} training steps leave no budget-pruning phase between "
                f"adalora_tinit={tinit} and adalora_tfinal={tfinal}; train longer or lower them"
            )
        return tinit, tfinal, delta


# ====================================================================== the wrapper


class TaskModel(nn.Module):
    """A task model under one fine-tuning method, with one calling convention for the loop.

    ``forward(input_ids, attention_mask=None, token_type_ids=None, labels=None)`` returns
    ``{"loss": scalar (if labels), "logits": [B, T, C] (ner) or [B, C] (classification)}``.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        method_config: MethodConfig,
        task_kind: TaskKind,
        base_model_path: str | None,
        head_modules: tuple[str, ...],
        extra_modules: tuple[str, ...] = (),
        adapter_spec: AdapterSpec | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.method_config = method_config
        self.method: str = method_config.method
        self.task_kind = task_kind
        self.base_model_path = base_model_path
        self.head_modules = head_modules
        self.extra_modules = extra_modules
        self.adapter_spec = adapter_spec
        self.merged = False
        hf = self.hf_model
        self.model_class = type(hf).__name__
        # Prompt tuning prepends its virtual tokens to the hidden states; prefix tuning puts
        # them in the keys/values only, so the outputs keep the input's length.
        self.num_virtual_tokens = method_config.num_virtual_tokens if self.method == "prompt" else 0
        self._takes_token_types = "token_type_ids" in inspect.signature(hf.forward).parameters
        self._last_token_pooling = task_kind == "classification" and _last_token_pooling(hf)
        self._captured: dict[int, tuple[nn.Parameter, torch.Tensor]] = {}
        self._full_logits: torch.Tensor | None = None
        if self.num_virtual_tokens and self._last_token_pooling:
            # [B, P+T, C] per-position scores, pooled in forward() at the last real token.
            head = hf.get_submodule(head_modules[-1])
            head.register_forward_hook(self._keep_full_logits)
        if self.method == "adalora":
            self._watch_adalora_grads()

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
    def max_input_tokens(self) -> int | None:
        """Longest ``input_ids`` the model takes: position table minus the virtual tokens.

        Prefix tuning also shifts the positions of the real tokens by the prefix length (the
        prefix occupies the first cache positions), so both prompt methods shrink the window.
        """
        limit = getattr(self.config, "max_position_embeddings", None)
        if limit is None:
            return None
        used = self.method_config.num_virtual_tokens if self.method in ("prefix", "prompt") else 0
        return int(limit) - used

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
        n_virtual = self.num_virtual_tokens
        if n_virtual and self._last_token_pooling:
            return self._prompt_last_token_forward(inputs, labels)
        if labels is not None and n_virtual and self.task_kind == "ner":
            # labels [B, T] -> [B, P+T]: virtual positions are ignored by the loss.
            pad = labels.new_full((labels.shape[0], n_virtual), -100)
            labels = torch.cat([pad, labels], dim=1)
        out = self.model(**inputs, labels=labels, return_dict=True)
        logits = out.logits
        if n_virtual and self.task_kind == "ner":
            logits = logits[:, n_virtual:]  # [B, P+T, C] -> [B, T, C]
        result = {"logits": logits}
        if labels is not None:
            result["loss"] = out.loss
            if self.method == "adalora" and not self.merged:
                # PEFT adds AdaLoRA's orthogonality penalty to the loss, also in eval mode;
                # report the task loss apart and keep the penalty out of evaluation.
                n_classes = logits.shape[-1]
                task = F.cross_entropy(
                    logits.reshape(-1, n_classes).float(),
                    (labels[:, n_virtual:] if n_virtual else labels).reshape(-1),
                    ignore_index=-100,
                )
                result["task_loss"] = task
                if not self.training:
                    result["loss"] = task
        return result

    def _prompt_last_token_forward(
        self, inputs: dict[str, Any], labels: torch.Tensor | None
    ) -> dict[str, torch.Tensor]:
        """Prompt tuning + last-token pooling: pool the score at the last real token.

        The model sees ``inputs_embeds`` [B, P+T, d] and cannot find the padding itself
        (it would read the last position, a pad token for the shorter rows).
        """
        self._full_logits = None
        # The model's own pooling warns that it cannot see padding in embeddings; it is
        # replaced below, so that warning is silenced.
        with _quiet_logger(type(self.hf_model).forward.__module__):
            self.model(**inputs, return_dict=True)
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
        pooled = full[torch.arange(batch, device=full.device), self.num_virtual_tokens + last]
        result = {"logits": pooled}  # [B, C]
        if labels is not None:
            result["loss"] = F.cross_entropy(pooled.float(), labels)
        return result

    def _keep_full_logits(self, _module: nn.Module, _args: Any, output: torch.Tensor) -> None:
        self._full_logits = output

    # ------------------------------------------------------------------ AdaLoRA
    def _watch_adalora_grads(self) -> None:
        """Keep a copy of each AdaLoRA gradient as it is accumulated.

        AdaLoRA's importance scores need ``|p * grad|`` after the optimizer step, but the
        training step clears the gradients before returning; the copy survives that.
        """
        for name, param in self.model.named_parameters():
            if "lora_" in name and param.requires_grad:
                param.register_post_accumulate_grad_hook(self._capture_grad)

    def _capture_grad(self, param: nn.Parameter) -> None:
        if param.grad is not None:
            self._captured[id(param)] = (param, param.grad.detach().clone())

    def on_step_end(self, step: int) -> None:
        """Call after every optimizer step (``step`` = optimizer steps done, 1-based).

        AdaLoRA: updates the importance scores and re-allocates the rank budget
        (``update_and_allocate``). A no-op for every other method.
        """
        if self.method != "adalora" or self.merged:
            return
        if not self._captured:
            raise RuntimeError("on_step_end() called before any backward pass")
        saved = []
        for param, grad in self._captured.values():
            saved.append((param, param.grad))
            param.grad = grad
        try:
            self.model.base_model.update_and_allocate(step)
        finally:
            for param, grad in saved:
                param.grad = grad
            self._captured.clear()

    def rank_pattern(self) -> dict[str, list[bool]] | None:
        """AdaLoRA's current rank mask per adapted matrix (None before the first pruning)."""
        if self.method != "adalora" or self.merged:
            return None
        return self.model.peft_config["default"].rank_pattern

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
            if param.requires_grad and _in_modules(name, self.head_modules + self.extra_modules):
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
        if self.method not in ("lora", "adalora"):
            raise UserError(f"merge is only meaningful for lora and adalora, not '{self.method}'")
        if not self.merged:
            self.model = self.model.merge_and_unload()
            self.merged = True
        return self

    def save(self, directory: str | Path) -> Path:
        """Write the model to ``directory`` (replaced as a whole, atomically); returns it."""
        from scalelab.finetune.methods_io import save_task_model

        return save_task_model(self, directory)


# ====================================================================== building


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
        if _last_token_pooling(model) and model.config.pad_token_id is None:
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
    method = cfg.method
    spec = None
    if method == "full":
        model.requires_grad_(True)
        wrapped = model
    elif method == "adapter":
        spec = add_bottleneck_adapters(
            model,
            placement=cfg.adapter_placement,
            bottleneck=cfg.adapter_size,
            reduction_factor=cfg.adapter_reduction,
            activation=cfg.adapter_activation,
        )
        mark_adapter_trainable(
            model, head_modules=head + extra, train_norms=cfg.adapter_train_norms
        )
        wrapped = model
    else:
        wrapped = apply_peft(model, cfg, task_kind, total_steps, head + extra)
    return TaskModel(
        wrapped,
        method_config=cfg,
        task_kind=task_kind,
        base_model_path=base_model_path,
        head_modules=head,
        extra_modules=extra,
        adapter_spec=spec,
    )


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


def _new_weight_modules(model: nn.Module, head: tuple[str, ...]) -> tuple[str, ...]:
    """Backbone modules whose weights the checkpoint did not provide (randomly initialised
    at load time, e.g. a missing pooler): they train and are saved with the head, or a
    reload would initialise them differently. Known from :func:`load_base_model`."""
    missing = getattr(model, "scalelab_new_weights", None) or ()
    modules = []
    for key in missing:
        module = key.rsplit(".", 1)[0]
        if not _in_modules(key, head) and module not in modules:
            modules.append(module)
    return tuple(modules)


def _in_modules(param_name: str, modules: tuple[str, ...]) -> bool:
    """Whether ``param_name`` lies under one of ``modules`` (also inside PEFT wrappers)."""
    dotted = f".{param_name}"
    return any(f".{m}." in dotted for m in modules)


def _check_task_kind(model: nn.Module, task_kind: str) -> None:
    want = {"ner": "ForTokenClassification", "classification": "ForSequenceClassification"}
    if task_kind not in want:
        raise ValueError(f"task_kind must be 'ner' or 'classification', got {task_kind!r}")
    if not type(model).__name__.endswith(want[task_kind]):
        raise ValueError(
            f"task_kind '{task_kind}' needs a ...{want[task_kind]} model, got {type(model).__name__}"
        )


@contextlib.contextmanager
def _quiet_logger(name: str) -> Iterator[None]:
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _last_token_pooling(model: nn.Module) -> bool:
    """Decoder classifiers (Llama, GPT-2 ...) score every position and read the last real
    token; encoders pool the first token. The decoders' head is called ``score``."""
    return type(model).__name__.endswith("ForSequenceClassification") and hasattr(model, "score")


def load_task_model(
    directory: str | Path, *, base_model_path: str | Path | None = None, trainable: bool = False
) -> TaskModel:
    """Reload a :meth:`TaskModel.save` directory (see :mod:`scalelab.finetune.methods_io`)."""
    from scalelab.finetune.methods_io import load_task_model as _load

    return _load(directory, base_model_path=base_model_path, trainable=trainable)


def load_base_model(
    path: str | Path,
    *,
    task_kind: TaskKind,
    num_labels: int,
    id2label: dict[int, str] | None = None,
    label2id: dict[str, int] | None = None,
) -> nn.Module:
    """Load a local checkpoint as a token/sequence classifier (see methods_io)."""
    from scalelab.finetune.methods_io import load_base_model as _load

    return _load(
        path, task_kind=task_kind, num_labels=num_labels, id2label=id2label, label2id=label2id
    )


__all__ = [
    "LORA_TARGETS",
    "METHODS",
    "MethodConfig",
    "TaskModel",
    "apply_method",
    "check_prefix_support",
    "default_lora_targets",
    "head_module_names",
    "load_base_model",
    "load_task_model",
    "peft_config_for",
]
