"""Pretraining throughput: scalelab's decoder vs a minimal nanoGPT-style reference.

For each shape (n_layer, d_model) and mode (fp32/bf16 x eager/torch.compile) this builds
scalelab's model and the reference (``nanogpt_reference.py``) at a matched parameter
count, and times the trainer's own inner step (``scalelab.train.step.train_step``:
forward, backward, grad-norm clipping, fused AdamW) on both, back to back in the same
process, interleaved step by step so machine noise hits both alike. Sequence 256, vocabulary
4096, 4096 tokens per step (16 x 256), synthetic uniform token ids.

It prints tokens/s (median over timed steps), the ratio scalelab / reference (and the
same ratio in tokens per CPU-second, which other tenants of a shared machine disturb
less), the
machine's measured fp32/bf16 matmul throughput and the FLOP/s achieved under 6N
(Kaplan's non-embedding N) and the full Appendix F count (head and attention included;
it also counts the embedding lookup as a matmul and the attention without the causal
discount, so full/peak can pass 1, most at small widths or when other tenants' load
lowers the measured peak).

    .venv/bin/python bench/pretrain_throughput.py                      # full table
    .venv/bin/python bench/pretrain_throughput.py --shapes 2x64 --modes bf16-eager --steps 5

Target: at every shape, scalelab in its fastest mode >= the reference in its
fastest mode.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: spinning threads thrash

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nanogpt_reference import ReferenceGPT, reference_optimizer  # noqa: E402
from scalelab.models import (  # noqa: E402
    ModelConfig,
    build_model,
    flops_per_token,
    maybe_compile,
    param_counts,
)
from scalelab.models.config import ffn_multiple  # noqa: E402
from scalelab.train.step import make_optimizer, train_step  # noqa: E402

SEQ_LEN, VOCAB, TOKENS_PER_STEP = 256, 4096, 4096
SHAPES = "2x64,4x128,6x256,8x512"
MODES = ("fp32-eager", "bf16-eager", "fp32-compile", "bf16-compile")


def matched_config(n_layer: int, d_model: int, arch: str) -> ModelConfig:
    """scalelab config with the reference's non-embedding count (within ~1%) and heads."""
    # 4x GELU = 8 d^2 per block; SwiGLU's 3 d f matches at f = 8/3 d, taken to the nearest
    # multiple of ffn_multiple(d) (64 at d 512: 1344 ran ~20% faster per FLOP than 1368).
    m = ffn_multiple(d_model)
    d_ff = m * round(8 * d_model / (3 * m)) if arch == "llama" else 4 * d_model
    return ModelConfig(
        arch=arch,
        n_layer=n_layer,
        d_model=d_model,
        n_head=max(1, d_model // 64),
        d_ff=d_ff,
        vocab_size=VOCAB,
        max_seq_len=SEQ_LEN,
        tie_embeddings=True,
    )


def reference_non_embedding(n_layer: int, d_model: int) -> int:
    return n_layer * (12 * d_model * d_model + 2 * d_model) + d_model


def matmul_flops(dtype: torch.dtype, n: int = 1024, reps: int = 20) -> float:
    """Best FLOP/s of an n x n x n matmul in ``dtype`` over ``reps`` (the machine's peak;
    the best rather than the median, so that other tenants' load does not lower it)."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / min(times)


def make_batch(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    b = TOKENS_PER_STEP // SEQ_LEN
    ids = torch.randint(0, VOCAB, (b, SEQ_LEN + 1), generator=g)
    return {"input_ids": ids[:, :-1].contiguous(), "labels": ids[:, 1:].contiguous()}


def timed_steps(model, optimizer, batch, precision: str, n: int) -> list[tuple[float, float]]:
    """(wall, CPU) seconds of ``n`` trainer steps."""
    out = []
    for _ in range(n):
        t0, c0 = time.perf_counter(), time.process_time()
        train_step(model, [batch], optimizer, precision=precision, grad_clip=1.0)
        out.append((time.perf_counter() - t0, time.process_time() - c0))
    return out


def median_rate(times: list[tuple[float, float]], which: int) -> float:
    return TOKENS_PER_STEP / statistics.median(t[which] for t in times)


def bench_pair(shape: tuple[int, int], mode: str, args: argparse.Namespace) -> dict:
    n_layer, d_model = shape
    precision, how = mode.split("-")
    torch.manual_seed(0)
    cfg = matched_config(n_layer, d_model, args.arch)
    ours = build_model(cfg)
    ref = ReferenceGPT(
        n_layer=n_layer, d_model=d_model, n_head=cfg.n_head, vocab_size=VOCAB, seq_len=SEQ_LEN
    )
    if how == "compile":
        maybe_compile(ours)
        ref = torch.compile(ref)  # nanoGPT's way: the whole model
    opt_ours, opt_ref = make_optimizer(ours, lr=3e-4), reference_optimizer(ref)
    batch = make_batch(1)
    warm = args.warmup + (2 if how == "compile" else 0)
    t0 = time.perf_counter()
    timed_steps(ref, opt_ref, batch, precision, warm)
    t_ref_warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    timed_steps(ours, opt_ours, batch, precision, warm)
    t_ours_warm = time.perf_counter() - t0
    ref_t, ours_t = [], []
    for i in range(args.steps):  # interleave step by step so load changes hit both alike
        pair = [(ref, opt_ref, ref_t), (ours, opt_ours, ours_t)]
        for model, opt, sink in pair if i % 2 == 0 else pair[::-1]:
            sink += timed_steps(model, opt, batch, precision, 1)
    ref_tps, ours_tps = median_rate(ref_t, 0), median_rate(ours_t, 0)
    return {
        "shape": f"{n_layer}x{d_model}",
        "mode": mode,
        "precision": precision,
        "n_ours": param_counts(cfg).non_embedding,
        "n_ref": reference_non_embedding(n_layer, d_model),
        "ref": ref_tps,
        "ours": ours_tps,
        "ratio": ours_tps / ref_tps,
        # Tokens per CPU-second: insensitive to other tenants taking the cores.
        "cpu_ratio": median_rate(ours_t, 1) / median_rate(ref_t, 1),
        "warm_s": (t_ref_warm, t_ours_warm),
        "flops_6n": flops_per_token(cfg, "6n_kaplan", seq_len=SEQ_LEN),
        "flops_full": flops_per_token(cfg, "chinchilla", seq_len=SEQ_LEN),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--shapes", default=SHAPES, help=f"n_layer x d_model list (default {SHAPES})")
    p.add_argument("--modes", default=",".join(MODES), help="subset of " + ",".join(MODES))
    p.add_argument("--steps", type=int, default=15, help="timed steps per model (interleaved)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps (compile adds 2)")
    p.add_argument("--arch", default="llama", choices=("llama", "gpt2"))
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    shapes = [tuple(int(x) for x in s.lower().split("x")) for s in args.shapes.split(",") if s]
    modes = [m for m in args.modes.split(",") if m]
    for m in modes:
        if m not in MODES:
            p.error(f"unknown mode {m}; choose from {', '.join(MODES)}")

    peak = {"fp32": matmul_flops(torch.float32), "bf16": matmul_flops(torch.bfloat16)}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, arch {args.arch}")
    print(
        f"matmul peak (1024^3, best of 20): fp32 {peak['fp32'] / 1e9:.1f} GFLOP/s, "
        f"bf16 {peak['bf16'] / 1e9:.1f} GFLOP/s"
    )
    print(
        f"seq {SEQ_LEN}, vocab {VOCAB}, {TOKENS_PER_STEP} tokens/step; tokens/s = median of "
        f"{args.steps} interleaved steps; ratio = scalelab / reference (wall clock), cpu = the "
        "same in tokens per CPU-second\n"
    )
    head = (
        f"{'shape':>6} {'N ours/ref':>15} {'mode':>12} {'ref tok/s':>10} {'ours tok/s':>10} "
        f"{'ratio':>6} {'cpu':>5} {'6N GF/s':>8} {'full GF/s':>9} {'full/peak':>9} "
        f"{'warm s ref/ours':>15}"
    )
    print(head)
    print("-" * len(head))
    results = []
    for shape in shapes:
        for mode in modes:
            r = bench_pair(shape, mode, args)
            results.append(r)
            full = r["ours"] * r["flops_full"]
            print(
                f"{r['shape']:>6} {r['n_ours']:>7,}/{r['n_ref']:<7,} {mode:>12} {r['ref']:>10.0f} "
                f"{r['ours']:>10.0f} {r['ratio']:>6.2f} {r['cpu_ratio']:>5.2f} "
                f"{r['ours'] * r['flops_6n'] / 1e9:>8.1f} "
                f"{full / 1e9:>9.1f} {full / peak[r['precision']]:>9.2f} "
                f"{r['warm_s'][0]:>7.1f}/{r['warm_s'][1]:<7.1f}",
                flush=True,
            )
    print("\nfastest mode per shape (the target: ratio >= 1.0)")
    for shape in shapes:
        rows = [r for r in results if r["shape"] == f"{shape[0]}x{shape[1]}"]
        best_ref = max(rows, key=lambda r: r["ref"])
        best_ours = max(rows, key=lambda r: r["ours"])
        print(
            f"{best_ours['shape']:>6}: scalelab {best_ours['ours']:.0f} ({best_ours['mode']}) vs "
            f"reference {best_ref['ref']:.0f} ({best_ref['mode']}): "
            f"ratio {best_ours['ours'] / best_ref['ref']:.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
