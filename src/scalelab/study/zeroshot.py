"""Zero-shot evaluation of every rung of a study, and the downstream ladder on top.

``scalelab study eval STUDY --tasks builtin:continuation,mine.jsonl`` scores the final
model of every completed rung on each task with the study's own tokenizer (the prepared
dataset's), as ``scalelab eval`` does for one run (:mod:`scalelab.evals`). Layout::

    STUDY/zeroshot/<rung>/<task key>.json   metrics and per-example log-likelihoods
    STUDY/zeroshot/tasks/<key>.jsonl        the built-in tasks' examples, as scored
    STUDY/zeroshot/ladder_<key>.json        the fitted ladder (``scalelab.laws.load_fit``)
    STUDY/zeroshot/summary.json             per task: the ladder or why there is none,
                                            held-out rungs predicted by it
    STUDY/zeroshot.csv                      tidy, every task scored so far: rung,
                                            N_non_embedding, D, task, metric, value, stderr

It resumes: a rung's result for a task is kept when it was made from the same examples
(the task's content hash: the file, the limit, the seed), the same model (the rung's
config hash, step and weights size), tokenizer and precision; everything else is scored.

The ladder (Bhagia et al. 2024, "Establishing Task Scaling Laws via Compute-Efficient
Model Ladders", arXiv 2412.04403): step 1, the task loss -- here the gold answer's bits
per byte -- as the Chinchilla form ``L(N, D) = E + A/N^alpha + B/D^beta``; step 2,
accuracy as a sigmoid of that loss with its floor at chance. It is fitted on the ``fit``
rungs (at least :data:`MIN_LADDER_RUNGS`) and predicts the held-out ones.
"""

from __future__ import annotations

import csv
import io
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scalelab.errors import UserError
from scalelab.evals.config import EvalConfig
from scalelab.study.study import Study
from scalelab.utils.io import atomic_write_json, atomic_write_text, read_json

ZEROSHOT = "zeroshot"
CSV_NAME = "zeroshot.csv"
CSV_COLUMNS = ["rung", "N_non_embedding", "D", "task", "metric", "value", "stderr"]
# Step 1 fits the 5-parameter Chinchilla law: at least one point more than parameters.
MIN_LADDER_RUNGS = 6


@dataclass(kw_only=True)
class StudyEvalConfig(EvalConfig):
    """Zero-shot scoring of every completed rung of a study."""

    rungs: tuple[str, ...] = ()
    """Only these rungs (default: every completed rung)."""


def study_dataset(study: Study) -> Path:
    """The prepared dataset the study's rungs trained on (their summaries, else the plan)."""
    for rung in study.rungs:
        summary = study.rung_summary(rung) or {}
        if summary.get("dataset") and Path(summary["dataset"]).is_dir():
            return Path(summary["dataset"])
    base = study.plan.base
    if base.dataset and Path(base.dataset).is_dir():
        return Path(base.dataset)
    raise UserError(
        f"{study.root}: the study's prepared dataset is not found (train a rung first with "
        f"`scalelab study run {study.root}`)"
    )


def _fingerprint(study: Study, rung: Any, task: Any, cfg: EvalConfig, tok_hash: str) -> dict:
    """What a rung's result for a task was made from (kept only while all of it matches)."""
    summary = study.rung_summary(rung) or {}
    weights = study.rung_dir(rung) / "model" / "model.safetensors"
    return {
        "task_hash": task.hash,
        "model": [
            summary.get("config_hash"),
            summary.get("step"),
            weights.stat().st_size if weights.is_file() else None,
        ],
        "tokenizer": tok_hash,
        "precision": cfg.precision,
    }


def _current(path: Path, fingerprint: dict) -> bool:
    try:
        return read_json(path).get("fingerprint") == fingerprint
    except (OSError, ValueError, AttributeError):
        return False


def _selected_rungs(study: Study, cfg: StudyEvalConfig) -> list[Any]:
    known = {r.id for r in study.rungs}
    unknown = [r for r in cfg.rungs if r not in known]
    if unknown:
        raise UserError(
            f"{study.root}: no rung {unknown[0]!r}; rungs are {', '.join(sorted(known))}"
        )
    return [
        r
        for r in study.rungs
        if (not cfg.rungs or r.id in cfg.rungs)
        and study.rung_status(r) == "completed"
        and r.role != "trunk"  # not cooled down: its WSD branches are the models
    ]


def eval_study(study: Study, cfg: StudyEvalConfig) -> dict[str, Any]:
    """Score every completed rung on every task (resumably), write the CSV, fit the ladders.

    Returns ``{"scored": n, "kept": n, "tasks": [keys], "ladders": {key: info}}``.
    """
    from scalelab.data.tokenizer import tokenizer_hash
    from scalelab.evals.evaluate import encoder_for, load_decoder, resolve_tasks, score_task
    from scalelab.train.distributed import resolve_device

    rungs = _selected_rungs(study, cfg)
    if not rungs:
        raise UserError(f"{study.root}: no completed rung to evaluate (run `scalelab study run`)")
    dataset = study_dataset(study)
    tok_dir = dataset / "tokenizer"
    tok_hash = tokenizer_hash(tok_dir)
    tasks = resolve_tasks(cfg, dataset)
    root = study.root / ZEROSHOT
    for task in tasks:
        if task.name.startswith("builtin:"):
            task.write_jsonl(root / "tasks" / f"{task.key}.jsonl")
    device = resolve_device(cfg.device)
    scored = kept = 0
    for rung in rungs:
        todo = []
        for task in tasks:
            fp = _fingerprint(study, rung, task, cfg, tok_hash)
            path = root / rung.id / f"{task.key}.json"
            if _current(path, fp):
                kept += 1
            else:
                todo.append((task, path, fp))
        if not todo:
            continue
        model = load_decoder(study.rung_dir(rung) / "model", device)
        encoder = encoder_for(tok_dir, model)  # the study's tokenizer for every rung
        summary = study.rung_summary(rung) or {}
        for task, path, fp in todo:
            print(
                f"zero-shot: {rung.id} on {task.key} ({len(task.examples)} examples)",
                file=sys.stderr,
            )
            res = score_task(model, encoder, task, cfg, device, desc=f"{rung.id} {task.key}")
            res.update(
                rung=rung.id,
                role=rung.role,
                N=summary.get("N", rung.N),
                D=summary.get("tokens", rung.tokens),
                fingerprint=fp,
            )
            atomic_write_json(path, res)
            scored += 1
        del model
    results = load_results(study)
    write_csv(study, results)
    ladders = {t.key: fit_task_ladder(study, t.key, results.get(t.key, [])) for t in tasks}
    # Tasks scored by earlier calls keep their entries.
    atomic_write_json(
        root / "summary.json", {"tasks": {**load_summary(study).get("tasks", {}), **ladders}}
    )
    return {"scored": scored, "kept": kept, "tasks": [t.key for t in tasks], "ladders": ladders}


# ====================================================================== results


def load_results(study: Study) -> dict[str, list[dict[str, Any]]]:
    """Every rung's result file, by task key, in the order of the study's rungs."""
    root = study.root / ZEROSHOT
    out: dict[str, list[dict[str, Any]]] = {}
    for rung in study.rungs:
        folder = root / rung.id
        if not folder.is_dir() or study.rung_status(rung) != "completed":
            continue
        for path in sorted(folder.glob("*.json")):
            try:
                res = read_json(path)
            except (OSError, ValueError):
                continue
            if isinstance(res, dict) and isinstance(res.get("metrics"), dict):
                out.setdefault(path.stem, []).append(res)
    return out


def csv_rows(results: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The tidy rows of ``zeroshot.csv``: one per rung, task and metric."""
    rows = []
    for key, per_rung in results.items():
        for res in per_rung:
            for metric, m in res["metrics"].items():
                rows.append(
                    {
                        "rung": res["rung"],
                        "N_non_embedding": res["N"],
                        "D": res["D"],
                        "task": key,
                        "metric": metric,
                        "value": m.get("value"),
                        "stderr": m.get("stderr"),
                    }
                )
    return rows


def write_csv(study: Study, results: dict[str, list[dict[str, Any]]]) -> Path:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in csv_rows(results):
        writer.writerow({k: _cell(v) for k, v in row.items()})
    path = study.root / CSV_NAME
    atomic_write_text(path, buf.getvalue())
    return path


def _cell(value: Any) -> Any:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return repr(value) if isinstance(value, float) else value


def load_summary(study: Study) -> dict[str, Any]:
    """``STUDY/zeroshot/summary.json`` (empty when there is none)."""
    path = study.root / ZEROSHOT / "summary.json"
    try:
        data = read_json(path)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


# ====================================================================== the ladder


def fit_task_ladder(study: Study, key: str, per_rung: list[dict[str, Any]]) -> dict[str, Any]:
    """Fit the ladder of one task on its fit rungs, save it, predict the held-out rungs."""
    from scalelab.laws import fit_ladder, save_fit, table_from_arrays

    path = study.root / ZEROSHOT / f"ladder_{key}.json"
    fit_pts = [r for r in per_rung if r.get("role") == "fit"]
    chance = float(per_rung[0]["chance"]) if per_rung else 0.0
    info: dict[str, Any] = {"chance": chance, "n_fit": len(fit_pts)}
    if len(fit_pts) < MIN_LADDER_RUNGS:
        path.unlink(missing_ok=True)
        info["error"] = (
            f"{len(fit_pts)} fit rung(s) scored; the ladder needs at least {MIN_LADDER_RUNGS} "
            "(its step 1 is the 5-parameter Chinchilla law)"
        )
        return info
    try:
        table = table_from_arrays(
            loss=[r["metrics"]["bpb"]["value"] for r in fit_pts],
            N=[r["N"] for r in fit_pts],
            D=[r["D"] for r in fit_pts],
            name=f"zeroshot {key}",
        )
        fit = fit_ladder(table, [r["metrics"]["acc"]["value"] for r in fit_pts], chance=chance)
    except UserError as exc:
        path.unlink(missing_ok=True)
        info["error"] = str(exc)
        return info
    save_fit(fit, path)
    info["ladder"] = path.name
    info["params"] = dict(fit.params)
    info["warnings"] = list(getattr(fit.loss_fit, "warnings", ())) + list(fit.sigmoid.warnings)
    info["holdout"] = [
        {
            "rung": r["rung"],
            "N": r["N"],
            "D": r["D"],
            "acc": r["metrics"]["acc"]["value"],
            "predicted_acc": float(fit.predict(r["N"], r["D"])[0]),
            "bpb": r["metrics"]["bpb"]["value"],
            "predicted_bpb": float(fit.predict_loss(r["N"], r["D"])[0]),
        }
        for r in per_rung
        if r.get("role") == "holdout"
    ]
    return info


def describe(study: Study, outcome: dict[str, Any]) -> str:
    """What ``scalelab study eval`` prints: a table per task and its ladder."""
    from scalelab.evals.evaluate import results_table

    results = load_results(study)
    lines = [
        f"zero-shot: scored {outcome['scored']} (rung, task) pair(s), kept {outcome['kept']}; "
        f"{study.root / CSV_NAME}"
    ]
    for key in outcome["tasks"]:
        per_rung = {r["rung"]: r for r in results.get(key, [])}
        lines += ["", f"{key}:", results_table(per_rung, label="rung")]
        info = outcome["ladders"].get(key, {})
        if "error" in info:
            lines.append(f"  ladder not fitted: {info['error']}")
        else:
            p = info["params"]
            lines.append(
                f"  ladder: acc = {p['sigmoid.a']:.3g} / (1 + exp(-({p['sigmoid.k']:.3g}) (bpb - "
                f"{p['sigmoid.L0']:.3g}))) + {info['chance']:.3g}, fitted on {info['n_fit']} rungs "
                f"({ZEROSHOT}/{info['ladder']})"
            )
            lines.extend(f"  warning: {w}" for w in info.get("warnings", ()))
            for h in info["holdout"]:
                lines.append(
                    f"  held out {h['rung']}: acc {h['acc']:.4f}, ladder predicted "
                    f"{h['predicted_acc']:.4f} (error {h['predicted_acc'] - h['acc']:+.4f})"
                )
    return "\n".join(lines)
