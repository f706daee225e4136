"""Wall time of `scalelab data prepare` on the default corpus (cold and reused), and the
cost of drawing a batch from the prepared shards.

    .venv/bin/python bench/data_prepare.py [--vocab-size 8192] [--repeats 1]

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
    args = parser.parse_args()

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


if __name__ == "__main__":
    main()
