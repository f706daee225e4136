"""CLI: ``scalelab fit``, ``predict``, ``optimal``, ``plot`` (scaling laws).

Handlers turn flags into a stage config and call the stage in :mod:`.stages`; numpy and
scipy are imported only inside them, so ``scalelab --help`` stays fast.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    from scalelab.cli import subparser
    from scalelab.config import add_config_arguments
    from scalelab.laws.stages import FitConfig, OptimalConfig, PlotConfig, PredictConfig

    p = subparser(
        sub,
        "fit",
        help="Fit a scaling law (Chinchilla, Kaplan, power law, IsoFLOP, custom) to a table of runs.",
        example="scalelab fit runs.csv --n params --d tokens --loss loss --bootstrap 1000 --out fit.json",
    )
    p.add_argument("table", metavar="TABLE.csv", help="CSV of runs, one row per run")
    add_config_arguments(p, FitConfig, skip=("table",))
    p.set_defaults(func=_fit)

    p = subparser(
        sub,
        "predict",
        help="Predict loss from a fit JSON (with intervals), or tag/classify text with a fine-tuned run.",
        example="scalelab predict fit.json --n 7e9 --d 1.4e11\n"
        "  echo 'Obama visits Paris' | scalelab predict runs/ner-lora --input - > tags.jsonl",
    )
    p.add_argument(
        "path",
        metavar="PATH",
        help="a fit JSON from `scalelab fit --out`, or a fine-tuning run directory",
    )
    add_config_arguments(p, PredictConfig, skip=("path",))
    ft = p.add_argument_group("fine-tuned run options (PATH is a `scalelab finetune` run)")
    ft.add_argument("--input", default="-", help="text file, one example per line ('-': stdin)")
    ft.add_argument("--output", default="-", help="JSONL file to write ('-': stdout)")
    ft.add_argument("--batch-size", type=int, default=32, help="examples per forward pass")
    p.set_defaults(func=predict_from_fit)

    p = subparser(
        sub,
        "optimal",
        help="Compute-optimal N, D, tokens per parameter and loss at given compute budgets.",
        example="scalelab optimal fit.json --compute 1e21,1e23",
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
    from scalelab.config import config_from_args
    from scalelab.laws.stages import FitConfig, run_fit

    fit, text = run_fit(config_from_args(FitConfig, args))
    print(text)
    diag = getattr(fit, "diagnostics", None)
    return 0 if diag is None or diag.converged else 1


def predict_from_fit(args: argparse.Namespace) -> int:
    """``scalelab predict PATH``: a fit JSON gives a law prediction; anything else goes to
    the fine-tuning stage's text prediction (``scalelab.finetune.commands.predict_run``)."""
    from scalelab.config import config_from_args
    from scalelab.errors import UserError
    from scalelab.laws.stages import PredictConfig, is_fit_json, run_predict

    path = Path(args.path)
    if is_fit_json(path):
        _, text = run_predict(config_from_args(PredictConfig, args))
        print(text)
        return 0
    if not path.is_dir():
        raise UserError(
            f"{path} is neither a fit JSON (from `scalelab fit --out`) nor a fine-tuning run"
        )
    from scalelab.finetune.commands import predict_run

    return int(predict_run(args) or 0)


def _optimal(args: argparse.Namespace) -> int:
    from scalelab.config import config_from_args
    from scalelab.laws.stages import OptimalConfig, run_optimal

    _, text = run_optimal(config_from_args(OptimalConfig, args))
    print(text)
    return 0


def _plot(args: argparse.Namespace) -> int:
    from scalelab.config import config_from_args
    from scalelab.laws.stages import PlotConfig, run_plot

    _, text = run_plot(config_from_args(PlotConfig, args))
    print(text)
    return 0
