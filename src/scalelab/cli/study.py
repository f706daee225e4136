"""``scalelab demo``, ``plan``, ``study run|status|fit|finetune|eval|sweep``, ``report``: studies."""

from __future__ import annotations

import argparse
from pathlib import Path

from scalelab.cli.finetune import add_shortcuts
from scalelab.cli.flags import add_config_arguments, config_from_args, count, subparser


def register(sub: argparse._SubParsersAction) -> None:
    """``demo``, ``plan``, ``study ...`` and ``report``."""
    _register_demo_and_plan(sub)
    _register_study(sub)
    report = subparser(
        sub,
        "report",
        help="Write STUDY/report.html (self-contained) and report.md from what the study has so far.",
        example="scalelab report runs/iso",
    )
    report.add_argument("study", type=Path, metavar="STUDY")
    report.set_defaults(func=_report)


def _register_demo_and_plan(sub: argparse._SubParsersAction) -> None:
    from scalelab.study.plan import PlanConfig

    demo = subparser(
        sub,
        "demo",
        help="The default scaling study on the built-in corpus: plan, train, fit, report (rerun to resume).",
        example="scalelab demo                      # about 10 minutes on 2 CPU cores, report in runs/demo/\n"
        "  scalelab demo --preset medium      # about 30 minutes, more sizes, downstream section\n"
        "  scalelab demo --seed 2             # the same study with another seed, in runs/demo-seed2/",
    )
    demo.add_argument("--preset", default="default", help="default, medium or gpu (see the README)")
    demo.add_argument(
        "--out",
        type=Path,
        default=None,
        help="study directory (default: runs/demo[-PRESET][-seedN])",
    )
    demo.add_argument(
        "--seed", type=count, default=0, help="seed of every rung's init and data order"
    )
    demo.add_argument(
        "--workers", type=count, default=0, help="rungs trained at once (0: automatic)"
    )
    demo.add_argument(
        "--dataset",
        type=Path,
        default=None,
        help="a prepared dataset (scalelab data prepare) instead of the built-in corpus; "
        "the gpu preset needs one",
    )
    demo.set_defaults(func=_demo)

    plan = subparser(
        sub,
        "plan",
        help="Turn a design and a compute budget into a study (shapes, tokens, lr, batch, FLOPs, time).",
        example="scalelab plan --design isoflop --budget-flops 3e14 --out runs/iso --dry-run\n"
        "  scalelab plan --design ladder --n-min 2e4 --n-max 2e6 --tokens-per-param 10,20,40 --out runs/ladder\n"
        "  scalelab plan --design isoflop --budget-hours 1 --out runs/one-hour",
    )
    plan.add_argument("--out", type=Path, default=None, help="study directory to create")
    plan.add_argument("--dry-run", action="store_true", help="print the rungs and spend no compute")
    plan.add_argument(
        "--probe", action="store_true", help="measure throughput to estimate wall times"
    )
    plan.add_argument(
        "--workers",
        type=count,
        default=0,
        help="rungs that will train at once (for time estimates)",
    )
    add_config_arguments(plan, PlanConfig)
    plan.set_defaults(func=_plan)


def _register_study(sub: argparse._SubParsersAction) -> None:
    from scalelab.study.downstream import StudyFinetuneConfig
    from scalelab.study.fit import StudyFitConfig
    from scalelab.study.run import RunConfig

    study = subparser(
        sub,
        "study",
        help="Run, inspect and fit a planned study.",
        example="scalelab study run runs/iso && scalelab study status runs/iso && scalelab study fit runs/iso",
    )
    ssub = study.add_subparsers(dest="study_command", metavar="STUDY_COMMAND", required=True)
    run = subparser(
        ssub,
        "run",
        help="Train every pending rung (finished ones are skipped, interrupted ones resumed), then fit and report.",
        example="scalelab study run runs/iso --workers 2\n"
        "  scalelab study run runs/iso --executor torchrun --nproc-per-node 8\n"
        "  scalelab study run runs/iso --executor ray --ray-address auto\n"
        "  scalelab study run runs/iso --executor slurm --slurm.partition gpu --slurm.gpus-per-node 1",
    )
    run.add_argument("study", type=Path, metavar="STUDY")
    add_config_arguments(run, RunConfig)
    run.set_defaults(func=_run)
    status = subparser(
        ssub, "status", help="Show where a study stands.", example="scalelab study status runs/iso"
    )
    status.add_argument("study", type=Path, metavar="STUDY")
    status.set_defaults(func=_status)
    fit = subparser(
        ssub,
        "fit",
        help="Fit Approach 3 (and 2, 1 when the design allows) to the finished rungs; predict held-out rungs.",
        example="scalelab study fit runs/iso --bootstrap 1000",
    )
    fit.add_argument("study", type=Path, metavar="STUDY")
    add_config_arguments(fit, StudyFitConfig)
    fit.set_defaults(func=_fit)

    ft = subparser(
        ssub,
        "finetune",
        help="Fine-tune every finished rung on a task (resumable), record dev/test metrics in downstream.csv.",
        example="scalelab study finetune runs/iso --task wiki-topics --method full --seeds 3\n"
        "  scalelab study finetune runs/iso --task twitter-ner --method lora --perturb casing,typos,entity-swap",
    )
    ft.add_argument("study", type=Path, metavar="STUDY")
    add_shortcuts(ft, prefix="finetune.")
    add_config_arguments(ft, StudyFinetuneConfig)
    ft.set_defaults(func=_finetune)
    _register_study_eval(ssub)
    _register_study_sweep(ssub)


def _register_study_sweep(ssub: argparse._SubParsersAction) -> None:
    from scalelab.study.sweep import SweepConfig

    sweep = subparser(
        ssub,
        "sweep",
        help="Train a few small sizes at several learning rates (resumable), fit lr_opt as a power "
        "law of N (or C), and print the `scalelab plan` flags that use it (policy rule fitted).",
        example="scalelab study sweep --out runs/sweep --sizes 2e3,6e3,2e4 --aspect-ratio 32 \\\n"
        "      --prior-tokens-per-param 30 --base.data.vocab-size 1024 --base.seq-len 128\n"
        "  scalelab study sweep --out runs/sweep --lr-multipliers 0.25,0.5,1,2,4 --lr-centre 0.01\n"
        "  then: scalelab plan ... --policy.rule fitted --policy.lr-coef C --policy.lr-exponent P "
        "--policy.lr-basis N (as printed)",
    )
    sweep.add_argument(
        "--out",
        type=Path,
        required=True,
        help="sweep directory: members/<id>/ (ordinary run directories), sweep.yaml, sweep.json",
    )
    add_config_arguments(sweep, SweepConfig)
    sweep.set_defaults(func=_sweep)


def _register_study_eval(ssub: argparse._SubParsersAction) -> None:
    from scalelab.study.zeroshot import StudyEvalConfig

    ev = subparser(
        ssub,
        "eval",
        help="Score every finished rung zero-shot on multiple-choice tasks (resumable), write zeroshot.csv, fit the ladder.",
        example="scalelab study eval runs/iso --tasks builtin:continuation,builtin:wiki-topic\n"
        "  scalelab study eval runs/iso --tasks mine.jsonl --limit 500 --precision bf16",
    )
    ev.add_argument("study", type=Path, metavar="STUDY")
    # The study's own dataset builds the built-in tasks: no --dataset here.
    add_config_arguments(ev, StudyEvalConfig, skip=("dataset",))
    ev.set_defaults(func=_study_eval)


def _plan(args: argparse.Namespace) -> int:
    from scalelab.study.plan import PlanConfig, plan_study

    cfg = config_from_args(PlanConfig, args)
    plan_study(cfg, args.out, dry_run=args.dry_run, probe=args.probe, workers=args.workers)
    return 0


def _run(args: argparse.Namespace) -> int:
    from scalelab.study.fit import StudyFitConfig
    from scalelab.study.run import RunConfig, run_and_fit
    from scalelab.study.study import Study

    return run_and_fit(Study.load(args.study), config_from_args(RunConfig, args), StudyFitConfig())


def _status(args: argparse.Namespace) -> int:
    from scalelab.study.run import status_text
    from scalelab.study.study import Study

    print(status_text(Study.load(args.study)))
    return 0


def _fit(args: argparse.Namespace) -> int:
    from scalelab.study.fit import StudyFitConfig, describe_fit, fit_and_report
    from scalelab.study.study import Study

    study = Study.load(args.study)
    summary = fit_and_report(study, config_from_args(StudyFitConfig, args), force_fit=True)
    if summary is None:
        return 1
    print(describe_fit(summary, study))
    return 0


def _finetune(args: argparse.Namespace) -> int:
    from scalelab.study.downstream import StudyFinetuneConfig, finetune_and_fit
    from scalelab.study.study import Study

    return finetune_and_fit(Study.load(args.study), config_from_args(StudyFinetuneConfig, args))


def _study_eval(args: argparse.Namespace) -> int:
    from scalelab.study.study import Study
    from scalelab.study.zeroshot import StudyEvalConfig, describe, eval_study

    study = Study.load(args.study)
    outcome = eval_study(study, config_from_args(StudyEvalConfig, args))
    print(describe(study, outcome))
    print(f"the report shows it after `scalelab report {args.study}`")
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from scalelab.study.sweep import SWEEP_FILE, SweepConfig, policy_flags, run_sweep, tuned_policy

    cfg = config_from_args(SweepConfig, args)
    result = run_sweep(cfg, args.out)
    print(result.summary())
    flags = policy_flags(tuned_policy(result, cfg.policy), cfg.policy)
    print(
        f"sweep written to {args.out / SWEEP_FILE}; plan the study with this sweep's --base.* "
        f"and --aspect-ratio and: {flags}"
    )
    return 0


def _report(args: argparse.Namespace) -> int:
    from scalelab.study.report.study_report import build_report
    from scalelab.study.study import Study

    study = Study.load(args.study)
    study.write_results()
    html, md = build_report(study)
    print(f"report: {html} (and {md.name})")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from scalelab.study.presets import run_demo

    return run_demo(
        args.preset, out=args.out, workers=args.workers, dataset=args.dataset, seed=args.seed
    )
