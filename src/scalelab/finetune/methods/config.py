""":class:`MethodConfig`: the method's name and one settings section per method.

Importing this module imports every built-in method module, which registers the methods.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, ClassVar, Literal, Self, get_args

from scalelab.config import Config, alias_targets
from scalelab.finetune.methods.adalora import AdaLoraSettings
from scalelab.finetune.methods.adapter import AdapterSettings
from scalelab.finetune.methods.base import REGISTRY, FinetuneMethod, method_class
from scalelab.finetune.methods.full import Full  # noqa: F401  (registers "full")
from scalelab.finetune.methods.lora import LoraSettings
from scalelab.finetune.methods.prefix import PrefixSettings
from scalelab.finetune.methods.prompt import PromptSettings

Method = Literal["full", "lora", "adalora", "prefix", "prompt", "adapter"]
METHODS: tuple[str, ...] = get_args(Method)
"""The built-in methods, in the order the docs and tests list them."""

if missing := [name for name in METHODS if name not in REGISTRY]:  # pragma: no cover
    raise ImportError(f"built-in fine-tuning methods not registered: {', '.join(missing)}")


@dataclasses.dataclass(kw_only=True)
class MethodConfig(Config):
    """How the pretrained model is fine-tuned: which parameters train and how it is wrapped.

    Each method reads its own section; the other sections are kept (and saved) but unused.
    """

    renamed: ClassVar[dict[str, str | tuple[str, ...]]] = {
        "lora_r": "lora.r",
        "lora_alpha": "lora.alpha",
        "lora_dropout": "lora.dropout",
        "lora_target_modules": "lora.target_modules",
        "adalora_init_r": "adalora.init_r",
        "adalora_target_r": "adalora.target_r",
        "adalora_tinit": "adalora.tinit",
        "adalora_tfinal": "adalora.tfinal",
        "adalora_delta_t": "adalora.delta_t",
        "adalora_beta1": "adalora.beta1",
        "adalora_beta2": "adalora.beta2",
        "adalora_orth_reg_weight": "adalora.orth_reg_weight",
        # One setting served both prompt methods.
        "num_virtual_tokens": ("prefix.num_virtual_tokens", "prompt.num_virtual_tokens"),
        "prefix_projection": "prefix.projection",
        "prompt_init": "prompt.init",
        "adapter_placement": "adapter.placement",
        "adapter_size": "adapter.size",
        "adapter_reduction": "adapter.reduction",
        "adapter_activation": "adapter.activation",
        "adapter_train_norms": "adapter.train_norms",
    }

    method: Method = "full"
    """full: every weight trains; lora / adalora / prefix / prompt: through PEFT; adapter:
    in-house bottleneck adapters. The task head always trains."""

    lora: LoraSettings = dataclasses.field(default_factory=LoraSettings)
    """LoRA (alpha, dropout and target_modules also apply to AdaLoRA)."""

    adalora: AdaLoraSettings = dataclasses.field(default_factory=AdaLoraSettings)
    """AdaLoRA's rank budget and schedule (it takes alpha, dropout and targets from lora)."""

    prefix: PrefixSettings = dataclasses.field(default_factory=PrefixSettings)
    """Prefix tuning."""

    prompt: PromptSettings = dataclasses.field(default_factory=PromptSettings)
    """Prompt tuning."""

    adapter: AdapterSettings = dataclasses.field(default_factory=AdapterSettings)
    """Bottleneck adapters."""

    def validate(self) -> None:
        method_class(self.method)  # a method registered from outside is welcome too

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, where: str = "") -> Self:
        """As :meth:`Config.from_dict`; also takes a method registered from outside (the
        ``Method`` type, and so the CLI, lists only the built-in ones)."""
        name = data.get("method") if isinstance(data, dict) else None
        if isinstance(name, str) and name not in METHODS and name in REGISTRY:
            rest = {k: v for k, v in data.items() if k != "method"}
            return dataclasses.replace(super().from_dict(rest, where=where), method=name)
        return super().from_dict(data, where=where)

    def build(self) -> FinetuneMethod:
        """A fresh instance of the method, with its sections."""
        return method_class(self.method).from_config(self)

    def reserved_positions(self) -> int:
        """Positions of the model's window the method uses up (prefix and prompt tuning's
        virtual tokens; 0 for the others)."""
        return self.build().reserved_positions

    def __getattr__(self, name: str) -> Any:
        # Only reached for names that are not attributes: the old flat field names still
        # read (deprecated), from the active method's section when they name several.
        targets = alias_targets(type(self), name)
        if not targets:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        target = next((t for t in targets if t.split(".")[0] == self.method), targets[0])
        warnings.warn(
            f"MethodConfig.{name} is deprecated; use MethodConfig.{target}",
            DeprecationWarning,
            stacklevel=2,
        )
        section, field = target.split(".")
        return getattr(getattr(self, section), field)
