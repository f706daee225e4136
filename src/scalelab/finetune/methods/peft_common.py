"""What the PEFT methods (LoRA, AdaLoRA, prefix and prompt tuning) share.

A :class:`PeftMethod` builds its PEFT config (:meth:`PeftMethod.peft_config`, the task
head as ``modules_to_save``), wraps the model with ``peft.get_peft_model``, saves in PEFT's
format (``adapter_config.json`` + ``adapter_model.safetensors``, the head inside) and
reloads with ``peft.PeftModel.from_pretrained``.

So that PEFT's own classes load the directory with no arguments
(``AutoPeftModelForTokenClassification.from_pretrained(dir)``, the sequence-classification
one, and transformers' ``AutoModelFor...from_pretrained(dir)``), the directory also holds
``base/``: the model the method was applied to, as a Hugging Face checkpoint of the task
class (``config.json`` with the task's ``num_labels`` / ``id2label`` / ``label2id``, and
the frozen base weights, the head as initialised). PEFT builds the base model from
``base_model_name_or_path`` in ``adapter_config.json``, which points at that ``base/``;
pointing at the pretrained checkpoint instead, PEFT would build a head of that
checkpoint's label count (2 by default) and fail to load the trained head into it.

PEFT and transformers resolve ``base_model_name_or_path`` against the *current directory*
(never against the adapter directory), so it is written relative to the directory the
model was saved from (``./runs/x/model/base``) when the model lies below it, absolute
otherwise; it always starts with ``.`` or ``/``, so it is never taken for a Hub model id
(fetched from the network). The directory then loads from that working directory, also
after the tree under it moved, with or without the pretrained checkpoint: ``base/`` is
all it needs. The copy costs the size of the base model's weights (fp32) per saved model.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from scalelab.errors import UserError
from scalelab.finetune.methods.base import (
    FinetuneMethod,
    TaskKind,
    TaskModel,
    WrapContext,
    quiet_transformers,
    read_json_object,
)

BASE_DIR = "base"
"""The sub-directory of a saved PEFT model that holds its base model (with the labels)."""

ADAPTER_CONFIG = "adapter_config.json"

# Parameter-name parts PEFT adds around the base model's own parameters: the ones that
# are the method's (dropped from the base copy) and the wrappers kept around a base
# parameter (removed from its name).
_PEFT_OWN = ("modules_to_save", "ranknum")
_PEFT_WRAPPERS = ("base_layer", "original_module")


class PeftMethod(FinetuneMethod):
    """A method PEFT implements; subclasses give the PEFT config."""

    prompt_learning: ClassVar[bool] = False
    """PEFT's prompt-learning methods (prefix, prompt) refuse ``is_trainable`` on reload."""

    trains: ClassVar[tuple[str, ...]] = ()
    """Name fragments of the method's own parameters (made trainable again on reload)."""

    def peft_config(self, model: nn.Module, ctx: WrapContext) -> Any:
        """The PEFT config for ``model``; checks what the architecture can take first."""
        raise NotImplementedError

    _base_keys: tuple[str, ...] | None = None
    """The base model's state-dict names, before PEFT wrapped it (checks the base copy)."""

    def wrap(self, model: nn.Module, ctx: WrapContext) -> nn.Module:
        import peft

        pcfg = self.peft_config(model, ctx)
        self._base_keys = tuple(model.state_dict())
        with warnings.catch_warnings():
            # PEFT calls transformers APIs that transformers 5 flags as deprecated; not ours to fix.
            warnings.simplefilter("ignore", FutureWarning)
            return peft.get_peft_model(model, pcfg)

    def merge(self, model: nn.Module) -> nn.Module:
        return model.merge_and_unload()

    def save_weights(self, task_model: TaskModel, directory: Path) -> dict[str, Any]:
        with quiet_transformers():
            task_model.model.save_pretrained(str(directory))
        save_base_copy(task_model.hf_model, directory / BASE_DIR, self._base_keys)
        return {"base_copy": BASE_DIR}

    def finish_save(self, task_model: TaskModel, directory: Path, location: Path) -> None:
        """``adapter_config.json`` as PEFT's auto classes need it: the base model is the
        ``base/`` copy, and ``modules_to_save`` names each real module once."""
        from scalelab.utils.io import atomic_write_json

        path = directory / ADAPTER_CONFIG
        config = read_json_object(path)
        config["base_model_name_or_path"] = peft_path(location / BASE_DIR)
        if config.get("modules_to_save"):
            config["modules_to_save"] = real_modules(task_model.hf_model, config["modules_to_save"])
        atomic_write_json(path, config)

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

        self._base_keys = tuple(base.state_dict())
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


def peft_path(path: Path) -> str:
    """``path`` as PEFT and transformers will resolve it: relative to the current
    directory (``./...``) when it lies below it, else absolute; never a Hub model id."""
    path = Path(path).absolute()
    try:
        rel = path.relative_to(Path.cwd())
    except ValueError:
        return path.as_posix()
    return f"./{rel.as_posix()}" if rel.parts else "."


def real_modules(model: nn.Module, names: list[str]) -> list[str]:
    """``names`` (PEFT's ``modules_to_save``) once each, keeping only those that name a
    module of ``model`` (PEFT adds both ``classifier`` and ``score`` for every model)."""
    modules = [name for name, _ in model.named_modules()]
    return [
        name
        for name in dict.fromkeys(names)
        if any(m == name or m.endswith(f".{name}") for m in modules)
    ]


def base_state(model: nn.Module, expected: tuple[str, ...] | None) -> dict[str, torch.Tensor]:
    """The state of the model PEFT wrapped, as it was before: PEFT's own tensors dropped,
    its wrappers (``base_layer``, ``original_module``) taken out of the names.

    ``expected`` are the names before wrapping; a RuntimeError when they differ (a PEFT
    version that names its wrappers otherwise)."""
    state: dict[str, torch.Tensor] = {}
    for name, tensor in model.state_dict().items():
        parts = name.split(".")
        if any(p in _PEFT_OWN or p.startswith("lora_") for p in parts):
            continue
        key = ".".join(p for p in parts if p not in _PEFT_WRAPPERS)
        # safetensors refuses shared or strided storage: each tensor gets its own copy.
        state[key] = tensor.detach().to("cpu").contiguous().clone()
    if expected is not None and set(state) != set(expected):
        odd = sorted(set(state) ^ set(expected))
        raise RuntimeError(f"cannot recover the base model's weights from PEFT's: {odd[:3]}")
    return state


def save_base_copy(
    model: nn.Module, directory: Path, expected: tuple[str, ...] | None = None
) -> None:
    """``directory``: the base of the PEFT-wrapped transformers ``model`` as a Hugging
    Face checkpoint of its class, with its config (the task's label maps)."""
    from safetensors.torch import save_file

    directory.mkdir()
    config = copy.deepcopy(model.config)
    config.architectures = [type(model).__name__]
    config.save_pretrained(str(directory))
    state = base_state(model, expected)
    save_file(state, str(directory / "model.safetensors"), metadata={"format": "pt"})
