"""Loading base checkpoints, and saving / reloading fine-tuned :class:`TaskModel` s.

A saved task model is a self-describing directory, written atomically (a crash leaves the
old directory or the new one, never half of one)::

    task_model.json               method, task kind, model class, label maps, the method's
                                  config, parameter counts, base checkpoint path, versions
    full / merged LoRA:           config.json + model.safetensors (Hugging Face format)
    lora, adalora, prefix, prompt adapter_config.json + adapter_model.safetensors (PEFT's
                                  format; the task head is in it as modules_to_save)
    adapter                       adapters.safetensors: only the adapter, norm and head
                                  weights; placement, sizes and wrapped modules are in
                                  task_model.json

Methods other than ``full`` store only what they changed and name the base checkpoint
(an absolute path); :func:`load_task_model` loads that base again, or the one passed as
``base_model_path`` when the base has moved.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from scalelab.errors import UserError
from scalelab.finetune.adapters import (
    AdapterSpec,
    adapter_trainable_names,
    add_bottleneck_adapters,
    mark_adapter_trainable,
)
from scalelab.finetune.methods import (
    MethodConfig,
    TaskKind,
    TaskModel,
    _in_modules,
    head_module_names,
)
from scalelab.utils.env import versions
from scalelab.utils.io import atomic_dir, atomic_write_json, read_json

TASK_MODEL_FILE = "task_model.json"
ADAPTER_WEIGHTS = "adapters.safetensors"
FORMAT = "scalelab.task_model"
FORMAT_VERSION = 1


def load_base_model(
    path: str | Path,
    *,
    task_kind: TaskKind,
    num_labels: int,
    id2label: dict[int, str] | None = None,
    label2id: dict[str, int] | None = None,
    dtype: torch.dtype = torch.float32,
) -> nn.Module:
    """A local Hugging Face checkpoint as a token or sequence classifier, offline, fp32.

    The weights the checkpoint lacks besides the task head (a pooler a decoder-only or
    sentence-embedding checkpoint never had, say) are recorded on the model as
    ``scalelab_new_weights``; :func:`apply_method` trains and saves them with the head.
    """
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"model directory not found: {path}")
    if not (path / "config.json").is_file():
        raise UserError(
            f"{path} has no config.json, so it is not a Hugging Face checkpoint; give the "
            "directory that holds config.json and the weights (save_pretrained layout)"
        )
    from transformers import (
        AutoModelForSequenceClassification,
        AutoModelForTokenClassification,
    )

    auto = (
        AutoModelForTokenClassification
        if task_kind == "ner"
        else AutoModelForSequenceClassification
    )
    kwargs: dict[str, Any] = {"num_labels": num_labels}
    if id2label is not None:
        kwargs["id2label"] = {int(k): v for k, v in id2label.items()}
    if label2id is not None:
        kwargs["label2id"] = {k: int(v) for k, v in label2id.items()}
    # transformers reports the head it initialised as "MISSING" (expected; the missing keys
    # are kept below). A head of another size (a checkpoint fine-tuned on other labels) is
    # re-initialised rather than refused.
    with _quiet_transformers():
        try:
            model, info = auto.from_pretrained(
                str(path),
                local_files_only=True,
                dtype=dtype,
                output_loading_info=True,
                ignore_mismatched_sizes=True,
                **kwargs,
            )
        except (OSError, ValueError, KeyError) as exc:
            kind = "token classification" if task_kind == "ner" else "sequence classification"
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(f"cannot load {path} for {kind}: {first}") from None
    head = head_module_names(model)
    new = set(info.get("missing_keys", ()))
    new.update(
        item[0] if isinstance(item, tuple | list) else item
        for item in info.get("mismatched_keys", ())
    )
    model.scalelab_new_weights = sorted(key for key in new if not _in_modules(key, head))
    return model


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
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


def save_task_model(task_model: TaskModel, directory: str | Path) -> Path:
    """Write ``task_model`` to ``directory`` (see the module docstring); returns the path."""
    directory = Path(directory)
    tm = task_model
    stores_full = tm.method == "full" or tm.merged
    if not stores_full and not tm.base_model_path:
        raise ValueError(
            f"cannot save a '{tm.method}' model without the base checkpoint path: load the "
            "base with load_base_model() or pass base_model_path to apply_method()"
        )
    config = tm.config
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "method": tm.method,
        "merged": tm.merged,
        "task_kind": tm.task_kind,
        "model_class": tm.model_class,
        "model_type": getattr(config, "model_type", None),
        "base_model_path": None if stores_full else tm.base_model_path,
        "num_labels": int(config.num_labels),
        "id2label": {str(k): v for k, v in config.id2label.items()},
        "label2id": {str(k): int(v) for k, v in config.label2id.items()},
        "num_virtual_tokens": tm.num_virtual_tokens,
        "head_modules": list(tm.head_modules),
        "extra_modules": list(tm.extra_modules),
        "method_config": tm.method_config.to_dict(),
        "adapter": tm.adapter_spec.to_dict() if tm.adapter_spec is not None else None,
        "parameters": tm.parameter_report(),
        "versions": versions(),
    }
    with atomic_dir(directory) as tmp:
        if stores_full or tm.method != "adapter":
            # HF format for full/merged; PEFT's adapter_config.json + adapter_model.safetensors.
            with _quiet_transformers():
                tm.model.save_pretrained(str(tmp))
        else:
            from safetensors.torch import save_file

            save_file(_adapter_state(tm), str(tmp / ADAPTER_WEIGHTS), metadata={"format": "pt"})
            meta["adapter_weights"] = ADAPTER_WEIGHTS
        atomic_write_json(tmp / TASK_MODEL_FILE, meta)
    return directory


def load_task_model(
    directory: str | Path, *, base_model_path: str | Path | None = None, trainable: bool = False
) -> TaskModel:
    """Reload what :func:`save_task_model` wrote; the same outputs as before saving.

    ``base_model_path`` overrides the recorded base checkpoint (when it moved).
    ``trainable`` makes the method's parameters trainable again (to continue training);
    by default everything is frozen, for evaluation and prediction.
    """
    directory = Path(directory)
    meta_path = directory / TASK_MODEL_FILE
    if not meta_path.is_file():
        raise UserError(f"{directory} is not a saved fine-tuned model (no {TASK_MODEL_FILE})")
    meta = read_json(meta_path)
    if meta.get("format") != FORMAT or int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise UserError(f"{meta_path}: not a task model this scalelab version can read")
    cfg = MethodConfig.from_dict(meta["method_config"], where=f"{meta_path}: ")
    task_kind = meta["task_kind"]
    labels = {
        "num_labels": int(meta["num_labels"]),
        "id2label": {int(k): v for k, v in meta["id2label"].items()},
        "label2id": {k: int(v) for k, v in meta["label2id"].items()},
    }
    common: dict[str, Any] = {
        "method_config": cfg,
        "task_kind": task_kind,
        "head_modules": tuple(meta["head_modules"]),
        "extra_modules": tuple(meta["extra_modules"]),
    }
    if meta["method"] == "full" or meta["merged"]:
        model = load_base_model(directory, task_kind=task_kind, **labels)
        _check_class(model, meta, directory)
        model.requires_grad_(trainable)
        tm = TaskModel(model, base_model_path=None, **common)
        tm.merged = bool(meta["merged"])
        return tm.train(trainable)

    base_path = Path(base_model_path or meta["base_model_path"] or "")
    if not (base_path / "config.json").is_file():
        raise UserError(
            f"{directory}: base model not found at '{base_path}'; pass the base checkpoint "
            "directory (base_model_path / --base-model)"
        )
    base = load_base_model(base_path, task_kind=task_kind, **labels)
    _check_class(base, meta, directory)
    base_path_str = str(base_path.resolve())
    if meta["method"] == "adapter":
        spec = AdapterSpec.from_dict(meta["adapter"])
        add_bottleneck_adapters(
            base,
            placement=spec.placement,
            bottleneck=spec.bottleneck,
            activation=spec.activation,
            modules=spec.modules,
        )
        _load_adapter_state(
            base, directory / meta.get("adapter_weights", ADAPTER_WEIGHTS), meta, cfg
        )
        if trainable:
            mark_adapter_trainable(
                base,
                head_modules=common["head_modules"] + common["extra_modules"],
                train_norms=cfg.adapter_train_norms,
            )
        else:
            base.requires_grad_(False)
        tm = TaskModel(base, base_model_path=base_path_str, adapter_spec=spec, **common)
        return tm.train(trainable)

    import peft

    prompt_learning = meta["method"] in ("prefix", "prompt")
    if trainable and meta["method"] == "prefix" and cfg.prefix_projection:
        raise UserError(
            f"{directory}: prefix tuning with prefix_projection saves only the projected "
            "prefix, so training cannot continue from it; load it for evaluation only"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # PEFT on transformers 5 APIs
            # AdaLoRA reloads already pruned to its rank pattern; PEFT still warns that the
            # pattern's keys (named ...lora_E) match no module. Checked by the tests.
            warnings.filterwarnings("ignore", "The following rank_pattern keys", RuntimeWarning)
            model = peft.PeftModel.from_pretrained(
                base, str(directory), is_trainable=trainable and not prompt_learning
            )
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(f"cannot load the {meta['method']} weights in {directory}: {exc}") from None
    # PEFT leaves the head copy trainable in inference mode, and refuses is_trainable for
    # prompt learning; set both by hand.
    model.requires_grad_(False)
    if trainable and prompt_learning:
        model.peft_config["default"].inference_mode = False
    if trainable:
        for name, param in model.named_parameters():
            if "prompt_encoder." in name or ".modules_to_save." in name or "lora_" in name:
                param.requires_grad_(True)
    tm = TaskModel(model, base_model_path=base_path_str, **common)
    return tm.train(trainable)


# ====================================================================== helpers


def _adapter_state(tm: TaskModel) -> dict[str, torch.Tensor]:
    model = tm.model
    names = adapter_trainable_names(
        model,
        head_modules=tm.head_modules + tm.extra_modules,
        train_norms=tm.method_config.adapter_train_norms,
    )
    params = dict(model.named_parameters())
    # safetensors refuses shared or strided storage: give each tensor its own copy.
    return {name: params[name].detach().to("cpu").contiguous().clone() for name in names}


def _load_adapter_state(model: nn.Module, path: Path, meta: dict, cfg: MethodConfig) -> None:
    from safetensors.torch import load_file

    if not path.is_file():
        raise UserError(f"adapter weights missing: {path}")
    state = load_file(str(path))
    expected = set(
        adapter_trainable_names(
            model,
            head_modules=tuple(meta["head_modules"]) + tuple(meta["extra_modules"]),
            train_norms=cfg.adapter_train_norms,
        )
    )
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - expected)
    if missing or unexpected:
        what = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise UserError(f"{path}: adapter weights do not fit the model ({what})")
    with torch.no_grad():
        params = dict(model.named_parameters())
        for name, value in state.items():
            params[name].copy_(value)


def _check_class(model: nn.Module, meta: dict, directory: Path) -> None:
    if type(model).__name__ != meta["model_class"]:
        raise UserError(
            f"{directory}: saved for {meta['model_class']} but the base checkpoint loads as "
            f"{type(model).__name__}"
        )
