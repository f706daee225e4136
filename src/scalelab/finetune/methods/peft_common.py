"""What the PEFT methods (LoRA, AdaLoRA, prefix and prompt tuning) share.

A :class:`PeftMethod` builds its PEFT config (:meth:`PeftMethod.peft_config`, the task
head as ``modules_to_save``), wraps the model with ``peft.get_peft_model``, saves in PEFT's
format (``adapter_config.json`` + ``adapter_model.safetensors``, the head inside) and
reloads with ``peft.PeftModel.from_pretrained``.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, ClassVar

from torch import nn

from scalelab.errors import UserError
from scalelab.finetune.methods.base import (
    FinetuneMethod,
    TaskKind,
    TaskModel,
    WrapContext,
    quiet_transformers,
)


class PeftMethod(FinetuneMethod):
    """A method PEFT implements; subclasses give the PEFT config."""

    prompt_learning: ClassVar[bool] = False
    """PEFT's prompt-learning methods (prefix, prompt) refuse ``is_trainable`` on reload."""

    trains: ClassVar[tuple[str, ...]] = ()
    """Name fragments of the method's own parameters (made trainable again on reload)."""

    def peft_config(self, model: nn.Module, ctx: WrapContext) -> Any:
        """The PEFT config for ``model``; checks what the architecture can take first."""
        raise NotImplementedError

    def wrap(self, model: nn.Module, ctx: WrapContext) -> nn.Module:
        import peft

        pcfg = self.peft_config(model, ctx)
        with warnings.catch_warnings():
            # PEFT calls transformers APIs that transformers 5 flags as deprecated; not ours to fix.
            warnings.simplefilter("ignore", FutureWarning)
            return peft.get_peft_model(model, pcfg)

    def merge(self, model: nn.Module) -> nn.Module:
        return model.merge_and_unload()

    def save_weights(self, task_model: TaskModel, directory: Path) -> dict[str, Any]:
        with quiet_transformers():
            task_model.model.save_pretrained(str(directory))
        return {}

    def load_weights(
        self,
        base: nn.Module,
        directory: Path,
        meta: dict[str, Any],
        *,
        trained: tuple[str, ...],
        trainable: bool,
    ) -> nn.Module:
        import peft

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # PEFT on transformers 5 APIs
                # AdaLoRA reloads already pruned to its rank pattern; PEFT still warns that the
                # pattern's keys (named ...lora_E) match no module. Checked by the tests.
                warnings.filterwarnings("ignore", "The following rank_pattern keys", RuntimeWarning)
                # PEFT never imports code from an adapter directory; said explicitly all
                # the same, as every load of a user-given directory does.
                model = peft.PeftModel.from_pretrained(
                    base,
                    str(directory),
                    is_trainable=trainable and not self.prompt_learning,
                    trust_remote_code=False,
                )
        except (OSError, ValueError, KeyError) as exc:
            raise UserError(f"cannot load the {self.name} weights in {directory}: {exc}") from None
        # PEFT leaves the head copy trainable in inference mode, and refuses is_trainable for
        # prompt learning; set both by hand.
        model.requires_grad_(False)
        if trainable and self.prompt_learning:
            model.peft_config["default"].inference_mode = False
        if trainable:
            marks = (*self.trains, ".modules_to_save.")
            for name, param in model.named_parameters():
                if any(mark in name for mark in marks):
                    param.requires_grad_(True)
        return model


def task_type(task_kind: TaskKind) -> Any:
    """PEFT's task type for a scalelab task kind."""
    import peft

    return peft.TaskType.TOKEN_CLS if task_kind == "ner" else peft.TaskType.SEQ_CLS
