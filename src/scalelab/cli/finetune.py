"""``scalelab finetune``, ``evaluate``, ``infer`` (tag or classify text) and ``labelcurve``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from scalelab.cli.flags import add_config_arguments, config_from_args, subparser


def add_shortcuts(p: Any, *, prefix: str = "", method: bool = True) -> None:
    """``--task NAME`` and ``--method NAME`` for the nested ``task.task`` / ``method.method``
    (under ``prefix``, e.g. ``finetune.`` in ``study finetune``)."""
    p.add_argument("--task", dest=f"{prefix}task.task", metavar="NAME", default=argparse.SUPPRESS,
                   help="built-in task: twitter-ner, wiki-topics, movie-sentiment, bbc-news")  # fmt: skip
    if method:
        p.add_argument("--method", dest=f"{prefix}method.method", metavar="METHOD", default=argparse.SUPPRESS,
                       help="full, lora, adalora, prefix, prompt or adapter (default: full)")  # fmt: skip


def add_infer_arguments(p: Any, *, hidden: bool = False) -> None:
    """``--input``, ``--output``, ``--batch-size`` of ``scalelab infer``."""

    def shown(text: str) -> str:
        return argparse.SUPPRESS if hidden else text

    p.add_argument(
        "--input", default="-", help=shown("text file, one example per line ('-': stdin)")
    )
    p.add_argument("--output", default="-", help=shown("JSONL file to write ('-': stdout)"))
    p.add_argument("--batch-size", type=int, default=32, help=shown("examples per forward pass"))


def register(sub: argparse._SubParsersAction) -> None:
    from scalelab.finetune.finetune import FinetuneConfig
    from scalelab.study.labelcurve import LabelCurveConfig

    p = subparser(
        sub,
        "finetune",
        help="Fine-tune a scalelab run or local HF checkpoint on NER or classification (full or PEFT).",
        example="scalelab finetune runs/ner --model runs/tiny --task twitter-ner --method lora\n"
        "  scalelab finetune runs/topics --model path/to/minilm --task wiki-topics --method adapter\n"
        "  scalelab finetune runs/mine --model M --task.train-file train.conll --task.test-file test.conll",
    )
    p.add_argument(
        "run_dir", metavar="RUN_DIR", type=Path, help="run directory (created, or resumed)"
    )
    add_shortcuts(p)
    add_config_arguments(p, FinetuneConfig)
    p.set_defaults(func=_finetune)

    e = subparser(
        sub,
        "evaluate",
        help="Evaluate a fine-tuned run on a split: entity (conlleval + strict) and token tables, or accuracy/F1.",
        example="scalelab evaluate runs/ner --split test\n"
        "  scalelab evaluate runs/ner --perturb casing,typos,entity-swap --rate 0.1",
    )
    e.add_argument("run_dir", metavar="RUN", type=Path, help="a `scalelab finetune` run directory")
    e.add_argument(
        "--split", default="test", choices=["train", "dev", "test"], help="split to evaluate"
    )
    e.add_argument(
        "--perturb",
        default="",
        help="robustness: comma list of casing, lower, upper, typos, entity-swap",
    )
    e.add_argument("--rate", type=float, default=None, help="typo rate per word (default 0.1)")
    e.add_argument("--seed", type=int, default=0, help="seed of the perturbations")
    e.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON file for the results (default RUN/eval_<split>.json)",
    )
    e.set_defaults(func=_evaluate)

    i = subparser(
        sub,
        "infer",
        help="Tag (NER) or classify text with a fine-tuned run; one JSON object per input line.",
        example="echo 'Obama visits Paris' | scalelab infer runs/ner-lora > tags.jsonl\n"
        "  scalelab infer runs/topics --input articles.txt --output labels.jsonl",
    )
    i.add_argument("run_dir", metavar="RUN", type=Path, help="a `scalelab finetune` run directory")
    add_infer_arguments(i)
    i.set_defaults(func=run_infer)

    lc = subparser(
        sub,
        "labelcurve",
        help="Metric against the number of labelled examples per method, a power-law fit, labels "
        "needed for a target; with --study, every rung and the fine-tuning law across them.",
        example="scalelab labelcurve runs/lc --finetune.model runs/tiny --task wiki-topics --methods full,lora "
        "--fractions 0.01,0.03,0.1,0.3,1 --target 0.6\n  scalelab labelcurve STUDY/downstream/labelcurve-ner "
        "--study STUDY --task twitter-ner --methods full,lora --fractions 0.1,0.3,1",
    )
    lc.add_argument("out", metavar="OUT", type=Path, help="output directory (resumable)")
    add_shortcuts(lc, prefix="finetune.", method=False)
    add_config_arguments(lc, LabelCurveConfig)
    lc.set_defaults(func=_labelcurve)


def _finetune(args: argparse.Namespace) -> int:
    from scalelab.finetune.finetune import FinetuneConfig, finetune

    saved = args.run_dir / "config.yaml"
    base = FinetuneConfig.load(saved) if saved.is_file() else None
    summary = finetune(config_from_args(FinetuneConfig, args, base=base), args.run_dir)
    dev, test = summary["dev"], summary["test"]
    key = "f1" if "f1" in test else "accuracy"
    print(
        f"{summary['status']}: {args.run_dir} — best dev {key} {dev[key]:.4f}, test {key} {test[key]:.4f}"
    )
    return 0


def _labelcurve(args: argparse.Namespace) -> int:
    from scalelab.study.labelcurve import LabelCurveConfig, describe, label_curve

    data = label_curve(config_from_args(LabelCurveConfig, args), args.out)
    print(describe(data))
    print(f"report: {args.out / 'report.html'}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from scalelab.finetune.inference import evaluate_run

    evaluate_run(
        args.run_dir,
        split=args.split,
        perturb=args.perturb,
        rate=args.rate,
        seed=args.seed,
        out=args.out,
    )
    return 0


def run_infer(args: argparse.Namespace) -> int:
    """``scalelab infer RUN``: tags or classes for each input line, as JSONL."""
    from scalelab.finetune.inference import predict_text

    predict_text(
        args.run_dir, input_path=args.input, output_path=args.output, batch_size=args.batch_size
    )
    return 0
