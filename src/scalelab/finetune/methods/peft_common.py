"""The PEFT side of the fine-tuning methods: LoRA, AdaLoRA, prefix and prompt tuning.

Builds the PEFT config for a :class:`~scalelab.finetune.methods.MethodConfig` (default
LoRA targets per architecture, AdaLoRA's step schedule, the task head as
``modules_to_save``) and checks what the architecture can take before PEFT fails deep
inside a forward pass.
"""

from __future__ import annotations

import inspect
import warnings
from typing import TYPE_CHECKING, Any

from torch import nn

from scalelab.errors import UserError
from scalelab.finetune.adapters import find_adapter_sites

if TYPE_CHECKING:
    from scalelab.finetune.methods import MethodConfig, TaskKind

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


def peft_config_for(
    model: nn.Module,
    cfg: MethodConfig,
    *,
    task_kind: TaskKind,
    total_steps: int,
    modules_to_save: tuple[str, ...],
) -> Any:
    """The PEFT config for a PEFT method (lora, adalora, prefix, prompt)."""
    import peft

    task_type = peft.TaskType.TOKEN_CLS if task_kind == "ner" else peft.TaskType.SEQ_CLS
    save = list(modules_to_save)
    if cfg.method in ("lora", "adalora"):
        targets = list(cfg.lora_target_modules) or list(default_lora_targets(model))
        _check_targets(model, targets)
        common = {
            "task_type": task_type,
            "target_modules": targets,
            "lora_alpha": cfg.lora_alpha,
            "lora_dropout": cfg.lora_dropout,
            "modules_to_save": save,
            # GPT-2's Conv1D stores its weight as [in, out]; PEFT must know (it warns otherwise).
            "fan_in_fan_out": any(type(m).__name__ == "Conv1D" for m in model.modules()),
        }
        if cfg.method == "lora":
            return peft.LoraConfig(r=cfg.lora_r, **common)
        tinit, tfinal, delta = cfg.adalora_schedule(total_steps)
        return peft.AdaLoraConfig(
            init_r=cfg.adalora_init_r,
            target_r=cfg.adalora_target_r,
            tinit=tinit,
            tfinal=tfinal,
            deltaT=delta,
            beta1=cfg.adalora_beta1,
            beta2=cfg.adalora_beta2,
            orth_reg_weight=cfg.adalora_orth_reg_weight,
            total_step=total_steps,
            **common,
        )
    if cfg.method == "prefix":
        check_prefix_support(model)
        return peft.PrefixTuningConfig(
            task_type=task_type,
            num_virtual_tokens=cfg.num_virtual_tokens,
            prefix_projection=cfg.prefix_projection,
            modules_to_save=save,
        )
    if cfg.method == "prompt":
        init = peft.PromptTuningInit.SAMPLE_VOCAB if cfg.prompt_init == "vocab" else "RANDOM"
        return peft.PromptTuningConfig(
            task_type=task_type,
            num_virtual_tokens=cfg.num_virtual_tokens,
            prompt_tuning_init=init,
            modules_to_save=save,
        )
    raise ValueError(f"not a PEFT method: {cfg.method}")


def apply_peft(
    model: nn.Module,
    cfg: MethodConfig,
    task_kind: TaskKind,
    total_steps: int,
    modules_to_save: tuple[str, ...],
) -> nn.Module:
    import peft

    if total_steps < 1 and cfg.method == "adalora":
        raise UserError(f"adalora needs the number of training steps, got {total_steps}")
    pcfg = peft_config_for(
        model, cfg, task_kind=task_kind, total_steps=total_steps, modules_to_save=modules_to_save
    )
    with warnings.catch_warnings():
        # PEFT calls transformers APIs that transformers 5 flags as deprecated; not ours to fix.
        warnings.simplefilter("ignore", FutureWarning)
        return peft.get_peft_model(model, pcfg)


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
            f"no linear layers found for LoRA in {type(model).__name__}; set lora_target_modules"
        )
    return tuple(names)


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


def _check_targets(model: nn.Module, targets: list[str]) -> None:
    names = [name for name, _ in model.named_modules()]
    for target in targets:
        if not any(n == target or n.endswith(f".{target}") for n in names):
            raise UserError(
                f"lora_target_modules: no module of {type(model).__name__} is named "
                f"'{target}' (or ends with it); defaults for this model: "
                f"{','.join(default_lora_targets(model))}"
            )
