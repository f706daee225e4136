"""``scalelab data prepare`` and ``scalelab data info``: flags -> DataConfig -> stage."""

from __future__ import annotations

import argparse
from typing import Any

from scalelab.cli.flags import add_config_arguments, add_section_spelling, config_from_args
from scalelab.data.config import DataConfig


def register(sub: argparse._SubParsersAction) -> None:
    from scalelab.cli.flags import subparser

    data = subparser(
        sub,
        "data",
        help="Prepare and inspect tokenized datasets (sources -> tokenizer -> token shards).",
        example="scalelab data prepare --out data/default",
    )
    actions = data.add_subparsers(dest="data_command", metavar="ACTION")
    prep = subparser(
        actions,
        "prepare",
        help=(
            "Read text sources, split them by document, train a tokenizer and write token shards "
            "(reused when the config and sources are unchanged). Source spec: [NAME=]WHAT[:WEIGHT], "
            "WHAT a built-in (shakespeare, wikipedia, news, bible), a text, .jsonl[.gz|.zst], "
            ".json, .parquet or .arrow file, a glob, a directory, or a datasets save_to_disk "
            "directory (records' text from --data.text-field)."
        ),
        example=(
            "scalelab data prepare --sources shakespeare,notes=my/*.txt:2 --vocab-size 4096\n"
            "  scalelab data prepare --sources 'shards/*.parquet' --data.text-field text"
        ),
    )
    add_config_arguments(prep, DataConfig)
    add_section_spelling(prep, DataConfig, "data")
    where = prep.add_mutually_exclusive_group()
    where.add_argument("--out", metavar="DIR", help="write the dataset to exactly this directory")
    where.add_argument(
        "--root",
        metavar="DIR",
        default="data",
        help="data root: the dataset goes to ROOT/<name>-<hash> (default: data)",
    )
    prep.set_defaults(func=_prepare)

    info = subparser(
        actions,
        "info",
        help="Print what a prepared dataset holds (its manifest, summarised).",
        example="scalelab data info data/default-0123456789ab",
    )
    info.add_argument("path", metavar="DIR", help="dataset directory")
    info.add_argument("--json", action="store_true", help="print the whole manifest as JSON")
    info.set_defaults(func=_info)

    data.set_defaults(func=lambda args: data.print_help() or 0)


def _prepare(args: argparse.Namespace) -> int:
    import time

    from scalelab.data.prepare import prepare_dataset

    cfg = config_from_args(DataConfig, args)
    t0 = time.perf_counter()
    result = prepare_dataset(cfg, root=args.root, out=args.out)
    status = "reused" if result.reused else f"written in {time.perf_counter() - t0:.1f} s"
    print(format_summary(result.manifest, str(result.path), status))
    return 0


def _info(args: argparse.Namespace) -> int:
    import json

    from scalelab.data.dataset import open_dataset

    ds = open_dataset(args.path)
    if args.json:
        print(json.dumps(ds.manifest, indent=2))
    else:
        print(
            format_summary(ds.manifest, str(ds.path), f"created {ds.manifest.get('created', '?')}")
        )
    return 0


def _human(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.1f}{unit}"
    return f"{n:.0f}"


def format_summary(manifest: dict[str, Any], path: str, status: str) -> str:
    """A dataset's manifest as a short table: docs, chars and tokens per source and split."""
    tok = manifest["tokenizer"]
    lines = [
        f"dataset    {path}  ({status})",
        f"tokenizer  {tok['kind']}, vocab {tok['vocab_size']:,}, lowercase {tok['lowercase']}, "
        f"shards {manifest['dtype']}, tokenizer hash {tok['hash']}",
        f"hashes     content {manifest['content_hash']}, config {manifest['config_hash']}",
        "",
        f"{'source':<16}{'split':<7}{'docs':>9}{'chars':>10}{'tokens':>12}{'chars/tok':>11}{'mix':>8}",
    ]

    def row(name: str, split: str, docs: int, chars: int, tokens: int, mix: str) -> str:
        ratio = f"{chars / tokens:.2f}" if tokens else "-"
        return f"{name:<16}{split:<7}{docs:>9,}{_human(chars):>10}{tokens:>12,}{ratio:>11}{mix:>8}".rstrip()

    for name, entry in manifest["sources"].items():
        for split in ("train", "val"):
            mix = f"{manifest['mixture'].get(name, 0.0):.3f}" if split == "train" else ""
            lines.append(
                row(
                    name if split == "train" else "",
                    split,
                    entry["docs"][split],
                    entry["chars"][split],
                    entry["tokens"][split],
                    mix,
                )
            )
    for split in ("train", "val"):
        s = manifest["splits"][split]
        lines.append(
            row("total" if split == "train" else "", split, s["docs"], s["chars"], s["tokens"], "")
        )
    bad = {n: e["undecodable"] for n, e in manifest["sources"].items() if e.get("undecodable")}
    if bad:
        detail = ", ".join(f"{n}: {k:,}" for n, k in bad.items())
        lines.append(f"\nundecodable byte sequences replaced by U+FFFD -- {detail}")
    return "\n".join(lines)
