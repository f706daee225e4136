"""The fine-tuning stage: a model, a task and a method through the one training loop.

``finetune(cfg, run_dir)`` leaves a run directory like pretraining's::

    run_dir/config.yaml, metrics.jsonl, summary.json, checkpoints/  (resumable)
    run_dir/model/            the best model (by the dev metric) in its method's format,
                              plus the tokenizer: ``scalelab evaluate|infer`` reload it
    run_dir/eval_dev.json, eval_test.json   full evaluation tables

Model: a scalelab pretraining run directory (its ``model/``) or any local Hugging Face
checkpoint directory. Early stopping on the dev metric restores the best weights.
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from scalelab.config import Config
from scalelab.errors import UserError
from scalelab.finetune.methods import MethodConfig
from scalelab.finetune.tasks import TaskConfig
from scalelab.train.config import OptimConfig, RuntimeConfig

# Learning rates by method for pretrained encoders, from the papers that introduced them:
# full fine-tuning 2e-5..5e-5 (Devlin et al. 2019), LoRA 5e-4 (Hu et al. 2021, RoBERTa-base
# GLUE), AdaLoRA 1e-3 (Zhang et al. 2023), prefix tuning 5e-3 (Liu et al. 2022, P-tuning
# v2 on NER), prompt tuning 3e-2 (Lester et al. 2021 used 0.3 with Adafactor; AdamW
# wants less), bottleneck adapters 1e-3 (Houlsby et al. 2019 swept 3e-5..3e-3).
DEFAULT_LR = {
    "full": 5e-5,
    "lora": 5e-4,
    "adalora": 1e-3,
    "prefix": 5e-3,
    "prompt": 3e-2,
    "adapter": 1e-3,
}


def finetune_optim() -> OptimConfig:
    """Fine-tuning's optimizer defaults: AdamW with beta2 0.999 (the BERT/Transformers
    default), weight decay 0.01, linear warmup over 10% of the steps, then linear decay to
    zero (the recipe of Devlin et al. 2019); the peak lr by method (``DEFAULT_LR``)."""
    return OptimConfig(
        lr=None,
        weight_decay=0.01,
        beta2=0.999,
        schedule="linear",
        warmup_fraction=0.1,
        min_lr_ratio=0.0,
    )


@dataclass(kw_only=True)
class FinetuneConfig(Config):
    """Fine-tuning one model on one task with one method."""

    renamed: ClassVar[dict[str, str | tuple[str, ...]]] = {
        "lr": "optim.lr",
        "weight_decay": "optim.weight_decay",
        "warmup_fraction": "optim.warmup_fraction",
    }

    model: Path | None = None
    """A scalelab run directory or a local Hugging Face checkpoint directory (required)."""
    task: TaskConfig = field(default_factory=TaskConfig)
    """The task: a built-in name (twitter-ner, wiki-topics, movie-sentiment, bbc-news) or files."""
    method: MethodConfig = field(default_factory=MethodConfig)
    """full, lora, adalora, prefix, prompt or adapter, and its settings."""
    epochs: float = 3.0
    """Passes over the training split."""
    batch_size: int = 16
    """Examples (NER windows or texts) per optimizer step."""
    max_length: int = 128
    """Longest model input in tokens; longer NER sentences are split into overlapping windows."""
    stride: int | None = None
    """NER: most overlap of consecutive windows, in tokens (default: a quarter window)."""
    label_all_subwords: bool = False
    """NER: put the word's label on every subword, not only the first."""
    optim: OptimConfig = field(default_factory=finetune_optim)
    """Optimizer and schedule (lr none: by method -- full 5e-5, lora 5e-4, adalora 1e-3, prefix 5e-3, prompt 3e-2, adapter 1e-3)."""
    evals_per_epoch: int = 1
    """Dev evaluations per epoch (early stopping and best-model selection)."""
    patience: int | None = 3
    """Stop after this many evaluations without a better dev metric (none: never)."""
    max_examples_per_eval: int = 0
    """Evaluate on at most this many dev examples during training (0: all)."""
    train_fraction: float = 1.0
    """Train on this fraction of the training split (nested seeded subsets; label curves)."""
    seed: int = 0
    """Seed of the head init, the data order and dropout."""
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    """Device, precision, compile, checkpoints, logging."""

    def validate(self) -> None:
        if self.epochs <= 0 or self.batch_size < 1 or self.max_length < 4:
            raise UserError("epochs must be positive, batch_size >= 1 and max_length >= 4")
        if not 0 < self.train_fraction <= 1:
            raise UserError(f"train_fraction must be in (0, 1], got {self.train_fraction}")
        if self.evals_per_epoch < 1:
            raise UserError("evals_per_epoch must be >= 1")
        for name in ("patience", "stride", "max_examples_per_eval"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise UserError(f"{name} must be >= 0, got {value}")

    def check_runnable(self) -> None:
        """The checks a template config (``study finetune``, ``labelcurve``) may defer."""
        if self.model is None:
            raise UserError("give the model to fine-tune: --model RUN_DIR or a HF checkpoint")
        if self.task.task is None and self.task.train_file is None:
            raise UserError("give a task: --task NAME (a built-in) or --task.train-file FILE")

    @property
    def peak_lr(self) -> float:
        """The peak learning rate: ``optim.lr``, or the method's default."""
        return self.optim.lr if self.optim.lr is not None else DEFAULT_LR[self.method.method]

    def resolved_optim(self) -> OptimConfig:
        """The optimizer config with the learning rate filled in."""
        return self.optim.replace(lr=self.peak_lr)


def resolve_model_dir(path: Path) -> Path:
    """A scalelab run directory means its ``model/``; anything else must hold config.json.
    A directory that ships model code to run is refused here, before anything loads."""
    from scalelab.models.hf import refuse_custom_code

    path = Path(path)
    if not path.exists():
        raise UserError(f"model not found: {path}")
    if (path / "model" / "config.json").is_file():
        path = path / "model"
    elif not (path / "config.json").is_file():
        raise UserError(
            f"{path} has no config.json (nor model/config.json): give a scalelab run directory "
            "or a Hugging Face checkpoint directory"
        )
    refuse_custom_code(path)
    return path


def metric_name(kind: str) -> str:
    return "f1" if kind == "ner" else "accuracy"


def score(kind: str, gold: list[Any], pred: list[Any], labels: tuple[str, ...]) -> Any:
    from scalelab.finetune.metrics import classification_scores, evaluate_ner

    if kind == "ner":
        return evaluate_ner(gold, pred, labels=labels)
    return classification_scores(gold, pred, labels=labels)


def headline(kind: str, report: Any) -> dict[str, float]:
    if kind == "ner":
        return {
            "f1": report.f1,
            "precision": report.conlleval.precision,
            "recall": report.conlleval.recall,
            "f1_strict": report.strict.f1,
        }
    return {"accuracy": report.accuracy, "macro_f1": report.macro_f1}


def gold_of(kind: str, examples: Any) -> list[Any]:
    return [list(e.tags) for e in examples] if kind == "ner" else [e.label for e in examples]


def train_job(
    cfg: FinetuneConfig,
    run_dir: Path,
    tm: Any,
    batches: Any,
    total_steps: int,
    *,
    metric: str,
    evaluate: Any = None,
    eval_every: int = 0,
    patience: int | None = None,
    restore_best: bool = False,
    on_step_end: Any = None,
    summary: dict[str, Any] | None = None,
    description: str = "train",
) -> Any:
    """The trainer's job for a fine-tuning run: the fine-tuning optimizer, the task model's
    state export, examples counted per step and tokens counted per batch (padding varies).

    ``evaluate(model)`` returns the dev metrics, ``metric`` among them (higher is better),
    every ``eval_every`` steps (0: at the end); ``patience`` and ``restore_best`` are the
    early stopping and best-model settings; ``on_step_end(step)`` runs after each step.
    """
    from scalelab.train.checkpoint import export_state_dict, restore_state_dict
    from scalelab.train.trainer import Evaluation, ModelIO, TrainJob

    return TrainJob(
        run_dir=run_dir,
        model=tm,
        batches=batches,
        total_steps=total_steps,
        optim=cfg.resolved_optim(),
        runtime=cfg.runtime,
        seed=cfg.seed,
        tokens_per_step=None,
        examples_per_step=cfg.batch_size,
        evaluation=Evaluation(
            fn=evaluate,
            every=eval_every,
            metric=metric,
            mode="max",
            patience=patience,
            restore_best=restore_best,
        ),
        io=ModelIO(export=export_state_dict, restore=restore_state_dict),
        on_step_end=on_step_end,
        summary=dict(summary or {}),
        description=description,
    )


def _share_files(directory: Path) -> None:
    """Give every file under ``directory`` the mode of the run's other outputs: the
    tokenizer files copied from the base checkpoint keep its modes (the weights already
    got theirs from ``atomic_dir``, which checkpoints and ``TaskModel.save`` write with)."""
    from scalelab.utils.io import set_output_mode

    for path in Path(directory).rglob("*"):
        if path.is_file() and not path.is_symlink():
            set_output_mode(path)


@dataclass
class _Prepared:
    """What a fine-tuning run works on: the task, its tokenized splits, the base model."""

    task: Any
    model_dir: Path
    tokenizer: Any
    base: Any
    max_len: int
    enc: dict[str, Any]
    collate: Any


def finetune(cfg: FinetuneConfig, run_dir: str | Path) -> dict[str, Any]:
    """Fine-tune (or resume); evaluate the best model on dev and test; return the summary."""
    from scalelab.finetune.batching import ExampleBatches
    from scalelab.finetune.methods import apply_method
    from scalelab.train.metrics_log import write_summary
    from scalelab.train.trainer import Trainer
    from scalelab.utils.io import ensure_dir

    cfg.check_runnable()
    run_dir = Path(run_dir)
    _check_same_config(cfg, run_dir)
    prep = _prepare(cfg)
    task = prep.task
    steps_per_epoch = max(1, math.ceil(len(prep.enc["train"]) / cfg.batch_size))
    total_steps = max(1, math.ceil(cfg.epochs * steps_per_epoch))
    tm = apply_method(
        prep.base,
        cfg.method,
        task_kind=task.kind,
        total_steps=total_steps,
        base_model_path=prep.model_dir,
    )
    params = tm.parameter_report()
    print(
        f"method {cfg.method.method}: {params['trainable']:,} trainable of {params['total']:,} parameters ({params['percent']:.2f}%)"
    )
    batches = ExampleBatches(
        prep.enc["train"], prep.collate, batch_size=cfg.batch_size, seed=cfg.seed
    )
    metric = metric_name(task.kind)
    job = train_job(
        cfg,
        run_dir,
        tm,
        batches,
        total_steps,
        metric=metric,
        evaluate=_dev_evaluator(cfg, prep, metric),
        eval_every=max(1, steps_per_epoch // cfg.evals_per_epoch),
        patience=cfg.patience,
        restore_best=True,
        on_step_end=tm.on_step_end,
        summary=_static_summary(cfg, prep, params),
        description=f"{cfg.method.method} {task.name}",
    )
    ensure_dir(run_dir, "run directory")
    cfg.to_yaml(run_dir / "config.yaml")
    summary = Trainer(job).fit()
    # The best model, its evaluation on dev and test, saved for evaluate/infer.
    results = {split: _final_evaluation(cfg, prep, tm, split, run_dir) for split in ("dev", "test")}
    if not (run_dir / "model" / "scalelab_task.json").is_file():
        _save_model(cfg, prep, tm, run_dir)
    summary.update(dev=results["dev"], test=results["test"])
    write_summary(run_dir, summary)
    return summary


def _check_same_config(cfg: FinetuneConfig, run_dir: Path) -> None:
    """A run directory holds one run: resuming it with other settings is an error."""
    saved = run_dir / "config.yaml"
    if not saved.is_file():
        return
    old = FinetuneConfig.load(saved)
    a = {k: v for k, v in old.to_dict().items() if k != "runtime"}
    b = {k: v for k, v in cfg.to_dict().items() if k != "runtime"}
    if a != b:
        diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        raise UserError(
            f"{run_dir} holds a fine-tuning run with a different config (differs in: {', '.join(diff)})"
        )


def _prepare(cfg: FinetuneConfig) -> _Prepared:
    """Load the task (its training subset), the tokenizer and the base model; tokenize."""
    import torch

    from scalelab.finetune.align import PadCollator
    from scalelab.finetune.methods import load_base_model
    from scalelab.finetune.methods.io import load_model_tokenizer

    model_dir = resolve_model_dir(cfg.model)
    task = cfg.task.load_task()
    if cfg.train_fraction < 1.0:
        task = task.with_train_subset(max(1, round(cfg.train_fraction * len(task.train))))
    tokenizer = load_model_tokenizer(model_dir)
    print(f"task {task.name}: {task.summary()}")
    torch.manual_seed(cfg.seed)
    base = load_base_model(
        model_dir,
        task_kind=task.kind,
        num_labels=task.num_labels,
        id2label=task.id2label,
        label2id=task.label2id,
    )
    if getattr(base.config, "pad_token_id", None) is None:
        pad = (
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        )
        base.config.pad_token_id = pad
    max_len = cfg.max_length
    limit = getattr(base.config, "max_position_embeddings", None)
    if limit:  # prefix and prompt tuning's virtual tokens use up positions of the window
        max_len = min(max_len, int(limit) - cfg.method.reserved_positions())
    enc = {
        s: _encode(cfg, task, task.split(s), tokenizer, max_len) for s in ("train", "dev", "test")
    }
    print(f"train: {enc['train'].encoding.summary()}")
    collate = PadCollator.for_tokenizer(tokenizer)
    return _Prepared(task, model_dir, tokenizer, base, max_len, enc, collate)


def _encode(cfg: FinetuneConfig, task: Any, examples: Any, tokenizer: Any, max_len: int) -> Any:
    from scalelab.finetune.batching import encode_split

    return encode_split(
        task,
        examples,
        tokenizer,
        max_length=max_len,
        stride=cfg.stride,
        label_all_subwords=cfg.label_all_subwords,
    )


def _dev_evaluator(cfg: FinetuneConfig, prep: _Prepared, metric: str) -> Any:
    """The trainer's evaluation: dev loss and headline metrics (on at most
    ``max_examples_per_eval`` dev examples), ``metric`` under its own name."""
    from scalelab.finetune.batching import decode, predict_logits

    task = prep.task
    dev_examples, dev_split = task.dev, prep.enc["dev"]
    if cfg.max_examples_per_eval and len(task.dev) > cfg.max_examples_per_eval:
        dev_examples = task.dev[: cfg.max_examples_per_eval]
        dev_split = _encode(cfg, task, dev_examples, prep.tokenizer, prep.max_len)

    def evaluate(model: Any) -> dict[str, float]:
        logits, loss = predict_logits(
            model,
            dev_split,
            prep.collate,
            batch_size=2 * cfg.batch_size,
            precision=cfg.runtime.precision,
        )
        gold = gold_of(task.kind, dev_examples)
        report = score(task.kind, gold, decode(dev_split, logits, task.id2label), task.labels)
        heads = headline(task.kind, report).items()
        return {"dev_loss": loss, **{f"dev_{k}" if k != metric else metric: v for k, v in heads}}

    return evaluate


def _static_summary(cfg: FinetuneConfig, prep: _Prepared, params: dict[str, Any]) -> dict[str, Any]:
    """Facts of the run merged into summary.json."""
    from scalelab.utils.env import versions

    return {
        "kind": "finetune",
        "task": prep.task.name,
        "task_kind": prep.task.kind,
        "method": cfg.method.method,
        "model": str(prep.model_dir),
        "lr": cfg.peak_lr,
        "params": params,
        "splits": prep.task.sizes(),
        "versions": versions(),
    }


def _final_evaluation(
    cfg: FinetuneConfig, prep: _Prepared, tm: Any, split: str, run_dir: Path
) -> dict[str, Any]:
    """Evaluate the best model on a whole split; ``RUN/eval_<split>.json``; the headline."""
    from scalelab.finetune.batching import decode, predict_logits
    from scalelab.utils.io import atomic_write_json

    task, enc = prep.task, prep.enc[split]
    logits, loss = predict_logits(
        tm, enc, prep.collate, batch_size=2 * cfg.batch_size, precision=cfg.runtime.precision
    )
    gold = gold_of(task.kind, task.split(split))
    report = score(task.kind, gold, decode(enc, logits, task.id2label), task.labels)
    atomic_write_json(
        run_dir / f"eval_{split}.json", {"split": split, "loss": loss, **report.to_dict()}
    )
    return {"loss": loss, **headline(task.kind, report)}


def _save_model(cfg: FinetuneConfig, prep: _Prepared, tm: Any, run_dir: Path) -> None:
    """``RUN/model/``: the model in its method's format, the tokenizer, the task's labels.
    Saved under a temporary name, completed, then renamed (never half written)."""
    from scalelab.utils.io import atomic_write_json

    tmp = run_dir / ".model.tmp"
    tm.save(tmp, location=run_dir / "model")
    for f in Path(prep.model_dir).iterdir():
        if f.name.startswith("tokenizer") or f.name in ("special_tokens_map.json", "vocab.txt"):
            shutil.copy2(f, tmp / f.name)
    meta = {
        "task": cfg.task.to_dict(),
        "labels": list(prep.task.labels),
        "kind": prep.task.kind,
        "max_length": prep.max_len,
    }
    atomic_write_json(tmp / "scalelab_task.json", meta)
    _share_files(tmp)
    shutil.rmtree(run_dir / "model", ignore_errors=True)
    os.replace(tmp, run_dir / "model")
