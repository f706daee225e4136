"""The ``scalelab`` command line: one subcommand -> one stage function.

Each stage package has a ``commands`` module whose ``register(subparsers)`` adds its
subcommands; a handler turns the parsed flags into the stage's config and calls the stage
function, nothing more. Importing a ``commands`` module is cheap (no torch), so ``--help``
and the scaling-law commands start fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from scalelab import __version__
from scalelab.errors import TrainingFailed, UserError
from scalelab.utils.env import quiet_threads_env

# Order here is the order in `scalelab --help`.
COMMAND_MODULES = (
    "scalelab.study.commands",  # demo, plan, study ...
    "scalelab.data.commands",  # data prepare / info
    "scalelab.train.commands",  # pretrain
    "scalelab.models.commands",  # sizes
    "scalelab.laws.commands",  # fit, predict, optimal, plot
    "scalelab.finetune.commands",  # finetune, evaluate, predict-text, labelcurve
    "scalelab.report.commands",  # report
)

EPILOG = """\
examples:
  scalelab demo                                  # the default study, report in runs/demo/
  scalelab data prepare --out data/default       # tokenize the built-in corpus
  scalelab pretrain runs/tiny --size tiny        # train one model (rerun to resume)
  scalelab fit table.csv --n params --d tokens --loss loss --out fit.json
  scalelab optimal fit.json --compute 1e21

Every subcommand has --help with an example. Errors in the input print one line and exit 2.
"""


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32, width=100)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scalelab",
        description="Pretrain ladders of Transformer LMs, fit scaling laws, fine-tune, report.",
        epilog=EPILOG,
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"scalelab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # stage not present in this build
                continue
            raise
        module.register(sub)
    return parser


def subparser(sub: argparse._SubParsersAction, name: str, *, help: str, example: str, **kw):  # noqa: A002
    """Add a subcommand whose --help ends with a usage example."""
    return sub.add_parser(
        name,
        help=help,
        description=help,
        epilog=f"example:\n  {example}",
        formatter_class=_Formatter,
        **kw,
    )


def main(argv: Sequence[str] | None = None) -> int:
    quiet_threads_env()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        result = args.func(args)
    except UserError as exc:
        print(f"scalelab: error: {exc}", file=sys.stderr)
        return 2
    except TrainingFailed as exc:
        print(f"scalelab: run failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nscalelab: interrupted; run the same command again to resume.", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    return int(result or 0)


if __name__ == "__main__":
    raise SystemExit(main())
