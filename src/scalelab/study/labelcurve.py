"""Label efficiency: the metric against the number of labelled examples, per method.

``scalelab labelcurve OUT --model M --task T --methods full,lora --fractions 0.01,...,1``
fine-tunes on nested, seeded subsets of the training split (a smaller fraction's examples
are a subset of a larger one's), each an ordinary resumable ``scalelab finetune`` run
under ``OUT/<method>/frac<f>/seed<k>/``; then fits ``1 - metric = E + A n^-alpha`` per
method and answers "how many labels to reach metric X" with a bootstrap interval.
Results go to ``OUT/labelcurve.json`` and ``OUT/report.html``. Put OUT under
``STUDY/downstream/labelcurve-<name>/`` and the study report shows it too.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from scalelab.config import Config
from scalelab.errors import UserError
from scalelab.finetune.finetune import FinetuneConfig
from scalelab.study.jobs import Job, finetune_done, finetune_job, resolve_parallelism, run_jobs
from scalelab.utils.io import atomic_write_json, ensure_dir, read_json


def curve_finetune_defaults() -> FinetuneConfig:
    """Each point's fine-tuning unless told otherwise: the stage's defaults (peak lr by
    method), without progress bars or TensorBoard events (many short runs, each logged)."""
    base = FinetuneConfig()
    return base.replace(runtime=base.runtime.replace(progress=False, tensorboard=False))


@dataclass(kw_only=True)
class LabelCurveConfig(Config):
    """A label-efficiency curve: methods x training-set fractions x seeds."""

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
        self.finetune.check_runnable()


def _run_dir(out: Path, method: str, frac: float, seed: int) -> Path:
    return out / method / f"frac{frac:g}" / f"seed{seed}"


def label_curve(cfg: LabelCurveConfig, out: Path) -> dict[str, Any]:
    """Fine-tune every (method, fraction, seed) point resumably, then fit and report."""
    from scalelab.finetune.finetune import resolve_model_dir

    resolve_model_dir(cfg.finetune.model)  # a missing or foreign model: one line, before any run
    task = cfg.finetune.task.load_task()
    out = ensure_dir(Path(out), "label-curve directory")
    n_train = len(task.train)
    workers, threads = resolve_parallelism(cfg.workers, cfg.threads, cpu=True)
    jobs: list[Job] = []
    status: dict[str, int] = {}
    base = cfg.finetune.replace(model=Path(cfg.finetune.model).resolve())
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

                jobs.append(finetune_job(str(d), d, ft, threads=threads, on_exit=done))
    if jobs:
        print(f"label curve: {len(jobs)} fine-tuning run(s), {workers} at a time", file=sys.stderr)
        run_jobs(jobs, workers=workers, threads=threads, in_process=cfg.in_process)
    failed = [d for d, code in status.items() if code != 0]
    result = collect(cfg, out, n_train)
    if failed:
        raise UserError(f"{len(failed)} run(s) failed, e.g. {failed[0]} (see its train.log)")
    return result


def collect(cfg: LabelCurveConfig, out: Path, n_train: int) -> dict[str, Any]:
    """Gather the runs, fit each method's curve, write labelcurve.json and the report."""
    from scalelab.laws import label_efficiency

    data: dict[str, Any] = {
        "task": cfg.finetune.task.task or str(cfg.finetune.task.train_file),
        "model": str(cfg.finetune.model),
        "target": cfg.target,
        "methods": {},
    }
    for method in cfg.methods:
        pts = []
        for frac in sorted(cfg.fractions):
            vals = []
            for seed in range(cfg.seeds):
                s = _run_dir(out, method, frac, seed) / "summary.json"
                if s.is_file():
                    summ = read_json(s)
                    if summ.get("status") == "completed" and "test" in summ:
                        key = "f1" if "f1" in summ["test"] else "accuracy"
                        data["metric"] = key
                        vals.append(summ["test"][key])
            if vals:
                pts.append(
                    {
                        "fraction": frac,
                        "n_labels": max(1, round(frac * n_train)),
                        "metric": float(np.mean(vals)),
                        "std": float(np.std(vals)),
                        "seeds": len(vals),
                    }
                )
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
        data["methods"][method] = res
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


def describe(data: dict[str, Any]) -> str:
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
