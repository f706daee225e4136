"""LoRA (Hu et al. 2021) through PEFT: low-rank updates of the block's linear maps.

The update of a weight ``W`` [out, in] is ``(alpha / r) * B A`` with ``A`` [r, in] and
``B`` [out, r], ``B`` zero at the start; :meth:`Lora.merge` folds it into ``W``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

from scalelab.config import Config
from scalelab.errors import UserError
from scalelab.finetune.methods.base import WrapContext, at_least_one, register
from scalelab.finetune.methods.bottleneck import find_adapter_sites
from scalelab.finetune.methods.peft_common import PeftMethod, task_type

# Default LoRA targets per module layout: every linear map inside the Transformer blocks
# (attention q/k/v/o and both feed-forward matrices). Hu et al. 2021 adapted only W_q and
# W_v; Dettmers et al. 2023 (QLoRA, §4) found that LoRA on all linear layers of the block
# is what matches full fine-tuning. The pooler and the task head are not LoRA targets (the
# head trains in full). Names are suffixes of module names (PEFT's matching rule).
LORA_TARGETS: dict[str, tuple[str, ...]] = {
    # "output.dense" matches both attention.output.dense and the FFN's output.dense.
    "bert": ("query", "key", "value", "output.dense", "intermediate.dense"),
    "llama": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
    # c_proj is both attn.c_proj and mlp.c_proj (Conv1D; PEFT sets fan_in_fan_out itself).
    "gpt2": ("c_attn", "c_proj", "c_fc"),
    "distilbert": ("q_lin", "k_lin", "v_lin", "out_lin", "lin1", "lin2"),
}


@dataclasses.dataclass(kw_only=True)
class LoraSettings(Config):
    """LoRA's settings; AdaLoRA reuses alpha, dropout and target_modules from here."""

    r: int = 8
    """LoRA rank r (lora only; AdaLoRA uses adalora.init_r / adalora.target_r)."""

    alpha: float = 16.0
    """LoRA scaling numerator: the update is (alpha / r) * B A (Hu et al. 2021); also
    AdaLoRA's."""

    dropout: float = 0.05
    """Dropout on the LoRA branch input (lora and adalora)."""

    target_modules: tuple[str, ...] = ()
    """Module-name suffixes LoRA/AdaLoRA adapt; empty = every linear map in the blocks
    (BERT: query,key,value,output.dense,intermediate.dense; Llama: q/k/v/o_proj,
    gate/up/down_proj; GPT-2: c_attn,c_proj,c_fc)."""

    def validate(self) -> None:
        at_least_one("lora.r", self.r)
        if self.alpha <= 0:
            raise UserError(f"lora.alpha must be positive, got {self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise UserError(f"lora.dropout must be in [0, 1), got {self.dropout}")


@register("lora")
class Lora(PeftMethod):
    """LoRA on every linear map of the blocks (or ``lora.target_modules``), head in full."""

    sections = ("lora",)
    can_merge = True
    trains = ("lora_",)

    def __init__(self, *, lora: LoraSettings) -> None:
        self.lora = lora

    def peft_config(self, model: nn.Module, ctx: WrapContext) -> Any:
        import peft

        return peft.LoraConfig(r=self.lora.r, **self.common_peft_args(model, ctx))

    def common_peft_args(self, model: nn.Module, ctx: WrapContext) -> dict[str, Any]:
        """The PEFT arguments LoRA and AdaLoRA share."""
        targets = list(self.lora.target_modules) or list(default_lora_targets(model))
        _check_targets(model, targets)
        return {
            "task_type": task_type(ctx.task_kind),
            "target_modules": targets,
            "lora_alpha": self.lora.alpha,
            "lora_dropout": self.lora.dropout,
            "modules_to_save": list(ctx.trained),
            # GPT-2's Conv1D stores its weight as [in, out]; PEFT must know (it warns otherwise).
            "fan_in_fan_out": any(type(m).__name__ == "Conv1D" for m in model.modules()),
        }


def default_lora_targets(model: nn.Module) -> tuple[str, ...]:
    """LoRA targets for ``model``: every linear map in its Transformer blocks (see LORA_TARGETS)."""
    try:
        layout, _ = find_adapter_sites(model, "houlsby")
    except UserError:
        layout = None
    if layout in LORA_TARGETS:
        return LORA_TARGETS[layout]
    # Unknown layout: every Linear inside the backbone except a pooler, by exact name.
    backbone = getattr(model, "base_model_prefix", "")
    names = [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear)
        and name.startswith(f"{backbone}.")
        and ".pooler." not in f".{name}."
    ]
    if not names:
        raise UserError(
            f"no linear layers found for LoRA in {type(model).__name__}; set lora.target_modules"
        )
    return tuple(names)


def _check_targets(model: nn.Module, targets: list[str]) -> None:
    names = [name for name, _ in model.named_modules()]
    for target in targets:
        if not any(n == target or n.endswith(f".{target}") for n in names):
            raise UserError(
                f"lora.target_modules: no module of {type(model).__name__} is named "
                f"'{target}' (or ends with it); defaults for this model: "
                f"{','.join(default_lora_targets(model))}"
            )
