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
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from scalelab.config import Config
from scalelab.errors import UserError
from scalelab.finetune.methods import MethodConfig
from scalelab.finetune.tasks import TaskConfig
from scalelab.utils.io import atomic_write_json, read_json


@dataclass(kw_only=True)
class LabelCurveConfig(Config):
    """A label-efficiency curve: methods x training-set fractions x seeds."""

    model: Path
    """A scalelab run directory or a local Hugging Face checkpoint directory."""
    task: TaskConfig = field(default_factory=TaskConfig)
    """The task (built-in name or files)."""
    methods: tuple[str, ...] = ("full", "lora")
    """Fine-tuning methods to compare."""
    fractions: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3, 1.0)
    """Fractions of the training split (nested seeded subsets)."""
    seeds: int = 1
    """Seeds per point (the subset stays nested; the seed varies init and order)."""
    target: float | None = None
    """Metric to reach: report how many labels each method needs for it."""
    epochs: float = 3.0
    """Passes over the (sub)set; small subsets get more, see min_steps."""
    min_steps: int = 60
    """At least this many optimizer steps per run, so tiny subsets are trained enough."""
    batch_size: int = 16
    """Examples per optimizer step."""
    max_length: int = 128
    """Longest model input in tokens."""
    lr: float | None = None
    """Peak learning rate (none: the method's default)."""
    workers: int = 0
    """Runs at once (0: 2 on a CPU machine with >= 2 cores)."""
    threads: int = 0
    """torch threads per run (0: cores divided by workers)."""
    precision: str = "bf16"
    """bf16 or fp32."""
    in_process: bool = False
    """Run the fine-tunings one after another inside this process (no start-up cost)."""

    def validate(self) -> None:
        if not self.methods:
            raise UserError("give at least one method")
        if not self.fractions or any(not 0 < f <= 1 for f in self.fractions):
            raise UserError("fractions must be in (0, 1]")
        if len(set(self.fractions)) < 3:
            raise UserError("a label curve needs at least 3 distinct fractions")
        for m in self.methods:
            MethodConfig(method=m)  # type: ignore[arg-type]
        if self.task.task is None and self.task.train_file is None:
            raise UserError("give a task: --task NAME (a built-in) or --task.train-file FILE")


def _run_dir(out: Path, method: str, frac: float, seed: int) -> Path:
    return out / method / f"frac{frac:g}" / f"seed{seed}"


def label_curve(cfg: LabelCurveConfig, out: Path) -> dict[str, Any]:
    from scalelab.finetune.stage import FinetuneConfig
    from scalelab.study.run import Job, run_jobs
    from scalelab.train.loop import RuntimeConfig

    out = Path(out)
    task = cfg.task.load_task()
    n_train = len(task.train)
    cores = os.cpu_count() or 1
    workers = cfg.workers or (2 if cores >= 2 else 1)
    threads = cfg.threads or max(1, cores // workers)
    jobs: list[Job] = []
    status: dict[str, int] = {}
    for method in cfg.methods:
        for frac in sorted(cfg.fractions):
            n = max(1, round(frac * n_train))
            epochs = max(cfg.epochs, cfg.min_steps * cfg.batch_size / n)
            for seed in range(cfg.seeds):
                d = _run_dir(out, method, frac, seed)
                s = d / "summary.json"
                if (
                    s.is_file()
                    and read_json(s).get("status") == "completed"
                    and "test" in read_json(s)
                ):
                    continue
                d.mkdir(parents=True, exist_ok=True)
                ft = FinetuneConfig(
                    model=Path(cfg.model).resolve(),
                    task=cfg.task,
                    method=MethodConfig(method=method),  # type: ignore[arg-type]
                    epochs=epochs,
                    batch_size=cfg.batch_size,
                    max_length=cfg.max_length,
                    lr=cfg.lr,
                    train_fraction=frac,
                    seed=seed,
                    runtime=RuntimeConfig(
                        precision=cfg.precision, progress=False, tensorboard=False
                    ),  # type: ignore[arg-type]
                )
                if not (d / "config.yaml").is_file():
                    ft.to_yaml(d / "finetune.yaml")
                cmd = [
                    sys.executable,
                    "-m",
                    "scalelab",
                    "finetune",
                    str(d.resolve()),
                    "--config",
                    str((d / "finetune.yaml").resolve()),
                    "--runtime.threads",
                    str(threads),
                ]
                jobs.append(
                    Job(
                        str(d),
                        cmd,
                        d / "train.log",
                        lambda code, d=d: status.__setitem__(str(d), code),
                    )
                )
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
        "task": cfg.task.task or str(cfg.task.train_file),
        "model": str(cfg.model),
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
    from scalelab.report.downstream_plots import label_curve_rows, plot_label_curve
    from scalelab.report.html import Report

    rep = Report(f"Label efficiency: {data['task']}", subtitle=f"model {cfg.model}")
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
