"""The ``scalelab`` command line: the roof over the stages.

One subcommand -> one stage function. Each module here registers a group of subcommands
(``register(subparsers)``); a handler turns the parsed flags into the stage's typed config
(:mod:`scalelab.cli.flags`), calls the stage function and prints its result, nothing more.
This package is the only one that knows argparse, and no other package imports it.
The command modules import configs only (the stages load their heavy libraries when they
run); the fine-tuning configs bring torch with them, so building the parser takes about
two seconds.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from scalelab import __version__
from scalelab.cli.flags import Formatter, Parser, accept_negative_numbers
from scalelab.errors import exit_code_for
from scalelab.utils.env import quiet_threads_env

# The command groups, in the order of `scalelab --help`.
COMMAND_MODULES = (
    "scalelab.cli.study",  # demo, plan, study run|status|fit|finetune, report
    "scalelab.cli.data",  # data prepare|info
    "scalelab.cli.train",  # pretrain
    "scalelab.cli.models",  # sizes
    "scalelab.cli.laws",  # fit, compare, predict, optimal, plot
    "scalelab.cli.finetune",  # finetune, evaluate, infer, labelcurve
    "scalelab.cli.evals",  # eval (zero-shot multiple choice)
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


def build_parser() -> argparse.ArgumentParser:
    """The whole ``scalelab`` parser (every command module registered)."""
    parser = Parser(
        prog="scalelab",
        description="Pretrain ladders of Transformer LMs, fit scaling laws, fine-tune, report.",
        epilog=EPILOG,
        formatter_class=Formatter,
    )
    accept_negative_numbers(parser)
    parser.add_argument("--version", action="version", version=f"scalelab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``scalelab`` command; the exit code (2: bad input, 1: a run failed)."""
    quiet_threads_env()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        result = args.func(args)
    except BrokenPipeError:
        return 0
    except Exception as exc:  # noqa: BLE001 - only our own error types are turned into codes
        code, message = exit_code_for(exc)
        if code is None:
            raise
        print(message, file=sys.stderr)
        return code
    except KeyboardInterrupt as exc:
        code, message = exit_code_for(exc)
        print(message, file=sys.stderr)
        return code
    return int(result or 0)


if __name__ == "__main__":
    raise SystemExit(main())
