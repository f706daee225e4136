"""Downstream scaling of a study: fine-tune every rung on a task, fit how quality scales.

``scalelab study finetune STUDY --task T --method M [--seeds 3]`` fine-tunes the final
checkpoint of every finished rung (each seed an ordinary ``scalelab finetune`` run under
``STUDY/downstream/<task>__<method>/<rung>/seed<k>/``, resumable, finished ones skipped),
optionally evaluates robustness on perturbed test sets, and records dev/test metrics per
rung in ``results.csv`` next to the pretraining results. ``scalelab study fit`` then fits,
per task and method:

- the metric against N: ``1 - metric = E + A N^-alpha``;
- the two-step ladder of Bhagia et al. 2024: validation loss as L(N, D) (the study's
  Chinchilla fit), then the metric as a sigmoid of that loss with a floor at chance;
- and predicts the held-out rung(s) with a bootstrap interval, stating the error.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from scalelab.config import Config
from scalelab.errors import UserError
from scalelab.finetune.methods import MethodConfig
from scalelab.finetune.tasks import TaskConfig
from scalelab.study.study import Study
from scalelab.utils.io import read_json

DOWNSTREAM = "downstream"


@dataclass(kw_only=True)
class StudyFinetuneConfig(Config):
    """Fine-tuning every rung of a study on one task with one method."""

    task: TaskConfig = field(default_factory=TaskConfig)
    """The task (built-in name or files)."""
    method: MethodConfig = field(default_factory=MethodConfig)
    """The fine-tuning method."""
    seeds: int = 1
    """Fine-tuning seeds per rung (3 gives a spread)."""
    epochs: float = 3.0
    """Passes over the training split."""
    batch_size: int = 16
    """Examples per optimizer step."""
    max_length: int = 128
    """Longest model input in tokens."""
    lr: float | None = 1e-3
    """Peak learning rate (the default suits small models pretrained from scratch; none: by method)."""
    patience: int | None = 3
    """Early stopping patience in evaluations."""
    perturb: str = ""
    """Also evaluate robustness on perturbed test sets: comma list of casing, typos, entity-swap."""
    rungs: tuple[str, ...] = ()
    """Only these rungs (default: every finished rung)."""
    workers: int = 0
    """Fine-tuning runs at once (0: as for pretraining)."""
    threads: int = 0
    """torch threads per run (0: cores divided by workers)."""
    precision: str = "bf16"
    """bf16 or fp32."""
    in_process: bool = False
    """Run the fine-tunings one after another inside this process (no start-up cost)."""

    def validate(self) -> None:
        if self.seeds < 1:
            raise UserError("seeds must be >= 1")
        if self.task.task is None and self.task.train_file is None:
            raise UserError("give a task: --task NAME (a built-in) or --task.train-file FILE")
        if self.precision not in ("bf16", "fp32"):
            raise UserError("precision must be bf16 or fp32")

    @property
    def key(self) -> str:
        name = self.task.task or Path(str(self.task.train_file)).stem
        return f"{name}__{self.method.method}"


def run_dirs(study: Study, key: str, rung_id: str) -> list[Path]:
    root = study.root / DOWNSTREAM / key / rung_id
    return sorted(p for p in root.glob("seed*") if p.is_dir()) if root.is_dir() else []


def finetune_study(study: Study, cfg: StudyFinetuneConfig) -> dict[str, str]:
    """Fine-tune every finished rung (resumably); returns {run dir: status}."""
    from scalelab.finetune.stage import FinetuneConfig
    from scalelab.study.run import Job, RunConfig, resolve_parallelism, run_jobs
    from scalelab.train.loop import RuntimeConfig

    workers, threads = resolve_parallelism(
        RunConfig(workers=cfg.workers, threads=cfg.threads), study
    )
    base = study.root / DOWNSTREAM / cfg.key
    base.mkdir(parents=True, exist_ok=True)
    cfg.to_yaml(base / "spec.yaml")
    jobs: list[Job] = []
    statuses: dict[str, str] = {}
    for rung in study.rungs:
        if cfg.rungs and rung.id not in cfg.rungs:
            continue
        if study.rung_status(rung) != "completed":
            continue
        for seed in range(cfg.seeds):
            run_dir = base / rung.id / f"seed{seed}"
            summary = run_dir / "summary.json"
            if (
                summary.is_file()
                and read_json(summary).get("status") == "completed"
                and "test" in read_json(summary)
            ):
                statuses[str(run_dir)] = "completed"
                continue
            run_dir.mkdir(parents=True, exist_ok=True)
            ft = FinetuneConfig(
                model=study.rung_dir(rung).resolve(),
                task=cfg.task,
                method=cfg.method,
                epochs=cfg.epochs,
                batch_size=cfg.batch_size,
                max_length=cfg.max_length,
                lr=cfg.lr,
                patience=cfg.patience,
                seed=seed,
                runtime=RuntimeConfig(precision=cfg.precision, progress=False, tensorboard=False),  # type: ignore[arg-type]
            )
            if not (run_dir / "config.yaml").is_file():
                ft.to_yaml(run_dir / "finetune.yaml")
            cmd = [
                sys.executable,
                "-m",
                "scalelab",
                "finetune",
                str(run_dir.resolve()),
                "--config",
                str((run_dir / "finetune.yaml").resolve()),
                "--runtime.threads",
                str(threads),
            ]
            jobs.append(
                Job(
                    f"{rung.id}/seed{seed}",
                    cmd,
                    run_dir / "train.log",
                    lambda code, d=run_dir: statuses.__setitem__(
                        str(d), "completed" if code == 0 else f"failed ({code})"
                    ),
                )
            )
    if jobs:
        print(
            f"fine-tuning {len(jobs)} run(s) on {cfg.key}: {workers} at a time, {threads} thread(s) each",
            file=sys.stderr,
        )
        run_jobs(jobs, workers=workers, threads=threads, in_process=cfg.in_process)
    if cfg.perturb:
        robust: list[Job] = []
        for d, status in statuses.items():
            d = Path(d)
            if status == "completed" and not (d / "robustness.json").is_file():
                cmd = [
                    sys.executable,
                    "-m",
                    "scalelab",
                    "evaluate",
                    str(d.resolve()),
                    "--split",
                    "test",
                    "--perturb",
                    cfg.perturb,
                    "--out",
                    str((d / "robustness.json").resolve()),
                ]
                robust.append(Job(f"{d}/robustness", cmd, d / "evaluate.log", lambda code: None))
        if robust:
            print(
                f"robustness: evaluating {len(robust)} run(s) on perturbed test sets",
                file=sys.stderr,
            )
            run_jobs(robust, workers=workers, threads=threads, in_process=cfg.in_process)
    study.write_results()
    return statuses


# ====================================================================== results


def downstream_keys(study: Study) -> list[str]:
    root = study.root / DOWNSTREAM
    return (
        sorted(p.name for p in root.iterdir() if p.is_dir() and "__" in p.name)
        if root.is_dir()
        else []
    )


def rung_metrics(study: Study, key: str, rung_id: str) -> dict[str, Any] | None:
    """Mean and spread over seeds of the dev/test headline metric of one rung."""
    vals: dict[str, list[float]] = {"dev": [], "test": []}
    metric = None
    for d in run_dirs(study, key, rung_id):
        path = d / "summary.json"
        if not path.is_file():
            continue
        s = read_json(path)
        if s.get("status") != "completed" or "test" not in s:
            continue
        metric = "f1" if "f1" in s["test"] else "accuracy"
        for split in ("dev", "test"):
            vals[split].append(float(s[split][metric]))
    if metric is None:
        return None
    out: dict[str, Any] = {"metric": metric, "seeds": len(vals["test"])}
    for split, xs in vals.items():
        out[split] = float(np.mean(xs))
        out[f"{split}_std"] = float(np.std(xs, ddof=1)) if len(xs) > 1 else 0.0
    return out


def downstream_columns(study: Study) -> dict[str, dict[str, Any]]:
    """Per rung id, the downstream columns of results.csv."""
    cols: dict[str, dict[str, Any]] = {}
    for key in downstream_keys(study):
        for rung in study.rungs:
            m = rung_metrics(study, key, rung.id)
            if m is None:
                continue
            row = cols.setdefault(rung.id, {})
            for split in ("dev", "test"):
                row[f"{key}/{split}_{m['metric']}"] = m[split]
                row[f"{key}/{split}_{m['metric']}_std"] = m[f"{split}_std"]
    return cols


def robustness_rows(study: Study, key: str) -> list[dict[str, Any]]:
    rows = []
    for rung in study.rungs:
        for d in run_dirs(study, key, rung.id)[:1]:
            path = d / "robustness.json"
            if path.is_file():
                rob = read_json(path).get("robustness")
                if rob:
                    row = {"rung": rung.id, "N": rung.N, f"clean {rob['metric']}": rob["clean"]}
                    for r in rob["rows"]:
                        row[f"{r['perturbation']} drop"] = r["drop"]
                    rows.append(row)
    return rows


# ====================================================================== fits


def _chance(study: Study, key: str) -> float:
    """Floor of the metric: 0 for entity F1, 1 / number of classes for accuracy."""
    for rung in study.rungs:
        for d in run_dirs(study, key, rung.id):
            meta = d / "model" / "scalelab_task.json"
            if meta.is_file():
                m = read_json(meta)
                return 0.0 if m["kind"] == "ner" else 1.0 / len(m["labels"])
    return 0.0


def fit_downstream(
    study: Study, *, loss_fit: Any = None, n_boot: int = 500, seed: int = 0
) -> dict[str, Any]:
    """Per task and method: metric vs N, the two-step ladder, held-out predictions.

    ``loss_fit`` is step 1 of the ladder: the study's own Chinchilla law of validation
    loss (fitted on every rung, not only the fine-tuned ones).
    """
    from scalelab.laws import fit_ladder, fit_metric_power_law, predict_ladder, table_from_arrays

    out: dict[str, Any] = {}
    rows = {r["rung"]: r for r in study.result_rows()}
    for key in downstream_keys(study):
        pts = []
        for rung in study.rungs:
            m = rung_metrics(study, key, rung.id)
            r = rows.get(rung.id)
            if m is None or r is None or r.get("final_val_loss") is None:
                continue
            pts.append(
                {
                    "rung": rung.id,
                    "role": rung.role,
                    "N": r["N"],
                    "D": r["D"],
                    "loss": r["final_val_loss"],
                    **m,
                }
            )
        fit_pts = [p for p in pts if p["role"] == "fit"]
        res: dict[str, Any] = {"points": pts, "chance": _chance(study, key)}
        if len(fit_pts) < 4:
            res["error"] = (
                f"{len(fit_pts)} fine-tuned fit rungs; the downstream fits need at least 4"
            )
            out[key] = res
            continue
        n = np.array([p["N"] for p in fit_pts], float)
        metric = np.array([p["test"] for p in fit_pts], float)
        try:
            pl = fit_metric_power_law(n, metric)
            res["power_law"] = {"params": dict(pl.params), "ceiling": pl.ceiling}
        except UserError as exc:
            res["power_law"] = {"error": str(exc)}
            pl = None
        table = table_from_arrays(
            loss=np.array([p["loss"] for p in fit_pts]),
            N=n,
            D=np.array([p["D"] for p in fit_pts], float),
            name=key,
        )
        try:
            ladder = fit_ladder(table, metric, chance=res["chance"], loss_fit=loss_fit)
            res["ladder"] = {"params": dict(ladder.params)}
        except UserError as exc:
            res["ladder"] = {"error": str(exc)}
            ladder = None
        preds = []
        for h in (p for p in pts if p["role"] == "holdout"):
            entry: dict[str, Any] = {
                "rung": h["rung"],
                "N": h["N"],
                "D": h["D"],
                "actual": h["test"],
            }
            if ladder is not None:
                lp = predict_ladder(
                    table,
                    metric,
                    h["N"],
                    h["D"],
                    chance=res["chance"],
                    n_boot=n_boot,
                    seed=seed,
                    fit=ladder,
                )
                entry.update(
                    ladder_estimate=lp.metric.estimate,
                    ladder_lo=lp.metric.lo,
                    ladder_hi=lp.metric.hi,
                    ladder_level=lp.metric.level,
                    ladder_error=lp.metric.estimate - h["test"],
                    predicted_loss=lp.loss.estimate,
                )
            if pl is not None:
                est = float(np.ravel(pl.predict(h["N"]))[0])
                entry.update(power_law_estimate=est, power_law_error=est - h["test"])
            preds.append(entry)
        res["holdout"] = preds
        out[key] = res
    return out
