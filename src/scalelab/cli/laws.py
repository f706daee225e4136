"""``scalelab fit``, ``compare``, ``predict``, ``optimal``, ``plot``: scaling laws over a table or a fit.

Handlers turn flags into a stage config and call the stage in :mod:`scalelab.laws.fit`;
numpy and scipy are imported only inside them, so ``scalelab --help`` stays fast.
``scalelab predict`` predicts a loss from a fit; tagging or classifying text with a
fine-tuned run is ``scalelab infer`` (``predict RUN_DIR`` still works, with a note).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from scalelab.cli.flags import add_config_arguments, config_from_args, deprecated, subparser


def register(sub: argparse._SubParsersAction) -> None:
    from scalelab.laws.fit import FitConfig, OptimalConfig, PlotConfig, PredictConfig

    p = subparser(
        sub,
        "fit",
        help="Fit a scaling law (Chinchilla, Kaplan, power law, IsoFLOP, data-constrained, "
        "custom) to a table of runs; --validate rolling for calibrated intervals.",
        example="scalelab fit runs.csv --n params --d tokens --loss loss --validate rolling --out fit.json",
    )
    p.add_argument(
        "table",
        metavar="TABLE.csv",
        help="runs, one row per run: comma, semicolon or tab separated; cells such as 40M, "
        "1.4B, 2.5e9 or 40,000,000; N, D, C columns found by name unless --n/--d/--c name them",
    )
    add_config_arguments(p, FitConfig, skip=("table",))
    p.add_argument(
        "--validate",
        dest="validation",
        choices=["none", "rolling"],
        default=argparse.SUPPRESS,
        help="the same as --validation: rolling gives calibrated intervals",
    )
    p.set_defaults(func=_fit)

    from scalelab.laws.compare import CompareConfig

    p = subparser(
        sub,
        "compare",
        help="Compare law forms by rolling-origin extrapolation error (in-sample fit beside it).",
        example="scalelab compare runs.csv --n params --d tokens --forms chinchilla,kaplan_nd",
    )
    p.add_argument("table", metavar="TABLE.csv", help="runs, one row per run (as for `fit`)")
    add_config_arguments(p, CompareConfig, skip=("table",))
    p.set_defaults(func=_compare)

    p = subparser(
        sub,
        "predict",
        help="Predict the loss at given N and D from a fit JSON, with confidence and prediction intervals.",
        example="scalelab predict fit.json --n 7e9 --d 1.4e11",
    )
    p.add_argument("path", metavar="FIT.json", help="a fit JSON written by `scalelab fit --out`")
    add_config_arguments(p, PredictConfig, skip=("path",))
    # Before 0.2, `predict RUN_DIR` also tagged text with a fine-tuned run (now `infer`).
    from scalelab.cli.finetune import add_infer_arguments

    add_infer_arguments(p, hidden=True)
    p.set_defaults(func=_predict)

    p = subparser(
        sub,
        "optimal",
        help="Compute-optimal N, D at budgets; with --unique-tokens under a data cap, "
        "--inference-tokens the cheapest model to train and serve, --target-loss the smallest "
        "model reaching it.",
        example="scalelab optimal fit.json --compute 1e21 --inference-tokens 1e12",
    )
    p.add_argument("path", metavar="FIT.json", help="a fit JSON written by `scalelab fit --out`")
    add_config_arguments(p, OptimalConfig, skip=("path",))
    p.set_defaults(func=_optimal)

    p = subparser(
        sub,
        "plot",
        help="Plot a fit as PNGs: loss vs N, residuals, IsoFLOP profiles, optimal allocation.",
        example="scalelab plot fit.json --out plots/",
    )
    p.add_argument("path", metavar="FIT.json", help="a fit JSON written by `scalelab fit --out`")
    add_config_arguments(p, PlotConfig, skip=("path",))
    p.set_defaults(func=_plot)


def _fit(args: argparse.Namespace) -> int:
    from scalelab.laws.fit import FitConfig, run_fit

    fit, text = run_fit(config_from_args(FitConfig, args))
    print(text)
    diag = getattr(fit, "diagnostics", None)
    return 0 if diag is None or diag.converged else 1


def _compare(args: argparse.Namespace) -> int:
    from scalelab.laws.compare import CompareConfig, run_compare

    _, text = run_compare(config_from_args(CompareConfig, args))
    print(text)
    return 0


def _predict(args: argparse.Namespace) -> int:
    """A fit JSON: the law's prediction. A directory: the old spelling of ``infer``."""
    from scalelab.errors import UserError
    from scalelab.laws.fit import PredictConfig, is_fit_json, run_predict

    if Path(args.path).is_dir():
        from scalelab.cli.finetune import run_infer

        deprecated("`scalelab predict RUN_DIR`", "`scalelab infer RUN_DIR`")
        args.run_dir = Path(args.path)
        return run_infer(args)
    if Path(args.path).is_file() and not is_fit_json(args.path):
        raise UserError(
            f"{args.path} is neither a fit JSON (from `scalelab fit --out`) nor a fine-tuning "
            "run (for those: `scalelab infer RUN_DIR`)"
        )
    _, text = run_predict(config_from_args(PredictConfig, args))
    print(text)
    return 0


def _optimal(args: argparse.Namespace) -> int:
    from scalelab.laws.fit import OptimalConfig, run_optimal

    _, text = run_optimal(config_from_args(OptimalConfig, args))
    print(text)
    return 0


def _plot(args: argparse.Namespace) -> int:
    from scalelab.laws.fit import PlotConfig, run_plot

    _, text = run_plot(config_from_args(PlotConfig, args))
    print(text)
    return 0
