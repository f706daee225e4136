"""Downstream scaling of a study: fine-tune every rung on a task, fit how quality scales.

``scalelab study finetune STUDY --task T --method M [--seeds 3]`` fine-tunes the final
checkpoint of every finished rung (each seed an ordinary ``scalelab finetune`` run under
``STUDY/downstream/<task>__<method>/<rung>/seed<k>/``, resumable, finished ones skipped;
a task from a file is ``<stem>-<path hash>__<method>``, see :attr:`StudyFinetuneConfig.key`),
optionally evaluates robustness on perturbed test sets, and records dev/test metrics per
rung in ``downstream.csv`` (tidy rows) beside ``results.csv``. ``scalelab study fit`` then fits,
per task and method:

- the metric against N: ``1 - metric = E + A N^-alpha``;
- the two-step ladder of Bhagia et al. 2024: validation loss as L(N, D) (the study's
  Chinchilla fit), then the metric as a sigmoid of that loss with a floor at chance;
- and predicts the held-out rung(s) with a bootstrap interval, stating the error.

Label curves across the study's rungs (``scalelab labelcurve STUDY/downstream/labelcurve-<name>
--study STUDY``) are refitted here too: per method, the fine-tuning law of Zhang et al.
(2024, arXiv 2402.17193, Eq. 1) ``L(N, D_f) = A / (N^alpha D_f^beta) + E`` over the rungs'
non-embedding N and the labelled examples D_f, saved as
``STUDY/fits/finetune_law__<curve>__<method>.json`` and summarised under the key
``finetune_law`` of the downstream fits (:func:`fit_label_laws`).
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from scalelab.config import Config
from scalelab.errors import UserError
from scalelab.finetune.builtin_tasks import builtin_task_names
from scalelab.finetune.finetune import FinetuneConfig
from scalelab.study.jobs import Job, finetune_done, finetune_job, run_jobs, scalelab_command
from scalelab.study.study import Study
from scalelab.utils.io import read_json, sha256_text

DOWNSTREAM = "downstream"


def rung_finetune_defaults() -> FinetuneConfig:
    """What ``study finetune`` fine-tunes each rung with unless told otherwise: the stage's
    defaults, but peak lr 1e-3 for every method (the 0.1 default: small models pretrained
    from scratch, not the published checkpoints the per-method defaults are for) and no
    progress bars or TensorBoard events (many short runs, each with its own log)."""
    base = FinetuneConfig()
    return base.replace(
        optim=base.optim.replace(lr=1e-3),
        runtime=base.runtime.replace(precision="bf16", progress=False, tensorboard=False),
    )


@dataclass(kw_only=True)
class StudyFinetuneConfig(Config):
    """Fine-tuning every rung of a study on one task with one method."""

    # Before 0.2 the fine-tuning fields were copied here; they now live in `finetune`.
    renamed: ClassVar[dict[str, str | tuple[str, ...]]] = {
        "task": "finetune.task",
        "method": "finetune.method",
        "epochs": "finetune.epochs",
        "batch_size": "finetune.batch_size",
        "max_length": "finetune.max_length",
        "lr": "finetune.optim.lr",
        "patience": "finetune.patience",
        "precision": "finetune.runtime.precision",
    }

    finetune: FinetuneConfig = field(default_factory=rung_finetune_defaults)
    """The fine-tuning of each rung (its model is the rung; its seed runs over --seeds)."""
    seeds: int = 1
    """Fine-tuning seeds per rung (3 gives a spread)."""
    perturb: str = ""
    """Also evaluate robustness on perturbed test sets: comma list of casing, typos, entity-swap."""
    rungs: tuple[str, ...] = ()
    """Only these rungs (default: every finished rung)."""
    workers: int = 0
    """Fine-tuning runs at once (0: as for pretraining)."""
    threads: int = 0
    """torch threads per run (0: cores divided by workers)."""
    in_process: bool = False
    """Run the fine-tunings one after another inside this process (no start-up cost)."""

    def validate(self) -> None:
        if self.seeds < 1:
            raise UserError("seeds must be >= 1")
        task = self.finetune.task
        if task.task is None and task.train_file is None:
            raise UserError("give a task: --task NAME (a built-in) or --task.train-file FILE")

    @property
    def key(self) -> str:
        """The directory name of this task and method under ``STUDY/downstream/``.

        A built-in task keeps its name (``wiki-topics__lora``). A task from a file is
        named by a slug of the file's stem and a hash of its resolved path
        (``mytask-1a2b3c4d__full``): the name never holds a path, so the directory stays
        inside the study whatever the path (absolute, ``../``), and two files of the same
        stem do not share one. :meth:`key_in` also finds a directory 0.1 named.
        """
        method = self.finetune.method.method
        source = self._task_file()
        if source is None:
            return f"{self.finetune.task.task}__{method}"
        slug = re.sub(r"[^a-z0-9]+", "-", source.stem.lower()).strip("-")[:40] or "task"
        return f"{slug}-{sha256_text(str(source))[:8]}__{method}"

    def key_in(self, downstream: Path) -> str:
        """:attr:`key`, unless ``downstream`` holds a directory scalelab 0.1 named after the
        bare file name for this same task (its ``spec.yaml`` says so): that one is kept."""
        source = self._task_file()
        if source is not None:
            task = self.finetune.task
            names = {source.stem} | ({task.task} if task.task and _plain_name(task.task) else set())
            for name in sorted(names):
                old = downstream / f"{name}__{self.finetune.method.method}"
                if _spec_task_file(old / "spec.yaml") == source:
                    return old.name
        return self.key

    def _task_file(self) -> Path | None:
        """The task's data file, resolved (None for a built-in task)."""
        task = self.finetune.task
        if task.task is not None and task.task in builtin_task_names():
            return None
        return Path(str(task.task if task.task is not None else task.train_file)).resolve()


def _plain_name(name: str) -> bool:
    """Whether ``name`` is one path component (0.1 used such a task string as is)."""
    return Path(name).name == name and name not in ("", ".", "..")


def _spec_task_file(spec: Path) -> Path | None:
    """The resolved task file of the ``study finetune`` spec at ``spec`` (None: none,
    a built-in task, or a spec that does not load)."""
    if not spec.is_file():
        return None
    try:
        return StudyFinetuneConfig.load(spec)._task_file()
    except (UserError, OSError, ValueError):
        return None


def run_dirs(study: Study, key: str, rung_id: str) -> list[Path]:
    """The seed run directories of one rung under one task and method."""
    root = study.root / DOWNSTREAM / key / rung_id
    return sorted(p for p in root.glob("seed*") if p.is_dir()) if root.is_dir() else []


def finetune_study(study: Study, cfg: StudyFinetuneConfig) -> dict[str, str]:
    """Fine-tune every finished rung (resumably); returns {run dir: status}."""
    from scalelab.study.run import RunConfig, resolve_parallelism

    workers, threads = resolve_parallelism(
        RunConfig(workers=cfg.workers, threads=cfg.threads), study
    )
    key = cfg.key_in(study.root / DOWNSTREAM)
    base = study.root / DOWNSTREAM / key
    base.mkdir(parents=True, exist_ok=True)
    cfg.to_yaml(base / "spec.yaml")
    jobs: list[Job] = []
    statuses: dict[str, str] = {}
    for rung in study.rungs:
        if cfg.rungs and rung.id not in cfg.rungs:
            continue
        if study.rung_status(rung) != "completed" or rung.role == "trunk":
            continue  # a WSD trunk is not cooled down: its branches are the models
        for seed in range(cfg.seeds):
            run_dir = base / rung.id / f"seed{seed}"
            if finetune_done(run_dir):
                statuses[str(run_dir)] = "completed"
                continue
            ft = cfg.finetune.replace(model=study.rung_dir(rung).resolve(), seed=seed)

            def done(code: int, d: Path = run_dir) -> None:
                statuses[str(d)] = "completed" if code == 0 else f"failed ({code})"

            jobs.append(
                finetune_job(f"{rung.id}/seed{seed}", run_dir, ft, threads=threads, on_exit=done)
            )
    if jobs:
        print(
            f"fine-tuning {len(jobs)} run(s) on {key}: {workers} at a time, {threads} thread(s) each",
            file=sys.stderr,
        )
        run_jobs(jobs, workers=workers, threads=threads, in_process=cfg.in_process)
    if cfg.perturb:
        _robustness(statuses, cfg, workers=workers, threads=threads)
    study.write_results()
    return statuses


def _robustness(
    statuses: dict[str, str], cfg: StudyFinetuneConfig, *, workers: int, threads: int
) -> None:
    """Evaluate every finished run on perturbed test sets (``RUN/robustness.json``)."""
    from scalelab.finetune.inference import evaluate_run

    robust: list[Job] = []
    for d, status in statuses.items():
        d = Path(d)
        out = d / "robustness.json"
        if status != "completed" or out.is_file():
            continue
        cmd = scalelab_command(
            "evaluate", str(d.resolve()), "--split", "test", "--perturb", cfg.perturb,
            "--out", str(out.resolve()),
        )  # fmt: skip

        def call(d: Path = d, out: Path = out) -> None:
            evaluate_run(d, split="test", perturb=cfg.perturb, rate=None, seed=0, out=out)

        robust.append(Job(f"{d}/robustness", cmd, d / "evaluate.log", lambda code: None, call))
    if robust:
        print(
            f"robustness: evaluating {len(robust)} run(s) on perturbed test sets", file=sys.stderr
        )
        run_jobs(robust, workers=workers, threads=threads, in_process=cfg.in_process)


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


def downstream_rows(study: Study) -> list[dict[str, Any]]:
    """The tidy rows of ``downstream.csv``: one per task and method, rung and split
    (``std`` is None with a single seed; the columns are documented in
    ``study.study.DATA_DICTIONARY``)."""
    rows = []
    for key in downstream_keys(study):
        task, _, method = key.rpartition("__")
        for rung in study.rungs:
            m = rung_metrics(study, key, rung.id)
            if m is None:
                continue
            for split in ("dev", "test"):
                rows.append(
                    {
                        "rung": rung.id,
                        "N_non_embedding": rung.N,
                        "task": task,
                        "method": method,
                        "split": split,
                        "metric": m["metric"],
                        "value": m[split],
                        "std": m[f"{split}_std"] if m["seeds"] > 1 else None,
                        "n_seeds": m["seeds"],
                    }
                )
    return rows


def downstream_columns(study: Study) -> dict[str, dict[str, Any]]:
    """Per rung id, the in-memory downstream columns of a result row
    (``<task>__<method>/<split>_<metric>`` and ``..._std``, which the report reads; the
    files hold them as :func:`downstream_rows`)."""
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
    rows = {r["rung"]: r for r in study.result_rows()}
    out: dict[str, Any] = {
        key: _fit_one_downstream(study, key, rows, loss_fit=loss_fit, n_boot=n_boot, seed=seed)
        for key in downstream_keys(study)
    }
    laws = fit_label_laws(study)
    if laws:
        out["finetune_law"] = laws
    return out


def label_curve_dirs(study: Study) -> list[Path]:
    """The label curves across this study's rungs: ``STUDY/downstream/labelcurve*/``
    directories (those the report shows) whose ``labelcurve.json`` came from
    ``labelcurve --study``."""
    root = study.root / DOWNSTREAM
    found = []
    for path in sorted(root.glob("labelcurve*/labelcurve.json")) if root.is_dir() else []:
        try:
            data = read_json(path)
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and isinstance(data.get("rungs"), list):
            found.append(path.parent)
    return found


def fit_label_laws(study: Study) -> dict[str, Any]:
    """Per label curve across rungs and method (``"<curve>/<method>"``): the fine-tuning
    law of Zhang et al. (2024, Eq. 1) refitted from its points with the curve's own
    response and resamples (the numbers ``labelcurve`` reported), saved to
    ``STUDY/fits/finetune_law__<curve>__<method>.json``; ``{"error": one line}`` when
    it cannot be fitted."""
    from scalelab.laws.finetune_law import RESPONSES
    from scalelab.study.labelcurve import fit_label_law, law_points

    laws: dict[str, Any] = {}
    for d in label_curve_dirs(study):
        data = read_json(d / "labelcurve.json")
        response, n_boot = data.get("law_response", "loss"), data.get("law_bootstrap", 1000)
        try:
            methods = sorted({m for e in data["rungs"] for m in e.get("methods", {})})
            points = {m: law_points(data, m) for m in methods}
            if response not in RESPONSES or not isinstance(n_boot, int) or n_boot == 1:
                raise ValueError(f"law_response {response!r}, law_bootstrap {n_boot!r}")
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            laws[d.name] = {"error": f"not fitted: {d / 'labelcurve.json'} is malformed ({exc})"}
            continue
        for method in methods:
            laws[f"{d.name}/{method}"] = fit_label_law(
                points[method],
                response=response,
                n_boot=max(n_boot, 0),
                save_to=study.root / "fits" / f"finetune_law__{d.name}__{method}.json",
                name=f"{d.name} / {method}",
            )
    return laws


def describe_label_laws(downstream: dict[str, Any]) -> list[str]:
    """The fine-tuning laws of the downstream fits in a few lines each."""
    from scalelab.study.labelcurve import describe_law

    lines: list[str] = []
    for key, law in downstream.get("finetune_law", {}).items():
        lines += describe_law(key, law)
    return lines


def _downstream_points(study: Study, key: str, rows: dict[str, dict]) -> list[dict[str, Any]]:
    """Every rung with a fine-tuned metric and a pretraining loss: N, D, loss, metrics."""
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
    return pts


def _fit_one_downstream(
    study: Study, key: str, rows: dict[str, dict], *, loss_fit: Any, n_boot: int, seed: int
) -> dict[str, Any]:
    """The fits of one task and method (see :func:`fit_downstream`)."""
    from scalelab.laws import fit_ladder, fit_metric_power_law, table_from_arrays

    pts = _downstream_points(study, key, rows)
    fit_pts = [p for p in pts if p["role"] == "fit"]
    res: dict[str, Any] = {"points": pts, "chance": _chance(study, key)}
    if len(fit_pts) < 4:
        res["error"] = f"{len(fit_pts)} fine-tuned fit rungs; the downstream fits need at least 4"
        return res
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
        res["ladder"] = {"params": dict(ladder.params), "warnings": list(ladder.sigmoid.warnings)}
    except UserError as exc:
        res["ladder"] = {"error": str(exc)}
        ladder = None
    fitted = {"table": table, "metric": metric, "ladder": ladder, "power_law": pl}
    res["holdout"] = [
        _downstream_holdout(h, fitted, chance=res["chance"], n_boot=n_boot, seed=seed)
        for h in pts
        if h["role"] == "holdout"
    ]
    return res


def _downstream_holdout(
    h: dict[str, Any], fitted: dict[str, Any], *, chance: float, n_boot: int, seed: int
) -> dict[str, Any]:
    """A held-out rung's metric predicted by the ladder and the power law, with errors."""
    from scalelab.laws import predict_ladder

    entry: dict[str, Any] = {"rung": h["rung"], "N": h["N"], "D": h["D"], "actual": h["test"]}
    if fitted["ladder"] is not None:
        lp = predict_ladder(
            fitted["table"],
            fitted["metric"],
            h["N"],
            h["D"],
            chance=chance,
            n_boot=n_boot,
            seed=seed,
            fit=fitted["ladder"],
        )
        entry.update(
            ladder_estimate=lp.metric.estimate,
            ladder_lo=lp.metric.lo,
            ladder_hi=lp.metric.hi,
            ladder_level=lp.metric.level,
            ladder_error=lp.metric.estimate - h["test"],
            predicted_loss=lp.loss.estimate,
        )
    if fitted["power_law"] is not None:
        est = float(np.ravel(fitted["power_law"].predict(h["N"]))[0])
        entry.update(power_law_estimate=est, power_law_error=est - h["test"])
    return entry


def finetune_and_fit(study: Study, cfg: Any) -> int:
    """Fine-tune every rung (``scalelab study finetune``), refit with the downstream laws,
    re-render the report; 1 if a fine-tuning run failed."""
    from scalelab.study.fit import StudyFitConfig, describe_fit, fit_and_report

    statuses = finetune_study(study, cfg)
    # downstream.csv is part of the results hash: the fits are redone when it changed.
    summary = fit_and_report(study, StudyFitConfig())
    if summary is not None:
        print(describe_fit(summary, study))
    failed = [k for k, v in statuses.items() if v != "completed"]
    if failed:
        print(
            f"scalelab: {len(failed)} fine-tuning run(s) failed: see their train.log",
            file=sys.stderr,
        )
        return 1
    return 0
