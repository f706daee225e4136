"""Loading base checkpoints, and reloading what :meth:`TaskModel.save` wrote.

A saved task model is a self-describing directory, written atomically (a crash leaves the
old directory or the new one, never half of one)::

    task_model.json               method, task kind, model class, label maps, the method's
                                  config, parameter counts, base checkpoint path, versions
    full / merged LoRA:           config.json + model.safetensors (Hugging Face format)
    lora, adalora, prefix, prompt adapter_config.json + adapter_model.safetensors (PEFT's
                                  format; the task head is in it as modules_to_save)
                                  + base/ (config.json with the label maps +
                                  model.safetensors: the base the method was applied to,
                                  which adapter_config.json names; see peft_common)
    adapter                       adapters_config.json (what the adapters are: method,
                                  scalelab version, base path, placement, sizes, wrapped
                                  modules, label maps) + adapters.safetensors (only the
                                  adapter, norm and head weights)

The method config is written nested (``lora: {r: 8, ...}``); directories from before
that, with the flat names (``lora_r: 8``), load the same (``MethodConfig.renamed``).
Directories of scalelab 0.1 / 0.2 (no base/, no adapters_config.json: the adapters'
spec in task_model.json) load as before.

Methods other than ``full`` store only what they changed and name the base checkpoint
(absolute, and relative to the saved directory); :func:`load_task_model` loads that base
again (the absolute path, else the relative one), or the one passed as
``base_model_path`` when the base has moved. Each method reads its own weights
(:meth:`FinetuneMethod.load_weights`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from scalelab.errors import UserError
from scalelab.finetune.methods.base import (  # read_json_object, require_keys: re-exported
    FORMAT,
    FORMAT_VERSION,
    TASK_MODEL_FILE,
    TaskKind,
    TaskModel,
    head_module_names,
    in_modules,
    quiet_transformers,
    read_json_object,
    require_keys,
)
from scalelab.finetune.methods.config import MethodConfig
from scalelab.models.hf import refuse_custom_code

# What every task_model.json holds (load_task_model reads them all).
_TASK_MODEL_KEYS = (
    "method_config", "task_kind", "num_labels", "id2label", "label2id", "head_modules",
    "extra_modules", "merged", "model_class", "base_model_path",
)  # fmt: skip


def load_model_tokenizer(path: str | Path) -> Any:
    """The tokenizer saved with a model directory, offline, never running shipped code."""
    from transformers import AutoTokenizer

    refuse_custom_code(path)
    try:
        return AutoTokenizer.from_pretrained(
            str(path), local_files_only=True, trust_remote_code=False
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"cannot load the tokenizer in {path}: {_first_line(exc)}") from None


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
    refuse_custom_code(path)
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
    elif id2label is not None:  # the inverse, not transformers' LABEL_i placeholders
        kwargs["label2id"] = {v: k for k, v in kwargs["id2label"].items()}
    # transformers reports the head it initialised as "MISSING" (expected; the missing keys
    # are kept below). A head of another size (a checkpoint fine-tuned on other labels) is
    # re-initialised rather than refused.
    with quiet_transformers():
        try:
            model, info = auto.from_pretrained(
                str(path),
                local_files_only=True,
                trust_remote_code=False,
                dtype=dtype,
                output_loading_info=True,
                ignore_mismatched_sizes=True,
                **kwargs,
            )
        except (OSError, ValueError, KeyError) as exc:
            kind = "token classification" if task_kind == "ner" else "sequence classification"
            raise UserError(f"cannot load {path} for {kind}: {_first_line(exc)}") from None
    head = head_module_names(model)
    new = set(info.get("missing_keys", ()))
    new.update(
        item[0] if isinstance(item, tuple | list) else item
        for item in info.get("mismatched_keys", ())
    )
    model.scalelab_new_weights = sorted(key for key in new if not in_modules(key, head))
    return model


def load_task_model(
    directory: str | Path, *, base_model_path: str | Path | None = None, trainable: bool = False
) -> TaskModel:
    """Reload what :meth:`TaskModel.save` wrote; the same outputs as before saving.

    ``base_model_path`` overrides the recorded base checkpoint (when it moved).
    ``trainable`` makes the method's parameters trainable again (to continue training);
    by default everything is frozen, for evaluation and prediction.
    """
    directory = Path(directory)
    meta_path = directory / TASK_MODEL_FILE
    if not meta_path.is_file():
        raise UserError(f"{directory} is not a saved fine-tuned model (no {TASK_MODEL_FILE})")
    meta = read_json_object(meta_path)
    if meta.get("format") != FORMAT or not _version_ok(meta.get("format_version", 0)):
        raise UserError(f"{meta_path}: not a task model this scalelab version can read")
    require_keys(meta, _TASK_MODEL_KEYS, meta_path)
    cfg = MethodConfig.from_dict(meta["method_config"], where=f"{meta_path}: ")
    impl = cfg.build()
    task_kind = meta["task_kind"]
    try:
        if task_kind not in ("ner", "classification"):
            raise ValueError(f"task_kind {task_kind!r}")
        labels = {
            "num_labels": int(meta["num_labels"]),
            "id2label": {int(k): v for k, v in meta["id2label"].items()},
            "label2id": {k: int(v) for k, v in meta["label2id"].items()},
        }
        head, extra = _names(meta["head_modules"]), _names(meta["extra_modules"])
    except (TypeError, ValueError, AttributeError) as exc:
        raise UserError(f"{meta_path}: malformed ({exc})") from None
    common: dict[str, Any] = {
        "method_config": cfg,
        "impl": impl,
        "task_kind": task_kind,
        "head_modules": head,
        "extra_modules": extra,
    }
    merged = bool(meta["merged"])
    if impl.saves_full_model or merged:
        model = load_base_model(directory, task_kind=task_kind, **labels)
        _check_class(model, meta, directory)
        model.requires_grad_(trainable)
        if trainable and not merged:  # a merged model trains in full
            impl.mark_trainable(model, head + extra)
        tm = TaskModel(model, base_model_path=None, merged=merged, **common)
        return tm.train(trainable)

    base_path = _base_path(directory, meta, base_model_path)
    base = load_base_model(base_path, task_kind=task_kind, **labels)
    _check_class(base, meta, directory)
    try:
        model = impl.load_weights(base, directory, meta, trained=head + extra, trainable=trainable)
    except (KeyError, TypeError) as exc:  # the method's own entries of task_model.json
        raise UserError(f"{meta_path}: malformed for the {cfg.method} method ({exc!r})") from None
    tm = TaskModel(model, base_model_path=str(base_path.resolve()), **common)
    return tm.train(trainable)


def _base_path(directory: Path, meta: dict[str, Any], given: str | Path | None) -> Path:
    """The base checkpoint of a saved model: ``given``, else the recorded absolute path,
    else the recorded path relative to ``directory`` (both moved together)."""
    if given:
        candidates: list[Path | None] = [Path(given)]
    else:
        recorded = meta["base_model_path"]
        rel = meta.get("base_model_relpath")
        candidates = [Path(recorded) if isinstance(recorded, str) and recorded else None]
        if isinstance(rel, str) and rel:
            candidates.append(directory / rel)
    for path in candidates:
        if path is not None and (path / "config.json").is_file():
            return path
    copy = meta.get("base_copy")
    hint = (
        f"; {directory / copy} holds a copy of it"
        if isinstance(copy, str) and (directory / copy / "config.json").is_file()
        else ""
    )
    raise UserError(
        f"{directory}: base model not found at '{candidates[0] or ''}'; pass the base checkpoint "
        f"directory (base_model_path / --base-model){hint}"
    )


def _first_line(exc: BaseException) -> str:
    """The first line of a library's (often multi-line) message, for a one-line error."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _version_ok(version: Any) -> bool:
    try:
        return int(version) <= FORMAT_VERSION
    except (TypeError, ValueError):
        return False


def _names(value: Any) -> tuple[str, ...]:
    """A list of module names from task_model.json (a TypeError for anything else)."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"expected a list of module names, got {value!r}")
    return tuple(value)


def _check_class(model: nn.Module, meta: dict, directory: Path) -> None:
    if type(model).__name__ != meta["model_class"]:
        raise UserError(
            f"{directory}: saved for {meta['model_class']} but the base checkpoint loads as "
            f"{type(model).__name__}"
        )
