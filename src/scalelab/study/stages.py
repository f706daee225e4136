"""Study stage functions behind ``scalelab plan``, ``study run|status|fit``, ``report`` and ``demo``."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any

from scalelab.errors import UserError
from scalelab.study.plan import PlanConfig, Rung, plan_rungs, with_estimates
from scalelab.study.run import RunConfig, resolve_parallelism, run_study
from scalelab.study.study import Study


def _vocab_size(plan: PlanConfig) -> int:
    if plan.base.dataset:
        from scalelab.data.prepare import open_dataset

        return open_dataset(plan.base.dataset).vocab_size
    return plan.base.data.vocab_size


def _probe_for(plan: PlanConfig, rungs: list[Rung], vocab: int, threads: int) -> dict[str, Any]:
    from scalelab.models.config import ModelConfig
    from scalelab.study.probe import probe_throughput

    widths = sorted({r.shape["d_model"] for r in rungs})
    pick = sorted({widths[0], widths[len(widths) // 2], widths[-1]})
    cfgs = []
    for w in pick:
        shape = next(r.shape for r in rungs if r.shape["d_model"] == w)
        cfgs.append(
            ModelConfig(
                arch=plan.base.arch, vocab_size=vocab, max_seq_len=plan.base.seq_len, **shape
            )
        )
    batch = min(r.batch_tokens for r in rungs)
    print(f"probing training throughput at widths {', '.join(map(str, pick))} ...", file=sys.stderr)
    return probe_throughput(
        cfgs,
        seq_len=plan.base.seq_len,
        batch_tokens=batch,
        precision=plan.base.runtime.precision,
        threads=threads,
    )


def make_plan(
    plan: PlanConfig, *, probe: bool, workers: int = 0
) -> tuple[list[Rung], dict[str, Any]]:
    """Rungs of ``plan`` with estimated times; a wall-clock budget is converted with the probe."""
    vocab = _vocab_size(plan)
    dummy = Study(root=Path("."), plan=plan, rungs=[], facts={})
    n_workers, threads = resolve_parallelism(RunConfig(workers=workers), dummy)
    facts: dict[str, Any] = {"vocab_size": vocab, "workers": n_workers, "threads": threads}
    budget = plan.budget_flops
    if plan.budget_hours is not None:
        # Time is nearly proportional to compute at a fixed design: rescale a guess a few times.
        target_s = plan.budget_hours * 3600 * n_workers
        budget = budget or 1e14
        probe_result = None
        for _ in range(4):
            rungs = plan_rungs(plan, vocab_size=vocab, budget_flops=budget)
            if probe_result is None:
                probe_result = _probe_for(plan, rungs, vocab, threads)
            est = sum(r.est_seconds or 0 for r in with_estimates(rungs, probe_result))
            budget *= target_s / est
        facts["probe"] = probe_result
        facts["budget_flops"] = budget
        return with_estimates(
            plan_rungs(plan, vocab_size=vocab, budget_flops=budget), probe_result
        ), facts
    rungs = plan_rungs(plan, vocab_size=vocab, budget_flops=budget)
    if probe:
        facts["probe"] = _probe_for(plan, rungs, vocab, threads)
        rungs = with_estimates(rungs, facts["probe"])
    facts["budget_flops"] = budget
    return rungs, facts


def plan_table(rungs: list[Rung], convention: str) -> str:
    head = f"{'rung':<10}{'role':<8}{'N':>11}{'shape':>10}{'D':>12}{'D/N':>7}{'C':>10}{'lr':>9}{'batch':>7}{'est':>8}"
    lines = [head, "-" * len(head)]
    for r in rungs:
        est = f"{r.est_seconds:.0f}s" if r.est_seconds else "–"
        lines.append(
            f"{r.id:<10}{r.role:<8}{r.N:>11,}{r.shape['n_layer']:>4}x{r.shape['d_model']:<5}{r.tokens:>12,}"
            f"{r.tokens / r.N:>7.1f}{r.flops[convention]:>10.2e}{r.lr:>9.2e}{r.batch_tokens:>7}{est:>8}"
        )
    total_c = sum(r.flops[convention] for r in rungs)
    est = [r.est_seconds for r in rungs if r.est_seconds]
    lines.append(
        f"{len(rungs)} rungs, {total_c:.3e} FLOPs ({convention})"
        + (f", {sum(est):.0f} s of training" if est else "")
    )
    return "\n".join(lines)


def plan_study(
    plan: PlanConfig, out: Path | None, *, dry_run: bool, probe: bool, workers: int = 0
) -> Study | None:
    if not dry_run and out is None:
        raise UserError("give the study directory with --out (or use --dry-run)")
    rungs, facts = make_plan(plan, probe=probe, workers=workers)
    print(plan_table(rungs, plan.flops_convention))
    if dry_run:
        return None
    study = Study.create(Path(out), plan, rungs, facts)
    print(
        f"study written to {study.root / 'study.yaml'}; run it with: scalelab study run {study.root}"
    )
    return study


def status_text(study: Study) -> str:
    rows = study.result_rows()
    conv = study.plan.flops_convention
    head = f"{'rung':<10}{'role':<8}{'status':<12}{'progress':>9}{'N':>11}{'D':>12}{'loss':>8}{'time':>8}"
    lines = [head, "-" * len(head)]
    total = done = 0.0
    for r in rows:
        c = r[f"C_{conv}"] or 0.0
        frac = r["step"] / max(1, r["total_steps"])
        total += c
        done += c * (1.0 if r["status"] == "completed" else frac)
        loss = f"{r['final_val_loss']:.4f}" if isinstance(r["final_val_loss"], float) else "–"
        t = f"{r['wall_time_s']:.0f}s" if r["wall_time_s"] else "–"
        lines.append(
            f"{r['rung']:<10}{r['role']:<8}{r['status']:<12}{frac:>9.0%}{r['N']:>11,}{r['D']:>12,}{loss:>8}{t:>8}"
        )
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    lines.append(
        f"{done / total if total else 0:.1%} of {total:.3e} FLOPs done; "
        + ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
    )
    return "\n".join(lines)


def results_hash(study: Study) -> str:
    path = study.root / "results.csv"
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else ""


def fit_and_report(study: Study, fit_cfg: Any, *, force_fit: bool = False) -> dict[str, Any] | None:
    """Fit (unless the fits already match the current results) and render the report."""
    from scalelab.report.study_report import build_report
    from scalelab.study.fit import fit_study, load_fit_summary

    study.write_results()
    summary = load_fit_summary(study)
    current = results_hash(study)
    if force_fit or summary is None or summary.get("results_hash") != current:
        try:
            summary = fit_study(study, fit_cfg)
        except UserError as exc:
            print(f"scalelab: not fitted yet: {exc}", file=sys.stderr)
            summary = None
        else:
            summary["results_hash"] = current
            from scalelab.utils.io import atomic_write_json

            atomic_write_json(study.root / "fits" / "summary.json", summary)
    html, md = build_report(study)
    print(f"report: {html} (and {md.name})")
    return summary


def describe_fit(summary: dict[str, Any]) -> str:
    p = summary["chinchilla"]["params"]
    lines = [
        f"Approach 3: L(N, D) = {p['E']:.4f} + {p['A']:.4g}/N^{p['alpha']:.4f} + {p['B']:.4g}/D^{p['beta']:.4f}"
        f"  (rmse(log) {summary['chinchilla']['rmse_log']:.4f}, {'converged' if summary['chinchilla']['converged'] else 'NOT CONVERGED'})",
        f"  compute-optimal N ∝ C^{summary['chinchilla']['a']:.3f}, D ∝ C^{summary['chinchilla']['b']:.3f}",
    ]
    if summary["chinchilla"].get("excluded"):
        lines.append(
            f"  fitted on {summary['n_fit']} rungs within {100 * summary['chinchilla']['frontier_band']:.0f}% "
            f"of their compute level's best loss (left out: {', '.join(summary['chinchilla']['excluded'])})"
        )
    for key, name in (("isoflop", "Approach 2 (IsoFLOP)"), ("envelope", "Approach 1 (envelope)")):
        if "a" in summary.get(key, {}):
            lines.append(
                f"{name}: N_opt ∝ C^{summary[key]['a']:.3f}, D_opt ∝ C^{summary[key]['b']:.3f}"
            )
    for c in summary.get("holdout", []):
        pi = f" [{c['pred_lo']:.4f}, {c['pred_hi']:.4f}]" if "pred_lo" in c else ""
        lines.append(
            f"held out {c['rung']}: predicted {c['estimate']:.4f}{pi}, measured {c['actual']:.4f}, "
            f"error {100 * c['rel_error']:+.2f}%"
        )
        if "estimate_all" in c:
            lines.append(
                f"  (law fitted on every rung: predicted {c['estimate_all']:.4f}, "
                f"error {100 * c['rel_error_all']:+.2f}%)"
            )
    for key, res in summary.get("downstream", {}).items():
        for h in res.get("holdout", []):
            if "ladder_estimate" in h:
                lines.append(
                    f"downstream {key}, held out {h['rung']}: ladder predicted {h['ladder_estimate']:.4f} "
                    f"[{h['ladder_lo']:.4f}, {h['ladder_hi']:.4f}], measured {h['actual']:.4f} "
                    f"(error {h['ladder_error']:+.4f})"
                )
        if "error" in res:
            lines.append(f"downstream {key}: {res['error']}")
    return "\n".join(lines)


def run_and_fit(study: Study, run_cfg: RunConfig, fit_cfg: Any) -> int:
    statuses = run_study(study, run_cfg)
    failed = [k for k, v in statuses.items() if v == "failed"]
    summary = fit_and_report(study, fit_cfg)
    if summary is not None:
        print(describe_fit(summary))
    if failed:
        print(
            f"scalelab: {len(failed)} rung(s) failed: {', '.join(failed)} (see their train.log)",
            file=sys.stderr,
        )
        return 1
    return 0


def finetune_and_fit(study: Study, cfg: Any) -> int:
    """Fine-tune every rung (``scalelab study finetune``), refit with the downstream laws,
    re-render the report; 1 if a fine-tuning run failed."""
    from scalelab.study.downstream import finetune_study
    from scalelab.study.fit import StudyFitConfig

    statuses = finetune_study(study, cfg)
    # results.csv carries the downstream metrics: the fits are redone when they changed.
    summary = fit_and_report(study, StudyFitConfig())
    if summary is not None:
        print(describe_fit(summary))
    failed = [k for k, v in statuses.items() if v != "completed"]
    if failed:
        print(
            f"scalelab: {len(failed)} fine-tuning run(s) failed: see their train.log",
            file=sys.stderr,
        )
        return 1
    return 0
