"""``scalelab eval``: score a run's (or any exported decoder's) model on zero-shot tasks.

``evaluate_model(path, cfg)`` finds the model (``RUN/model/`` or a model directory), its
tokenizer (the one saved with the model, else the dataset's) and the pretraining dataset
(``--dataset``, else the run's), resolves the tasks, scores every choice of every example
(:mod:`scalelab.evals.score`) and returns the metrics per task
(:mod:`scalelab.evals.metrics`); the CLI writes them as JSON (default ``RUN/zeroshot.json``).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scalelab.errors import UserError
from scalelab.evals.config import EvalConfig
from scalelab.evals.tasks import Task
from scalelab.utils.io import read_json

RESULT_FORMAT = "scalelab.zeroshot"


@dataclass(frozen=True)
class ModelSource:
    """Where a model, its tokenizer and its pretraining dataset are."""

    model_dir: Path
    run_dir: Path | None
    dataset: Path | None
    tokenizer_dir: Path | None


def _run_dataset(run_dir: Path) -> Path | None:
    """The prepared dataset a pretraining run trained on (its summary, else its config)."""
    summary = run_dir / "summary.json"
    if summary.is_file():
        try:
            data = read_json(summary)
        except (OSError, ValueError):
            data = {}
        if isinstance(data, dict) and data.get("dataset"):
            return Path(data["dataset"])
    config = run_dir / "config.yaml"
    if config.is_file():
        from scalelab.config import read_config_file

        data = read_config_file(config)
        if isinstance(data, dict) and data.get("dataset"):
            return Path(data["dataset"])
    return None


def locate(path: str | Path, *, dataset: str | Path | None = None) -> ModelSource:
    """Resolve ``RUN`` (a pretraining run directory) or ``MODEL_DIR`` (a Hugging Face
    directory, e.g. ``RUN/model`` or a checkpoint) into a :class:`ModelSource`."""
    p = Path(path)
    if (p / "model" / "config.json").is_file():
        run_dir, model_dir = p, p / "model"
    elif (p / "config.json").is_file():
        model_dir = p
        # RUN/model or RUN/checkpoints/step-N: the run is a parent with a summary.
        run_dir = next(
            (q for q in (p.parent, p.parent.parent) if (q / "summary.json").is_file()), None
        )
    elif (p / "summary.json").is_file():
        raise UserError(f"{p}: the run has no model/ yet (is it finished?)")
    else:
        raise UserError(
            f"{p}: neither a run directory (with model/) nor a model directory (with config.json)"
        )
    data = Path(dataset) if dataset is not None else (_run_dataset(run_dir) if run_dir else None)
    if data is not None and not data.is_dir():
        raise UserError(f"pretraining dataset not found: {data} (give another with --dataset)")
    tok = model_dir if (model_dir / "tokenizer.json").is_file() else None
    if tok is None and data is not None:
        tok = data / "tokenizer"
    return ModelSource(model_dir=model_dir, run_dir=run_dir, dataset=data, tokenizer_dir=tok)


def load_decoder(model_dir: Path, device: Any) -> Any:
    """A scalelab decoder from ``model_dir``, in eval mode on ``device``."""
    from scalelab.models.hf import load_hf, refuse_custom_code

    refuse_custom_code(model_dir)
    model, mcfg = load_hf(model_dir)
    if not mcfg.is_decoder:
        raise UserError(
            f"{model_dir}: a {mcfg.arch} model is not a causal LM; eval needs a decoder"
        )
    return model.to(device).eval()


def encoder_for(tokenizer_dir: Path | None, model: Any) -> Any:
    """The pair encoder of ``tokenizer_dir``, checked against the model's vocabulary."""
    from scalelab.evals.score import PairEncoder

    if tokenizer_dir is None:
        raise UserError("no tokenizer found: the model directory has none and no dataset is known")
    encoder = PairEncoder(tokenizer_dir)
    if encoder.vocab_size > model.config.vocab_size:
        raise UserError(
            f"{tokenizer_dir}: the tokenizer's {encoder.vocab_size} tokens do not fit the model's "
            f"vocabulary of {model.config.vocab_size}"
        )
    return encoder


def score_task(
    model: Any, encoder: Any, task: Task, cfg: EvalConfig, device: Any, *, desc: str = ""
) -> dict[str, Any]:
    """Score every choice of ``task``; its metrics, per-example rows and identity."""
    from scalelab.evals.metrics import per_example, summarise
    from scalelab.evals.score import loglikelihoods

    requests = encoder.requests(task.examples)
    lls = loglikelihoods(
        model,
        requests,
        batch_size=cfg.batch_size,
        device=device,
        precision=cfg.precision,
        progress=cfg.progress,
        desc=desc or task.key,
    )
    by_example: list[list[float]] = [[0.0] * len(e.choices) for e in task.examples]
    gold_text = [""] * len(task.examples)
    for r, ll in zip(requests, lls, strict=True):
        by_example[r.example][r.choice] = ll
        if r.choice == task.examples[r.example].gold:
            gold_text[r.example] = r.text
    rows = per_example(task.examples, by_example, gold_text)
    return {
        "task": task.name,
        "key": task.key,
        "task_hash": task.hash,
        "n": len(task.examples),
        "chance": task.chance,
        "notes": list(task.notes),
        "metrics": summarise(rows),
        "examples": rows,
    }


def resolve_tasks(cfg: EvalConfig, dataset: Path | None) -> list[Task]:
    """Every task of ``cfg`` (built-ins from ``dataset``); two with one key are refused."""
    from scalelab.evals.tasks import resolve_task

    tasks = [resolve_task(s, dataset=dataset, limit=cfg.limit, seed=cfg.seed) for s in cfg.tasks]
    keys = [t.key for t in tasks]
    dup = next((k for k in keys if keys.count(k) > 1), None)
    if dup is not None:
        raise UserError(f"tasks: {dup!r} is given twice")
    return tasks


def evaluate_model(path: str | Path, cfg: EvalConfig) -> dict[str, Any]:
    """Score the model at ``path`` on ``cfg.tasks``; the result document (see the module)."""
    from scalelab.train.distributed import resolve_device

    src = locate(path, dataset=cfg.dataset)
    tasks = resolve_tasks(cfg, src.dataset)
    device = resolve_device(cfg.device)
    model = load_decoder(src.model_dir, device)
    encoder = encoder_for(src.tokenizer_dir, model)
    results = {}
    for task in tasks:
        print(f"scoring {task.name}: {len(task.examples)} examples", file=sys.stderr)
        results[task.key] = score_task(model, encoder, task, cfg, device)
    return {
        "format": RESULT_FORMAT,
        "model": str(src.model_dir),
        "tokenizer": str(src.tokenizer_dir),
        "dataset": str(src.dataset) if src.dataset else None,
        "config": cfg.to_dict(),
        "tasks": results,
    }


def _pm(metric: dict[str, float]) -> str:
    value, se = metric["value"], metric["stderr"]
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:.4f} ± {se:.4f}" if se is not None and math.isfinite(se) else f"{value:.4f}"


def results_table(tasks: dict[str, dict[str, Any]], *, label: str = "task") -> str:
    """A plain-text table: one line per task, acc / acc_norm / bpb with standard errors."""
    head = ["task", "n", "chance", "acc", "acc_norm", "bpb"]
    rows = [
        [
            key,
            str(r["n"]),
            f"{r['chance']:.3f}",
            *(_pm(r["metrics"][m]) for m in ("acc", "acc_norm", "bpb")),
        ]
        for key, r in tasks.items()
    ]
    head[0] = label
    widths = [max(len(x) for x in col) for col in zip(head, *rows, strict=True)]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in [head, *rows]
    ]
    return "\n".join(line.rstrip() for line in lines)
