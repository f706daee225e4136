"""The fine-tuning stage: a model, a task and a method through the one training loop.

``finetune(cfg, run_dir)`` leaves a run directory like pretraining's::

    run_dir/config.yaml, metrics.jsonl, summary.json, checkpoints/  (resumable)
    run_dir/model/            the best model (by the dev metric) in its method's format,
                              plus the tokenizer: ``scalelab evaluate|predict`` reload it
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
from typing import Any

from scalelab.config import Config
from scalelab.errors import UserError
from scalelab.finetune.methods import MethodConfig
from scalelab.finetune.tasks import TaskConfig
from scalelab.train.loop import OptimConfig, RuntimeConfig

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


@dataclass(kw_only=True)
class FinetuneConfig(Config):
    """Fine-tuning one model on one task with one method."""

    model: Path
    """A scalelab run directory or a local Hugging Face checkpoint directory."""
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
    lr: float | None = None
    """Peak learning rate (default by method: full 5e-5, lora 5e-4, adalora 1e-3, prefix 5e-3, prompt 3e-2, adapter 1e-3)."""
    weight_decay: float = 0.01
    """AdamW weight decay on matrices."""
    warmup_fraction: float = 0.1
    """Linear warmup, then linear decay to zero (the BERT recipe)."""
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
        if self.task.task is None and self.task.train_file is None:
            raise UserError("give a task: --task.task NAME (a built-in) or --task.train-file FILE")

    @property
    def peak_lr(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.method.method]

    def optim(self) -> OptimConfig:
        """AdamW with linear warmup and linear decay to 0, as fine-tuning recipes do."""
        return OptimConfig(
            lr=self.peak_lr,
            weight_decay=self.weight_decay,
            beta2=0.999,  # the BERT/Transformers default for fine-tuning
            schedule="linear",
            warmup_fraction=self.warmup_fraction,
            min_lr_ratio=0.0,
        )


def resolve_model_dir(path: Path) -> Path:
    """A scalelab run directory means its ``model/``; anything else must hold config.json."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"model not found: {path}")
    if (path / "model" / "config.json").is_file():
        return path / "model"
    if not (path / "config.json").is_file():
        raise UserError(
            f"{path} has no config.json (nor model/config.json): give a scalelab run directory "
            "or a Hugging Face checkpoint directory"
        )
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
    **job: Any,
) -> Any:
    """The training loop's job for a fine-tuning run: examples as the unit, the fine-tuning
    optimizer, the task model's state export; ``job`` adds evaluation, summary and hooks."""
    from scalelab.train import loop
    from scalelab.train.checkpoint import export_state_dict, restore_state_dict

    return loop.TrainJob(
        run_dir=run_dir,
        model=tm,
        batches=batches,
        total_steps=total_steps,
        optim=cfg.optim(),
        runtime=cfg.runtime,
        seed=cfg.seed,
        unit="examples",
        per_step=cfg.batch_size,
        tokens_per_step=0,
        metric=metric,
        mode="max",
        export=export_state_dict,
        restore=restore_state_dict,
        **job,
    )


def finetune(cfg: FinetuneConfig, run_dir: str | Path) -> dict[str, Any]:
    """Fine-tune (or resume); evaluate the best model on dev and test; return the summary."""
    import torch
    from transformers import AutoTokenizer

    from scalelab.finetune.align import PadCollator
    from scalelab.finetune.batching import ExampleBatches, decode, encode_split, predict_logits
    from scalelab.finetune.methods import apply_method, load_base_model
    from scalelab.train import loop
    from scalelab.utils.env import versions
    from scalelab.utils.io import atomic_write_json

    run_dir = Path(run_dir)
    model_dir = resolve_model_dir(cfg.model)
    saved = run_dir / "config.yaml"
    if saved.is_file():
        old = FinetuneConfig.load(saved)
        a = {k: v for k, v in old.to_dict().items() if k != "runtime"}
        b = {k: v for k, v in cfg.to_dict().items() if k != "runtime"}
        if a != b:
            diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
            raise UserError(
                f"{run_dir} holds a fine-tuning run with a different config (differs in: {', '.join(diff)})"
            )
    task = cfg.task.load_task()
    if cfg.train_fraction < 1.0:
        task = task.with_train_subset(max(1, round(cfg.train_fraction * len(task.train))))
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
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
    if cfg.method.method in ("prefix", "prompt") and limit:
        max_len = min(max_len, int(limit) - cfg.method.num_virtual_tokens)
    elif limit:
        max_len = min(max_len, int(limit))
    enc = {
        s: encode_split(
            task,
            task.split(s),
            tokenizer,
            max_length=max_len,
            stride=cfg.stride,
            label_all_subwords=cfg.label_all_subwords,
        )
        for s in ("train", "dev", "test")
    }
    print(f"train: {enc['train'].encoding.summary()}")
    steps_per_epoch = max(1, math.ceil(len(enc["train"]) / cfg.batch_size))
    total_steps = max(1, math.ceil(cfg.epochs * steps_per_epoch))
    tm = apply_method(
        base, cfg.method, task_kind=task.kind, total_steps=total_steps, base_model_path=model_dir
    )
    params = tm.parameter_report()
    print(
        f"method {cfg.method.method}: {params['trainable']:,} trainable of {params['total']:,} parameters ({params['percent']:.2f}%)"
    )
    collate = PadCollator.for_tokenizer(tokenizer)
    batches = ExampleBatches(enc["train"], collate, batch_size=cfg.batch_size, seed=cfg.seed)
    dev_examples = task.dev
    dev_split = enc["dev"]
    if cfg.max_examples_per_eval and len(task.dev) > cfg.max_examples_per_eval:
        dev_examples = task.dev[: cfg.max_examples_per_eval]
        dev_split = encode_split(
            task,
            dev_examples,
            tokenizer,
            max_length=max_len,
            stride=cfg.stride,
            label_all_subwords=cfg.label_all_subwords,
        )
    metric = metric_name(task.kind)

    def evaluate(model: torch.nn.Module) -> dict[str, float]:
        logits, loss = predict_logits(
            model,
            dev_split,
            collate,
            batch_size=2 * cfg.batch_size,
            precision=cfg.runtime.precision,
        )
        report = score(
            task.kind,
            gold_of(task.kind, dev_examples),
            decode(dev_split, logits, task.id2label),
            task.labels,
        )
        return {
            "dev_loss": loss,
            **{
                f"dev_{k}" if k != metric else metric: v
                for k, v in headline(task.kind, report).items()
            },
        }

    job = train_job(
        cfg,
        run_dir,
        tm,
        batches,
        total_steps,
        metric=metric,
        evaluate=evaluate,
        eval_every=max(1, steps_per_epoch // cfg.evals_per_epoch),
        patience=cfg.patience,
        restore_best=True,
        on_step_end=tm.on_step_end,
        summary={
            "kind": "finetune",
            "task": task.name,
            "task_kind": task.kind,
            "method": cfg.method.method,
            "model": str(model_dir),
            "lr": cfg.peak_lr,
            "params": params,
            "splits": task.sizes(),
            "versions": versions(),
        },
        description=f"{cfg.method.method} {task.name}",
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg.to_yaml(saved)
    summary = loop.run(job)

    # The best model, its evaluation on dev and test, saved for evaluate/predict.
    results: dict[str, Any] = {}
    for split_name in ("dev", "test"):
        logits, loss = predict_logits(
            tm,
            enc[split_name],
            collate,
            batch_size=2 * cfg.batch_size,
            precision=cfg.runtime.precision,
        )
        report = score(
            task.kind,
            gold_of(task.kind, task.split(split_name)),
            decode(enc[split_name], logits, task.id2label),
            task.labels,
        )
        atomic_write_json(
            run_dir / f"eval_{split_name}.json",
            {"split": split_name, "loss": loss, **report.to_dict()},
        )
        results[split_name] = {"loss": loss, **headline(task.kind, report)}
    if not (run_dir / "model" / "scalelab_task.json").is_file():
        # Saved under a temporary name, completed with the tokenizer, then renamed.
        tmp = run_dir / ".model.tmp"
        tm.save(tmp)
        for f in Path(model_dir).iterdir():
            if f.name.startswith("tokenizer") or f.name in ("special_tokens_map.json", "vocab.txt"):
                shutil.copy2(f, tmp / f.name)
        meta = {
            "task": cfg.task.to_dict(),
            "labels": list(task.labels),
            "kind": task.kind,
            "max_length": max_len,
        }
        atomic_write_json(tmp / "scalelab_task.json", meta)
        shutil.rmtree(run_dir / "model", ignore_errors=True)
        os.replace(tmp, run_dir / "model")
    summary.update(dev=results["dev"], test=results["test"])
    from scalelab.train.metrics_log import write_summary

    write_summary(run_dir, summary)
    return summary
