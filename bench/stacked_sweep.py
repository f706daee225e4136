"""A k-point learning-rate sweep: k sequential ``pretrain`` runs vs one ``train_stacked``.

At three demo-like shapes (n_layer x d_model; seq 128, vocabulary 1024, bf16 autocast,
2 threads, OMP_WAIT_POLICY=PASSIVE) this times whole runs end to end -- model build,
training, evaluations, checkpoints, the final export -- on a slice of the built-in
corpus prepared under a temporary directory:

* ``seq``: ``pretrain`` of one member. The k members of a sweep differ only in their
  learning rate, so k sequential runs take k times one run and have one run's tokens/s;
  each repetition times the next member's learning rate.
* ``seq-math``: the same under SDPA's math kernel (``sdpa_kernel(MATH)`` around the call),
  the attention the stack uses on CPU: how much of the ratio is that kernel alone.
* ``stacked``: ``train_stacked`` of all k members (same steps, evaluations, checkpoints).

tokens/s counts every member's training tokens over the wall time; the table prints the
median of ``--repeats`` repetitions (interleaved, so machine noise hits all alike), the
ratio stacked / seq (target >= 1.5) and stacked / seq-math; the last column is the
in-loop ratio (summary ``tokens_per_s``: steps and evaluations, no setup or saving), and
``val gap`` the largest relative difference between a member's final validation loss
trained alone and in the stack (bf16: the same operations, rounded in other orders).

    .venv/bin/python bench/stacked_sweep.py                       # about 2 minutes
    .venv/bin/python bench/stacked_sweep.py --shapes 2x64 --k 4,6 --steps 12 --repeats 2
    .venv/bin/python bench/stacked_sweep.py --shapes 2x32,4x48,5x64 --k 6 --precision fp32 \
        --batch 1024 --steps 60              # the default demo's shapes, sweep and numerics
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: spinning threads thrash

from scalelab.data.prepare import DataConfig, prepare  # noqa: E402
from scalelab.train.pretrain import PretrainConfig, pretrain  # noqa: E402
from scalelab.train.stacked import train_stacked  # noqa: E402

SEQ_LEN, VOCAB = 128, 1024
# (n_layer x d_model, tokens per step): the demo's range of widths and batches.
SHAPES = {"2x64": 2048, "3x96": 4096, "4x128": 4096}
LRS = (1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2, 3.2e-2)


def config(
    shape: str, lr: float, dataset: Path, steps: int, threads: int, precision: str = "bf16",
    batch: int = 0,
) -> PretrainConfig:  # fmt: skip
    n_layer, d_model = map(int, shape.split("x"))
    batch = batch or SHAPES.get(shape, 4096)
    return PretrainConfig.from_dict(
        {
            "model": {"n_layer": n_layer, "d_model": d_model, "n_head": max(1, d_model // 32)},
            "dataset": str(dataset),
            "seq_len": SEQ_LEN,
            "batch_tokens": batch,
            "tokens": steps * batch,
            "evals": 2,
            "eval_tokens": 8192,
            "optim": {"lr": lr},
            "runtime": {
                "threads": threads,
                "precision": precision,
                "progress": False,
                "tensorboard": False,
            },  # fmt: skip
        }
    )


def timed(fn, *args) -> tuple[float, list[dict]]:  # noqa: ANN001
    t0 = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t0, out if isinstance(out, list) else [out]


def bench_shape(shape: str, k: int, args: argparse.Namespace, dataset: Path, work: Path) -> dict:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    lrs = LRS[:k]
    cfgs = [
        config(shape, lr, dataset, args.steps, args.threads, args.precision, args.batch)
        for lr in lrs
    ]
    tokens = cfgs[0].tokens * k
    wall: dict[str, list[float]] = {"seq": [], "seq-math": [], "stacked": []}
    loop: dict[str, list[float]] = {"seq": [], "stacked": []}
    gaps: list[float] = []
    for rep in range(args.repeats):
        base = work / f"{shape}-k{k}-{rep}"
        one = cfgs[rep % k]
        dt, (s,) = timed(pretrain, one, base / "seq")
        wall["seq"].append(k * dt)
        loop["seq"].append(s["tokens_per_s"])
        with sdpa_kernel([SDPBackend.MATH]):
            dt, _ = timed(pretrain, one, base / "seq-math")
        wall["seq-math"].append(k * dt)
        dirs = [base / f"stacked{i}" for i in range(k)]
        dt, summaries = timed(train_stacked, cfgs, dirs)
        wall["stacked"].append(dt)
        loop["stacked"].append(k * summaries[0]["tokens_per_s"])
        same = summaries[rep % k]["final_val_loss"]  # the member the seq run trained alone
        gaps.append(abs(same - s["final_val_loss"]) / s["final_val_loss"])
    tps = {name: tokens / statistics.median(v) for name, v in wall.items()}
    return {
        "shape": shape,
        "k": k,
        "tps": tps,
        "ratio": tps["stacked"] / tps["seq"],
        "ratio_math": tps["stacked"] / tps["seq-math"],
        "ratio_loop": statistics.median(loop["stacked"]) / statistics.median(loop["seq"]),
        "gap": max(gaps),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--shapes", default=",".join(SHAPES), help="n_layer x d_model, comma-separated"
    )
    parser.add_argument("--k", default="4", help="sweep sizes, comma-separated (at most 6)")
    parser.add_argument("--steps", type=int, default=12, help="optimizer steps per run")
    parser.add_argument("--repeats", type=int, default=2, help="repetitions (median)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads per run")
    parser.add_argument("--precision", default="bf16", help="bf16 or fp32 (the default demo's)")
    parser.add_argument("--batch", type=int, default=0, help="tokens per step (0: per shape)")
    args = parser.parse_args()
    ks = [int(x) for x in args.k.split(",")]
    if max(ks) > len(LRS):
        sys.exit(f"--k: at most {len(LRS)}")
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="scalelab-stacked-") as tmp:
        work = Path(tmp)
        data = DataConfig(sources=("shakespeare", "wikipedia"), max_chars=1_500_000,
                          vocab_size=VOCAB, val_fraction=0.05)  # fmt: skip
        dataset = prepare(data, root=work / "data")
        warm = [config("2x64", lr, dataset, 2, args.threads) for lr in LRS[:2]]
        pretrain(warm[0], work / "warm")  # first-call costs (imports, kernels) not timed
        train_stacked(warm, [work / "warm0", work / "warm1"])
        print(f"{'shape':>6} {'k':>2} {'seq tok/s':>10} {'seq-math':>10} {'stacked':>10} "
              f"{'x seq':>6} {'x math':>7} {'x loop':>7} {'val gap':>8}", flush=True)  # fmt: skip
        for shape in args.shapes.split(","):
            for k in ks:
                r = bench_shape(shape, k, args, dataset, work)
                t = r["tps"]
                print(f"{shape:>6} {k:>2} {t['seq']:>10,.0f} {t['seq-math']:>10,.0f} "
                      f"{t['stacked']:>10,.0f} {r['ratio']:>6.2f} {r['ratio_math']:>7.2f} "
                      f"{r['ratio_loop']:>7.2f} {r['gap']:>8.1e}", flush=True)  # fmt: skip
    print(f"total {time.perf_counter() - t_start:.0f} s; target: x seq >= 1.5 at every shape")


if __name__ == "__main__":
    main()
