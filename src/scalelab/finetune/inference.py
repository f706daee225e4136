"""Reloading a fine-tuned run for evaluation (with robustness perturbations) and prediction."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scalelab.errors import UserError
from scalelab.utils.io import atomic_write_json, atomic_write_text, check_output_file


@dataclass
class LoadedRun:
    model: Any
    tokenizer: Any
    kind: str
    labels: tuple[str, ...]
    max_length: int
    task_config: dict[str, Any]

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.labels))


def load_run(run_dir: Path) -> LoadedRun:
    from scalelab.finetune.methods import load_task_model
    from scalelab.finetune.methods.io import load_model_tokenizer, read_json_object
    from scalelab.models.hf import refuse_custom_code

    model_dir = Path(run_dir) / "model"
    meta_path = model_dir / "scalelab_task.json"
    if not meta_path.is_file():
        raise UserError(
            f"{run_dir} is not a finished `scalelab finetune` run (no model/scalelab_task.json)"
        )
    meta = read_json_object(meta_path, ("kind", "labels", "max_length", "task"))
    try:
        kind, labels, max_length = meta["kind"], meta["labels"], int(meta["max_length"])
        if kind not in ("ner", "classification") or not isinstance(meta["task"], dict):
            raise ValueError(f"kind {kind!r}, task {meta['task']!r}")
        if not isinstance(labels, list) or not labels or max_length < 1:
            raise ValueError(f"labels {labels!r}, max_length {max_length}")
    except (TypeError, ValueError) as exc:
        raise UserError(f"{meta_path}: malformed ({exc})") from None
    refuse_custom_code(model_dir)  # before anything loads from the run's files
    model = load_task_model(model_dir)
    tokenizer = load_model_tokenizer(model_dir)
    return LoadedRun(model, tokenizer, kind, tuple(labels), max_length, meta["task"])


def _score_examples(run: LoadedRun, examples: Any, *, batch_size: int = 32) -> tuple[Any, float]:
    from scalelab.finetune.align import PadCollator
    from scalelab.finetune.batching import EncodedSplit, decode, predict_logits
    from scalelab.finetune.finetune import gold_of, score
    from scalelab.finetune.tasks import Task

    task = Task(
        name="eval",
        kind=run.kind,
        labels=run.labels,
        entity_types=(),
        train=(),
        dev=(),
        test=(),
        source="",
        license="",
    )  # type: ignore[arg-type]
    from scalelab.finetune.batching import encode_split

    split: EncodedSplit = encode_split(
        task,
        examples,
        run.tokenizer,
        max_length=run.max_length,
        stride=None,
        label_all_subwords=False,
    )
    collate = PadCollator.for_tokenizer(run.tokenizer)
    logits, loss = predict_logits(run.model, split, collate, batch_size=batch_size)
    return score(
        run.kind, gold_of(run.kind, examples), decode(split, logits, run.id2label), run.labels
    ), loss


def evaluate_run(
    run_dir: Path,
    *,
    split: str = "test",
    perturb: str = "",
    rate: float | None = None,
    seed: int = 0,
    out: Path | None = None,
) -> dict[str, Any]:
    """Print and write the evaluation tables of ``split``; with ``perturb``, the robustness table."""
    from scalelab.finetune.finetune import headline
    from scalelab.finetune.perturb import parse_perturbations, perturb_task_split
    from scalelab.finetune.tasks import TaskConfig

    if out is not None:
        check_output_file(Path(out), "--out")
    run = load_run(run_dir)
    where = f"{Path(run_dir) / 'model' / 'scalelab_task.json'}: task."
    task = TaskConfig.from_dict(run.task_config, where=where).load_task()
    examples = task.split(split)
    report, loss = _score_examples(run, examples)
    result: dict[str, Any] = {"split": split, "loss": loss, **report.to_dict()}
    print(f"{task.name} / {split}: {len(examples)} examples, loss {loss:.4f}\n")
    print(report.render())
    clean = headline(run.kind, report)
    key = "f1" if run.kind == "ner" else "accuracy"
    if perturb:
        rows = []
        for name in parse_perturbations(perturb):
            if name == "entity-swap" and run.kind != "ner":
                continue
            pert = perturb_task_split(
                examples,
                run.kind,
                perturbation=name,
                rate=rate,
                seed=seed,
                train_examples=task.train,
            )  # type: ignore[arg-type]
            rep, _ = _score_examples(run, pert.examples)
            value = headline(run.kind, rep)[key]
            rows.append(
                {
                    "perturbation": name,
                    "rate": pert.rate,
                    "changed": f"{pert.n_changed}/{pert.n_units} {pert.unit}s",
                    key: value,
                    "drop": clean[key] - value,
                }
            )
        result["robustness"] = {"clean": clean[key], "metric": key, "rows": rows, "seed": seed}
        print(f"\nrobustness ({key}; clean {clean[key]:.4f}):")
        for r in rows:
            print(
                f"  {r['perturbation']:<12} rate {r['rate']:<5} {r['changed']:<22} {key} {r[key]:.4f}  drop {r['drop']:+.4f}"
            )
    atomic_write_json(out or Path(run_dir) / f"eval_{split}.json", result)
    return result


def _read_lines(path: str) -> list[str]:
    if path == "-":
        text = sys.stdin.read()
    else:
        p = Path(path)
        if not p.is_file():
            raise UserError(f"input file not found: {p}")
        text = p.read_text(encoding="utf-8", errors="replace")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise UserError(f"no text to predict in {'stdin' if path == '-' else path}")
    return lines


def predict_text(
    run_dir: Path, *, input_path: str = "-", output_path: str = "-", batch_size: int = 32
) -> list[dict[str, Any]]:
    """Tag (NER) or classify every line of the input; JSONL out."""
    from scalelab.finetune.align import (
        PadCollator,
        encode_classification,
        encode_ner,
        merge_predictions,
    )
    from scalelab.finetune.batching import EncodedSplit, predict_logits
    from scalelab.finetune.examples import split_words
    from scalelab.finetune.schemes import iob2_spans

    if output_path != "-":
        check_output_file(Path(output_path), "--output")
    run = load_run(run_dir)
    lines = _read_lines(input_path)
    collate = PadCollator.for_tokenizer(run.tokenizer)
    records: list[dict[str, Any]] = []
    if run.kind == "ner":
        words = [split_words(line) for line in lines]
        enc = encode_ner(run.tokenizer, words, max_length=run.max_length)
        logits, _ = predict_logits(
            run.model, EncodedSplit("ner", enc), collate, batch_size=batch_size
        )
        tags = merge_predictions(enc, logits, run.id2label)
        for line, ws, ts in zip(lines, words, tags):
            ents = [
                {"type": t, "start": s, "end": e, "text": " ".join(ws[s:e])}
                for t, s, e in iob2_spans(ts)
            ]
            records.append({"text": line, "tokens": ws, "tags": ts, "entities": ents})
    else:
        enc = encode_classification(run.tokenizer, lines, None, run.max_length)
        logits, _ = predict_logits(
            run.model, EncodedSplit("classification", enc), collate, batch_size=batch_size
        )
        for line, row in zip(lines, logits):
            p = np.exp(row - row.max())
            p /= p.sum()
            best = int(np.argmax(p))
            records.append(
                {
                    "text": line,
                    "label": run.labels[best],
                    "scores": {run.labels[i]: float(v) for i, v in enumerate(p)},
                }
            )
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    if output_path == "-":
        sys.stdout.write(text)
    else:
        atomic_write_text(output_path, text)
    return records
