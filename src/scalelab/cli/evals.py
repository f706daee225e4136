"""``scalelab eval``: zero-shot multiple-choice / cloze scores of a pretrained decoder."""

from __future__ import annotations

import argparse
from pathlib import Path

from scalelab.cli.flags import add_config_arguments, config_from_args, subparser


def register(sub: argparse._SubParsersAction) -> None:
    from scalelab.evals.config import EvalConfig

    p = subparser(
        sub,
        "eval",
        help="Score a pretrained decoder zero-shot on multiple-choice tasks (acc, acc_norm, gold bits per byte).",
        example="scalelab eval runs/tiny --tasks builtin:continuation,builtin:wiki-topic\n"
        "  scalelab eval runs/tiny/model --tasks mine.jsonl --limit 100 --out scores.json",
    )
    p.add_argument(
        "path",
        metavar="RUN_OR_MODEL_DIR",
        type=Path,
        help="a pretraining run directory (its model/) or a Hugging Face model directory",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON file for the results (default: RUN/zeroshot.json, or zeroshot.json in the model directory)",
    )
    add_config_arguments(p, EvalConfig)
    p.set_defaults(func=_eval)


def _eval(args: argparse.Namespace) -> int:
    from scalelab.evals.config import EvalConfig
    from scalelab.evals.evaluate import evaluate_model, locate, results_table
    from scalelab.utils.io import atomic_write_json, check_output_file

    cfg = config_from_args(EvalConfig, args)
    src = locate(args.path, dataset=cfg.dataset)
    out = args.out or (src.run_dir or src.model_dir) / "zeroshot.json"
    check_output_file(out, "--out")
    result = evaluate_model(args.path, cfg)
    atomic_write_json(out, result)
    print(results_table(result["tasks"]))
    print(f"results: {out}")
    return 0
