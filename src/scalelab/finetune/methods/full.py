"""Full fine-tuning: every weight trains; saved in Hugging Face format."""

from __future__ import annotations

from torch import nn

from scalelab.finetune.methods.base import FinetuneMethod, register


@register("full")
class Full(FinetuneMethod):
    """Every parameter of the model trains (the head with it); nothing is wrapped."""

    saves_full_model = True

    def mark_trainable(self, model: nn.Module, trained: tuple[str, ...]) -> None:
        model.requires_grad_(True)
