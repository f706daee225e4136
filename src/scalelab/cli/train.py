"""CLI: ``scalelab pretrain RUN_DIR`` (train one model, or resume it)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    from scalelab.cli.flags import add_config_arguments, subparser
    from scalelab.train.pretrain import PretrainConfig

    p = subparser(
        sub,
        "pretrain",
        help="Pretrain one decoder LM or BERT-style encoder; rerun on the same directory to resume.",
        example="scalelab pretrain runs/tiny --size tiny --tokens 2e6\n"
        "  scalelab pretrain runs/bert --arch bert --data.tokenizer wordpiece --size tiny\n"
        "  torchrun --nproc_per_node=2 -m scalelab pretrain runs/ddp --size tiny",
    )
    p.add_argument(
        "run_dir", metavar="RUN_DIR", type=Path, help="run directory (created, or resumed)"
    )
    add_config_arguments(p, PretrainConfig)
    p.set_defaults(func=_pretrain)


def _pretrain(args: argparse.Namespace) -> int:
    from scalelab.cli.flags import config_from_args
    from scalelab.train.pretrain import PretrainConfig, load_run_config, pretrain

    saved = load_run_config(args.run_dir)
    cfg = config_from_args(PretrainConfig, args, base=saved)
    summary = pretrain(cfg, args.run_dir)
    loss = summary.get("final_val_loss")
    shown = f"{loss:.4f}" if isinstance(loss, float) else "n/a"
    print(
        f"{summary['status']}: {args.run_dir} — N={summary['N']:,} non-embedding, "
        f"{summary['tokens']:,} tokens, final val loss {shown}, "
        f"{summary['wall_time_s']:.0f} s"
    )
    return 0
