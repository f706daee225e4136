"""Wall time of `scalelab data prepare` on the default corpus (cold and reused), and the
cost of drawing a batch from the prepared shards; with --synthetic-gb, preparation at scale.

    .venv/bin/python bench/data_prepare.py [--vocab-size 8192] [--repeats 1]
    .venv/bin/python bench/data_prepare.py --synthetic-gb 1 [--workdir DIR] [--repeats 1]

--synthetic-gb N writes ~N GB of Parquet shards (the built-in corpora's documents, repeated
and shuffled) under a temporary directory in --workdir (deleted after), prepares them in a
child process (its peak RSS measured), and times raw ``encode_batch_fast`` with the trained
tokenizer on the same text, batch and cores. Targets: prepare's encoding phase >= 0.80 of
the raw throughput; peak RSS <= 2 GB.

Target: the default corpus (~27 M characters, 8k BPE) prepares in under 2 minutes
on this 2-core machine, tokenizer training included; a 16 x 256 decoder batch costs well
under a millisecond.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=1, help="cold prepares to time (median)")
    parser.add_argument("--batches", type=int, default=2000, help="decoder batches to time")
    parser.add_argument("--synthetic-gb", type=float, default=None, help="prepare ~N GB of parquet")
    parser.add_argument("--workdir", default=None, help="where the synthetic data goes (tmp)")
    args = parser.parse_args()
    if args.synthetic_gb is not None:
        synthetic_bench(args)
        return

    from scalelab.data import DataConfig, DecoderBatches, EncoderBatches, open_dataset
    from scalelab.data.prepare import prepare_dataset

    cold, reuse = [], []
    with tempfile.TemporaryDirectory(prefix="scalelab-bench-") as tmp:
        for i in range(args.repeats):
            root = Path(tmp) / f"cold{i}"
            t0 = time.perf_counter()
            result = prepare_dataset(DataConfig(vocab_size=args.vocab_size), root=root)
            cold.append(time.perf_counter() - t0)
            assert not result.reused
            for _ in range(3):
                t0 = time.perf_counter()
                assert prepare_dataset(DataConfig(vocab_size=args.vocab_size), root=root).reused
                reuse.append(time.perf_counter() - t0)
        m = result.manifest
        chars = m["splits"]["train"]["chars"] + m["splits"]["val"]["chars"]
        tokens = m["splits"]["train"]["tokens"] + m["splits"]["val"]["tokens"]
        sec = m["seconds"]
        print(
            f"default corpus: {chars / 1e6:.1f} M chars -> {tokens / 1e6:.2f} M tokens (vocab {args.vocab_size})"
        )
        print(
            f"prepare, cold : {statistics.median(cold):6.1f} s  (target < 120 s; ratio {statistics.median(cold) / 120:.2f})"
        )
        print(
            f"  read {sec['read']:.1f} s, tokenizer training {sec['tokenizer']:.1f} s, encoding {sec['encode']:.1f} s"
        )
        print(f"  encoding throughput: {tokens / sec['encode'] / 1e6:.2f} M tokens/s")
        print(f"prepare, reuse: {statistics.median(reuse) * 1e3:6.1f} ms")

        ds = open_dataset(result.path)
        sampler = DecoderBatches(ds, seq_len=256, batch_size=16, seed=0)
        sampler.get(0)
        times = []
        for step in range(args.batches):
            t0 = time.perf_counter()
            sampler.get(step)
            times.append(time.perf_counter() - t0)
        print(f"DecoderBatches.get 16x256: median {statistics.median(times) * 1e6:.0f} us")

    with tempfile.TemporaryDirectory(prefix="scalelab-bench-") as tmp:
        wp = prepare_dataset(
            DataConfig(tokenizer="wordpiece", vocab_size=args.vocab_size, max_chars=2_000_000),
            root=tmp,
        )
        enc = EncoderBatches(open_dataset(wp.path), seq_len=128, batch_size=32, seed=0)
        enc.get(0)
        times = []
        for step in range(200):
            t0 = time.perf_counter()
            enc.get(step)
            times.append(time.perf_counter() - t0)
        print(
            f"EncoderBatches.get 32x128 (NSP + MLM): median {statistics.median(times) * 1e3:.2f} ms"
        )


# ---------------------------------------------------------------------- --synthetic-gb

_CHILD = """
import json, sys, time
from scalelab.data import DataConfig
from scalelab.data.prepare import prepare_dataset
t0 = time.perf_counter()
r = prepare_dataset(DataConfig(sources=(sys.argv[1],), vocab_size=int(sys.argv[2])), root=sys.argv[3])
wall = time.perf_counter() - t0
json.dump({"path": str(r.path), "wall": wall, "seconds": r.manifest["seconds"],
           "tokens": sum(r.manifest["splits"][s]["tokens"] for s in ("train", "val"))},
          open(sys.argv[4], "w"))
"""


def write_synthetic(out: Path, gb: float, *, seed: int = 0, shard_mb: int = 64) -> tuple[int, int]:
    """~``gb`` GB of the built-in corpora's documents, shuffled and repeated, as Parquet
    shards with a ``text`` column under ``out``; returns (UTF-8 bytes, documents)."""
    import random

    import pyarrow as pa
    import pyarrow.parquet as pq

    from scalelab.data.config import DEFAULT_SOURCES
    from scalelab.data.sources import resolve_sources

    docs = [d.text for s in resolve_sources(DEFAULT_SOURCES) for d in s.documents()]
    rng = random.Random(seed)
    out.mkdir(parents=True)
    target, total, n, shard, rows, size = int(gb * 1e9), 0, 0, 0, [], 0
    while total < target:
        rng.shuffle(docs)
        for text in docs:
            rows.append(text)
            nbytes = len(text.encode())
            size, total, n = size + nbytes, total + nbytes, n + 1
            if size >= shard_mb << 20 or total >= target:
                pq.write_table(pa.table({"text": rows}), out / f"part-{shard:05d}.parquet")
                shard, rows, size = shard + 1, [], 0
            if total >= target:
                break
    return total, n


def raw_encode(tokenizer_json: Path, shards: Path, batch_bytes: int) -> tuple[float, int]:
    """Seconds inside ``encode_batch_fast`` for every text of ``shards`` (Rust threads on
    every core), batched like prepare; and the bytes encoded."""
    import pyarrow.parquet as pq
    from tokenizers import Tokenizer

    os.environ["TOKENIZERS_PARALLELISM"] = "true"
    tok = Tokenizer.from_file(str(tokenizer_json))
    seconds, total = 0.0, 0
    for path in sorted(shards.glob("*.parquet")):
        batch, size = [], 0
        for text in pq.read_table(path, columns=["text"]).column(0).to_pylist() + [None]:
            if text is not None:
                batch.append(text)
                size += len(text.encode())
            if batch and (text is None or size >= batch_bytes):
                t0 = time.perf_counter()
                tok.encode_batch_fast(batch, add_special_tokens=False)
                seconds += time.perf_counter() - t0
                total, batch, size = total + size, [], 0
    return seconds, total


def prepare_child(shards: Path, vocab: int, root: Path) -> tuple[dict, float]:
    """``prepare_dataset`` in a child process: its report and peak RSS (bytes)."""
    import json
    import subprocess
    import sys

    report = root.with_suffix(".json")
    env = {**os.environ, "TQDM_DISABLE": "1"}
    args = [sys.executable, "-c", _CHILD, str(shards), str(vocab), str(root), str(report)]
    proc = subprocess.Popen(args, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"prepare failed with exit code {proc.returncode}")
    return json.loads(report.read_text()), usage.ru_maxrss * 1024.0  # Linux: KiB


def synthetic_bench(args: argparse.Namespace) -> None:
    """The --synthetic-gb run: write, prepare (child), raw encode, print the figures."""
    import shutil

    from scalelab.data.prepare import _BATCH_BYTES

    base = Path(args.workdir) if args.workdir else None
    if base:
        base.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="scalelab-bench-", dir=base))
    try:
        t0 = time.perf_counter()
        nbytes, ndocs = write_synthetic(work / "parquet", args.synthetic_gb)
        print(
            f"synthetic: {nbytes / 1e9:.3f} GB, {ndocs:,} texts in "
            f"{time.perf_counter() - t0:.0f} s (parquet, {work})"
        )
        runs, rss, raw = [], [], []
        for i in range(args.repeats):
            report, peak = prepare_child(work / "parquet", args.vocab_size, work / f"data{i}")
            runs.append(report)
            rss.append(peak)
            tok_json = Path(report["path"]) / "tokenizer" / "tokenizer.json"
            raw.append(nbytes / raw_encode(tok_json, work / "parquet", _BATCH_BYTES)[0])
            shutil.rmtree(work / f"data{i}")
        med = statistics.median
        sec = {k: med(r["seconds"][k] for r in runs) for k in ("read", "tokenizer", "encode")}
        wall = med(r["wall"] for r in runs)
        enc = nbytes / sec["encode"]
        print(
            f"tokens: {runs[0]['tokens'] / 1e6:.1f} M (vocab {args.vocab_size}); "
            f"medians over {args.repeats} run(s)"
        )
        print(f"(a) raw encode_batch_fast      : {med(raw) / 1e6:7.2f} MB/s")
        print(f"(b) prepare, encoding phase    : {enc / 1e6:7.2f} MB/s  ({sec['encode']:.1f} s)")
        print(f"    ratio (b)/(a)              : {enc / med(raw):7.2f}  (target >= 0.80)")
        print(
            f"    read + tokenizer training  : {nbytes / (sec['read'] + sec['tokenizer']) / 1e6:7.2f}"
            f" MB/s  (read {sec['read']:.1f} s, training {sec['tokenizer']:.1f} s, overlapped)"
        )
        print(f"    end to end, training incl. : {nbytes / wall / 1e6:7.2f} MB/s  ({wall:.1f} s)")
        print(f"    peak RSS of prepare        : {max(rss) / 2**30:7.2f} GiB  (target <= 2 GiB)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
