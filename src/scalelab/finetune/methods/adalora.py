"""AdaLoRA (Zhang et al. 2023) through PEFT: LoRA whose rank budget is pruned in training.

Each adapted matrix gets an SVD-shaped update ``P diag(E) Q`` of rank ``adalora.init_r``;
after ``tinit`` steps at full budget the least important triplets are masked until the
average rank is ``adalora.target_r``, which is then kept for the last ``tfinal`` steps.
The LoRA section's ``alpha``, ``dropout`` and ``target_modules`` apply to AdaLoRA too.

PEFT pitfalls handled here: AdaLoRA gets ``total_step`` from the run's step count and needs
``update_and_allocate(step)`` after every optimizer step *with the gradients still
present* — the method keeps its own copy of the last gradients so the loop may call
:meth:`TaskModel.on_step_end` after ``zero_grad``; PEFT adds the orthogonality penalty to
the loss also in eval mode, so the task loss is reported apart and evaluation uses it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from scalelab.config import Config
from scalelab.errors import UserError
from scalelab.finetune.methods.base import TaskModel, WrapContext, at_least_one, register
from scalelab.finetune.methods.lora import Lora, LoraSettings


@dataclasses.dataclass(kw_only=True)
class AdaLoraSettings(Config):
    """AdaLoRA's rank budget and schedule (alpha, dropout and targets: the lora section)."""

    init_r: int = 12
    """AdaLoRA starting rank per matrix; 1.5x the target as in Zhang et al. 2023 (§4)."""

    target_r: int = 8
    """AdaLoRA average rank per matrix after budget pruning."""

    tinit: int | None = None
    """Steps at full budget before pruning starts; empty = 10% of the total steps."""

    tfinal: int | None = None
    """Steps at the final budget at the end of training; empty = 20% of the total steps."""

    delta_t: int | None = None
    """Steps between budget re-allocations; empty = 1% of the total steps (at least 1)."""

    beta1: float = 0.85
    """EMA coefficient of the sensitivity (Zhang et al. 2023, Eq. 9; PEFT's default)."""

    beta2: float = 0.85
    """EMA coefficient of the uncertainty (Zhang et al. 2023, Eq. 10)."""

    orth_reg_weight: float = 0.5
    """Weight of the orthogonality regulariser on P and Q (PEFT's default)."""

    def validate(self) -> None:
        for name in ("init_r", "target_r", "delta_t"):
            at_least_one(f"adalora.{name}", getattr(self, name))
        if self.target_r > self.init_r:
            raise UserError(
                f"adalora.target_r ({self.target_r}) must not exceed adalora.init_r ({self.init_r})"
            )
        for name in ("tinit", "tfinal"):
            if getattr(self, name) is not None and getattr(self, name) < 0:
                raise UserError(f"adalora.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("beta1", "beta2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise UserError(f"adalora.{name} must be in [0, 1), got {getattr(self, name)}")
        if self.orth_reg_weight < 0:
            raise UserError("adalora.orth_reg_weight must be >= 0")

    def schedule(self, total_steps: int) -> tuple[int, int, int]:
        """``(tinit, tfinal, deltaT)`` for ``total_steps``; UserError if no pruning phase is left."""
        tinit = self.tinit if self.tinit is not None else total_steps // 10
        tfinal = self.tfinal if self.tfinal is not None else total_steps // 5
        delta = self.delta_t or max(1, total_steps // 100)
        if tinit >= total_steps - tfinal:
            raise UserError(
                f"adalora: {total_steps} training steps leave no budget-pruning phase between "
                f"adalora.tinit={tinit} and adalora.tfinal={tfinal}; train longer or lower them"
            )
        return tinit, tfinal, delta


@register("adalora")
class AdaLora(Lora):
    """AdaLoRA on LoRA's targets; re-allocates the rank budget after every step."""

    sections = ("lora", "adalora")

    def __init__(self, *, lora: LoraSettings, adalora: AdaLoraSettings) -> None:
        super().__init__(lora=lora)
        self.adalora = adalora
        self._captured: dict[int, tuple[nn.Parameter, torch.Tensor]] = {}

    def peft_config(self, model: nn.Module, ctx: WrapContext) -> Any:
        import peft

        if ctx.total_steps < 1:
            raise UserError(f"adalora needs the number of training steps, got {ctx.total_steps}")
        common = self.common_peft_args(model, ctx)
        cfg = self.adalora
        tinit, tfinal, delta = cfg.schedule(ctx.total_steps)
        return peft.AdaLoraConfig(
            init_r=cfg.init_r,
            target_r=cfg.target_r,
            tinit=tinit,
            tfinal=tfinal,
            deltaT=delta,
            beta1=cfg.beta1,
            beta2=cfg.beta2,
            orth_reg_weight=cfg.orth_reg_weight,
            total_step=ctx.total_steps,
            **common,
        )

    def attach(self, task_model: TaskModel) -> None:
        """Keep a copy of each AdaLoRA gradient as it is accumulated.

        AdaLoRA's importance scores need ``|p * grad|`` after the optimizer step, but the
        training step clears the gradients before returning; the copy survives that.
        """
        for name, param in task_model.model.named_parameters():
            if "lora_" in name and param.requires_grad:
                param.register_post_accumulate_grad_hook(self._capture_grad)

    def _capture_grad(self, param: nn.Parameter) -> None:
        if param.grad is not None:
            self._captured[id(param)] = (param, param.grad.detach().clone())

    def forward(
        self, task_model: TaskModel, inputs: dict[str, Any], labels: torch.Tensor | None
    ) -> dict[str, torch.Tensor]:
        result = super().forward(task_model, inputs, labels)
        if labels is not None:
            # PEFT adds AdaLoRA's orthogonality penalty to the loss, also in eval mode;
            # report the task loss apart and keep the penalty out of evaluation.
            logits = result["logits"]
            task = F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]).float(),
                labels.reshape(-1),
                ignore_index=-100,
            )
            result["task_loss"] = task
            if not task_model.training:
                result["loss"] = task
        return result

    def on_step_end(self, task_model: TaskModel, step: int) -> None:
        """Update the importance scores and re-allocate the budget (``update_and_allocate``)
        with the gradients of the step just taken."""
        if not self._captured:
            raise RuntimeError("on_step_end() called before any backward pass")
        saved = []
        for param, grad in self._captured.values():
            saved.append((param, param.grad))
            param.grad = grad
        try:
            task_model.model.base_model.update_and_allocate(step)
        finally:
            for param, grad in saved:
                param.grad = grad
            self._captured.clear()

    def rank_pattern(self, task_model: TaskModel) -> dict[str, list[bool]] | None:
        return task_model.model.peft_config["default"].rank_pattern
