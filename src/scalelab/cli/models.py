"""``scalelab sizes``: the size registry and the dial, with parameter and FLOP accounting."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from scalelab.cli.flags import subparser

    p = subparser(
        sub,
        "sizes",
        help="List the named model sizes, or the shapes the dial gives for parameter targets.",
        example="scalelab sizes --params 3e6 2.5e7 --arch llama --vocab-size 8192",
    )
    p.add_argument("--arch", default="llama", choices=("llama", "gpt2", "bert"))
    p.add_argument(
        "--params",
        nargs="+",
        metavar="N",
        help="non-embedding parameter targets (e.g. 3e6 250k); default: every named size",
    )
    p.add_argument("--vocab-size", type=int, default=8192, help="for embedding counts and FLOPs")
    p.add_argument("--seq-len", type=int, default=256, help="for the attention FLOPs")
    p.set_defaults(func=_sizes)


def _sizes(args: argparse.Namespace) -> int:
    from scalelab.models.accounting import flops_per_token, param_counts
    from scalelab.models.sizes import SIZES, model_config

    names = args.params or list(SIZES)
    header = (
        f"{'size':>8} {'layers':>6} {'d_model':>7} {'heads':>5} {'d_ff':>6} "
        f"{'N (non-emb)':>14} {'total':>14} {'6N/token':>10} {'App.F/token':>11}"
    )
    print(header)
    for name in names:
        cfg = model_config(
            name, arch=args.arch, vocab_size=args.vocab_size, max_seq_len=args.seq_len
        )
        counts = param_counts(cfg)
        print(
            f"{name:>8} {cfg.n_layer:>6} {cfg.d_model:>7} {cfg.n_head:>5} {cfg.ffn_dim:>6} "
            f"{counts.non_embedding:>14,} {counts.total:>14,} "
            f"{flops_per_token(cfg, '6n_kaplan'):>10.3g} "
            f"{flops_per_token(cfg, 'chinchilla', seq_len=args.seq_len):>11.3g}"
        )
    return 0
