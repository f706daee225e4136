"""Label efficiency: the metric against the number of labelled examples, per method.

``scalelab labelcurve OUT --model M --task T --methods full,lora --fractions 0.01,...,1``
fine-tunes on nested, seeded subsets of the training split (a smaller fraction's examples
are a subset of a larger one's), each an ordinary resumable ``scalelab finetune`` run
under ``OUT/<method>/frac<f>/seed<k>/``; then fits ``1 - metric = E + A n^-alpha`` per
method and answers "how many labels to reach metric X" with a bootstrap interval.
Results go to ``OUT/labelcurve.json`` and ``OUT/report.html``. Put OUT under
``STUDY/downstream/labelcurve-<name>/`` and the study report shows it too.

``scalelab labelcurve OUT --study STUDY --task T ...`` does the same for every completed
rung of a study (``OUT/<rung>/<method>/frac<f>/seed<k>/``) and fits, per method, the
fine-tuning law of Zhang et al. (2024, arXiv 2402.17193, Eq. 1) across rungs,
``L(N, D_f) = A / (N^alpha D_f^beta) + E`` (N: the rung's non-embedding parameters, D_f:
labelled examples; see :mod:`scalelab.laws.finetune_law`), with a bootstrap over points
and the fit without the largest rung predicting it. Each law is saved as
``OUT/finetune_law__<method>.json`` (``scalelab predict FILE --n N --d D_f`` reads it).
"""

from __future__ import annotations

import math
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from scalelab.config import Config
from scalelab.errors import UserError
from scalelab.finetune.finetune import FinetuneConfig
from scalelab.study.jobs import Job, finetune_done, finetune_job, resolve_parallelism, run_jobs
from scalelab.utils.io import atomic_write_json, ensure_dir, json_safe, read_json


def curve_finetune_defaults() -> FinetuneConfig:
    """Each point's fine-tuning unless told otherwise: the stage's defaults (peak lr by
    method), without progress bars or TensorBoard events (many short runs, each logged)."""
    base = FinetuneConfig()
    return base.replace(runtime=base.runtime.replace(progress=False, tensorboard=False))


@dataclass(kw_only=True)
class LabelCurveConfig(Config):
    """A label-efficiency curve: methods x training-set fractions x seeds (x study rungs)."""

    # Before 0.2 the fine-tuning fields were copied here; they now live in `finetune`.
    renamed: ClassVar[dict[str, str | tuple[str, ...]]] = {
        "model": "finetune.model",
        "task": "finetune.task",
        "epochs": "finetune.epochs",
        "batch_size": "finetune.batch_size",
        "max_length": "finetune.max_length",
        "lr": "finetune.optim.lr",
        "precision": "finetune.runtime.precision",
    }

    finetune: FinetuneConfig = field(default_factory=curve_finetune_defaults)
    """The fine-tuning of every point (the model, the task, the method's settings); each
    point sets the method, the training fraction, the seed and, for small subsets, epochs."""
    methods: tuple[str, ...] = ("full", "lora")
    """Fine-tuning methods to compare."""
    fractions: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3, 1.0)
    """Fractions of the training split (nested seeded subsets)."""
    seeds: int = 1
    """Seeds per point (the subset stays nested; the seed varies init and order)."""
    target: float | None = None
    """Metric to reach: report how many labels each method needs for it."""
    min_steps: int = 60
    """At least this many optimizer steps per run, so tiny subsets are trained enough
    (a subset gets max(finetune.epochs, min_steps x batch / examples) epochs)."""
    study: Path | None = None
    """Fine-tune every completed rung of this study (instead of one --finetune.model) and
    fit the fine-tuning law L(N, D_f) = A/(N^alpha D_f^beta) + E across the rungs (Zhang et
    al. 2024). Without --finetune.lr every method's peak lr is 1e-3, as `study finetune`."""
    rungs: tuple[str, ...] = ()
    """With --study: only these rungs (default: every completed one)."""
    law_response: Literal["loss", "perplexity", "error"] = "loss"
    """What the fine-tuning law fits: loss (test cross-entropy), perplexity (its exp, the
    indicator of Zhang et al. 2024) or error (1 - test F1 or accuracy)."""
    law_bootstrap: int = 1000
    """Resamples of the points for the fine-tuning law's intervals (0: none)."""
    workers: int = 0
    """Runs at once (0: 2 on a CPU machine with >= 2 cores)."""
    threads: int = 0
    """torch threads per run (0: cores divided by workers)."""
    in_process: bool = False
    """Run the fine-tunings one after another inside this process (no start-up cost)."""

    def validate(self) -> None:
        if not self.methods:
            raise UserError("give at least one method")
        if not self.fractions or any(not 0 < f <= 1 for f in self.fractions):
            raise UserError("fractions must be in (0, 1]")
        if len(set(self.fractions)) < 3:
            raise UserError("a label curve needs at least 3 distinct fractions")
        from scalelab.finetune.methods import METHODS

        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise UserError(f"unknown method(s) {', '.join(unknown)}: use {', '.join(METHODS)}")
        if self.seeds < 1 or self.min_steps < 1 or self.workers < 0 or self.threads < 0:
            raise UserError("seeds and min_steps must be >= 1, workers and threads >= 0")
        if self.target is not None and not 0 < self.target < 1:
            raise UserError(f"target is a metric value in (0, 1), got {self.target}")
        if self.law_bootstrap == 1 or self.law_bootstrap < 0:
            raise UserError(f"law_bootstrap must be 0 or >= 2, got {self.law_bootstrap}")
        if self.study is None:
            if self.rungs:
                raise UserError("--rungs picks rungs of a --study")
            self.finetune.check_runnable()
            return
        if self.finetune.model is not None:
            raise UserError("give --study (every rung) or --finetune.model (one model), not both")
        task = self.finetune.task
        if task.task is None and task.train_file is None:
            raise UserError("give a task: --task NAME (a built-in) or --task.train-file FILE")


def _run_dir(out: Path, method: str, frac: float, seed: int) -> Path:
    return out / method / f"frac{frac:g}" / f"seed{seed}"


def _point_jobs(
    cfg: LabelCurveConfig,
    base: FinetuneConfig,
    out: Path,
    n_train: int,
    *,
    threads: int,
    status: dict[str, int],
    name: str = "",
) -> list[Job]:
    """The unfinished (method, fraction, seed) runs of one model under ``out``."""
    jobs: list[Job] = []
    for method in cfg.methods:
        for frac in sorted(cfg.fractions):
            n = max(1, round(frac * n_train))
            epochs = max(base.epochs, cfg.min_steps * base.batch_size / n)
            for seed in range(cfg.seeds):
                d = _run_dir(out, method, frac, seed)
                if finetune_done(d):
                    continue
                ft = base.replace(
                    method=base.method.replace(method=method),
                    epochs=epochs,
                    train_fraction=frac,
                    seed=seed,
                )

                def done(code: int, d: Path = d) -> None:
                    status[str(d)] = code

                label = f"{name}/{d.relative_to(out)}" if name else str(d)
                jobs.append(finetune_job(label, d, ft, threads=threads, on_exit=done))
    return jobs


def _run(jobs: list[Job], cfg: LabelCurveConfig, workers: int, threads: int) -> None:
    if jobs:
        print(f"label curve: {len(jobs)} fine-tuning run(s), {workers} at a time", file=sys.stderr)
        run_jobs(jobs, workers=workers, threads=threads, in_process=cfg.in_process)


def _raise_failed(status: dict[str, int]) -> None:
    failed = [d for d, code in status.items() if code != 0]
    if failed:
        raise UserError(f"{len(failed)} run(s) failed, e.g. {failed[0]} (see its train.log)")


def label_curve(cfg: LabelCurveConfig, out: Path) -> dict[str, Any]:
    """Fine-tune every (method, fraction, seed) point resumably, then fit and report
    (with ``cfg.study``: every rung's points, and the fine-tuning law across rungs)."""
    if cfg.study is not None:
        return _study_label_curve(cfg, Path(out))
    from scalelab.finetune.finetune import resolve_model_dir

    resolve_model_dir(cfg.finetune.model)  # a missing or foreign model: one line, before any run
    task = cfg.finetune.task.load_task()
    out = ensure_dir(Path(out), "label-curve directory")
    n_train = len(task.train)
    workers, threads = resolve_parallelism(cfg.workers, cfg.threads, cpu=True)
    status: dict[str, int] = {}
    base = cfg.finetune.replace(model=Path(cfg.finetune.model).resolve())
    _run(
        _point_jobs(cfg, base, out, n_train, threads=threads, status=status), cfg, workers, threads
    )
    result = collect(cfg, out, n_train)
    _raise_failed(status)
    return result


def _method_points(
    cfg: LabelCurveConfig, out: Path, method: str, n_train: int
) -> tuple[list, str | None]:
    """Mean over seeds per fraction of one model's completed runs: the test metric, the
    test and dev cross-entropy (None when a run did not record it); and the metric's name."""
    pts, metric = [], None
    for frac in sorted(cfg.fractions):
        vals: dict[str, list[float]] = {"metric": [], "loss": [], "dev_loss": []}
        for seed in range(cfg.seeds):
            s = _run_dir(out, method, frac, seed) / "summary.json"
            if not s.is_file():
                continue
            summ = read_json(s)
            if summ.get("status") != "completed" or "test" not in summ:
                continue
            metric = "f1" if "f1" in summ["test"] else "accuracy"
            vals["metric"].append(summ["test"][metric])
            for key, split in (("loss", "test"), ("dev_loss", "dev")):
                loss = (summ.get(split) or {}).get("loss")
                if isinstance(loss, int | float) and math.isfinite(loss):
                    vals[key].append(float(loss))
        if not vals["metric"]:
            continue
        full = {k: len(v) == len(vals["metric"]) for k, v in vals.items()}
        pts.append(
            {
                "fraction": frac,
                "n_labels": max(1, round(frac * n_train)),
                "metric": float(np.mean(vals["metric"])),
                "std": float(np.std(vals["metric"])),
                "seeds": len(vals["metric"]),
                "loss": float(np.mean(vals["loss"])) if full["loss"] else None,
                "loss_std": float(np.std(vals["loss"])) if full["loss"] else None,
                "dev_loss": float(np.mean(vals["dev_loss"])) if full["dev_loss"] else None,
            }
        )
    return pts, metric


def _collect_methods(cfg: LabelCurveConfig, out: Path, n_train: int, data: dict) -> dict[str, Any]:
    """Per method: the points of one model and its label-efficiency law (labels needed)."""
    from scalelab.laws.finetune_law import bootstrap_function

    bootstrap_function()  # before laws.downstream loads the submodule of that name
    from scalelab.laws import label_efficiency

    methods: dict[str, Any] = {}
    for method in cfg.methods:
        pts, metric = _method_points(cfg, out, method, n_train)
        if metric is not None:
            data["metric"] = metric
        res: dict[str, Any] = {"points": pts}
        if len(pts) >= 3:
            try:
                eff = label_efficiency(
                    [p["n_labels"] for p in pts], [p["metric"] for p in pts], n_boot=1000
                )
            except UserError as exc:
                res["error"] = str(exc)
            else:
                res["law"] = {**eff.params, "ceiling": eff.ceiling}
                if cfg.target is not None:
                    iv = eff.labels_needed(cfg.target)
                    res["labels_needed"] = {
                        "estimate": iv.estimate,
                        "lo": iv.lo,
                        "hi": iv.hi,
                        "level": iv.level,
                    }
        methods[method] = res
    return methods


def collect(cfg: LabelCurveConfig, out: Path, n_train: int) -> dict[str, Any]:
    """Gather the runs, fit each method's curve, write labelcurve.json and the report."""
    data: dict[str, Any] = {
        "task": cfg.finetune.task.task or str(cfg.finetune.task.train_file),
        "model": str(cfg.finetune.model),
        "target": cfg.target,
        "methods": {},
    }
    data["methods"] = _collect_methods(cfg, out, n_train, data)
    atomic_write_json(out / "labelcurve.json", data)
    from scalelab.study.report.downstream_plots import label_curve_rows, plot_label_curve
    from scalelab.study.report.html import Report

    rep = Report(f"Label efficiency: {data['task']}", subtitle=f"model {cfg.finetune.model}")
    rep.figure(
        plot_label_curve(data),
        "labelcurve",
        "Metric against labelled examples per method, with power-law fits of the error.",
    )
    rep.table(label_curve_rows(data))
    rep.table(
        [{"method": m, **p} for m, r in data["methods"].items() for p in r["points"]],
        caption="Every point (mean over seeds).",
    )
    rep.write(out)
    return data


# ====================================================================== across a study's rungs


def _study_rungs(cfg: LabelCurveConfig) -> tuple[Any, list[Any]]:
    """The study and its completed rungs (``cfg.rungs`` of them, when given)."""
    from scalelab.study.study import Study

    study = Study.load(cfg.study)
    known = {r.id for r in study.rungs}
    unknown = [r for r in cfg.rungs if r not in known]
    if unknown:
        raise UserError(
            f"{study.root}: no rung {', '.join(unknown)} (rungs: {', '.join(sorted(known))})"
        )
    rungs = [
        r
        for r in study.rungs
        if (not cfg.rungs or r.id in cfg.rungs)
        and study.rung_status(r) == "completed"
        and r.role != "trunk"
    ]
    if not rungs:
        raise UserError(
            f"{study.root}: no completed rung to fine-tune (run `scalelab study run` first)"
        )
    return study, sorted(rungs, key=lambda r: (r.N, r.id))


def _study_label_curve(cfg: LabelCurveConfig, out: Path) -> dict[str, Any]:
    """Every rung's label curve (``OUT/<rung>/...``), then the law across rungs."""
    from scalelab.study.downstream import rung_finetune_defaults

    study, rungs = _study_rungs(cfg)
    task = cfg.finetune.task.load_task()
    out = ensure_dir(out, "label-curve directory")
    n_train = len(task.train)
    workers, threads = resolve_parallelism(cfg.workers, cfg.threads, cpu=True)
    base = cfg.finetune
    if base.optim.lr is None:  # small models pretrained from scratch (as `study finetune`)
        base = base.replace(optim=base.optim.replace(lr=rung_finetune_defaults().optim.lr))
    status: dict[str, int] = {}
    jobs: list[Job] = []
    for rung in rungs:
        ft = base.replace(model=study.rung_dir(rung).resolve())
        jobs += _point_jobs(
            cfg, ft, out / rung.id, n_train, threads=threads, status=status, name=rung.id
        )
    _run(jobs, cfg, workers, threads)
    result = collect_study(cfg, out, n_train, study, rungs)
    _raise_failed(status)
    return result


def collect_study(
    cfg: LabelCurveConfig, out: Path, n_train: int, study: Any, rungs: list[Any]
) -> dict[str, Any]:
    """Gather every rung's points, fit the law across rungs per method, write
    ``labelcurve.json``, ``finetune_law__<method>.json`` and the report."""
    data: dict[str, Any] = {
        "task": cfg.finetune.task.task or str(cfg.finetune.task.train_file),
        "study": str(Path(study.root).resolve()),
        "target": cfg.target,
        "law_response": cfg.law_response,
        "law_bootstrap": cfg.law_bootstrap,
        "rungs": [],
        "finetune_law": {},
    }
    for rung in rungs:
        methods = _collect_methods(cfg, out / rung.id, n_train, data)
        data["rungs"].append({"rung": rung.id, "N": rung.N, "role": rung.role, "methods": methods})
    for method in cfg.methods:
        data["finetune_law"][method] = fit_label_law(
            law_points(data, method),
            response=cfg.law_response,
            n_boot=cfg.law_bootstrap,
            save_to=out / f"finetune_law__{method}.json",
            name=f"{data['task']} / {method}",
        )
    atomic_write_json(out / "labelcurve.json", data)
    from scalelab.study.report.downstream_plots import render_label_curve
    from scalelab.study.report.html import Report

    rep = Report(f"Label efficiency across rungs: {data['task']}", subtitle=f"study {study.root}")
    render_label_curve(rep, data, out.name, level=2)
    rep.write(out)
    return data


# ====================================================================== the law across rungs


def law_points(data: dict[str, Any], method: str) -> list[dict[str, Any]]:
    """The points of a study-mode ``labelcurve.json`` for one method: rung, N, D_f and
    the three responses (``loss``/``perplexity`` None where no test loss was recorded)."""
    pts = []
    for entry in data.get("rungs", []):
        for p in entry.get("methods", {}).get(method, {}).get("points", []):
            loss = p.get("loss")
            pts.append(
                {
                    "rung": entry["rung"],
                    "N": float(entry["N"]),
                    "D_f": float(p["n_labels"]),
                    "loss": loss,
                    "perplexity": math.exp(loss) if loss is not None and loss < 700 else None,
                    "error": 1.0 - float(p["metric"]),
                }
            )
    return pts


def fit_label_law(
    points: list[dict[str, Any]],
    *,
    response: str = "loss",
    n_boot: int = 1000,
    seed: int = 0,
    save_to: Path | None = None,
    name: str = "label curve",
) -> dict[str, Any]:
    """The fine-tuning law of ``points`` (see :func:`law_points`) as a JSON-ready summary:
    parameters with bootstrap intervals and Gauss-Newton errors, diagnostics, and the
    largest rung predicted by a fit without it; ``{"error": one line}`` when it cannot be
    fitted. The law itself (with its bootstrap) is saved to ``save_to``."""
    from scalelab.laws.finetune_law import RESPONSES, fit_finetune_law
    from scalelab.laws.fits import FitWarning
    from scalelab.laws.results import save_fit

    out: dict[str, Any] = {"response": response, "response_label": RESPONSES[response]}
    usable = [p for p in points if p[response] is not None]
    if len(usable) < len(points):
        out["note"] = f"{len(points) - len(usable)} point(s) without a test loss left out"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FitWarning)  # the diagnostics keep them
            res = fit_finetune_law(
                [p["N"] for p in usable],
                [p["D_f"] for p in usable],
                [p[response] for p in usable],
                response=response,
                n_boot=n_boot,
                seed=seed,
                name=name,
            )
    except UserError as exc:
        out["error"] = "not fitted: " + exc.message.splitlines()[0]
        if save_to is not None:
            save_to.unlink(missing_ok=True)  # a law from earlier points would mislead
        return out
    if save_to is not None:
        save_fit(res.law, save_to)
        out["file"] = save_to.name
    out.update(law_summary(res, usable))
    return json_safe(out)  # in memory as on disk: nan as None, inf as "inf"


def law_summary(res: Any, points: list[dict[str, Any]]) -> dict[str, Any]:
    """The compact, JSON-ready view of a :class:`~scalelab.laws.finetune_law.FinetuneLaw`."""
    law, ivs, d = res.law, res.intervals, res.law.diagnostics
    boot = law.bootstrap
    params = {
        k: {
            "estimate": v,
            "lo": ivs[k].lo if k in ivs else None,
            "hi": ivs[k].hi if k in ivs else None,
            "se_gauss_newton": res.se[k],
        }
        for k, v in law.params.items()
    }
    out: dict[str, Any] = {
        "formula": "L = A / (N^alpha * D_f^beta) + E",
        "params": params,
        "interval": (
            f"{boot.level:.0%} percentile bootstrap over points ({boot.n_ok}/{boot.n} resamples)"
            if boot is not None
            else "none (law_bootstrap 0); Gauss-Newton standard errors only"
        ),
        "n_points": law.n_points,
        "n_rungs": len({p["rung"] for p in points}),
        "rmse_log": law.rmse_log,
        "mad": res.mad,
        "converged": d.converged,
        "starts_in_best_basin": f"{d.n_best_basin}/{d.n_starts}",
        "warnings": list(d.warnings),
        "points": [
            {**p, "predicted": float(v)}
            for p, v in zip(
                points, law.predict(N=[p["N"] for p in points], D=[p["D_f"] for p in points])
            )
        ],
    }
    h = res.holdout
    if h is None:
        out["holdout"] = {"note": res.holdout_note}
        return out
    rung = next((p["rung"] for p in points if p["N"] == h.held_out_N), "")
    out["holdout"] = {
        "rung": rung,
        "N": h.held_out_N,
        "fit_N_max": h.fit_N_max,
        "n_fit": h.n_fit,
        "mad": h.mad,
        "mean_abs_rel_error": h.mean_abs_rel_error,
        "level": h.level,
        "params": dict(h.law.params),
        "points": [
            {
                "D_f": q.D_f,
                "actual": q.observed,
                "predicted": q.predicted,
                "lo": q.lo,
                "hi": q.hi,
                "pred_lo": q.pred_lo,
                "pred_hi": q.pred_hi,
                "rel_error": q.rel_error,
            }
            for q in h.points
        ],
    }
    return out


# ====================================================================== summary text


def _g(value: Any, spec: str = ".4g") -> str:
    """A number of a saved summary (None for nan, "inf" text) formatted, or as text."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return format(value, spec)
    return "nan" if value is None else str(value)


def describe_law(method: str, law: dict[str, Any]) -> list[str]:
    """The fine-tuning law of one method in a few lines (what the CLI prints)."""
    head = f"fine-tuning law (Zhang et al. 2024), {method}, {law.get('response_label', '?')}"
    if "error" in law:
        return [f"{head}: {law['error']}"]
    p = {k: v["estimate"] for k, v in law["params"].items()}
    lines = [
        f"{head}: L = {_g(p['A'])} / (N^{_g(p['alpha'], '.3f')} * D_f^{_g(p['beta'], '.3f')}) "
        f"+ {_g(p['E'])}  ({law['n_points']} points on {law['n_rungs']} rungs, rmse(log) "
        f"{_g(law['rmse_log'], '.3g')}{'' if law['converged'] else ', NOT CONVERGED'})"
    ]
    bands = [
        f"{k} [{_g(v['lo'], '.3g')}, {_g(v['hi'], '.3g')}]"
        for k, v in law["params"].items()
        if v["lo"] is not None
    ]
    if bands:
        lines.append(f"  {', '.join(bands)}: {law['interval']}")
    h = law.get("holdout", {})
    if "points" in h:
        lines.append(
            f"  held out {h['rung'] or 'the largest rung'} (N = {_g(h['N'], '.3g')}, fit on N <= "
            f"{_g(h['fit_N_max'], '.3g')}): predicted its {len(h['points'])} label counts with mean "
            f"|error| {_g(h['mad'])} ({_g(100 * h['mean_abs_rel_error'], '.1f')}%)"
        )
    elif h.get("note"):
        lines.append(f"  no extrapolation check: {h['note']}")
    if law.get("file"):
        lines.append(f"  saved: {law['file']}")
    return lines


def describe(data: dict[str, Any]) -> str:
    if "rungs" in data:
        lines = []
        for entry in data["rungs"]:
            for method, res in entry["methods"].items():
                pts = ", ".join(f"{p['n_labels']}: {p['metric']:.3f}" for p in res["points"])
                lines.append(f"{entry['rung']} {method}: {pts}")
        for method, law in data.get("finetune_law", {}).items():
            lines += describe_law(method, law)
        return "\n".join(lines)
    lines = []
    for method, res in data["methods"].items():
        pts = ", ".join(f"{p['n_labels']}: {p['metric']:.3f}" for p in res["points"])
        lines.append(f"{method}: {pts}")
        need = res.get("labels_needed")
        if need:
            est = need["estimate"]
            shown = "never (above the fitted ceiling)" if not math.isfinite(est) else f"{est:,.0f}"
            lines.append(
                f"  labels to reach {data['target']}: {shown} [{need['lo']:,.0f}, {need['hi']:,.0f}]"
            )
    return "\n".join(lines)
